// attention_merge.cu — split-KV merge: combines a sequence's per-split results (each normalised, with its log2
// sum-exp) into o and lse. A CTA serves a few heads of one query token (one thread per 4-wide slice of d), so a
// single long sequence (B = 1: one token, 17-33 splits) still spreads over Hq / 4 CTAs instead of one latency-bound
// CTA (the v2 layout; ~10 us of the 131k-token row). Splits are merged in split order, so the result depends only
// on the sequence's own splits (batch invariance); the arithmetic per element is the v2 kernel's, bit for bit.
//   o = sum_k 2^(lse_k - M) o_k / sum_k 2^(lse_k - M),  lse = (M + log2 sum_k 2^(lse_k - M)) * ln 2
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "attention/attention_decode_internal.h"
#include "attention/attention_decode_kernel.cuh"
#include "core/cuda_check.h"

namespace fp::decode {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads) MergeKernel(const __grid_constant__ MergeArgs a) {
  const MergeItem it = a.items[blockIdx.x];
  const int quarters = a.d / 4, heads_per_cta = kThreads / quarters;
  const int h = blockIdx.y * heads_per_cta + threadIdx.x / quarters, x = (threadIdx.x % quarters) * 4;
  if (h >= a.Hq) return;
  float M = -INFINITY;
#pragma unroll 4
  for (int k = 0; k < it.num_splits; ++k) {
    M = fmaxf(M, a.partial_lse[int64_t(it.base + k * it.stride) * a.Hq + h]);
  }
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float L = 0.f;
  if (M != -INFINITY) {
#pragma unroll 4
    for (int k = 0; k < it.num_splits; ++k) {
      const int64_t prow = int64_t(it.base + k * it.stride) * a.Hq + h;
      const float w = Exp2(a.partial_lse[prow] - M);
      const float4 v = *reinterpret_cast<const float4*>(a.partial_o + prow * a.d + x);
      L += w;
      o.x += w * v.x;
      o.y += w * v.y;
      o.z += w * v.z;
      o.w += w * v.w;
    }
    const float inv = 1.f / L;
    o.x *= inv;
    o.y *= inv;
    o.z *= inv;
    o.w *= inv;
  }
  const int64_t orow = int64_t(it.token) * a.Hq + h;
  *reinterpret_cast<uint2*>(static_cast<T*>(a.o) + orow * a.d + x) = Pack4<T>(o.x, o.y, o.z, o.w);
  if (a.lse != nullptr && x == 0) a.lse[orow] = M == -INFINITY ? -INFINITY : (M + __log2f(L)) * 0.6931471805599453f;
}

}  // namespace

Status LaunchDecodeMerge(const MergeArgs& args, int dtype_is_bf16, int num_merge, cudaStream_t stream) {
  if (num_merge == 0) return Status::Ok();
  const int heads_per_cta = kThreads / (args.d / 4);
  const dim3 grid(static_cast<unsigned>(num_merge), static_cast<unsigned>((args.Hq + heads_per_cta - 1) / heads_per_cta));
  if (dtype_is_bf16) {
    MergeKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(args);
  } else {
    MergeKernel<__half><<<grid, kThreads, 0, stream>>>(args);
  }
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::decode
