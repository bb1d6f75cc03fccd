// engine/cuda_engine_forward_into.cu — CudaLlama::ForwardInto: Forward writing the logits into memory the caller
// owns (cuda_engine.cu is at its size limit). The same ForwardRows as Forward, so the same bits; only the host
// destination differs: no std::vector zero-fill, and a pinned destination turns the [n, vocab] f32 copy into one
// DMA (the sampled-transcript replay, transcript_cuda.cpp). defines: CudaLlama::ForwardInto
#include <string>

#include "cuda_engine_impl.h"

namespace fp {

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

}  // namespace fp
