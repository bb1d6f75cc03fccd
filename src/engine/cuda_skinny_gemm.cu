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
//   - W is read straight from global memory in 16-byte loads (ld.global.cs, streamed once): lane (g, q) loads 8
//     consecutive k of row g. The mma's k order is permuted (logical k 2q,2q+1 | 2q+8,2q+9 <- physical
//     8q+0,1 | 8q+2,3 for the first mma, 8q+4..7 for the second), the same permutation on x, so one 16-byte
//     load is the B fragment of two mmas and no shuffles or shared memory are needed.
//   - K is cut into 32-element segments; the block's 8 warps own contiguous eighths of them (so a warp's loads
//     in flight are one contiguous run per row), each accumulating in a fixed order; the 8 partial sums are
//     added in shared memory in warp order. Nothing in this order depends on n, MT, NR or the grid, and an
//     mma output element depends only on its own A row and B column, so the result per token is bit-identical
//     for any batch (test SkinnyGemm.BatchInvariant).
//   - PDL: the first weight segments are loaded before PdlWait() (weights never depend on the previous kernel).
// The same arithmetic runs in more schedules: up to 16 tokens a streaming one (cuda_skinny_stream.cuh: W and x
// through per-warp cp.async rings, resident blocks walking the row tiles), and above 16 a tiled one where its
// 64-token x 128-row tiles fill the SMs (cuda_skinny_wgmma.cuh on sm_90a, else cuda_skinny_tiled.cuh: x and W
// through shared memory; any n, in tiles of 64 tokens); elsewhere the register schedule (n > 64 in passes of 64
// tokens, W re-read from L2 per pass). W may be row-major or segment-tiled (WeightLayout): the layout moves
// bytes, not arithmetic.
// defines: SkinnyGemmSupported, SkinnyTiledFills, SkinnyWgmmaAvailable, LaunchSkinnyGemm, LaunchSkinnyGemmSwiGlu
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

// Up to 16 tokens the streaming schedule (cuda_skinny_stream.cuh), in the configurations bench_gemm --stream chose
// on segment-tiled W (H200, us for q|k|v, o, gate|up, down): n <= 8: 2 row tiles, 4 stages, 3 blocks an SM:
// 18.9, 15.4, 64.3, 34.5 at n = 1 (the fp32 GEMV: 19.9, 15.5, 61.9, 37.2; the row-major W ring it replaced, on
// the same kind of card: 20.9, 16.6, 70.2, 39.7); 9-16: 4 row tiles, 4 stages, 2 blocks: 20.6, 16.3, 67.7, 35.8
// at n = 16 (2 row tiles: 20.2, 16.3, 72.0, 39.6).
template <Epilogue E>
Status LaunchStream(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  const cudaError_t e = a.n <= 8 ? LaunchSkinnyStreamKernel<2, E, 4, 3>(a, DeviceSms(), pdl, stream)
                                 : LaunchSkinnyStreamKernel<4, E, 4, 2>(a, DeviceSms(), pdl, stream);
  FP_CUDA_RETURN_IF_ERROR(e);
  return Status::Ok();
}

// Hopper schedule (cuda_skinny_wgmma.cuh): 2 segments a stage, 3 stages (72.5 KiB; 182-184 registers, so two blocks
// an SM; bench_gemm --tiled, H200, gate|up at 64 tokens: 78.4 us, 4 stages 79.0, 4-segment stages 82.6).
constexpr int kWgmmaBks = 2, kWgmmaStages = 3;

// Which schedule runs (all compute the same bits): up to 16 tokens the streaming one; above, where 64 x 128 tiles
// fill the SMs (gate|up and the LM head at 17-64 tokens, every matrix at prefill lengths) the wgmma schedule on
// sm_90a, else the mma.sync tiled one; elsewhere the register schedule with 2 or 4 m-tiles a warp (q|k|v, o, down
// at 17-64 tokens, where it beat both: H200 at 64 tokens, us: o 26 vs 60 tiled (gemm-tiled-h200-2026-11-28); o 23
// (gemm-wgmma-h200-2026-11-28) vs 31 for wgmma in clusters of 8, since removed (gemm-wgmma-split-h200-2026-11-28)).
template <Epilogue E>
Status Dispatch(const SkinnyArgs& a, bool pdl, cudaStream_t stream) {
  if (a.n <= kStreamMaxTokens) return LaunchStream<E>(a, pdl, stream);
  if (SkinnyTiledFills(a.out, a.n)) {
    const cudaError_t e =
        SkinnyWgmmaAvailable()
            ? LaunchSkinnyWgmmaKernel<E, kWgmmaBks, kWgmmaStages>(a, pdl, stream)
            : LaunchSkinnyTiledKernel<E, kTiledBks, kTiledStages, kTiledMinBlocks>(a, pdl, stream);
    FP_CUDA_RETURN_IF_ERROR(e);
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
