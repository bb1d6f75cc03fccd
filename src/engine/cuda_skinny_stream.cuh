// engine/cuda_skinny_stream.cuh — the skinny GEMM's arithmetic for up to 16 tokens in a streaming schedule
// (design: cuda_skinny_gemm.cu). Internal to src/engine and bench/cuda/bench_gemm.cu.
//
// Why: at 1-16 tokens a GEMM is a stream of W bytes. A grid of resident blocks walks the 8 * NR-row tiles (tile
// blockIdx.x, + gridDim.x, ...); each warp streams its K slice of W and of x through its own cp.async ring, and
// the ring runs straight on from one tile into the next (the next tile's first segments are in flight while this
// tile's partial sums are added). x goes through the ring too: loaded from global memory per segment, its L2
// latency sat on every warp's critical path. On row-major W this schedule alone did not beat the one-block-per-
// tile W ring it replaced (H200, gate|up at n = 1: 74-81 us against 70); with W segment-tiled (WeightLayout), so
// that a warp's segment is 1 KiB contiguous, it reads 62-64 us, the fp32 GEMV's 62 (bench_gemm --stream).
// Arithmetic (the bits of SkinnyGemmKernel with MT 1, W = kSkinnySlices, CONTIG): warp w owns K slice w
// (segments [w * nseg / 8, (w + 1) * nseg / 8)), a fresh fp32 accumulator per tile fed by two mma.sync per
// segment in order with the permuted k; the 8 slice sums are added w0 + w1 + ... + w7 and stored or SwiGLU'd.
// defines: SkinnyStreamKernel, SkinnyStreamSmemBytes, SkinnyStreamBlocksPerSm, LaunchSkinnyStreamKernel,
//          kStreamMaxTokens
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda_pdl.cuh"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"

namespace fp::cuda_engine {

constexpr int kStreamMaxTokens = 16;  // one m-tile

// Dynamic shared memory: the rings ([8 warps][RING][NR + 2 slots][32 lanes] x 16 bytes: W's NR row tiles and x's
// two token halves) and the cross-warp sum ([8 warps][NR][32][4] floats), which here must not alias the rings
// (they stay in flight across the sum).
template <int NR, int RING>
__host__ __device__ constexpr int SkinnyStreamSmemBytes() {
  return kSkinnySlices * RING * (NR + 2) * 32 * 16 + kSkinnySlices * NR * 32 * 4 * 4;
}

// 16 bytes global -> shared, zero-filled (nothing read) when !full; default L2 policy (x is re-read by every
// block).
__device__ __forceinline__ void StreamCpAsync16Zfill(uint32_t dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(full ? 16 : 0)
               : "memory");
}

// NR row tiles (8 rows each) per 8 * NR-row tile; RING stages of one segment per warp, RING - 1 in flight; MINB
// blocks per SM (__launch_bounds__). Requires n <= 16 and in % 32 == 0 (the launcher checks).
template <int NR, Epilogue E, int RING, int MINB>
__global__ void __launch_bounds__(kSkinnySlices * 32, MINB) SkinnyStreamKernel(const SkinnyArgs a) {
  static_assert(RING >= 2, "skinny stream: a ring needs >= 2 stages");
  constexpr int kW = kSkinnySlices, kThreads = kW * 32;
  constexpr int kElems = NR * 32 * 4;  // one warp's partial sums of a tile
  constexpr int kSlotLo = NR, kSlots = NR + 2;  // 16-byte slots per lane and stage: W row tiles, then x
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, q = lane & 3;
  const int nseg = a.in / kSegK;
  const int seg_lo = warp * nseg / kW, my_segs = (warp + 1) * nseg / kW - seg_lo;
  const int tiles = (a.out + 8 * NR - 1) / (8 * NR);
  const int my_tiles = static_cast<int>(blockIdx.x) < tiles
                           ? (tiles - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1
                           : 0;

  extern __shared__ uint4 stream_smem[];
  // This lane's slot p of stage st: ring[(st * kSlots + p) * 32]; slots 0..NR-1 hold W's row tiles, kSlotLo and
  // kSlotLo + 1 x's pieces of tokens g and g + 8 (zero-filled past n).
  const uint4* const ring = stream_smem + warp * (RING * kSlots * 32) + lane;
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(ring));
  // W's slot of a row tile holds 8 rows x the 64 bytes of the segment as stored: lane (g, q) copies bytes 16q..
  // of row g to 16 (q ^ (g & 2)) in the row, so that the two 8-byte reads below are free of bank conflicts. A
  // lane's two pieces (SkinnyWPieceK) sit at w_piece[0] and [1], in other lanes' 16 bytes where W is
  // segment-tiled (hence the __syncwarp after each wait). bench_gemm --stream, H200, 4 row tiles, n = 1: as fast
  // as reading its own 16 bytes (timing only): q|k|v 20.2 vs 20.4 us, o 16.3 / 16.7, gate|up 65.4 / 65.0, down
  // 35.5 / 35.9, LM head 241.2 / 240.6 (unswizzled: 20.9, 16.8, 66.1, 36.0, 242.0; two shuffles: 24.3, 19.1,
  // 71.2, 42.2, 250.5; two 8-byte copies: 23.9, 18.5, 72.9, 37.1, 259.2).
  const unsigned char* const ring_w = reinterpret_cast<const unsigned char*>(stream_smem + warp * (RING * kSlots * 32));
  auto swizzled = [&](int byte) { return 64 * g + ((((byte >> 4) & 3) ^ (g & 2)) << 4) + (byte & 15); };
  const int w_piece[2] = {swizzled(2 * SkinnyWPieceK(a, q, 0)), swizzled(2 * SkinnyWPieceK(a, q, 1))};
  const uint32_t w_dst = static_cast<uint32_t>(swizzled(16 * q));  // this lane's copy, in its row tile's slot
  float* const red = reinterpret_cast<float*>(stream_smem + kW * RING * kSlots * 32);  // [kW][kElems]
  const uint64_t pol = SkinnyEvictFirst();
  auto slot = [&](int st, int p) { return ring_s + static_cast<uint32_t>((st * kSlots + p) * 32 * 16); };

  // The copy side walks this warp's (tile, segment) sequence one segment a stage, across tile boundaries; it
  // commits one group per stage (empty past the end) so the wait_group count stays uniform.
  int c_tile = 0, c_seg = 0, c_st = 0;  // next copy: this block's c_tile-th tile, segment c_seg, stage c_st
  const int64_t seg_stride = SkinnyWSegStride(a);  // either layout (SkinnyWRow)
  auto copy_w = [&](int st, int tile_i, int seg) {
    const int row0 = (static_cast<int>(blockIdx.x) + tile_i * static_cast<int>(gridDim.x)) * 8 * NR + g;
    const int64_t k = (seg_lo + seg) * seg_stride + 8 * q;
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      const int row = min(row0 + r * 8, a.out - 1);  // rows past `out` copy a real row, never stored
      SkinnyCpAsync16(slot(st, r) - lane * 16 + w_dst, a.w + SkinnyWRow(a, row) + k, pol);
    }
  };
  auto copy_x = [&](int st, int seg) {
    const int64_t k = int64_t{seg_lo + seg} * kSegK + 8 * q;
    StreamCpAsync16Zfill(slot(st, kSlotLo), a.x + (g < a.n ? int64_t{g} * a.in + k : 0), g < a.n);
    StreamCpAsync16Zfill(slot(st, kSlotLo + 1), a.x + (g + 8 < a.n ? int64_t{g + 8} * a.in + k : 0), g + 8 < a.n);
  };
  auto advance = [&]() {
    if (++c_seg == my_segs) c_seg = 0, ++c_tile;
    c_st = c_st + 1 == RING ? 0 : c_st + 1;
  };
  const bool busy = my_tiles > 0 && my_segs > 0;
  // Prologue: W of the first RING - 1 stages before the wait (weights are constant), x after it (the previous
  // kernel writes x); group 0 then holds all of that W and stage 0's x, group i stage i's x.
  for (int i = 0; i < RING - 1; ++i) {
    if (busy && c_tile < my_tiles) copy_w(c_st, c_tile, c_seg);
    if (busy) advance();
  }
  PdlWait();
  PdlLaunchDependents();
  c_tile = c_seg = c_st = 0;
  for (int i = 0; i < RING - 1; ++i) {
    if (busy && c_tile < my_tiles) copy_x(c_st, c_seg);
    SkinnyCpAsyncCommit();
    if (busy) advance();
  }
  auto issue_next = [&]() {
    if (busy && c_tile < my_tiles) {
      copy_w(c_st, c_tile, c_seg);
      copy_x(c_st, c_seg);
      advance();
    }
    SkinnyCpAsyncCommit();
  };

  int st = 0;  // stage holding the next segment to use
  for (int ti = 0; ti < my_tiles; ++ti) {
    const int row_base = (static_cast<int>(blockIdx.x) + ti * static_cast<int>(gridDim.x)) * 8 * NR;
    float acc[NR][4];
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.f;
    for (int i = 0; i < my_segs; ++i) {
      SkinnyCpAsyncWait<RING - 2>();  // this lane's copies of the segment have landed
      __syncwarp();  // ... and every lane's; and every lane has read the stage used last
      // Refill the stage used last: its values are in registers by now.
      issue_next();
      uint4 wr[NR];
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        const unsigned char* const slot_w = ring_w + (st * kSlots + r) * 32 * 16;
        const uint2 lo = *reinterpret_cast<const uint2*>(slot_w + w_piece[0]);
        const uint2 hi = *reinterpret_cast<const uint2*>(slot_w + w_piece[1]);
        wr[r] = make_uint4(lo.x, lo.y, hi.x, hi.y);
      }
      const uint4 xlo = ring[(st * kSlots + kSlotLo) * 32], xhi = ring[(st * kSlots + kSlotLo + 1) * 32];
      st = st + 1 == RING ? 0 : st + 1;
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        Mma(acc[r], xlo.x, xhi.x, xlo.y, xhi.y, wr[r].x, wr[r].y);
        Mma(acc[r], xlo.z, xhi.z, xlo.w, xhi.w, wr[r].z, wr[r].w);
      }
    }
    // The slice sums, added in warp order, one (r, lane, j) element per thread step; the next tile's copies stay
    // in flight meanwhile.
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int j = 0; j < 4; ++j) red[warp * kElems + (r * 32 + lane) * 4 + j] = acc[r][j];
    }
    __syncthreads();
    auto slices = [&](int at) {  // element `at`'s slice sums, added w0 + w1 + ... + w7
      float v = red[at];
#pragma unroll
      for (int w = 1; w < kW; ++w) v += red[w * kElems + at];
      return v;
    };
    for (int e = static_cast<int>(threadIdx.x); e < kElems; e += kThreads) {
      const int j = e & 3, ln = (e >> 2) & 31, r = e >> 7;
      const int eg = ln >> 2, eq = ln & 3;
      const int t = eg + (j >= 2 ? 8 : 0);
      const int row = row_base + r * 8 + 2 * eq + (j & 1);
      if (t >= a.n || row >= a.out) continue;  // only the outputs that are stored are summed
      if constexpr (E == Epilogue::kStore) {
        float* dst = a.y + int64_t{t} * a.out + row;
        const float s = slices(e);
        *dst = a.beta == 0.f ? s : s + a.beta * *dst;
      } else {
        // Tile rows 0..3 are gates, 4..7 the ups of the same ff indices: lane eq < 2 holds a gate, lane eq + 2
        // (8 floats on, in the same row tile) its up.
        if (eq >= 2) continue;
        const int f = (row_base + r * 8) / 2 + 2 * eq + (j & 1);
        a.h[int64_t{t} * (a.out / 2) + f] = SwiGluBf16(slices(e), slices(e + 8));
      }
    }
    __syncthreads();  // `red` is rewritten by the next tile
  }
  SkinnyCpAsyncWait<0>();  // no copy may outlive the block (the trailing groups are empty)
}

// Resident blocks of one configuration per SM, asked once per process (the engine uses one device; the value
// depends only on the kernel's resources and the architecture). The grid is that times the SMs, at most the tile
// count. (An occupancy query on every launch is host time that an un-captured launch waits for.)
template <int NR, Epilogue E, int RING, int MINB>
int SkinnyStreamBlocksPerSm() {
  static const int blocks = [] {
    int b = 0;
    constexpr auto kernel = SkinnyStreamKernel<NR, E, RING, MINB>;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             SkinnyStreamSmemBytes<NR, RING>()) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kSkinnySlices * 32,
                                                      SkinnyStreamSmemBytes<NR, RING>()) != cudaSuccess) {
      return 1;
    }
    return b < 1 ? 1 : b;
  }();
  return blocks;
}

// Launches one configuration on `sms` SMs' worth of resident blocks. Opts in to the dynamic shared memory on
// every launch (a static cache would be shared across translation units; see LaunchSkinnyTiledKernel).
template <int NR, Epilogue E, int RING, int MINB>
cudaError_t LaunchSkinnyStreamKernel(const SkinnyArgs& a, int sms, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = SkinnyStreamSmemBytes<NR, RING>();
  static_assert(kSmem <= 227 * 1024, "skinny stream: ring larger than a block's shared memory");
  constexpr auto kernel = SkinnyStreamKernel<NR, E, RING, MINB>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      e != cudaSuccess) {
    return e;
  }
  const int tiles = (a.out + 8 * NR - 1) / (8 * NR);
  const int blocks = std::min(tiles, sms * SkinnyStreamBlocksPerSm<NR, E, RING, MINB>());
  return LaunchKernel(pdl, kernel, dim3(static_cast<unsigned>(blocks)), dim3(kSkinnySlices * 32), kSmem, stream, a);
}

}  // namespace fp::cuda_engine
