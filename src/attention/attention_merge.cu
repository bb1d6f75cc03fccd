// attention_merge.cu — split-KV merge: combines a sequence's per-split results (each normalised, with its log2
// sum-exp) into o and lse. One warp per (query token, head), 4 heads per CTA: the lanes load 32 splits' lse at
// once (max and weights by shuffles), then each lane owns a 4-wide slice of d and sums the splits' partials with
// the loads issued back to back. The v2 kernel (one CTA per token, threads looping over heads and, one by one,
// over splits) was latency-bound: a single long sequence (B = 1, 17-33 splits) merged on ONE CTA. The order is
// fixed (splits ascending for o, a fixed shuffle tree for the sum of weights), so the result depends only on the
// sequence's own splits (batch invariance).
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
  const int lane = threadIdx.x & 31, h = blockIdx.y * (kThreads / 32) + (threadIdx.x >> 5);
  if (h >= a.Hq) return;  // whole warps leave together
  const int ns = it.num_splits, x = lane * 4;
  const bool has_x = x < a.d;
  auto lse_of = [&](int k) { return a.partial_lse[int64_t(it.base + k * it.stride) * a.Hq + h]; };
  float M = -INFINITY;
  for (int k0 = 0; k0 < ns; k0 += 32) {
    if (k0 + lane < ns) M = fmaxf(M, lse_of(k0 + lane));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float L = 0.f;
  if (M != -INFINITY) {
    for (int k0 = 0; k0 < ns; k0 += 32) {
      const float wk = k0 + lane < ns ? Exp2(lse_of(k0 + lane) - M) : 0.f;
      L += wk;
      const int kn = min(32, ns - k0);
#pragma unroll 8
      for (int j = 0; j < kn; ++j) {
        const float w = __shfl_sync(0xffffffffu, wk, j);
        if (has_x) {
          const int64_t prow = int64_t(it.base + (k0 + j) * it.stride) * a.Hq + h;
          const float4 v = *reinterpret_cast<const float4*>(a.partial_o + prow * a.d + x);
          o.x += w * v.x;
          o.y += w * v.y;
          o.z += w * v.z;
          o.w += w * v.w;
        }
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) L += __shfl_xor_sync(0xffffffffu, L, off);
    const float inv = 1.f / L;
    o.x *= inv;
    o.y *= inv;
    o.z *= inv;
    o.w *= inv;
  }
  const int64_t orow = int64_t(it.token) * a.Hq + h;
  if (has_x) *reinterpret_cast<uint2*>(static_cast<T*>(a.o) + orow * a.d + x) = Pack4<T>(o.x, o.y, o.z, o.w);
  if (a.lse != nullptr && lane == 0) a.lse[orow] = M == -INFINITY ? -INFINITY : (M + __log2f(L)) * 0.6931471805599453f;
}

}  // namespace

Status LaunchDecodeMerge(const MergeArgs& args, int dtype_is_bf16, int num_merge, cudaStream_t stream) {
  if (num_merge == 0) return Status::Ok();
  const int heads_per_cta = kThreads / 32;  // one warp per head
  const dim3 grid(static_cast<unsigned>(num_merge),
                  static_cast<unsigned>((args.Hq + heads_per_cta - 1) / heads_per_cta));
  if (dtype_is_bf16) {
    MergeKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(args);
  } else {
    MergeKernel<__half><<<grid, kThreads, 0, stream>>>(args);
  }
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::decode
