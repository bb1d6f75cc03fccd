// engine/cuda_skinny_tiled.cuh — the skinny GEMM's arithmetic in a tiled schedule, for more than 16 tokens
// (design: cuda_skinny_gemm.cu). Internal to src/engine and bench/cuda/bench_gemm.cu.
//
// Why: the skinny kernel (cuda_skinny_gemm.cuh) gives each 32-row block all of x, so at 64 tokens x is read
// from L2 twice as often as W and the kernel ran at 1.8x cuBLAS. This kernel computes the same bits from a
// 64-token x 128-row tile staged in shared memory:
//   - A token's output element is, in both kernels: for each of the 8 K slices (slice s = segments
//     [s * nseg / 8, (s + 1) * nseg / 8), the skinny kernel's warp s), a fresh fp32 accumulator fed by two
//     mma.sync m16n8k16 per 32-element segment in increasing order, with the same permuted k (lane q holds
//     k 8q..8q+7 of x and W); then the slice sums added left to right, s0 + s1 + ... + s7. An mma output element
//     depends only on its own A row, B column and accumulator, so the tile shape, a token's row in the tile
//     and the grid never change it (tests: SkinnyTiled.*, SkinnyGemm.BatchInvariant).
//   - Here one block walks its slices in order and folds each finished slice into a running total, so the
//     sum needs no extra registers per slice. Fragments come from shared memory with one lds.128 per lane
//     (8 consecutive k), which is the skinny kernel's fragment layout; rows are 64 bytes, so each quarter-warp
//     reads 128 contiguous bytes (no bank conflicts) without a swizzle.
//   - W and x stream through a STAGES-deep cp.async ring of BKS segments per stage (W with L2 evict-first: it
//     is read once); W's first stages are issued before PdlWait (weights never depend on the kernel before).
//   - Measured (bench_gemm --tiled, H200, 64 tokens): gate|up 95 us (cuBLAS 74, the register schedule 137);
//     the engine runs it only where its tiles fill the SMs (cuda_skinny_gemm.cu). A split along K for the
//     matrices with fewer tiles (unit 0 folding its slices, the others storing each slice, the last to arrive
//     adding them in order) was bit-identical but lost to the register schedule there and was removed.
// defines: SkinnyTiledKernel, SkinnyTiledSmemBytes, SkinnyEmitTile, LaunchSkinnyTileGrid, LaunchSkinnyTiledKernel,
//          kTiledTokens, kTiledRows
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/cuda_pdl.cuh"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"

namespace fp::cuda_engine {

constexpr int kTiledTokens = 64;   // token rows of a tile (4 m-tiles)
constexpr int kTiledRows = 128;    // W rows of a tile (16 n-tiles)
constexpr int kTiledThreads = 256; // 8 warps: 2 along tokens x 4 along rows, 32 x 32 outputs each
constexpr int kTiledPad = 8;       // floats of padding per row of the fp32 epilogue tile (conflict-free float2)

// 4 bytes global -> shared.
__device__ __forceinline__ void TiledCpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}

template <int BKS, int STAGES>
__host__ __device__ constexpr int SkinnyTiledSmemBytes() {
  const int ring = STAGES * BKS * (kTiledRows + kTiledTokens) * kSegK * 2;
  const int tile = kTiledTokens * (kTiledRows + kTiledPad) * 4;
  return ring > tile ? ring : tile;
}

// The epilogue of a 64-token x ROWS tile from its fp32 sums staged in shared memory (tile[t * ld + r]): each
// thread emits 8 consecutive rows (a gate|up tile) of one token (SkinnyEmit8). The tiled and wgmma schedules.
template <Epilogue E, int ROWS, int THREADS>
__device__ __forceinline__ void SkinnyEmitTile(const SkinnyArgs& a, const float* tile, int ld, int tok0, int row0,
                                               int tid) {
  constexpr int kGroups = ROWS / 8;
  for (int i = tid; i < kTiledTokens * kGroups; i += THREADS) {
    const int t = i / kGroups, r8 = (i % kGroups) * 8;
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = tile[t * ld + r8 + k];
    SkinnyEmit8<E>(a, tok0 + t, row0 + r8, v);
  }
}

// Grid: (row tiles, token tiles). BKS segments of 32 k per stage, STAGES stages; MINB blocks per SM
// for __launch_bounds__ (2 caps registers at 128, so that two blocks of 256 threads fit).
template <Epilogue E, int BKS, int STAGES, int MINB = 1>
__global__ void __launch_bounds__(kTiledThreads, MINB) SkinnyTiledKernel(const SkinnyArgs a) {
  static_assert(STAGES >= 2, "skinny tiled: the ring needs >= 2 stages");
  extern __shared__ __align__(128) unsigned char tiled_smem[];
  constexpr int kWSeg = kTiledRows * kSegK;    // bf16 of one segment of the W tile: [128 rows][32 k]
  constexpr int kXSeg = kTiledTokens * kSegK;  // bf16 of one segment of the x tile (A operands, see x_dst)
  constexpr int kStage = BKS * (kWSeg + kXSeg);  // a stage: W [BKS][128 rows][32 k], then x [BKS][4][2][32][8]
  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int wm = warp >> 2, wn = warp & 3;  // this warp's 32 tokens and 32 rows of the tile
  const int row0 = static_cast<int>(blockIdx.x) * kTiledRows, tok0 = static_cast<int>(blockIdx.y) * kTiledTokens;
  const int nseg = a.in / kSegK;
  auto bound = [&](int s) { return s * nseg / kSkinnySlices; };  // first segment of slice s
  const int niter = (nseg + BKS - 1) / BKS;

  __nv_bfloat16* const smem = reinterpret_cast<__nv_bfloat16*>(tiled_smem);
  const uint32_t smem_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint64_t pol = SkinnyEvictFirst();
  // The copy plan, fixed for the whole K walk (address math once, not per stage).
  // W: chunk c = tid + i * 256 of a stage is the 16 bytes at shared offset c * 16 of its W part ([BKS][128
  // rows][32 k]): segment c / 512, row (c / 4) % 128, k piece c % 4; its source moves SkinnyWSegStride a
  // segment (either layout). Rows past `out` load a real row, never stored.
  constexpr int kWChunks = BKS * kTiledRows * 4 / kTiledThreads;
  static_assert(kTiledRows * 4 % kTiledThreads == 0, "skinny tiled: W chunks of a segment fill whole blocks");
  const __nv_bfloat16* wsrc[kWChunks];
  const int seg_stride = SkinnyWSegStride(a);  // either layout (SkinnyWRow)
#pragma unroll
  for (int i = 0; i < kWChunks; ++i) {
    const int c = tid + i * kTiledThreads, j = i * kTiledThreads / (kTiledRows * 4);
    const int row = min(row0 + (c >> 2) % kTiledRows, a.out - 1);
    wsrc[i] = a.w + SkinnyWRow(a, row) + j * seg_stride + (c & 3) * 8;
  }
  // x is stored as the mma's A operands, so that one lds.128 is one operand (a natural layout needs four
  // register moves per mma to pair tokens t and t + 8, and the kernel was issue-bound on them): segment j,
  // m-tile m (16 tokens) is 1 KiB = [mma 2][lane 32][a0..a3], with lane (g, q)'s a0..a3 of the first mma =
  // x[t][8q, 8q+1], x[t+8][8q, 8q+1], x[t][8q+2, 8q+3], x[t+8][8q+2, 8q+3] (t = 16m + g) and of the second the
  // same at 8q+4 and 8q+6. So x is copied in 4-byte pairs: thread tid copies pair kp = tid % 16 of token
  // tid / 16 + 16m, m = 0..3, in every segment (a warp reads two tokens' 64 contiguous bytes a segment).
  // Tokens past n load token n - 1 (their outputs are never stored, and a token's outputs depend only on it).
  static_assert(kTiledThreads == 16 * 16 && kTiledTokens == 4 * 16, "skinny tiled: the x copy plan's shape");
  const int x_tok = tid >> 4, x_kp = tid & 15;
  const __nv_bfloat16* xsrc[4];
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int tok = min(tok0 + x_tok + 16 * m, a.n - 1);
    xsrc[m] = a.x + int64_t{tok} * a.in + 2 * x_kp;
  }
  const uint32_t x_dst = static_cast<uint32_t>(  // this thread's byte offset within an m-tile's 1 KiB
      ((x_kp >> 1) & 1) * 512 + ((x_tok & 7) * 4 + (x_kp >> 2)) * 16 + ((x_kp & 1) * 2 + (x_tok >> 3)) * 4);
  // Stage `st` <- segments [it * BKS, + BKS) (none past nseg: the consumer stops there).
  auto load_w = [&](int it, int st) {
    const uint32_t dst = smem_s + static_cast<uint32_t>(st * kStage * 2 + tid * 16);
#pragma unroll
    for (int i = 0; i < kWChunks; ++i) {
      const int j = i * kTiledThreads / (kTiledRows * 4);
      if (it * BKS + j < nseg) {
        SkinnyCpAsync16(dst + i * kTiledThreads * 16, wsrc[i] + int64_t{it} * BKS * seg_stride, pol);
      }
    }
  };
  auto load_x = [&](int it, int st) {
    const uint32_t dst = smem_s + static_cast<uint32_t>((st * kStage + BKS * kWSeg) * 2) + x_dst;
#pragma unroll
    for (int j = 0; j < BKS; ++j) {
      if (it * BKS + j >= nseg) break;
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        TiledCpAsync4(dst + static_cast<uint32_t>(j * kXSeg * 2 + m * 1024), xsrc[m] + (it * BKS + j) * kSegK);
      }
    }
  };

  SkinnyRingPrologue<STAGES>(niter, load_w, load_x);

  float acc[2][4][4], total[2][4][4];
#pragma unroll
  for (int m = 0; m < 2; ++m) {
#pragma unroll
    for (int nn = 0; nn < 4; ++nn) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][nn][e] = total[m][nn][e] = 0.f;
    }
  }
  // Slice `slice` is complete (possibly empty: then its sum is zeros, as an idle skinny warp's): fold it into
  // the total (the first slice is the total, as the skinny kernel's first warp slot), then a fresh accumulator.
  auto finish_slice = [&](int slice) {
#pragma unroll
    for (int m = 0; m < 2; ++m) {
#pragma unroll
      for (int nn = 0; nn < 4; ++nn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          total[m][nn][e] = slice == 0 ? acc[m][nn][e] : total[m][nn][e] + acc[m][nn][e];
          acc[m][nn][e] = 0.f;
        }
      }
    }
  };

  // This lane's fragment pieces within a stage: W rows wn * 32 + nn * 8 + g, k 8q..8q+7 of the segment (two
  // 8-byte pieces, w_step1 apart: SkinnyWPieceK); the A operands of m-tiles 2 wm and 2 wm + 1.
  const __nv_bfloat16* const w_frag = smem + (wn * 32 + g) * kSegK + SkinnyWPieceK(a, q, 0);
  const int w_step1 = SkinnyWPieceK(a, q, 1) - SkinnyWPieceK(a, q, 0);
  const __nv_bfloat16* const x_frag = smem + BKS * kWSeg + (wm * 2) * 512 + lane * 8;
  // The walk: slice by slice, segment by segment; every BKS segments the next stage is entered (its copies
  // waited for, the stage read before it refilled).
  int it = 0, st = 0, st_fill = STAGES - 1, j = BKS, stage_off = 0;
  for (int slice = 0; slice < kSkinnySlices; ++slice) {
    for (int k = bound(slice + 1) - bound(slice); k > 0; --k) {
      if (j == BKS) {
        SkinnyCpAsyncWait<STAGES - 2>();  // this thread's copies of stage `it` have landed
        __syncthreads();                  // everyone's have; and everyone is done with the stage refilled next
        if (it + STAGES - 1 < niter) {
          load_w(it + STAGES - 1, st_fill);
          load_x(it + STAGES - 1, st_fill);
        }
        SkinnyCpAsyncCommit();
        st_fill = st_fill + 1 == STAGES ? 0 : st_fill + 1;
        stage_off = st * kStage;
        st = st + 1 == STAGES ? 0 : st + 1;
        ++it;
        j = 0;
      }
      const __nv_bfloat16* const ws = w_frag + stage_off + j * kWSeg;
      const __nv_bfloat16* const xs = x_frag + stage_off + j * kXSeg;
      ++j;
      uint4 a1[2], a2[2], wv[4];  // the two mmas' A operands per m-tile; W pieces (B of both mmas)
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        a1[m] = *reinterpret_cast<const uint4*>(xs + m * 512);
        a2[m] = *reinterpret_cast<const uint4*>(xs + m * 512 + 256);
      }
#pragma unroll
      for (int nn = 0; nn < 4; ++nn) {
        const uint2 lo = *reinterpret_cast<const uint2*>(ws + (nn * 8) * kSegK);
        const uint2 hi = *reinterpret_cast<const uint2*>(ws + (nn * 8) * kSegK + w_step1);
        wv[nn] = make_uint4(lo.x, lo.y, hi.x, hi.y);
      }
#pragma unroll
      for (int m = 0; m < 2; ++m) {
#pragma unroll
        for (int nn = 0; nn < 4; ++nn) {
          Mma(acc[m][nn], a1[m].x, a1[m].y, a1[m].z, a1[m].w, wv[nn].x, wv[nn].y);
          Mma(acc[m][nn], a2[m].x, a2[m].y, a2[m].z, a2[m].w, wv[nn].z, wv[nn].w);
        }
      }
    }
    finish_slice(slice);  // (an empty slice adds zeros, as an idle skinny warp's slot)
  }
  SkinnyCpAsyncWait<0>();
  __syncthreads();  // every warp is out of the ring: the epilogue tile reuses it

  // Through shared memory, so that a thread holds 8 consecutive rows (a gate|up tile) of one token.
  float* const tile = reinterpret_cast<float*>(tiled_smem);  // [64 tokens][128 + pad rows]
  constexpr int kLd = kTiledRows + kTiledPad;
#pragma unroll
  for (int m = 0; m < 2; ++m) {
#pragma unroll
    for (int nn = 0; nn < 4; ++nn) {
      const int t = wm * 32 + m * 16 + g, r = wn * 32 + nn * 8 + 2 * q;
      *reinterpret_cast<float2*>(tile + t * kLd + r) = make_float2(total[m][nn][0], total[m][nn][1]);
      *reinterpret_cast<float2*>(tile + (t + 8) * kLd + r) = make_float2(total[m][nn][2], total[m][nn][3]);
    }
  }
  __syncthreads();
  SkinnyEmitTile<E, kTiledRows, kTiledThreads>(a, tile, kLd, tok0, row0, tid);
}

// Launches `kernel` on a grid of (row tiles, 64-token tiles) of a's shape, opting in to its `smem` bytes of
// dynamic shared memory on every launch (a host-side attribute call; not cached: a static cache is shared by
// every translation unit that instantiates a launcher, and bench_gemm's launches failed with one, and it would
// miss a second device). The tiled and wgmma schedules; the caller has checked the shape.
inline cudaError_t LaunchSkinnyTileGrid(void (*kernel)(SkinnyArgs), int smem, int tile_rows, int threads,
                                        const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((a.out + tile_rows - 1) / tile_rows),
                  static_cast<unsigned>((a.n + kTiledTokens - 1) / kTiledTokens));
  return LaunchKernel(pdl, kernel, grid, dim3(threads), static_cast<size_t>(smem), stream, a);
}

// Launches one configuration (LaunchSkinnyTileGrid).
template <Epilogue E, int BKS, int STAGES, int MINB = 1>
cudaError_t LaunchSkinnyTiledKernel(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = SkinnyTiledSmemBytes<BKS, STAGES>();
  static_assert(kSmem <= 227 * 1024, "skinny tiled: ring larger than a block's shared memory");
  return LaunchSkinnyTileGrid(SkinnyTiledKernel<E, BKS, STAGES, MINB>, kSmem, kTiledRows, kTiledThreads, a, pdl,
                              stream);
}

}  // namespace fp::cuda_engine
