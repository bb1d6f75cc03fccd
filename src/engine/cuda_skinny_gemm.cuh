// engine/cuda_skinny_gemm.cuh — the skinny GEMM kernel template (design: cuda_skinny_gemm.cu). Internal to
// src/engine and bench/cuda/bench_gemm.cu (which sweeps the template parameters).
// defines: SkinnyArgs, SkinnyWRow, SkinnyWSegStride, Epilogue, SkinnyEmit8, SkinnyRingPrologue, SkinnyGemmKernel,
//          LaunchSkinnyKernel, kSegK, kPassTokens, kSkinnySlices
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"

namespace fp::cuda_engine {

constexpr int kSegK = kWeightSegK;  // k elements per segment: one 16-byte load per lane and two mmas
constexpr int kPassTokens = 64;  // tokens per pass (MT <= 4 m-tiles)
// The engine's K split: contiguous slices of segments, each accumulated alone, added in slice order. One skinny
// warp per slice (W of LaunchSkinnyKernel), one pass per slice in the tiled schedule. It fixes the summation
// order, so it is the same for every n, shape and schedule.
constexpr int kSkinnySlices = 8;

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                    uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// W's copies in the streaming and tiled schedules (sm_80+): 16 bytes global -> shared past L1, L2 evict-first (W
// streams once, as the register schedule's ld.global.cs).
__device__ __forceinline__ uint64_t SkinnyEvictFirst() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
__device__ __forceinline__ void SkinnyCpAsync16(uint32_t dst, const void* src, uint64_t pol) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "l"(pol)
               : "memory");
}
__device__ __forceinline__ void SkinnyCpAsyncCommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void SkinnyCpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// The first STAGES - 1 stages of a block's cp.async ring (the tiled and wgmma schedules): W before the PDL wait
// (weights never depend on the previous kernel), x after it, one commit group a stage (group 0 also holds all the
// prologue's W, so waiting for it waits for them too). load_w / load_x(it, stage) fill stage `stage` with the
// ring's `it`-th step.
template <int STAGES, typename LoadW, typename LoadX>
__device__ __forceinline__ void SkinnyRingPrologue(int niter, const LoadW& load_w, const LoadX& load_x) {
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < niter) load_w(s, s);
  }
  PdlWait();
  PdlLaunchDependents();
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < niter) load_x(s, s);
    SkinnyCpAsyncCommit();
  }
}

struct SkinnyArgs {
  const __nv_bfloat16* w;  // [out, in] in `layout` (WeightLayout, cuda_engine_kernels.h)
  const __nv_bfloat16* x;  // [n, in]
  float* y;                // [n, out]       (kStore)
  __nv_bfloat16* h;        // [n, out / 2]   (kSwiGlu)
  int out, in, n;
  float beta;
  WeightLayout layout = WeightLayout::kRowMajor;
};

// Element offset of W[row][0] and the elements between a row's consecutive 32-k segments, in either layout:
// W[row][s * 32 + kk] is at SkinnyWRow(a, row) + s * SkinnyWSegStride(a) + kk.
__device__ __forceinline__ int64_t SkinnyWRow(const SkinnyArgs& a, int row) {
  if (a.layout == WeightLayout::kSegmentTiled) {
    return (int64_t{row / kWeightTileRows} * (a.in / kSegK) * kWeightTileRows + row % kWeightTileRows) * kSegK;
  }
  return int64_t{row} * a.in;
}
__device__ __forceinline__ int SkinnyWSegStride(const SkinnyArgs& a) {
  return a.layout == WeightLayout::kSegmentTiled ? kWeightTileRows * kSegK : kSegK;
}

// Element offset, inside a row's 32-k segment as W lies in memory, of lane q's 4-k piece of MMA step `step`
// (k 8q + 4 step .. + 3; cuda_skinny_gemm.cu): next to each other in row-major W, grouped by step in
// segment-tiled W (WeightStoredK), so a lane reads 2 x 8 bytes there.
__host__ __device__ __forceinline__ int SkinnyWPieceK(const SkinnyArgs& a, int q, int step) {
  return a.layout == WeightLayout::kSegmentTiled ? 16 * step + 4 * q : 8 * q + 4 * step;
}

enum class Epilogue { kStore, kSwiGlu };

// The epilogue of 8 consecutive rows [row, row + 8) of token tok from their fp32 sums v (the tiled schedules):
// y = v + beta * y (the skinny kernel's expression), or SwiGLU of the 4 gate + 4 up rows of a GateUpRow tile.
// Nothing past n or out is written.
template <Epilogue E>
__device__ __forceinline__ void SkinnyEmit8(const SkinnyArgs& a, int tok, int row, const float (&v)[8]) {
  if (tok >= a.n || row >= a.out) return;
  if constexpr (E == Epilogue::kStore) {
    float* const dst = a.y + int64_t{tok} * a.out + row;
    if (row + 8 <= a.out && (reinterpret_cast<uintptr_t>(dst) & 15u) == 0) {  // two 16-byte stores (whole sectors)
      float4* const d4 = reinterpret_cast<float4*>(dst);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float4 o = make_float4(v[4 * h], v[4 * h + 1], v[4 * h + 2], v[4 * h + 3]);
        if (a.beta != 0.f) {
          const float4 y = d4[h];
          o = make_float4(o.x + a.beta * y.x, o.y + a.beta * y.y, o.z + a.beta * y.z, o.w + a.beta * y.w);
        }
        d4[h] = o;
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (row + i < a.out) dst[i] = a.beta == 0.f ? v[i] : v[i] + a.beta * dst[i];
    }
  } else {
    __nv_bfloat16* const dst = a.h + int64_t{tok} * (a.out / 2) + row / 2;
#pragma unroll
    for (int i = 0; i < 4; ++i) dst[i] = SwiGluBf16(v[i], v[i + 4]);
  }
}

// Partial-sum slots of the cross-warp sum: fewer than the warps (the sum in phases) when the full set would
// pass the 48 KiB static limit (8 warps x MT 4 x NR 4 = 64 KiB).
__host__ __device__ constexpr int SkinnyRedSlots(int warps, int elems) {
  int slots = warps;
  while (slots > 1 && slots * elems * 4 > 48 * 1024) slots /= 2;
  return slots;
}

// MT m-tiles (16 tokens each) and NR row tiles (8 rows each) per warp; W warps per block splitting K (a
// deployment constant: it fixes the summation order); U segments whose W loads are in flight per lane before
// the first is used. CONTIG: warp w owns the contiguous K range of segments [w * nseg / W, (w + 1) * nseg /
// W), so its U in-flight loads are U * 64 contiguous bytes of each row (DRAM page locality); else segments w,
// w + W, ... MINB: minimum blocks per SM for __launch_bounds__ (0 = none): caps registers to raise occupancy.
// DB: double-buffer the W registers (the next U segments load while this U is used) or not (half the
// registers: more resident warps carry the loads in flight instead). W in either layout (SkinnyWRow).
template <int MT, int NR, Epilogue E, int W, int U, bool CONTIG = true, int MINB = 0, bool DB = true>
__global__ void __launch_bounds__(W * 32, MINB) SkinnyGemmKernel(const SkinnyArgs a) {
  constexpr int kWarps = W;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, q = lane & 3;
  const int row_base = static_cast<int>(blockIdx.x) * 8 * NR;
  const int nseg = a.in / kSegK;
  const int seg_lo = CONTIG ? warp * nseg / kWarps : warp;
  const int my_segs =
      CONTIG ? (warp + 1) * nseg / kWarps - seg_lo : (nseg > warp ? (nseg - warp + kWarps - 1) / kWarps : 0);
  // The i-th segment of this warp.
  auto seg = [&](int i) { return CONTIG ? seg_lo + i : warp + i * kWarps; };

  // This lane's two 8-byte pieces of a row's segment (SkinnyWPieceK): wrow[r] + seg * seg_stride and 4 or 16 on
  // (segment-tiled W: two loads; row-major: adjacent, one 16-byte load).
  const __nv_bfloat16* wrow[NR];
  const int seg_stride = SkinnyWSegStride(a);
  const bool tiled = a.layout == WeightLayout::kSegmentTiled;
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    const int row = min(row_base + r * 8 + g, a.out - 1);  // rows past `out` load a real row, never stored
    wrow[r] = a.w + SkinnyWRow(a, row) + SkinnyWPieceK(a, q, 0);
  }
  auto load_w = [&](uint4(&wv)[U][NR], int it0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int s = seg(it0 + u);
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        if (it0 + u < my_segs) {
          const __nv_bfloat16* const p = wrow[r] + s * seg_stride;  // < 2^31: in * 16 elements
          if (tiled) {  // two 8-byte pieces 32 bytes apart (an immediate offset: no second address live)
            const uint2 lo = __ldcs(reinterpret_cast<const uint2*>(p));
            const uint2 hi = __ldcs(reinterpret_cast<const uint2*>(p + 16));
            wv[u][r] = make_uint4(lo.x, lo.y, hi.x, hi.y);
          } else {  // row-major: one 16-byte load
            wv[u][r] = __ldcs(reinterpret_cast<const uint4*>(p));
          }
        } else {
          wv[u][r] = make_uint4(0, 0, 0, 0);
        }
      }
    }
  };

  // Per-warp partial sums, added in warp order (SkinnyRedSlots: in phases where a full set would not fit).
  constexpr int kElems = MT * NR * 32 * 4;
  constexpr int kSlots = SkinnyRedSlots(kWarps, kElems);
  static_assert(kSlots * kElems * 4 <= 48 * 1024 && kWarps % kSlots == 0, "skinny gemm: tile too large");
  constexpr int kPer = (kElems + kWarps * 32 - 1) / (kWarps * 32);  // elements summed per thread
  __shared__ float red[kSlots][MT][NR][32][4];

  uint4 wv[U][NR];
  load_w(wv, 0);  // before the wait: weights are constant
  PdlWait();
  PdlLaunchDependents();

  for (int pass0 = 0; pass0 < a.n; pass0 += kPassTokens) {
    float acc[MT][NR][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int r = 0; r < NR; ++r) acc[m][r][0] = acc[m][r][1] = acc[m][r][2] = acc[m][r][3] = 0.f;
    }
    // The warp's i-th segment into acc: x's two 16-byte pieces per m-tile, two mmas per row tile (the same
    // permuted k order on W's piece wr[r] and on x).
    auto mma_seg = [&](int i, const uint4(&wr)[NR]) {
      const int k = seg(i) * kSegK + 8 * q;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const int t0 = pass0 + m * 16 + g, t1 = t0 + 8;
        const uint4 z = make_uint4(0, 0, 0, 0);
        const uint4 xlo = t0 < a.n ? __ldg(reinterpret_cast<const uint4*>(a.x + int64_t{t0} * a.in + k)) : z;
        const uint4 xhi = t1 < a.n ? __ldg(reinterpret_cast<const uint4*>(a.x + int64_t{t1} * a.in + k)) : z;
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          Mma(acc[m][r], xlo.x, xhi.x, xlo.y, xhi.y, wr[r].x, wr[r].y);
          Mma(acc[m][r], xlo.z, xhi.z, xlo.w, xhi.w, wr[r].z, wr[r].w);
        }
      }
    };
    if (pass0 > 0) load_w(wv, 0);
    for (int it = 0; it < my_segs; it += U) {
      uint4 wn[U][NR];
      if (DB && it + U < my_segs) load_w(wn, it + U);  // next group in flight while this one is used
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (it + u >= my_segs) continue;  // (not break: the loop must stay unrolled for wv's registers)
        mma_seg(it + u, wv[u]);
      }
      if (it + U < my_segs) {
        if constexpr (DB) {
#pragma unroll
          for (int u = 0; u < U; ++u) {
#pragma unroll
            for (int r = 0; r < NR; ++r) wv[u][r] = wn[u][r];
          }
        } else {
          load_w(wv, it + U);
        }
      }
    }
    // Sum the warps in order w0 + w1 + ... (the same association in one phase or two), one (m, r, lane, j)
    // element per thread step; then store.
    float* const sum = &red[0][0][0][0][0];
    float part[kPer];
#pragma unroll
    for (int phase = 0; phase < kWarps / kSlots; ++phase) {
      if (warp / kSlots == phase) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
#pragma unroll
          for (int r = 0; r < NR; ++r) {
#pragma unroll
            for (int j = 0; j < 4; ++j) red[warp % kSlots][m][r][lane][j] = acc[m][r][j];
          }
        }
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int e = static_cast<int>(threadIdx.x) + i * kWarps * 32;
        if (e >= kElems) continue;
        float s = phase == 0 ? sum[e] : part[i] + sum[e];
#pragma unroll
        for (int w = 1; w < kSlots; ++w) s += sum[w * kElems + e];
        part[i] = s;
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kWarps * 32;
      if (e < kElems) sum[e] = part[i];
    }
    __syncthreads();
    for (int e = static_cast<int>(threadIdx.x); e < kElems; e += kWarps * 32) {
      const int j = e & 3, ln = (e >> 2) & 31, r = (e >> 7) % NR, m = (e >> 7) / NR;
      const int eg = ln >> 2, eq = ln & 3;
      const int t = pass0 + m * 16 + eg + (j >= 2 ? 8 : 0);
      const int row = row_base + r * 8 + 2 * eq + (j & 1);
      if (t >= a.n || row >= a.out) continue;
      if constexpr (E == Epilogue::kStore) {
        float* dst = a.y + int64_t{t} * a.out + row;
        *dst = a.beta == 0.f ? sum[e] : sum[e] + a.beta * *dst;
      } else {
        // Tile rows 0..3 are gates, 4..7 the ups of the same ff indices: lane eq < 2 holds a gate, eq + 2 its
        // up.
        if (eq >= 2) continue;
        const float gate = sum[e], up = sum[e + 2 * 4];  // lane + 2: 8 floats further
        const int f = (row_base + r * 8) / 2 + 2 * eq + (j & 1);
        a.h[int64_t{t} * (a.out / 2) + f] = SwiGluBf16(gate, up);
      }
    }
    __syncthreads();  // `red` is reused by the next pass
  }
}

// Launches one configuration (grid: a block per 8 * NR rows).
template <int MT, int NR, Epilogue E, int W, int U, bool CONTIG = true, int MINB = 0, bool DB = true>
cudaError_t LaunchSkinnyKernel(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  constexpr auto kernel = SkinnyGemmKernel<MT, NR, E, W, U, CONTIG, MINB, DB>;
  const dim3 grid(static_cast<unsigned>((a.out + 8 * NR - 1) / (8 * NR)));
  return LaunchKernel(pdl, kernel, grid, dim3(W * 32), 0, stream, a);
}

}  // namespace fp::cuda_engine
