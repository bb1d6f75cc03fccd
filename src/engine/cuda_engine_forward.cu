// engine/cuda_engine_forward.cu — CudaLlama's prefill-style forwards and what each returns of its last rows, all
// through one ForwardRows (chunks of max_chunk, ForwardChunk in cuda_engine.cu), so all give the same bits:
// Forward (logits into a std::vector), ForwardInto (logits into memory the caller owns: no zero-fill, and a pinned
// destination turns the [n, vocab] f32 copy into one DMA), ForwardGreedy (device argmax ids) and
// ForwardSampleBounds (each row's SampleBounds; the logits stay on the device). The last three serve the
// transcript replay (transcript_cuda.cpp).
// defines: CudaLlama::Impl::ForwardRows, CudaLlama::Forward, ForwardInto, ForwardGreedy, ForwardSampleBounds
#include <cmath>
#include <string>

#include "cuda_engine_impl.h"

namespace fp {

Status CudaLlama::Impl::ForwardRows(SeqId seq, std::span<const int32_t> toks, int32_t n_out, float* out_logits,
                                    int32_t* out_ids, const BoundsJob* bounds_job) {
  const auto n = static_cast<int64_t>(toks.size());
  if (n_out < 0 || n_out > n) {
    return InvalidArgument("n_logits " + std::to_string(n_out) + " outside [0, " + std::to_string(n) + "]");
  }
  auto len = RoomFor(seq, n);
  if (!len.ok()) return len.status();
  FP_RETURN_IF_ERROR(CheckTokens(toks));
  const int64_t first_out = n - n_out;
  const int32_t old_len = *len;
  for (int64_t c0 = 0; c0 < n; c0 += opt.max_chunk) {
    const int64_t k = std::min<int64_t>(opt.max_chunk, n - c0);
    const int64_t lf = std::max<int64_t>(0, first_out - c0);
    const int64_t at = c0 + lf - first_out;  // first output row of this chunk
    float* lo = out_logits != nullptr && lf < k ? out_logits + at * c.vocab_size : nullptr;
    int32_t* io = out_ids != nullptr && lf < k ? out_ids + at : nullptr;
    BoundsJob bj;  // this chunk's output rows of the request
    if (bounds_job != nullptr && lf < k) bj = {bounds_job->picked + at, bounds_job->inv_temperature, bounds_job->out + at};
    Status st = ForwardChunk(seq, toks.subspan(static_cast<size_t>(c0), static_cast<size_t>(k)),
                             static_cast<int32_t>(lf), lo, io, nullptr, bj.out != nullptr ? &bj : nullptr);
    if (!st.ok()) {
      (void)cache->meta().Truncate(seq, old_len);  // earlier chunks of this call are undone too
      return st;
    }
  }
  return Status::Ok();
}

Status CudaLlama::Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::vector<float>* logits) {
  Impl& m = *impl_;
  if (n_logits < 0 || n_logits > static_cast<int64_t>(tokens.size())) {
    return InvalidArgument("n_logits " + std::to_string(n_logits) + " outside [0, " +
                           std::to_string(tokens.size()) + "]");
  }
  if (n_logits > 0 && logits == nullptr) return InvalidArgument("forward: null logits");
  if (logits != nullptr) logits->assign(static_cast<size_t>(n_logits) * static_cast<size_t>(m.c.vocab_size), 0.f);
  return m.ForwardRows(seq, tokens, n_logits, logits != nullptr ? logits->data() : nullptr, nullptr);
}

Status CudaLlama::ForwardGreedy(SeqId seq, std::span<const int32_t> tokens, int32_t n_ids, std::vector<int32_t>* ids) {
  if (n_ids < 0 || n_ids > static_cast<int64_t>(tokens.size())) {
    return InvalidArgument("n_ids " + std::to_string(n_ids) + " outside [0, " + std::to_string(tokens.size()) + "]");
  }
  if (n_ids > 0 && ids == nullptr) return InvalidArgument("forward: null ids");
  if (ids != nullptr) ids->assign(static_cast<size_t>(n_ids), -1);
  return impl_->ForwardRows(seq, tokens, n_ids, nullptr, ids != nullptr ? ids->data() : nullptr);
}


Status CudaLlama::ForwardInto(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::span<float> logits) {
  Impl& m = *impl_;
  if (n_logits < 0 || n_logits > static_cast<int64_t>(tokens.size())) {
    return InvalidArgument("n_logits " + std::to_string(n_logits) + " outside [0, " +
                           std::to_string(tokens.size()) + "]");
  }
  const size_t want = static_cast<size_t>(n_logits) * static_cast<size_t>(m.c.vocab_size);
  if (logits.size() != want) {
    return InvalidArgument("forward: logits hold " + std::to_string(logits.size()) + " floats, [n_logits, vocab] is " +
                           std::to_string(want));
  }
  if (want > 0 && logits.data() == nullptr) return InvalidArgument("forward: null logits");
  return m.ForwardRows(seq, tokens, n_logits, want > 0 ? logits.data() : nullptr, nullptr);
}

Status CudaLlama::ForwardSampleBounds(SeqId seq, std::span<const int32_t> tokens, std::span<const int32_t> picked,
                                      double inv_temperature, std::vector<SampleBounds>* bounds) {
  if (picked.size() > tokens.size()) {
    return InvalidArgument("forward: " + std::to_string(picked.size()) + " picked ids for " +
                           std::to_string(tokens.size()) + " tokens");
  }
  if (bounds == nullptr) return InvalidArgument("forward: null bounds");
  if (!(inv_temperature > 0.0) || !std::isfinite(inv_temperature))
    return InvalidArgument("forward: 1 / temperature must be finite and > 0");
  bounds->assign(picked.size(), SampleBounds{});
  const Impl::BoundsJob job{picked.data(), inv_temperature, bounds->data()};
  return impl_->ForwardRows(seq, tokens, static_cast<int32_t>(picked.size()), nullptr, nullptr,
                            picked.empty() ? nullptr : &job);
}

}  // namespace fp
