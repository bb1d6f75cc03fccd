// engine/cuda_gemv.cu — bf16 GEMV for small decode batches: y[n, out] = x[n, in] . W[out, in]^T + beta * y, n
// <= 8.
//
// Why: at B = 1 the decode step is a stream of weight reads (15 GB for Llama-3-8B) and cuBLAS's bf16 GemmEx
// at n = 1 reached about half the copy bandwidth (bench/results/e2e-*). Here each warp owns R output rows and
// streams them with 16-byte loads (ld.global.cs: W is read once, x stays in L1/L2), kU chunks of 256 elements
// issued before any is used so enough bytes are in flight, fp32 FMAs, a butterfly per (row, token) at the
// end. The reduction order is fixed by (in, lane), so results are deterministic and independent of `out`.
// defines: LaunchGemvBf16 (declared in cuda_engine_kernels.h)
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"

namespace fp::cuda_engine {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float Dot8(const uint4& w, const uint4& x) {
  const auto* wp = reinterpret_cast<const __nv_bfloat162*>(&w);
  const auto* xp = reinterpret_cast<const __nv_bfloat162*>(&x);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(wp[i]), b = __bfloat1622float2(xp[i]);
    s = fmaf(a.x, b.x, s);
    s = fmaf(a.y, b.y, s);
  }
  return s;
}

// NT: token slots (>= n), R: rows per warp, kU: 256-element chunks in flight per row and lane step.
// SWIGLU (NT = R = 1, out % 8 == 0): the block's 8 rows are one GateUpRow tile (4 gate + 4 up rows), so the
// block writes the tile's 4 SwiGLU outputs h[4 * blockIdx.x + i] instead of y (one kernel less per layer at B
// = 1).
template <int NT, int R, int kU, bool SWIGLU = false>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    GemvKernel(const __nv_bfloat16* __restrict__ w, int out, int in, const __nv_bfloat16* __restrict__ x,
               int n, float* __restrict__ y, float beta, __nv_bfloat16* __restrict__ h) {
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5)) * R;
  const uint4* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    wrow[r] =
        reinterpret_cast<const uint4*>(w + int64_t(min(row0 + r, out - 1)) * in);  // rows past out: unused
  }
  const int chunks = in / 8;  // 16-byte chunks per row
  uint4 wv[kU][R];
  auto load = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * 32;
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = c < chunks ? __ldcs(wrow[r] + c) : make_uint4(0, 0, 0, 0);
    }
  };
  load(lane);  // before the wait: weights never depend on the previous kernel (PDL)
  PdlWait();
  PdlLaunchDependents();
  if (row0 >= out) return;
  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
  }
  for (int c0 = lane; c0 < chunks; c0 += 32 * kU) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * 32;
      if (c >= chunks) continue;  // (not break: keeps the loop unrolled, wv in registers)
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t < n) {
          const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + int64_t(t) * in) + c);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][t] += Dot8(wv[u][r], xv);
        }
      }
    }
    if (c0 + 32 * kU < chunks) load(c0 + 32 * kU);
  }
  if constexpr (SWIGLU) {
    static_assert(NT == 1 && R == 1, "gemv swiglu: one token, one row per warp");
    __shared__ float tile[kWarpsPerBlock];
    float v = acc[0][0];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) tile[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 4) {  // the same expression as the SwiGLU kernel: bit-identical to GEMV + SwiGLU
      const float g = tile[threadIdx.x], u = tile[threadIdx.x + 4];
      h[4 * int64_t(blockIdx.x) + threadIdx.x] = SwiGluBf16(g, u);
    }
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        float v = acc[r][t];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && t < n && row0 + r < out) {
          float* dst = y + int64_t(t) * out + row0 + r;
          *dst = beta == 0.f ? v : v + beta * *dst;
        }
      }
    }
  }
}

template <int NT, int R, int kU>
Status Launch(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y, float beta,
              cudaStream_t stream, bool pdl) {
  constexpr int kRowsPerBlock = kWarpsPerBlock * R;
  FP_CUDA_RETURN_IF_ERROR(LaunchKernel(
      pdl, GemvKernel<NT, R, kU>, dim3((out + kRowsPerBlock - 1) / kRowsPerBlock), dim3(kWarpsPerBlock * 32),
      0, stream, w, out, in, x, n, y, beta, static_cast<__nv_bfloat16*>(nullptr)));
  return Status::Ok();
}

}  // namespace

bool GemvSupported(int out, int in, const void* w, const void* x, int n) {
  return n >= 1 && n <= kGemvMaxRows && out > 0 && in > 0 && in % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(w) & 15u) == 0 && (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
}

Status LaunchGemvBf16(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y,
                      float beta, cudaStream_t stream, bool pdl, int depth) {
  if (!GemvSupported(out, in, w, x, n) || (depth != 0 && depth != 4 && depth != 8 && depth != 16)) {
    return InvalidArgument("gemv: unsupported shape (n " + std::to_string(n) + ", in " + std::to_string(in) +
                           "), depth " + std::to_string(depth) + " or unaligned operands");
  }
  // Depth 4 is the measured choice for every Llama-3-8B matrix and n (bench_gemm on an H200: d8 and d16 were
  // slower, up to 2x at n >= 2: more registers, fewer resident warps).
  if (depth == 0) depth = 4;
  auto launch = [&]<int NT, int R>() {
    if (depth == 16) return Launch<NT, R, 16>(w, out, in, x, n, y, beta, stream, pdl);
    if (depth == 8) return Launch<NT, R, 8>(w, out, in, x, n, y, beta, stream, pdl);
    return Launch<NT, R, 4>(w, out, in, x, n, y, beta, stream, pdl);
  };
  // Two rows per warp once several tokens share each weight load (halves the x traffic through L1).
  if (n == 1) return launch.template operator()<1, 1>();
  if (n == 2) return launch.template operator()<2, 1>();
  if (n <= 4) return launch.template operator()<4, 2>();
  return launch.template operator()<8, 2>();
}

Status LaunchGemvSwiGluBf16(const __nv_bfloat16* w_gate_up, int ff, int in, const __nv_bfloat16* x,
                            __nv_bfloat16* h, cudaStream_t stream, bool pdl) {
  if (ff <= 0 || ff % 4 != 0 || h == nullptr || !GemvSupported(2 * ff, in, w_gate_up, x, 1)) {
    return InvalidArgument("gemv swiglu: unsupported shape (ff " + std::to_string(ff) + ", in " +
                           std::to_string(in) + ": ff a multiple of 4, in of 8) or unaligned operands");
  }
  // kWarpsPerBlock = 8 rows per block = one GateUpRow tile.
  static_assert(kWarpsPerBlock == 8, "gemv swiglu: a block must cover one 4 + 4 row tile");
  FP_CUDA_RETURN_IF_ERROR(LaunchKernel(pdl, GemvKernel<1, 1, 4, true>, dim3(ff / 4),
                                       dim3(kWarpsPerBlock * 32), 0, stream, w_gate_up, 2 * ff, in, x, 1,
                                       static_cast<float*>(nullptr), 0.f, h));
  return Status::Ok();
}

}  // namespace fp::cuda_engine
