// engine/cuda_skinny_gemm.cuh — the skinny GEMM kernel template (design: cuda_skinny_gemm.cu). Internal to
// src/engine and bench/cuda/bench_gemm.cu (which sweeps the template parameters).
// defines: SkinnyArgs, Epilogue, SkinnyGemmKernel, kSegK, kPassTokens
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"

namespace fp::cuda_engine {

constexpr int kSegK = 32;        // k elements per segment: one 16-byte load per lane and two mmas
constexpr int kPassTokens = 64;  // tokens per pass (MT <= 4 m-tiles)

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                    uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

struct SkinnyArgs {
  const __nv_bfloat16* w;  // [out, in]
  const __nv_bfloat16* x;  // [n, in]
  float* y;                // [n, out]       (kStore)
  __nv_bfloat16* h;        // [n, out / 2]   (kSwiGlu)
  int out, in, n;
  float beta;
};

enum class Epilogue { kStore, kSwiGlu };

// MT m-tiles (16 tokens each) and NR row tiles (8 rows each) per warp; W warps per block splitting K (a
// deployment constant: it fixes the summation order); U segments whose W loads are in flight per lane before
// the first is used. CONTIG: warp w owns the contiguous K range of segments [w * nseg / W, (w + 1) * nseg /
// W), so its U in-flight loads are U * 64 contiguous bytes of each row (DRAM page locality); else segments w,
// w + W, ... MINB: minimum blocks per SM for __launch_bounds__ (0 = none): caps registers to raise occupancy.
// DB: double-buffer the W registers (the next U segments load while this U is used) or not (half the
// registers: more resident warps carry the loads in flight instead).
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

  const uint4* wrow[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    const int row = min(row_base + r * 8 + g, a.out - 1);  // rows past `out` load a real row, never stored
    wrow[r] = reinterpret_cast<const uint4*>(a.w + int64_t{row} * a.in) + q;
  }
  auto load_w = [&](uint4(&wv)[U][NR], int it0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int s = seg(it0 + u);
#pragma unroll
      for (int r = 0; r < NR; ++r)
        wv[u][r] = it0 + u < my_segs ? __ldcs(wrow[r] + s * (kSegK / 8)) : make_uint4(0, 0, 0, 0);
    }
  };

  // Per-warp partial sums, added in warp order. Fewer slots than warps (the sum in phases) when the full set
  // would pass the 48 KiB static limit (8 warps x MT 4 x NR 4 = 64 KiB).
  constexpr int kElems = MT * NR * 32 * 4;
  constexpr int kSlots = [] {
    int slots = kWarps;
    while (slots > 1 && slots * kElems * 4 > 48 * 1024) slots /= 2;
    return slots;
  }();
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
    if (pass0 > 0) load_w(wv, 0);
    for (int it = 0; it < my_segs; it += U) {
      uint4 wn[U][NR];
      if (DB && it + U < my_segs) load_w(wn, it + U);  // next group in flight while this one is used
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (it + u >= my_segs) continue;  // (not break: the loop must stay unrolled for wv's registers)
        const int k = seg(it + u) * kSegK + 8 * q;
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const int t0 = pass0 + m * 16 + g, t1 = t0 + 8;
          const uint4 z = make_uint4(0, 0, 0, 0);
          const uint4 xlo =
              t0 < a.n ? __ldg(reinterpret_cast<const uint4*>(a.x + int64_t{t0} * a.in + k)) : z;
          const uint4 xhi =
              t1 < a.n ? __ldg(reinterpret_cast<const uint4*>(a.x + int64_t{t1} * a.in + k)) : z;
#pragma unroll
          for (int r = 0; r < NR; ++r) {
            Mma(acc[m][r], xlo.x, xhi.x, xlo.y, xhi.y, wv[u][r].x, wv[u][r].y);
            Mma(acc[m][r], xlo.z, xhi.z, xlo.w, xhi.w, wv[u][r].z, wv[u][r].w);
          }
        }
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

}  // namespace fp::cuda_engine
