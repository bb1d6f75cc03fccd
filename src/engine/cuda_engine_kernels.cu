// engine/cuda_engine_kernels.cu — the non-GEMM kernels of the CUDA Llama forward (see cuda_engine_kernels.h).
// All are memory-bound and tiny next to the weight GEMMs (at B=1 a layer moves ~436 MiB of weights and ~100 KiB
// of activations), but at B = 1 each sits on the critical path between two GEMMs: so every thread issues its loads
// before using any (RMSNorm) or the work is spread over many small blocks (RoPE/KV write), f32 reductions in
// shared memory.
#include "engine/cuda_engine_kernels.h"

#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "core/cuda_pdl.cuh"
#include "engine/cuda_block_reduce.cuh"
#include "engine/cuda_row_ops.cuh"

namespace fp::cuda_engine {
namespace {

// `launch`: what cudaLaunchKernelEx returned (cudaSuccess for a <<<>>> launch, which reports through
// cudaGetLastError).
Status LaunchStatus(const char* what, cudaError_t launch = cudaSuccess) {
  const cudaError_t last = cudaGetLastError();
  const cudaError_t err = launch != cudaSuccess ? launch : last;
  if (err == cudaSuccess) return Status::Ok();
  return Internal(std::string("cuda engine: ") + what + " launch failed: " + cudaGetErrorName(err));
}

__global__ void EmbedKernel(const int32_t* tokens, const __nv_bfloat16* table, int d, float* x) {
  PdlWait();
  PdlLaunchDependents();
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = table + static_cast<int64_t>(tokens[t]) * d;
  for (int i = static_cast<int>(threadIdx.x); i < d; i += static_cast<int>(blockDim.x)) {
    x[t * d + i] = __bfloat162float(row[i]);
  }
}

// All loads issued before the first use (RmsNormRowVec): at B = 1 this kernel is on the critical path 65 times a
// step, and the scalar two-pass loop paid one dependent L2 round trip per element group (ncu: 10.7 us a call on
// an H200 at base clocks, 10% of a Llama-3-8B step).
template <int V>
__global__ void RmsNormVecKernel(const float* x, const float* w, int d, float eps, __nv_bfloat16* y) {
  __shared__ float smem[32];
  PdlWait();
  PdlLaunchDependents();
  const int64_t t = blockIdx.x;
  RmsNormRowVec<V>(x + t * d, w, d, eps, y + t * d, smem);
}

__global__ void RmsNormKernel(const float* x, const float* w, int d, float eps, __nv_bfloat16* y) {
  __shared__ float smem[32];
  PdlWait();
  PdlLaunchDependents();
  const int64_t t = blockIdx.x;
  const float* xr = x + t * d;
  float ss = 0.f;
  for (int i = static_cast<int>(threadIdx.x); i < d; i += static_cast<int>(blockDim.x)) ss += xr[i] * xr[i];
  ss = BlockSum(ss, smem);
  const float scale = rsqrtf(ss / static_cast<float>(d) + eps);
  for (int i = static_cast<int>(threadIdx.x); i < d; i += static_cast<int>(blockDim.x)) {
    y[t * d + i] = __float2bfloat16(xr[i] * scale * w[i]);
  }
}

// One block per token: its hd / 2 angles. Once per step, so the 32 layers' RoPE read a table instead of each
// evaluating double sincos again (which, in the q|k|v GEMV's epilogue, sat at the end of every block).
__global__ void RopeTableKernel(const int32_t* positions, const double* inv_freq, int half, float2* cs) {
  PdlWait();
  PdlLaunchDependents();
  const int t = static_cast<int>(blockIdx.x);
  const double pos = static_cast<double>(positions[t]);
  for (int i = static_cast<int>(threadIdx.x); i < half; i += static_cast<int>(blockDim.x)) {
    double sd, cd;
    sincos(pos * inv_freq[i], &sd, &cd);
    cs[static_cast<int64_t>(t) * half + i] = make_float2(static_cast<float>(cd), static_cast<float>(sd));
  }
}

// One block per (token, head): blocks y < hq + hkv rotate that q or k head (one pair per thread), block
// y = hq + hkv copies the token's V row (a pair per thread); all through RopeWritePair. Many small blocks instead
// of one block looping per token: at B = 1 the loop's dependent loads made this a 10 us kernel (ncu, H200 base
// clocks) on the critical path.
__global__ void RopeWriteKernel(RopeWriteArgs a) {
  PdlWait();
  PdlLaunchDependents();
  const int t = static_cast<int>(blockIdx.x), head = static_cast<int>(blockIdx.y);
  const int half = a.hd / 2;
  const int qd = a.hq * a.hd, kvd = a.hkv * a.hd;
  const float* row = a.qkv + static_cast<int64_t>(t) * (qd + 2 * kvd);
  const int64_t slot = a.slot_rows[t];
  if (head < a.hq + a.hkv) {
    for (int i = static_cast<int>(threadIdx.x); i < half; i += static_cast<int>(blockDim.x)) {
      const int e = head * a.hd + 2 * i;  // element index within q|k (heads are contiguous, hd even)
      RopeWritePair(a, slot, t, e, row[e], row[e + 1], a.cs[static_cast<int64_t>(t) * half + i]);
    }
    return;
  }
  const int step = 2 * static_cast<int>(blockDim.x);
  for (int e = qd + kvd + 2 * static_cast<int>(threadIdx.x); e < qd + 2 * kvd; e += step) {
    RopeWritePair(a, slot, t, e, row[e], row[e + 1], make_float2(0.f, 0.f));  // v: rounded, not rotated
  }
}

__global__ void SwiGluKernel(const float* gu, int64_t n, int ff, __nv_bfloat16* h) {
  PdlWait();
  PdlLaunchDependents();
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * ff) return;
  const int64_t t = idx / ff, i = idx % ff;
  const float g = gu[t * 2 * ff + GateUpRow(i, false)], u = gu[t * 2 * ff + GateUpRow(i, true)];
  h[idx] = SwiGluBf16(g, u);
}

// kChecked: a row the host Sampler refuses (a NaN or +inf logit, or every logit -inf) gives -1 instead of an id,
// so a device argmax stands in for Sampler::Sample's greedy pick exactly, errors included.
template <bool kChecked>
__global__ void ArgmaxKernel(const float* logits, int vocab, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float best = -FLT_MAX;
  int bi = vocab;  // "none yet"; any real index beats it
  int bad = 0;
  for (int i = static_cast<int>(threadIdx.x); i < vocab; i += static_cast<int>(blockDim.x)) {
    const float v = row[i];
    if (kChecked) bad |= (isnan(v) || v == INFINITY) ? 1 : 0;
    if (v > best || (v == best && i < bi)) {  // NaN compares false: never taken
      best = v;
      bi = i;
    }
  }
  if (kChecked) bad = __syncthreads_or(bad);  // every thread reaches it: the loop above has no early exit
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) {
      best = ov;
      bi = oi;
    }
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = static_cast<int>(blockDim.x) / 32;
    best = lane < nw ? sv[lane] : -FLT_MAX;
    bi = lane < nw ? si[lane] : vocab;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) {
        best = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      if (kChecked) {
        out[blockIdx.x] = (bad == 0 && bi < vocab) ? bi : -1;  // bi == vocab: every logit -inf
      } else {
        out[blockIdx.x] = bi < vocab ? bi : 0;
      }
    }
  }
}

__device__ uint64_t SplitMix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void RandomBf16Kernel(__nv_bfloat16* dst, size_t n, uint64_t seed, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint64_t r = SplitMix(seed ^ (i * 0xd1b54a32d192ed03ull));
    const float u = static_cast<float>(r >> 40) * (1.f / 8388608.f) - 1.f;  // 24 bits -> [-1, 1)
    dst[i] = __float2bfloat16(scale * u);
  }
}

__global__ void FillF32Kernel(float* dst, size_t n, float v) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = v;
}

__global__ void F32ToBf16Kernel(const float* src, size_t n, __nv_bfloat16* dst) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = __float2bfloat16(src[i]);
  }
}

unsigned GridFor(size_t n) {
  const size_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 ? (blocks == 0 ? 1 : blocks) : 65536);
}

}  // namespace

Status LaunchEmbed(const int32_t* tokens, int n, const __nv_bfloat16* table, int d, float* x, cudaStream_t stream,
                   bool pdl) {
  if (n <= 0) return Status::Ok();
  const cudaError_t e = LaunchKernel(pdl, EmbedKernel, dim3(n), dim3(kRowThreads), 0, stream, tokens, table, d, x);
  return LaunchStatus("embed", e);
}

Status LaunchRmsNorm(const float* x, const float* w, int n, int d, float eps, __nv_bfloat16* y, cudaStream_t stream,
                     bool pdl) {
  if (n <= 0) return Status::Ok();
  // Vector path: d a multiple of 4 and at most 8 float4 per thread; else the scalar loop.
  const int per = (d / 4 + kRowThreads - 1) / kRowThreads;
  const bool vec = d % 4 == 0 && per <= 8 && (reinterpret_cast<uintptr_t>(x) & 15u) == 0 &&
                   (reinterpret_cast<uintptr_t>(w) & 15u) == 0 && (reinterpret_cast<uintptr_t>(y) & 7u) == 0;
  auto go = [&](auto kernel) {
    return LaunchKernel(pdl, kernel, dim3(n), dim3(kRowThreads), 0, stream, x, w, d, eps, y);
  };
  cudaError_t e;
  if (!vec) e = go(RmsNormKernel);
  else if (per <= 1) e = go(RmsNormVecKernel<1>);
  else if (per <= 2) e = go(RmsNormVecKernel<2>);
  else if (per <= 4) e = go(RmsNormVecKernel<4>);
  else e = go(RmsNormVecKernel<8>);
  return LaunchStatus("rmsnorm", e);
}

Status LaunchRopeTable(const int32_t* positions, const double* inv_freq, int n, int half, float2* cs,
                       cudaStream_t stream, bool pdl) {
  if (n <= 0) return Status::Ok();
  if (half <= 0) return InvalidArgument("cuda engine: rope table needs head_dim >= 2");
  const cudaError_t e = LaunchKernel(pdl, RopeTableKernel, dim3(n), dim3(64), 0, stream, positions, inv_freq, half, cs);
  return LaunchStatus("rope table", e);
}

Status LaunchRopeWriteKv(const RopeWriteArgs& a, cudaStream_t stream, bool pdl) {
  if (a.n <= 0) return Status::Ok();
  if (a.hd % 2 != 0) return InvalidArgument("cuda engine: rope needs an even head_dim");
  const cudaError_t e = LaunchKernel(pdl, RopeWriteKernel, dim3(a.n, a.hq + a.hkv + 1), dim3(128), 0, stream, a);
  return LaunchStatus("rope/kv write", e);
}

Status LaunchSwiGlu(const float* gu, int n, int ff, __nv_bfloat16* h, cudaStream_t stream, bool pdl) {
  const int64_t total = static_cast<int64_t>(n) * ff;
  if (total <= 0) return Status::Ok();
  const cudaError_t e = LaunchKernel(pdl, SwiGluKernel, dim3(static_cast<unsigned>((total + 255) / 256)), dim3(256), 0, stream, gu,
                     static_cast<int64_t>(n), ff, h);
  return LaunchStatus("swiglu", e);
}

Status LaunchArgmax(const float* logits, int n, int vocab, int32_t* out, cudaStream_t stream) {
  if (n <= 0) return Status::Ok();
  ArgmaxKernel<false><<<n, 1024, 0, stream>>>(logits, vocab, out);
  return LaunchStatus("argmax");
}

Status LaunchArgmaxChecked(const float* logits, int n, int vocab, int32_t* out, cudaStream_t stream) {
  if (n <= 0) return Status::Ok();
  ArgmaxKernel<true><<<n, 1024, 0, stream>>>(logits, vocab, out);
  return LaunchStatus("checked argmax");
}

Status LaunchRandomBf16(__nv_bfloat16* dst, size_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  RandomBf16Kernel<<<GridFor(n), 256, 0, stream>>>(dst, n, seed, scale);
  return LaunchStatus("random init");
}

Status LaunchFillF32(float* dst, size_t n, float value, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  FillF32Kernel<<<GridFor(n), 256, 0, stream>>>(dst, n, value);
  return LaunchStatus("fill");
}

Status LaunchF32ToBf16(const float* src, size_t n, __nv_bfloat16* dst, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  F32ToBf16Kernel<<<GridFor(n), 256, 0, stream>>>(src, n, dst);
  return LaunchStatus("f32->bf16");
}

}  // namespace fp::cuda_engine
