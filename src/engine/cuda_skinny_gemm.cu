// engine/cuda_skinny_gemm.cu — batch-invariant tensor-core GEMM for decode-sized activations:
//   y[n, out] = x[n, in] . W[out, in]^T + beta * y   (bf16 operands, fp32 accumulate and output), any n >= 1,
// or, with the SwiGLU epilogue, h[n, out / 2] = bf16(silu(gate) * up) from a gate|up matrix whose rows are
// interleaved in tiles of 4 gate + 4 up rows (GateUpRow).
//
// Why: a decode step at B <= 64 is a stream of weight bytes; the GEMM must read W once at any n and keep
// enough bytes in flight, and in deterministic mode every token's result must not depend on n or on the
// token's place in the batch (docs/kernel-spec.md, "Skinny GEMM"). Design (the register schedule,
// cuda_skinny_gemm.cuh):
//   - mma.sync m16n8k16 with tokens as M (16 per m-tile, zero rows past n) and output rows as N: one warp owns
//     8 * NR output rows and MT m-tiles (NR, MT grow with n so x traffic through L1 stays below ~3x the W bytes).
//   - W is read straight from global memory (ld.global.cs, streamed once): lane (g, q) loads 8 k of row g. The
//     mma's k order is permuted (logical k 2q,2q+1 | 2q+8,2q+9 <- physical 8q+0,1 | 8q+2,3 for the first mma,
//     8q+4..7 for the second), the same permutation on x, so lane q's 8 k are the B fragments of two mmas and
//     no shuffles or shared memory are needed. So the first mma of a 32-k segment sums k {0-3, 8-11, 16-19,
//     24-27}, the second {4-7, 12-15, 20-23, 28-31}: segment-tiled W stores them in that grouping
//     (WeightStoredK), and a lane reads its two 8-byte pieces 32 bytes apart (SkinnyWPieceK).
//   - K is cut into 32-element segments; the block's 8 warps own contiguous eighths of them (so a warp's loads
//     in flight are one contiguous run per row), each accumulating in a fixed order; the 8 partial sums are
//     added in shared memory in warp order. Nothing in this order depends on n, MT, NR or the grid, and an
//     mma output element depends only on its own A row and B column, so the result per token is bit-identical
//     for any batch (test SkinnyGemm.BatchInvariant).
//   - PDL: the first weight segments are loaded before PdlWait() (weights never depend on the previous kernel).
// The same arithmetic runs in more schedules: up to 16 tokens a streaming one (cuda_skinny_stream.cuh: W and x
// through per-warp cp.async rings, resident blocks walking the row tiles), and above 16 a tiled one where its
// 64-token x 128-row tiles fill the SMs (cuda_skinny_wgmma.cuh on sm_90a, else cuda_skinny_tiled.cuh: x and W
// through shared memory; any n, in tiles of 64 tokens); on sm_90a with segment-tiled W a TMA-fed one runs every
// matrix at 17-64 tokens and the others above (cuda_skinny_tma.cuh: 64 x 64 tiles, K slices split over clusters
// of 2 for long K); elsewhere the register schedule (n > 64 in passes of 64 tokens, W re-read from L2 per pass).
// W may be row-major or segment-tiled (WeightLayout): the layout moves bytes, not arithmetic.
// defines: SkinnyGemmSupported, SkinnyTiledFills, SkinnyWgmmaAvailable, SkinnyTmaAvailable, LaunchSkinnyGemm,
//          LaunchSkinnyGemmSwiGlu
// (declared in cuda_engine_kernels.h)
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "core/cuda_device.h"
#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_stream.cuh"
#include "engine/cuda_skinny_tiled.cuh"
#include "engine/cuda_skinny_tma.cuh"
#include "engine/cuda_skinny_wgmma.cuh"

namespace fp::cuda_engine {
namespace {

// Warps per block: one per K slice (kSkinnySlices, contiguous), fixed since they fix the summation order.
// Everything else (rows and m-tiles per warp, loads in flight, double buffering) only schedules the same
// arithmetic and is picked per n from bench_gemm's sweep (H200: W8 contiguous beat W4 and the interleaved split
// at n >= 16 and matched them at n = 1).

template <int MT, int NR, int U, bool DB, Epilogue E>
Status Launch(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  FP_CUDA_RETURN_IF_ERROR((LaunchSkinnyKernel<MT, NR, E, kSkinnySlices, U, true, 0, DB>(a, pdl, stream)));
  return Status::Ok();
}

// Tiled schedule (17+ tokens): 2 segments a stage, 4 stages (96 KiB) and 128 registers, so two blocks share an
// SM (bench_gemm --tiled, H200, gate|up at 64 tokens: 98.5 us; one block of 6 stages: 109.5; cuBLAS 73.2).
constexpr int kTiledBks = 2, kTiledStages = 4, kTiledMinBlocks = 2;

// The device's SM count (grids and the tiled dispatch rule); 132 where it cannot be read.
int DeviceSms() {
  const int sms = CurrentDeviceSms();
  return sms > 0 ? sms : 132;
}

// Up to 16 tokens the streaming schedule (cuda_skinny_stream.cuh) with 4 row tiles, 4 stages, 2 blocks an SM, on
// segment-tiled W (bench_gemm --stream, H200, us for q|k|v, o, gate|up, down, LM head): 20.2, 16.3, 65.4, 35.5,
// 241.2 at n = 1 (the fp32 GEMV 19.6, 16.1, 62.0, 37.9, 241.9); 21.4, 17.2, 70.6, 36.2, 258.6 at n = 16. Since W
// is stored grouped by MMA step, 2 row tiles (the choice up to n = 8 before) are 1.5-8% slower at n = 1
// (gemm-stream-h200-2026-11-28-s9.md).
template <Epilogue E>
Status LaunchStream(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  FP_CUDA_RETURN_IF_ERROR((LaunchSkinnyStreamKernel<4, E, 4, 2>(a, DeviceSms(), pdl, stream)));
  return Status::Ok();
}

// Hopper schedule (cuda_skinny_wgmma.cuh): 2 segments a stage, 3 stages (72.5 KiB; 182-184 registers, so two blocks
// an SM; bench_gemm --tiled, H200, gate|up at 64 tokens: 78.4 us, 4 stages 79.0, 4-segment stages 82.6).
constexpr int kWgmmaBks = 2, kWgmmaStages = 3;

// TMA schedule (cuda_skinny_tma.cuh) rings (bench_gemm --tiled, H200, 64 tokens, kernel time,
// gemm-tma-h200-2026-11-28-s10): where the 64-row tiles are fewer than the SMs (q|k|v, o) 8-segment stages x 3
// (one block an SM; q|k|v 21.5 us, o 19.5, against 23.3 and 21.2 with 4-segment stages); where they make waves
// (gate|up, LM head) 4 x 3, two blocks an SM (gate|up 71.1 against 79.0); long K on few tiles (down) in clusters
// of 2 with 4 x 6 (42.2 us against 58.3 unsplit; clusters of 4 were slower everywhere).
constexpr int kTmaWaveBks = 4, kTmaWaveStages = 3, kTmaFewBks = 8, kTmaFewStages = 3;
constexpr int kTmaSplitBks = 4, kTmaSplitStages = 6, kTmaSplitMinIn = 8192;

template <Epilogue E>
cudaError_t LaunchTma(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  const int64_t tiles = int64_t{(a.out + kTmaRows - 1) / kTmaRows} * ((a.n + kTmaTokens - 1) / kTmaTokens);
  if (tiles >= DeviceSms()) return LaunchSkinnyTmaKernel<E, kTmaWaveBks, kTmaWaveStages, 1>(a, pdl, stream);
  if (a.in >= kTmaSplitMinIn && 2 * tiles <= DeviceSms()) {
    return LaunchSkinnyTmaKernel<E, kTmaSplitBks, kTmaSplitStages, 2>(a, pdl, stream);
  }
  return LaunchSkinnyTmaKernel<E, kTmaFewBks, kTmaFewStages, 1>(a, pdl, stream);
}

// Which schedule runs (all compute the same bits): up to 16 tokens the streaming one; then, up to 64 tokens on
// sm_90a with segment-tiled W (the deterministic mode), the TMA schedule for every matrix (it beat the cp.async
// wgmma schedule on gate|up too once x came in 128-byte rows: 71.1 against 74.0 us); where 64 x 128 tiles fill
// the SMs (gate|up and the LM head at 17-64 tokens on row-major W, every matrix at prefill lengths) the wgmma
// schedule on sm_90a, else the mma.sync tiled one; elsewhere the register schedule with 2 or 4 m-tiles a warp
// (on sm_80 it beat the tiled one there: H200 at 64 tokens, o 26 vs 60 us, gemm-tiled-h200-2026-11-28).
template <Epilogue E>
Status Dispatch(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  if (a.n <= kStreamMaxTokens) return LaunchStream<E>(a, pdl, stream);
  const bool tma = SkinnyTmaSupported(a) && SkinnyTmaAvailable();
  if (tma && a.n <= kTmaTokens) {
    FP_CUDA_RETURN_IF_ERROR(LaunchTma<E>(a, pdl, stream));
    return Status::Ok();
  }
  if (SkinnyTiledFills(a.out, a.n)) {
    const cudaError_t e =
        SkinnyWgmmaAvailable()
            ? LaunchSkinnyWgmmaKernel<E, kWgmmaBks, kWgmmaStages>(a, pdl, stream)
            : LaunchSkinnyTiledKernel<E, kTiledBks, kTiledStages, kTiledMinBlocks>(a, pdl, stream);
    FP_CUDA_RETURN_IF_ERROR(e);
    return Status::Ok();
  }
  if (tma) {  // more than 64 tokens, tiles too few for the wgmma one
    FP_CUDA_RETURN_IF_ERROR(LaunchTma<E>(a, pdl, stream));
    return Status::Ok();
  }
  if (a.n <= 32) return Launch<2, 2, 4, false, E>(a, pdl, stream);
  return Launch<4, 4, 2, false, E>(a, pdl, stream);
}

}  // namespace

// The wgmma schedule runs where its sm_90a code exists (the real kernel holds 128 fp32 sums a thread).
bool SkinnyWgmmaAvailable() {
  return Sm90aKernelRuns<SkinnyWgmmaKernel<Epilogue::kStore, kWgmmaBks, kWgmmaStages>>(128);
}

bool SkinnyTmaAvailable() {
  return Sm90aKernelRuns<SkinnyTmaKernel<Epilogue::kStore, kTmaWaveBks, kTmaWaveStages, 1>>(40);
}

bool SkinnyTiledFills(int out, int n) {
  const int64_t tiles = int64_t{(out + kTiledRows - 1) / kTiledRows} * ((n + kTiledTokens - 1) / kTiledTokens);
  return n > kStreamMaxTokens && tiles >= DeviceSms();
}

bool SkinnyGemmSupported(int out, int in, const void* w, const void* x, int n) {
  return n >= 1 && out > 0 && in > 0 && in % kSegK == 0 && (reinterpret_cast<uintptr_t>(w) & 15u) == 0 &&
         (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
}

Status LaunchSkinnyGemm(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y,
                        float beta, bool pdl, cudaStream_t stream, WeightLayout layout) {
  if (!SkinnyGemmSupported(out, in, w, x, n) || y == nullptr) {
    return InvalidArgument("skinny gemm: unsupported shape (n " + std::to_string(n) + ", in " +
                           std::to_string(in) + ", out " + std::to_string(out) +
                           ": in must be a multiple of 32) or unaligned operands");
  }
  return Dispatch<Epilogue::kStore>(SkinnyArgs{w, x, y, nullptr, out, in, n, beta, layout}, pdl, stream);
}

Status LaunchSkinnyGemmSwiGlu(const __nv_bfloat16* w_gate_up, int ff, int in, const __nv_bfloat16* x, int n,
                              __nv_bfloat16* h, bool pdl, cudaStream_t stream, WeightLayout layout) {
  if (ff <= 0 || ff % 4 != 0 || !SkinnyGemmSupported(2 * ff, in, w_gate_up, x, n) || h == nullptr) {
    return InvalidArgument("skinny gemm swiglu: unsupported shape (n " + std::to_string(n) + ", in " +
                           std::to_string(in) + ", ff " + std::to_string(ff) +
                           ": in a multiple of 32, ff of 4) or unaligned operands");
  }
  return Dispatch<Epilogue::kSwiGlu>(SkinnyArgs{w_gate_up, x, nullptr, h, 2 * ff, in, n, 0.f, layout}, pdl, stream);
}

}  // namespace fp::cuda_engine
