// engine/cuda_engine_hidden.cu — CudaLlama::ForwardHidden: a prefill (the same Impl::Step as Forward, so the
// same K/V and residual bits) that returns final hidden states instead of logits, for the tolerant fingerprint
// (fingerprint.h). The final RMSNorm here writes f32, not the bf16 the LM head GEMM reads: the fingerprint
// compares values, and bf16's 2^-9 rounding would only add noise to the CPU-vs-GPU comparison.
// defines: CudaLlama::ForwardHidden
#include <algorithm>
#include <array>
#include <string>

#include "cuda_engine_impl.h"

namespace fp {

namespace {

constexpr int kNormThreads = 256;

// y[:] = x[:] * rsqrt(mean(x^2) + eps) * w[:], one CTA per row, f32 in and out (sum of squares in double, as the
// CPU engine's RmsNorm).  x: [d], w: [d], y: [d].
__global__ void FinalNormF32Kernel(const float* __restrict__ x, const float* __restrict__ w, int d, float eps,
                                   float* __restrict__ y) {
  __shared__ double partial[kNormThreads];
  double ss = 0.0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += static_cast<double>(x[i]) * x[i];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float scale = 1.f / sqrtf(static_cast<float>(partial[0] / d) + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) y[i] = x[i] * scale * w[i];
}

}  // namespace

Status CudaLlama::ForwardHidden(SeqId seq, std::span<const int32_t> tokens, std::span<const int32_t> hidden_rows,
                                std::vector<float>* hidden) {
  Impl& m = *impl_;
  const ModelConfig& c = m.c;
  const auto n = static_cast<int64_t>(tokens.size());
  if (!hidden_rows.empty() && hidden == nullptr) return InvalidArgument("forward hidden: null output");
  for (size_t i = 0; i < hidden_rows.size(); ++i) {
    if (hidden_rows[i] < 0 || hidden_rows[i] >= n || (i > 0 && hidden_rows[i] <= hidden_rows[i - 1]))
      return InvalidArgument("forward hidden: rows must be increasing indices into the tokens");
  }
  auto len = m.RoomFor(seq, n);
  if (!len.ok()) return len.status();
  FP_RETURN_IF_ERROR(m.CheckTokens(tokens));
  const size_t d = static_cast<size_t>(c.d_model);
  if (hidden != nullptr) hidden->assign(hidden_rows.size() * d, 0.f);
  if (n == 0) return Status::Ok();
  // [rows of one chunk at most, d] f32: at most max_chunk rows fall in one chunk.
  const size_t chunk_rows = std::min<size_t>(hidden_rows.size(), static_cast<size_t>(m.opt.max_chunk));
  auto out = DeviceBuffer::Allocate(std::max<size_t>(chunk_rows, 1) * d * sizeof(float));
  if (!out.ok()) return out.status();
  auto* dev_out = static_cast<float*>(out->get());  // [chunk_rows, d]

  const int32_t old_len = *len;
  auto fail = [&](Status st) {
    (void)cudaStreamSynchronize(m.stream);  // nothing in flight may still write the rows we give back
    (void)m.cache->meta().Truncate(seq, old_len);
    return st;
  };
  size_t h = 0;  // next hidden row
  for (int64_t c0 = 0; c0 < n; c0 += m.opt.max_chunk) {
    const int64_t k = std::min<int64_t>(m.opt.max_chunk, n - c0);
    const auto toks = tokens.subspan(static_cast<size_t>(c0), static_cast<size_t>(k));
    auto res = m.cache->Reserve(seq, static_cast<int32_t>(k), m.stream);
    if (!res.ok()) return fail(res.status());
    const std::array<SeqId, 1> seqs{seq};
    const std::array<int32_t, 1> qlens{static_cast<int32_t>(k)};
    auto batch = m.cache->meta().BuildBatch(seqs, qlens);
    if (!batch.ok()) return fail(batch.status());
    if (Status st = m.Step(std::span<const Reservation>(&res.value(), 1), toks, *batch, false, nullptr); !st.ok())
      return fail(st);
    const size_t h0 = h;
    for (; h < hidden_rows.size() && hidden_rows[h] < c0 + k; ++h) {
      const int64_t row = hidden_rows[h] - c0;  // chunk-local row of the residual stream
      FinalNormF32Kernel<<<1, kNormThreads, 0, m.stream>>>(m.x + row * c.d_model, m.out_norm, c.d_model, c.rms_eps,
                                                           dev_out + (h - h0) * d);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess)
        return fail(CudaStatus(e, "final norm launch", __FILE__, __LINE__));
    }
    if (h > h0) {
      if (cudaError_t e = cudaMemcpyAsync(hidden->data() + h0 * d, dev_out, (h - h0) * d * sizeof(float),
                                          cudaMemcpyDeviceToHost, m.stream);
          e != cudaSuccess) {
        return fail(CudaStatus(e, "hidden to host", __FILE__, __LINE__));
      }
    }
    // The next chunk reuses the residual buffer and dev_out: wait here (verification path, not the hot loop).
    if (cudaError_t e = cudaStreamSynchronize(m.stream); e != cudaSuccess)
      return fail(CudaStatus(e, "forward hidden", __FILE__, __LINE__));
  }
  return Status::Ok();
}

}  // namespace fp
