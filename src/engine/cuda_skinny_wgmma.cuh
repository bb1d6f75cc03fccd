// engine/cuda_skinny_wgmma.cuh — the skinny GEMM's arithmetic with Hopper's warpgroup MMA (sm_90a), for more
// than 16 tokens (design: cuda_skinny_gemm.cu). Internal to src/engine and bench/cuda/bench_gemm.cu.
//
// Why: at 64 tokens the mma.sync tiled schedule ran at 1.3x cuBLAS on gate|up, issue-bound at ~6 instructions
// per HMMA. One wgmma m64n128k16 does the work of 64 mma.sync and reads both operands from shared memory.
// Same bits (tests MmaBits.*, SkinnyWgmma.*):
//   - one wgmma k16 step gives the bits of one mma.sync m16n8k16 on the same operands, and a k16 MMA's bits do
//     not depend on the order of its 16 k. So what fixes the bits is which 16 k each MMA step sums and the order
//     of the steps.
//   - The skinny arithmetic's steps per 32-k segment are k {0-3, 8-11, 16-19, 24-27}, then {4-7, 12-15, 20-23,
//     28-31} (lane q's 8q..8q+3 and 8q+4..8q+7, cuda_skinny_gemm.cuh). So each segment of W and x is copied
//     into shared memory in 8-byte pieces regrouped to [0-3 | 8-11 | 16-19 | 24-27 | 4-7 | 12-15 | 20-23 |
//     28-31], and the segment's two k16 steps are its first and second 32 bytes (segment-tiled W is stored in
//     that grouping already, WeightStoredK: its pieces land in order).
//   - As in every schedule: per K slice a fresh fp32 accumulator over its segments in order; the 8 slice sums
//     added s0 + s1 + ... + s7.
// Schedule: a block (one warpgroup) owns a 64-token x 128-row tile, D[token][row] = x . W^T with x as the A
// operand (M = 64 tokens) and W as B (N = 128 rows), both K-major with the 64-byte swizzle, through a
// STAGES-deep cp.async ring of BKS segments a stage; it walks the 8 slices in order, folding each into a
// running total. The engine runs it where the tiles fill the SMs (cuda_skinny_gemm.cu).
// Measured (bench_gemm --tiled, H200, 64 tokens, segment-tiled W): gate|up 78-80 us; the mma.sync tiled
// schedule 99-99.5, cuBLAS 72-78. Tried and removed (docs/kernel-spec.md): clusters of 8 blocks a tile for the
// matrices with fewer tiles than SMs (no faster than the register schedule), 256-row tiles, a second MMA group
// in flight, 16-byte L2-only copies, 1 KiB bulk copies of W. A block moves about 34 GB/s whatever the ring
// depth or copy width; what bounds it is not settled.
// defines: FP_SKINNY_SM90A, SkinnyWgmmaKernel, SkinnyWgmmaSmemBytes, LaunchSkinnyWgmmaKernel, kWgmmaTokens,
//          kWgmmaRows
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "attention/attention_prefill_wgmma.cuh"
#include "core/cuda_pdl.cuh"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_tiled.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP_SKINNY_SM90A 1
#else
#define FP_SKINNY_SM90A 0
#endif

namespace fp::cuda_engine {

constexpr int kWgmmaTokens = 64;    // A rows (M of m64n128k16)
constexpr int kWgmmaRows = 128;     // W rows of a tile (N)
constexpr int kWgmmaThreads = 128;  // one warpgroup
constexpr int kWgmmaSegBytes = 64;  // one row's segment: 32 bf16, one 64-byte swizzle row

template <int BKS, int STAGES>
__host__ __device__ constexpr int SkinnyWgmmaSmemBytes() {
  const int ring = STAGES * BKS * (kWgmmaRows + kWgmmaTokens) * kWgmmaSegBytes;
  const int tile = kWgmmaTokens * (kWgmmaRows + kTiledPad) * 4;
  return (ring > tile ? ring : tile) + 512;  // + slack to align the ring to the swizzle atom (512 B)
}

// 8 bytes global -> shared (the k regrouping needs 8-byte pieces). No L2 cache hint: an 8-byte cp.async with
// .L2::cache_hint assembles, but the H200 raised an illegal instruction on it (probe, session 8).
__device__ __forceinline__ void WgmmaCpAsync8(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
}

// Byte offset, inside a segment's [rows][64 B] block, of row `row`'s grouped piece sp (0..7, the order of
// WeightStoredK): its 16-byte chunk XORed with (row / 2) % 4 (the 64-byte swizzle).
__host__ __device__ constexpr uint32_t WgmmaSlotOffset(int row, int sp) {
  return static_cast<uint32_t>(row * kWgmmaSegBytes + ((((sp >> 1) ^ (row >> 1)) & 3) << 4) + (sp & 1) * 8);
}
// ... of the piece holding k 4p..4p+3 (p = 0..7) of a naturally ordered segment (x, row-major W).
__host__ __device__ constexpr uint32_t WgmmaPieceOffset(int row, int p) {
  return WgmmaSlotOffset(row, WeightStoredK(4 * p) / 4);
}

#if FP_SKINNY_SM90A
// Descriptor of a K-major operand in the 64-byte swizzle ([rows][64 B], atoms of 8 rows = 512 B, 512-aligned;
// `smem` may sit 32 B into a row for the second k16 step): stride between 8-row groups 512 B.
__device__ __forceinline__ uint64_t SkinnySmemDesc64(uint32_t addr) {
  uint64_t desc = (addr & 0x3FFFFu) >> 4;  // bits 0-13: start address / 16
  desc |= uint64_t{1} << 16;               // bits 16-29: leading byte offset (unused for swizzled K-major)
  desc |= uint64_t{512 >> 4} << 32;        // bits 32-45: stride byte offset / 16
  desc |= uint64_t{2} << 62;               // bits 62-63: 2 = 64-byte swizzle
  return desc;
}
#endif

// Grid (row tiles, token tiles); one warpgroup a block. Requires in % 32 == 0.
template <Epilogue E, int BKS, int STAGES>
__global__ void __launch_bounds__(kWgmmaThreads) SkinnyWgmmaKernel(const SkinnyArgs a) {
  static_assert(STAGES >= 2, "skinny wgmma: the ring needs a stage being filled");
#if FP_SKINNY_SM90A
  namespace pf = fp::prefill;
  extern __shared__ __align__(1024) unsigned char wgmma_smem[];
  constexpr int kThreads = kWgmmaThreads, kRows = kWgmmaRows;
  constexpr int kWSeg = kRows * kWgmmaSegBytes, kXSeg = kWgmmaTokens * kWgmmaSegBytes;  // bytes
  constexpr int kStage = BKS * (kWSeg + kXSeg);  // a stage: W [BKS][kRows][64 B], then x [BKS][64][64 B]
  constexpr int kCpRows = kThreads / 8;          // rows one copy pass covers (8 threads a row)
  constexpr int kWCopies = kRows / kCpRows, kXCopies = kWgmmaTokens / kCpRows;
  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int row0 = static_cast<int>(blockIdx.x) * kRows, tok0 = static_cast<int>(blockIdx.y) * kWgmmaTokens;
  const int nseg = a.in / kSegK;
  auto bound = [&](int s) { return s * nseg / kSkinnySlices; };  // first segment of slice s
  const int niter = (nseg + BKS - 1) / BKS;

  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(wgmma_smem));
  const uint32_t ring = raw + ((512u - (raw & 511u)) & 511u);
  // The copy plan: thread tid moves piece p = tid % 8 (k 4p..4p+3) of rows tid / 8 + kCpRows i of every
  // segment; rows a multiple of 8 apart share the swizzle phase, so the shared offsets are one base + i *
  // kCpRows * 64 B. Eight threads read one row's 64 contiguous bytes. Rows past `out` / tokens past n load
  // the last real one (their outputs are never stored; an output depends only on its own row and token).
  // Segment-tiled W is stored grouped already, so its piece cp_p goes to slot cp_p.
  const int cp_row = tid >> 3, cp_p = tid & 7;
  const uint32_t cp_dst = WgmmaPieceOffset(cp_row, cp_p);
  const uint32_t cp_dst_w =
      a.layout == WeightLayout::kSegmentTiled ? WgmmaSlotOffset(cp_row, cp_p) : cp_dst;
  const int seg_stride = SkinnyWSegStride(a);
  const __nv_bfloat16* wsrc[kWCopies];
#pragma unroll
  for (int i = 0; i < kWCopies; ++i) {
    wsrc[i] = a.w + SkinnyWRow(a, min(row0 + cp_row + kCpRows * i, a.out - 1)) + 4 * cp_p;
  }
  const __nv_bfloat16* xsrc[kXCopies];
#pragma unroll
  for (int i = 0; i < kXCopies; ++i)
    xsrc[i] = a.x + int64_t{min(tok0 + cp_row + kCpRows * i, a.n - 1)} * a.in + 4 * cp_p;
  auto load_w = [&](int it, int st) {
    const uint32_t dst = ring + static_cast<uint32_t>(st * kStage) + cp_dst_w;
#pragma unroll
    for (int j = 0; j < BKS; ++j) {
      if (it * BKS + j >= nseg) break;
      const int64_t off = int64_t{it * BKS + j} * seg_stride;
#pragma unroll
      for (int i = 0; i < kWCopies; ++i) WgmmaCpAsync8(dst + j * kWSeg + i * kCpRows * 64, wsrc[i] + off);
    }
  };
  auto load_x = [&](int it, int st) {
    const uint32_t dst = ring + static_cast<uint32_t>(st * kStage + BKS * kWSeg) + cp_dst;
#pragma unroll
    for (int j = 0; j < BKS; ++j) {
      if (it * BKS + j >= nseg) break;
      const int off = (it * BKS + j) * kSegK;
#pragma unroll
      for (int i = 0; i < kXCopies; ++i) WgmmaCpAsync8(dst + j * kXSeg + i * kCpRows * 64, xsrc[i] + off);
    }
  };

  SkinnyRingPrologue<STAGES>(niter, load_w, load_x);

  // acc: the current slice; total: the finished slices folded left to right.
  float acc[16][4], total[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  int slice = 0;
  // Folds the finished slice (the first is the total) and any empty slices after it (each adds zeros, as an
  // idle skinny warp's slot), and starts a fresh accumulator.
  auto finish_slice = [&] {
    do {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          total[i][e] = slice == 0 ? acc[i][e] : total[i][e] + acc[i][e];
          acc[i][e] = 0.f;
        }
      }
      ++slice;
    } while (slice < kSkinnySlices && bound(slice + 1) == bound(slice));
  };
  if (bound(1) == 0) finish_slice();  // leading empty slices (in < 256)

  for (int it = 0; it < niter; ++it) {
    const int st = it % STAGES;
    SkinnyCpAsyncWait<STAGES - 2>();  // this thread's copies of stage `it` have landed
    pf::FenceProxyAsync();            // ... and are visible to the tensor core's reads
    __syncthreads();  // everyone's; and the MMAs that read the stage refilled next have completed
    if (it + STAGES - 1 < niter) {
      load_w(it + STAGES - 1, (it + STAGES - 1) % STAGES);
      load_x(it + STAGES - 1, (it + STAGES - 1) % STAGES);
    }
    SkinnyCpAsyncCommit();
    const uint32_t w_seg = ring + static_cast<uint32_t>(st * kStage);
    const uint32_t x_seg = ring + static_cast<uint32_t>(st * kStage + BKS * kWSeg);
    pf::FenceOperand(acc);
    pf::WgmmaFence();
#pragma unroll
    for (int j = 0; j < BKS; ++j) {
      const int seg = it * BKS + j;
      if (seg >= nseg) break;
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // the segment's two k16 steps: its first and second 32 stored bytes
        pf::WgmmaSS128(acc, SkinnySmemDesc64(x_seg + j * kXSeg + 32 * h),
                       SkinnySmemDesc64(w_seg + j * kWSeg + 32 * h), 1);
      }
      if (seg + 1 == bound(slice + 1) && seg + 1 < nseg) {  // a slice ends inside the walk
        pf::WgmmaCommit();
        pf::WgmmaWait<0>();
        pf::FenceOperand(acc);
        finish_slice();
        pf::FenceOperand(acc);
        pf::WgmmaFence();
      }
    }
    pf::WgmmaCommit();
    pf::WgmmaWait<0>();
    pf::FenceOperand(acc);
  }
  if (slice < kSkinnySlices) finish_slice();  // the last slice (its end is the end of the walk)
  SkinnyCpAsyncWait<0>();
  __syncthreads();  // every warp is out of the ring: the epilogue tile reuses it

  // The sums through an fp32 tile [64 tokens][128 + pad rows] (this thread: token 16 warp + g (+ 8), rows 8i
  // + 2q, +1), so that a thread emits 8 consecutive rows (a gate|up tile) of one token.
  float* const tile = reinterpret_cast<float*>(wgmma_smem + (ring - raw));
  constexpr int kLd = kRows + kTiledPad;
  const int t = 16 * warp + g, r = 2 * q;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    *reinterpret_cast<float2*>(tile + t * kLd + r + 8 * i) = make_float2(total[i][0], total[i][1]);
    *reinterpret_cast<float2*>(tile + (t + 8) * kLd + r + 8 * i) = make_float2(total[i][2], total[i][3]);
  }
  __syncthreads();
  SkinnyEmitTile<E, kRows, kThreads>(a, tile, kLd, tok0, row0, tid);
#endif
}

// Launches one configuration (LaunchSkinnyTileGrid); the caller has also checked that the device runs sm_90a code.
template <Epilogue E, int BKS, int STAGES>
cudaError_t LaunchSkinnyWgmmaKernel(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = SkinnyWgmmaSmemBytes<BKS, STAGES>();
  static_assert(kSmem <= 227 * 1024, "skinny wgmma: ring larger than a block's shared memory");
  static_assert(kWgmmaTokens == kTiledTokens, "skinny wgmma: the tile grid's token tiles");
  return LaunchSkinnyTileGrid(SkinnyWgmmaKernel<E, BKS, STAGES>, kSmem, kWgmmaRows, kWgmmaThreads, a, pdl, stream);
}

}  // namespace fp::cuda_engine
