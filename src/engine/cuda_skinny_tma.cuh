// engine/cuda_skinny_tma.cuh — the skinny GEMM's arithmetic fed by TMA: every matrix at 17-64 tokens, and above
// that those whose 64 x 128 tiles do not fill the SMs, on sm_90a with segment-tiled W (design:
// cuda_skinny_gemm.cu). Internal to src/engine and bench/cuda.
//
// Why: for q|k|v, o and down the register schedule streamed ~2 TB/s (H200, 64 tokens, kernel time: down 63 us,
// q|k|v 32, o 22) and cuBLAS ~3 TB/s (39 / 17.5 / 13), and the cp.async-fed wgmma schedule moves ~34 GB/s a block,
// too little with one block per tile. Measured (H200, 64 tokens, kernel time, bench_gemm): q|k|v 21.4 us, o 19.5,
// down 42.4 (clusters of 2), gate|up 70.5 (cuBLAS 65.2), LM head 280.6 (279.9); deterministic mode at B = 64 went
// from +15% (register schedule) to +6-7% (docs/kernel-spec.md). Same bits as every schedule (tests SkinnyTma.*):
//   - Per K slice a fresh fp32 accumulator over its segments in order, two k16 MMA steps a segment with the k
//     sets {0-3, 8-11, 16-19, 24-27} then {4-7, ..., 28-31}; the 8 slice sums added s0 + s1 + ... + s7. A
//     wgmma k16 step gives the bits of an mma.sync m16n8k16 on the same 16 k in any order (MmaBits.*).
//   - W (B operand, from shared memory) is segment-tiled and stored grouped by step (WeightStoredK), so a TMA
//     box lands each step's 16 k as 32 contiguous bytes of a 64-byte-swizzled row: what a K-major descriptor
//     reads. x (A operand) is copied as it is (natural k order) and read into registers in the grouping: lane
//     (g, q)'s A pairs of step h are x[t][p + 4h, +1] and x[t][p + 16 + 4h, +1], p = 8 (q / 2) + 2 (q % 2),
//     which are the k that B's stored positions 2q, 2q+1 and 2q+8, 2q+9 hold.
// Schedule: a block is one consumer warpgroup (64 tokens x 64 W rows, wgmma m64n64k16 with A in registers) and
// one producer warp whose lane 0 issues per stage BKS bulk tensor copies of W (a [64 rows][64 B] box a segment)
// and BKS / 2 of x (a [64 tokens][128 B] window of two segments: the copy engine's cost goes by box rows, and
// 128-byte rows moved x 2.6x faster than 64-byte ones) onto a full mbarrier; consumers release the stage on an
// empty one.
// With C > 1 the C blocks of a cluster split a tile's K slices (block c: slices [c 8 / C, (c + 1) 8 / C)),
// which keeps blocks streaming where tiles are fewer than the SMs; each keeps its slice sums apart, and block
// 0 adds them in slice order, reading the others' from their shared memory (DSMEM), then stores the tile.
// Two pitfalls met: the producer warp must leave before the consumers' loop (wgmma issued on a path ptxas sees as
// divergent is serialized, warning C7520), and the epilogue reuses the ring only after a consumer barrier
// (racecheck caught a fast warp's tile writes over a slow warp's last x reads).
// defines: SkinnyTmaKernel, SkinnyTmaSmemBytes, LaunchSkinnyTmaKernel, SkinnyTmaSupported, XWindow,
//          EncodeBf16TensorMap and SkinnyTmaMaps (in cuda_skinny_tma_maps.cu), kTmaRows, kTmaTokens
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "attention/attention_prefill_wgmma.cuh"
#include "core/cuda_pdl.cuh"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_tiled.cuh"
#include "engine/cuda_skinny_wgmma.cuh"

namespace fp::cuda_engine {

constexpr int kTmaTokens = 64;                           // A rows (M)
constexpr int kTmaRows = 64;                             // W rows of a tile (N of m64n64k16)
constexpr int kTmaConsumers = 128;                       // one warpgroup
constexpr int kTmaThreads = kTmaConsumers + 32;          // + the producer warp
constexpr int kTmaSegW = kTmaRows * kWgmmaSegBytes;      // bytes of one segment of the W tile
constexpr int kTmaSegX = kTmaTokens * kWgmmaSegBytes;    // ... of the x tile (a stage holds BKS of each)
constexpr int kTmaAccs = kTmaTokens * kTmaRows / kTmaConsumers;  // fp32 sums a thread holds per slice (32)
constexpr int kXRowBytes = 2 * kWgmmaSegBytes;           // an x window row: two segments of one token (128 B)
constexpr int kXWindowBytes = kTmaTokens * kXRowBytes;   // an x window: [64 tokens][128 B], 128-byte swizzle

// The first segment of the x window that holds segments s and s + 1: s itself, except that the window holding
// the last segment starts one earlier (a window never reaches past a row of x).
__host__ __device__ constexpr int XWindow(int s, int nseg) { return s < nseg - 2 ? s : nseg - 2; }

// Dynamic shared memory: the ring (later the slice sums a block > 0 hands to block 0, or block 0's epilogue
// tile), aligned to the 1 KiB of the swizzle atoms, and 2 x STAGES mbarriers.
template <int BKS, int STAGES, int C>
__host__ __device__ constexpr int SkinnyTmaSmemBytes() {
  const int ring = STAGES * BKS * (kTmaSegW + kTmaSegX);
  const int sums = C > 1 ? kSkinnySlices / C * kTmaConsumers * kTmaAccs * 4 : 0;  // C == 1 folds in registers
  const int tile = kTmaTokens * (kTmaRows + kTiledPad) * 4;
  const int ring_or_sums = ring > sums ? ring : sums;
  const int body = ring_or_sums > tile ? ring_or_sums : tile;
  return body + 1024 + 2 * STAGES * 8;
}

#if FP_SKINNY_SM90A
// D[64 x 64] += A[64 x 16] (registers, the mma.sync A layout per warp) * B[16 x 64] (shared memory, K-major).
__device__ __forceinline__ void WgmmaRS64K(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n}\n"
      : FP_WGMMA_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
__device__ __forceinline__ void TmaExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void TmaLoad3(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];"
      ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void TmaLoad4(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, int c3,
                                         uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];" ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void ClusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ uint32_t ClusterRank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// The shared address `addr` of this block mapped into block `rank` of the cluster.
__device__ __forceinline__ uint32_t MapShared(uint32_t addr, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
__device__ __forceinline__ float4 LoadSharedCluster4(uint32_t addr) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
#endif

// Grid (row tiles x C, token tiles), clusters of C along x; kTmaThreads threads. tw: W segment-tiled as
// [tiles][nseg][16 rows][32 k] (box 32 k x 16 rows x 1 segment x 4 tiles, 64-byte swizzle); tx: x [n][in] as
// overlapping two-segment windows (box 64 k x 64 tokens x 1 window, 128-byte swizzle); zeros past the edges
// (SkinnyTmaMaps).
template <Epilogue E, int BKS, int STAGES, int C>
__global__ void __launch_bounds__(kTmaThreads) SkinnyTmaKernel(const __grid_constant__ CUtensorMap tw,
                                                              const __grid_constant__ CUtensorMap tx,
                                                              const SkinnyArgs a) {
  static_assert(kSkinnySlices % C == 0 && STAGES >= 2, "skinny tma: C must divide the slices");
  static_assert(BKS % 2 == 0, "skinny tma: x arrives in windows of two segments");
#if FP_SKINNY_SM90A
  namespace pf = fp::prefill;
  constexpr int kSpb = kSkinnySlices / C;  // slices a block computes
  constexpr int kStage = BKS * (kTmaSegW + kTmaSegX);  // a stage: W [BKS][64 rows][64 B], x [BKS / 2][64][128 B]
  extern __shared__ __align__(1024) unsigned char tma_smem[];
  const uint32_t raw = pf::SmemAddr(tma_smem);
  const uint32_t ring = (raw + 1023u) & ~1023u;
  constexpr int kBody = SkinnyTmaSmemBytes<BKS, STAGES, C>() - 1024 - 2 * STAGES * 8;
  uint64_t* const full = reinterpret_cast<uint64_t*>(tma_smem + (ring - raw) + kBody);
  uint64_t* const empty = full + STAGES;

  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int rank = C > 1 ? static_cast<int>(ClusterRank()) : 0;
  const int row0 = static_cast<int>(blockIdx.x) / C * kTmaRows, tok0 = static_cast<int>(blockIdx.y) * kTmaTokens;
  const int nseg = a.in / kSegK;
  auto bound = [&](int s) { return s * nseg / kSkinnySlices; };  // first segment of slice s
  const int lo = bound(rank * kSpb), hi = bound((rank + 1) * kSpb);  // this block's segments
  const int niter = (hi - lo + BKS - 1) / BKS;

  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      pf::MbarInit(&full[s], 1);
      pf::MbarInit(&empty[s], kTmaConsumers / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == kTmaConsumers / 32) {  // the producer warp; it leaves before the consumers' code, so that the
                                     // wgmma issue below is not on a divergent path (ptxas serializes it there)
    if (lane == 0) {
      auto issue_w = [&](int it) {
        const int st = it % STAGES;
        const uint32_t bar = pf::SmemAddr(&full[st]), dst = ring + static_cast<uint32_t>(st * kStage);
        TmaExpectTx(bar, kStage);
#pragma unroll
        for (int j = 0; j < BKS; ++j)
          TmaLoad4(dst + j * kTmaSegW, &tw, 0, 0, lo + it * BKS + j, row0 / kWeightTileRows, bar);
      };
      auto issue_x = [&](int it) {  // BKS / 2 windows of two segments, the last one kept inside the rows
        const int st = it % STAGES;
        const uint32_t dst = ring + static_cast<uint32_t>(st * kStage + BKS * kTmaSegW);
#pragma unroll
        for (int m = 0; m < BKS / 2; ++m) {
          TmaLoad3(dst + m * kXWindowBytes, &tx, 0, tok0, XWindow(lo + it * BKS + 2 * m, nseg),
                   pf::SmemAddr(&full[st]));
        }
      };
      // W of the first stages before the wait (weights never depend on the previous kernel), x after it.
      const int first = niter < STAGES ? niter : STAGES;
      for (int it = 0; it < first; ++it) issue_w(it);
      PdlWait();
      for (int it = 0; it < first; ++it) issue_x(it);
      for (int it = STAGES; it < niter; ++it) {
        pf::MbarWait(&empty[it % STAGES], (it / STAGES - 1) & 1);
        issue_w(it);
        issue_x(it);
      }
    } else {
      PdlWait();
    }
    PdlLaunchDependents();
    __syncwarp();
    if constexpr (C > 1) {  // the consumers' two cluster barriers (below)
      ClusterSync();
      ClusterSync();
    }
    return;
  }
  PdlWait();
  PdlLaunchDependents();

  // Consumers: this thread's sums, token 16 warp + g (+ 8), W rows 8i + 2q (+1).
  const int g = lane >> 2, q = lane & 3;
  float keep[C > 1 ? kSpb : 1][8][4];  // C > 1: each slice's sum; C == 1: the running total
  // This lane's A pairs within a window of the x stage (128-byte rows of two segments, 16-byte chunk c at
  // c ^ (t % 8), the same phase g for tokens 16 warp + g and + 8): step h's a0..a3 of the window's segment `half`
  // at rows t, t + 8, chunks 4 half + q / 2 (+ 2).
  const int t0 = 16 * warp + g, within = 4 * (q & 1);
  auto a_at = [&](int chunk) { return static_cast<uint32_t>(t0 * kXRowBytes + ((chunk ^ g) << 4) + within); };
  const uint32_t a_lo0 = a_at(q >> 1), a_hi0 = a_at((q >> 1) + 2);
  const uint32_t a_lo1 = a_at(4 + (q >> 1)), a_hi1 = a_at(6 + (q >> 1));
  auto load_a = [&](uint32_t xs, int half, uint32_t (&f)[2][4]) {  // one segment's two steps
    constexpr uint32_t kRow8 = 8 * kXRowBytes;                     // token t + 8
    const uint32_t lo = xs + (half ? a_lo1 : a_lo0), hi = xs + (half ? a_hi1 : a_hi0);  // selects: no local array
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      asm volatile("ld.shared.b32 %0, [%1];" : "=r"(f[h][0]) : "r"(lo + 8 * h));
      asm volatile("ld.shared.b32 %0, [%1];" : "=r"(f[h][1]) : "r"(lo + 8 * h + kRow8));
      asm volatile("ld.shared.b32 %0, [%1];" : "=r"(f[h][2]) : "r"(hi + 8 * h));
      asm volatile("ld.shared.b32 %0, [%1];" : "=r"(f[h][3]) : "r"(hi + 8 * h + kRow8));
    }
  };
  float acc[8][4];
  int seg = lo;
#pragma unroll
  for (int s = 0; s < kSpb; ++s) {
    float(&sum)[8][4] = C > 1 ? keep[C > 1 ? s : 0] : acc;
#pragma unroll
    for (int i = 0; i < 8; ++i) sum[i][0] = sum[i][1] = sum[i][2] = sum[i][3] = 0.f;
    const int slice_end = bound(rank * kSpb + s + 1);
    while (seg < slice_end) {
      const int it = (seg - lo) / BKS, st = it % STAGES, j0 = (seg - lo) % BKS;
      const int stage0 = lo + it * BKS, stage_end = stage0 + BKS < hi ? stage0 + BKS : hi;
      const int here = (slice_end < stage_end ? slice_end : stage_end) - seg;
      pf::MbarWait(&full[st], (it / STAGES) & 1);
      const uint32_t w_st = ring + static_cast<uint32_t>(st * kStage);
      const uint32_t x_st = w_st + BKS * kTmaSegW;
      if (here == BKS) {  // a whole stage (the usual case: slices of a multiple of BKS segments)
        uint32_t afr[BKS][2][4];
#pragma unroll
        for (int j = 0; j < BKS; ++j) load_a(x_st + static_cast<uint32_t>(j / 2 * kXWindowBytes), j & 1, afr[j]);
        pf::FenceOperand(sum);
        pf::WgmmaFence();
#pragma unroll
        for (int j = 0; j < BKS; ++j) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            WgmmaRS64K(sum, afr[j][h], SkinnySmemDesc64(w_st + static_cast<uint32_t>(j * kTmaSegW) + 32 * h));
          }
        }
        pf::WgmmaCommit();
        pf::WgmmaWait<0>();
        pf::FenceOperand(sum);
      } else {  // part of a stage: segment by segment
        for (int j = j0; j < j0 + here; ++j) {
          uint32_t afr[2][4];
          const int win = XWindow(stage0 + (j & ~1), nseg);  // where the producer cut this segment's window
          load_a(x_st + static_cast<uint32_t>(j / 2 * kXWindowBytes), stage0 + j - win, afr);
          pf::FenceOperand(sum);
          pf::WgmmaFence();
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            WgmmaRS64K(sum, afr[h], SkinnySmemDesc64(w_st + static_cast<uint32_t>(j * kTmaSegW) + 32 * h));
          }
          pf::WgmmaCommit();
          pf::WgmmaWait<0>();
          pf::FenceOperand(sum);
        }
      }
      seg += here;
      if (seg == stage_end && lane == 0) pf::MbarArrive(&empty[st]);
    }
    if constexpr (C == 1) {  // fold: the first slice is the total (as the skinny kernel's first warp slot)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) keep[0][i][e] = s == 0 ? acc[i][e] : keep[0][i][e] + acc[i][e];
      }
    }
  }

  // The ring is idle once every consumer warp is past its last stage (every stage's copies were waited for;
  // compute-sanitizer's racecheck caught the tile written while a slower warp still read x): it now holds the
  // slice sums (blocks > 0) or the epilogue tile (block 0).
  asm volatile("bar.sync 1, %0;" ::"n"(kTmaConsumers) : "memory");  // the consumers (the producer has left)
  float* const body = reinterpret_cast<float*>(tma_smem + (ring - raw));
  if constexpr (C > 1) {
    if (rank > 0) {  // sums[s][thread][32]
#pragma unroll
      for (int s = 0; s < kSpb; ++s) {
#pragma unroll
        for (int i = 0; i < 8; ++i)
          *reinterpret_cast<float4*>(body + (s * kTmaConsumers + tid) * kTmaAccs + 4 * i) =
              make_float4(keep[s][i][0], keep[s][i][1], keep[s][i][2], keep[s][i][3]);
      }
    }
    ClusterSync();  // the other blocks' sums are written and visible
    if (rank == 0) {
#pragma unroll
      for (int s = 1; s < kSpb; ++s) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
#pragma unroll
          for (int e = 0; e < 4; ++e) keep[0][i][e] += keep[s][i][e];
        }
      }
      for (int r = 1; r < C; ++r) {
        const uint32_t remote = MapShared(ring, static_cast<uint32_t>(r));
#pragma unroll
        for (int s = 0; s < kSpb; ++s) {
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const float4 v =
                LoadSharedCluster4(remote + static_cast<uint32_t>(((s * kTmaConsumers + tid) * kTmaAccs + 4 * i) * 4));
            keep[0][i][0] += v.x;
            keep[0][i][1] += v.y;
            keep[0][i][2] += v.z;
            keep[0][i][3] += v.w;
          }
        }
      }
    }
    ClusterSync();  // block 0 has read the others' shared memory: they may exit
    if (rank > 0) return;
  }

  // Block 0: through an fp32 tile [64 tokens][64 + pad rows] so that a thread emits 8 consecutive rows.
  constexpr int kLd = kTmaRows + kTiledPad;
  {
    const int t = 16 * warp + g, r = 2 * q;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      *reinterpret_cast<float2*>(body + t * kLd + r + 8 * i) = make_float2(keep[0][i][0], keep[0][i][1]);
      *reinterpret_cast<float2*>(body + (t + 8) * kLd + r + 8 * i) = make_float2(keep[0][i][2], keep[0][i][3]);
    }
  }
  asm volatile("bar.sync 1, %0;" ::"n"(kTmaConsumers) : "memory");
  SkinnyEmitTile<E, kTmaRows, kTmaConsumers>(a, body, kLd, tok0, row0, tid);
#endif
}

// Whether the TMA schedule can run a: segment-tiled W, in a multiple of 32 with at least one segment per slice
// and block (nseg >= 8), and a device that runs sm_90a code (checked by the caller).
inline bool SkinnyTmaSupported(const SkinnyArgs& a) {
  return a.layout == WeightLayout::kSegmentTiled && a.in % kSegK == 0 && a.in / kSegK >= kSkinnySlices;
}

// A bf16 tensor map of rank <= 4 (dims innermost first, strides in bytes of dims 1.., unit element strides, no OOB NaN fill,
// 256-byte L2 promotion) through the driver's encoder; false where it cannot be reached or refuses.
bool EncodeBf16TensorMap(CUtensorMap* map, const void* base, cuuint32_t rank, const cuuint64_t* dims,
                         const cuuint64_t* strides, const cuuint32_t* box, CUtensorMapSwizzle swizzle);

// The two tensor maps of a (W: boxes of one segment of a 64-row tile; x: windows of two segments);
// cudaErrorInvalidValue where SkinnyTmaSupported refuses a or the driver's encoder fails.
cudaError_t SkinnyTmaMaps(const SkinnyArgs& a, CUtensorMap* tw, CUtensorMap* tx);

// Builds the tensor maps and launches one configuration (grid: row tiles x C, token tiles; clusters of C).
template <Epilogue E, int BKS, int STAGES, int C>
cudaError_t LaunchSkinnyTmaKernel(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = SkinnyTmaSmemBytes<BKS, STAGES, C>();
  static_assert(kSmem <= 227 * 1024, "skinny tma: ring larger than a block's shared memory");
  CUtensorMap tw, tx;
  if (const cudaError_t e = SkinnyTmaMaps(a, &tw, &tx); e != cudaSuccess) return e;
  constexpr auto kernel = SkinnyTmaKernel<E, BKS, STAGES, C>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      e != cudaSuccess) {
    return e;
  }
  const dim3 grid(static_cast<unsigned>((a.out + kTmaRows - 1) / kTmaRows * C),
                  static_cast<unsigned>((a.n + kTmaTokens - 1) / kTmaTokens));
  return LaunchKernelInClusters(pdl, C, kernel, grid, dim3(kTmaThreads), static_cast<size_t>(kSmem), stream, tw, tx,
                                a);
}

}  // namespace fp::cuda_engine
