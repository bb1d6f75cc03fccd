// engine/cuda_skinny_gemm.cuh — the skinny GEMM kernel template (design: cuda_skinny_gemm.cu). Internal to
// src/engine and bench/cuda/bench_gemm.cu (which sweeps the template parameters).
// defines: SkinnyArgs, Epilogue, SkinnyGemmKernel, SkinnySmemBytes, LaunchSkinnyKernel, kSegK, kPassTokens,
//          kSkinnySlices
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"

namespace fp::cuda_engine {

constexpr int kSegK = 32;        // k elements per segment: one 16-byte load per lane and two mmas
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

// The ring path's copies (sm_80+): 16 bytes global -> shared past L1, L2 evict-first (W streams once, as the
// register path's ld.global.cs).
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

struct SkinnyArgs {
  const __nv_bfloat16* w;  // [out, in]
  const __nv_bfloat16* x;  // [n, in]
  float* y;                // [n, out]       (kStore)
  __nv_bfloat16* h;        // [n, out / 2]   (kSwiGlu)
  int out, in, n;
  float beta;
};

enum class Epilogue { kStore, kSwiGlu };

// Partial-sum slots of the cross-warp sum: fewer than the warps (the sum in phases) when the full set would
// pass the 48 KiB static limit (8 warps x MT 4 x NR 4 = 64 KiB).
__host__ __device__ constexpr int SkinnyRedSlots(int warps, int elems) {
  int slots = warps;
  while (slots > 1 && slots * elems * 4 > 48 * 1024) slots /= 2;
  return slots;
}

// Dynamic shared memory of one block: none on the register path (RING 0); else the W ring ([W warps][RING
// stages][U segments][NR row tiles][32 lanes] x 16 bytes), which the cross-warp sum reuses after the K loop.
template <int MT, int NR, int W, int U, int RING>
__host__ __device__ constexpr int SkinnySmemBytes() {
  if (RING == 0) return 0;
  const int ring = W * RING * U * NR * 32 * 16;
  const int red = SkinnyRedSlots(W, MT * NR * 32 * 4) * MT * NR * 32 * 4 * 4;
  return ring > red ? ring : red;
}

// MT m-tiles (16 tokens each) and NR row tiles (8 rows each) per warp; W warps per block splitting K (a
// deployment constant: it fixes the summation order); U segments whose W loads are in flight per lane before
// the first is used. CONTIG: warp w owns the contiguous K range of segments [w * nseg / W, (w + 1) * nseg /
// W), so its U in-flight loads are U * 64 contiguous bytes of each row (DRAM page locality); else segments w,
// w + W, ... MINB: minimum blocks per SM for __launch_bounds__ (0 = none): caps registers to raise occupancy.
// DB: double-buffer the W registers (the next U segments load while this U is used) or not (half the
// registers: more resident warps carry the loads in flight instead).
// RING > 0: W goes through a per-warp shared-memory ring of RING stages of U segments instead of registers
// (DB unused). Each lane cp.asyncs the same 16-byte pieces load_w would load into its own lane-linear slots
// and reads back only those (conflict-free lds.128), so its own cp.async.wait_group is all the
// synchronization; RING - 1 stages stay in flight. Bytes in flight are bounded by shared memory, not
// registers, so more warps are resident. The segments, mma order and sums are the register path's: the bits
// are the same.
template <int MT, int NR, Epilogue E, int W, int U, bool CONTIG = true, int MINB = 0, bool DB = true,
          int RING = 0>
__global__ void __launch_bounds__(W * 32, MINB) SkinnyGemmKernel(const SkinnyArgs a) {
  static_assert(RING == 0 || RING >= 2, "skinny gemm: a ring needs >= 2 stages");
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

  // Per-warp partial sums, added in warp order (SkinnyRedSlots: in phases where a full set would not fit).
  constexpr int kElems = MT * NR * 32 * 4;
  constexpr int kSlots = SkinnyRedSlots(kWarps, kElems);
  static_assert(kSlots * kElems * 4 <= 48 * 1024 && kWarps % kSlots == 0, "skinny gemm: tile too large");
  constexpr int kPer = (kElems + kWarps * 32 - 1) / (kWarps * 32);  // elements summed per thread
  // Static on the register path; on the ring path the ring's memory, once every warp has left its K loop.
  extern __shared__ uint4 skinny_dyn_smem[];  // [W][RING][U][NR][32] 16-byte W pieces (RING > 0)
  __shared__ float red_static[RING > 0 ? 1 : kSlots * kElems];
  using Red = float[kSlots][MT][NR][32][4];
  Red& red = *reinterpret_cast<Red*>(RING > 0 ? static_cast<void*>(skinny_dyn_smem) : red_static);

  // The ring: this lane's slot of stage st, segment u, row tile r is ring[((st * U + u) * NR + r) * 32].
  constexpr int kStage = U * NR * 32;  // uint4 per stage of one warp
  const uint4* const ring = skinny_dyn_smem + warp * (RING * kStage) + lane;
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(ring));
  uint64_t pol = 0;
  if constexpr (RING > 0) pol = SkinnyEvictFirst();
  // Copies the pieces of segment group `grp` (segments grp * U ..) into stage `st` and commits them as one
  // group, empty past my_segs (the consumer skips those segments, as the register path does), so that the
  // group count stays uniform for wait_group.
  auto issue = [&](int grp, int st) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = grp * U + u;
      if (i >= my_segs) break;
      const int s = seg(i);
#pragma unroll
      for (int r = 0; r < NR; ++r)
        SkinnyCpAsync16(ring_s + static_cast<uint32_t>(((st * U + u) * NR + r) * 32 * 16),
                        wrow[r] + s * (kSegK / 8), pol);
    }
    SkinnyCpAsyncCommit();
  };

  uint4 wv[U][NR];
  if constexpr (RING > 0) {
#pragma unroll
    for (int i = 0; i < RING - 1; ++i) issue(i, i);  // before the wait: weights are constant
  } else {
    load_w(wv, 0);  // before the wait: weights are constant
  }
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
    if constexpr (RING > 0) {
      if (pass0 > 0) {
#pragma unroll
        for (int i = 0; i < RING - 1; ++i) issue(i, i);
      }
      int st = 0;  // stage of group grp (group grp + RING - 1 goes to the one before)
      for (int grp = 0; grp * U < my_segs; ++grp) {
        SkinnyCpAsyncWait<RING - 2>();  // this lane's copies of group grp have landed
        // Refill the stage read in the previous iteration: its values are in registers and used by now.
        issue(grp + RING - 1, st == 0 ? RING - 1 : st - 1);
        const uint4* const stage = ring + st * kStage;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (grp * U + u >= my_segs) continue;
          uint4 wr[NR];
#pragma unroll
          for (int r = 0; r < NR; ++r) wr[r] = stage[(u * NR + r) * 32];
          mma_seg(grp * U + u, wr);
        }
        st = st + 1 == RING ? 0 : st + 1;
      }
      __syncthreads();  // every warp is out of its ring before `red` reuses it
    } else {
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

// Launches one configuration (grid: a block per 8 * NR rows). A ring opts in to its dynamic shared memory
// (needed above 48 KiB) once per instantiation, on the current device (the engine uses one).
template <int MT, int NR, Epilogue E, int W, int U, bool CONTIG = true, int MINB = 0, bool DB = true,
          int RING = 0>
cudaError_t LaunchSkinnyKernel(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = SkinnySmemBytes<MT, NR, W, U, RING>();
  static_assert(kSmem <= 227 * 1024, "skinny gemm: ring larger than a block's shared memory");
  constexpr auto kernel = SkinnyGemmKernel<MT, NR, E, W, U, CONTIG, MINB, DB, RING>;
  if constexpr (RING > 0) {
    static const cudaError_t attr =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (attr != cudaSuccess) return attr;
  }
  const dim3 grid(static_cast<unsigned>((a.out + 8 * NR - 1) / (8 * NR)));
  return LaunchKernel(pdl, kernel, grid, dim3(W * 32), kSmem, stream, a);
}

}  // namespace fp::cuda_engine
