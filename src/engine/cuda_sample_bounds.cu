// engine/cuda_sample_bounds.cu — where a recorded sampled token's interval lies in the softmax walk, computed on
// the device, so a sampled transcript's replay does not copy [n, vocab] logits to the host (transcript_cuda.cpp).
//
// Sampler::Pick (temperature only, no top-k / top-p) returns the first id i with u < cum_i, cum_i the running sum
// of exp((l_j - max) / T) / sum over j <= i, in double with the host's exp. For the recorded token t this kernel
// computes lo = sum_{j<t} e_j / S and hi = (sum_{j<t} e_j + e_t) / S with the device's exp (max error 1 ulp, like
// the host's) and a tree sum: both sides are within ~(3 n + 10) * 2^-53 of the real values (n = vocab; 1.6e-11
// at n = 49152), so a draw u farther than kSampleBoundMargin from both ends decides the same way the host's walk
// would. The caller re-checks the rare rows within the margin on the host. One CTA of 512 threads per row.
// defines: LaunchSampleBounds (declared in cuda_engine_kernels.h)
#include <cmath>
#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "engine/cuda_block_reduce.cuh"
#include "engine/cuda_engine_kernels.h"

namespace fp::cuda_engine {
namespace {

constexpr int kBoundThreads = 512;

// 2 CTAs per SM: with the bound alone ptxas (CUDA 13.0) kept 40 registers and spilled 8 bytes.

__global__ void __launch_bounds__(kBoundThreads, 2)
    SampleBoundsKernel(const float* logits, int vocab, const int32_t* picked, double inv_t, SampleBounds* out) {
  __shared__ float fsm[32];
  __shared__ double dsm[3][32];  // one per sum: no barrier needed between the three reductions
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int t = picked[blockIdx.x];
  float mx = -INFINITY;
  int bad = 0;
  for (int i = static_cast<int>(threadIdx.x); i < vocab; i += kBoundThreads) {
    const float v = row[i];
    if (isnan(v) || v == INFINITY) bad = 1;
    mx = fmaxf(mx, v);
  }
  mx = BlockReduce(mx, fsm, -INFINITY, [](float a, float b) { return fmaxf(a, b); });
  bad = __syncthreads_or(bad);
  double below = 0.0, at = 0.0, all = 0.0;
  if (!bad && mx != -INFINITY && t >= 0 && t < vocab) {
    const double m = static_cast<double>(mx);
    for (int i = static_cast<int>(threadIdx.x); i < vocab; i += kBoundThreads) {
      const double e = exp((static_cast<double>(row[i]) - m) * inv_t);
      all += e;
      if (i < t) below += e;
      if (i == t) at = e;
    }
  }
  auto add = [](double a, double b) { return a + b; };
  all = BlockReduce(all, dsm[0], 0.0, add);
  below = BlockReduce(below, dsm[1], 0.0, add);
  at = BlockReduce(at, dsm[2], 0.0, add);
  if (threadIdx.x == 0) {
    SampleBounds b;
    b.refused = bad || mx == -INFINITY || t < 0 || t >= vocab ? 1 : 0;
    b.lo = b.refused ? 0.0 : below / all;
    b.hi = b.refused ? 0.0 : (below + at) / all;
    out[blockIdx.x] = b;
  }
}

}  // namespace

Status LaunchSampleBounds(const float* logits, int n, int vocab, const int32_t* picked, double inv_temperature,
                          SampleBounds* out, cudaStream_t stream) {
  if (n < 0 || vocab <= 0 || !(inv_temperature > 0.0) || !std::isfinite(inv_temperature) ||
      (n > 0 && (logits == nullptr || picked == nullptr || out == nullptr))) {
    return InvalidArgument("sample bounds: n " + std::to_string(n) + ", vocab " + std::to_string(vocab) +
                           ", 1/T must be finite and > 0, buffers non-null");
  }
  if (n == 0) return Status::Ok();
  SampleBoundsKernel<<<n, kBoundThreads, 0, stream>>>(logits, vocab, picked, inv_temperature, out);
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::cuda_engine
