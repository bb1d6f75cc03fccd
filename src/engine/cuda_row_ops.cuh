// engine/cuda_row_ops.cuh — the per-row arithmetic of RMSNorm and RoPE, written once for the separate kernels
// (cuda_engine_kernels.cu) and the GEMVs that fuse them (cuda_gemv.cu), so a fused path is bit-identical to the
// separate kernels by construction (the same expressions, the same reduction over the same 256 threads).
// defines: kRowThreads, RmsNormRowVec, RopeRotatePair, RopeWritePair
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda_block_reduce.cuh"
#include "engine/cuda_engine_kernels.h"

namespace fp::cuda_engine {

constexpr int kRowThreads = 256;  // threads of every block that normalizes a row (the reduction order needs it)

// y[0, d) = bf16(x * rsqrt(mean(x^2) + eps) * w) for one row, by a block of kRowThreads threads: thread i owns
// float4 i + k * kRowThreads (k < V, V * 4 * kRowThreads >= d, d % 4 == 0), issuing all its loads before the
// first use. x and w 16-byte aligned, y 4-byte aligned (global or shared). Every thread of the block must call.
template <int V>
__device__ __forceinline__ void RmsNormRowVec(const float* x, const float* w, int d, float eps,
                                              __nv_bfloat16* y, float* smem /* [32] */) {
  const int nv = d / 4;
  const auto* xr = reinterpret_cast<const float4*>(x);
  const auto* wr = reinterpret_cast<const float4*>(w);
  float4 xv[V], wv[V];
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kRowThreads;
    xv[k] = i < nv ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    wv[k] = i < nv ? wr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float ss = 0.f;  // explicit FMAs: the same rounding wherever this is inlined
#pragma unroll
  for (int k = 0; k < V; ++k) {
    ss = __fmaf_rn(xv[k].x, xv[k].x, ss);
    ss = __fmaf_rn(xv[k].y, xv[k].y, ss);
    ss = __fmaf_rn(xv[k].z, xv[k].z, ss);
    ss = __fmaf_rn(xv[k].w, xv[k].w, ss);
  }
  ss = BlockSum(ss, smem);
  const float scale = rsqrtf(ss / static_cast<float>(d) + eps);
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kRowThreads;
    if (i >= nv) continue;
    auto* dst = reinterpret_cast<__nv_bfloat162*>(y) + 2 * i;
    dst[0] = __floats2bfloat162_rn(xv[k].x * scale * wv[k].x, xv[k].y * scale * wv[k].y);
    dst[1] = __floats2bfloat162_rn(xv[k].z * scale * wv[k].z, xv[k].w * scale * wv[k].w);
  }
}

// RoPE "normal" mode on one adjacent pair (x0, x1) of a q or k head, rotated by the angle whose (cos, sin) is cs
// (the step's table, RopeTableKernel: angles in double like the CPU engine); the products rounded one by one (no
// contraction that could differ by call site).
__device__ __forceinline__ __nv_bfloat162 RopeRotatePair(float x0, float x1, float2 cs) {
  const float c = cs.x, s = cs.y;
  return __halves2bfloat162(__float2bfloat16(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s))),
                            __float2bfloat16(__fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c))));
}

// RopeWriteKernel's output for elements e, e + 1 (e even) of token t's q|k|v row, from their fp32 values: q and k
// rotated by cs (the step's table entry of pair (e % hd) / 2) into q_out / the k pool row `slot` (and k_cap), v
// rounded into the v pool row (and v_cap). RopeWriteKernel and the fused q|k|v GEMV's epilogue.
__device__ __forceinline__ void RopeWritePair(const RopeWriteArgs& r, int64_t slot, int t, int e, float v0, float v1,
                                              float2 cs) {
  const int qd = r.hq * r.hd, kvd = r.hkv * r.hd;
  if (e < qd + kvd) {
    const __nv_bfloat162 p = RopeRotatePair(v0, v1, cs);
    __nv_bfloat16* dst = e < qd ? r.q_out + int64_t{t} * qd + e : r.k_pool + slot * kvd + (e - qd);
    dst[0] = p.x;
    dst[1] = p.y;
    if (e >= qd && r.k_cap != nullptr) {
      r.k_cap[int64_t{t} * kvd + (e - qd)] = p.x;
      r.k_cap[int64_t{t} * kvd + (e - qd) + 1] = p.y;
    }
    return;
  }
  const int ve = e - qd - kvd;
  const __nv_bfloat16 b0 = __float2bfloat16(v0), b1 = __float2bfloat16(v1);
  r.v_pool[slot * kvd + ve] = b0;
  r.v_pool[slot * kvd + ve + 1] = b1;
  if (r.v_cap != nullptr) {
    r.v_cap[int64_t{t} * kvd + ve] = b0;
    r.v_cap[int64_t{t} * kvd + ve + 1] = b1;
  }
}

}  // namespace fp::cuda_engine
