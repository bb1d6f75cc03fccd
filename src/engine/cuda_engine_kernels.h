// engine/cuda_engine_kernels.h — the small fused kernels of the CUDA Llama forward (cuda_engine_kernels.cu):
// everything that is not a GEMM (cuBLAS) or attention (attention_cuda.h). Launchers enqueue on `stream` and
// check the launch; preconditions (token ids in range, slot rows in the pool) are the caller's, checked on
// the host before upload. Activations: residual stream f32, GEMM inputs bf16, GEMM outputs f32. defines:
// LaunchEmbed, LaunchRmsNorm, LaunchRopeTable, LaunchRopeWriteKv, GateUpRow, SwiGluBf16, LaunchSwiGlu, LaunchArgmax,
//          LaunchArgmaxChecked, LaunchSampleBounds (cuda_sample_bounds.cu), LaunchRandomBf16,
//          LaunchFillF32, LaunchF32ToBf16, GemvSupported, LaunchGemvBf16, LaunchGemvSwiGluBf16, GemvNorm,
//          GemvNormSupported, LaunchGemvNormRopeBf16 (cuda_gemv.cu),
//          WeightLayout, kWeightTileRows, kWeightSegK, WeightLayoutRows, LaunchWeightRelayout
//          (cuda_weight_layout.cu),
//          SkinnyGemmSupported, SkinnyTiledFills, SkinnyWgmmaAvailable, SkinnyTmaAvailable, LaunchSkinnyGemm,
//          LaunchSkinnyGemmSwiGlu (cuda_skinny_gemm.cu)
// `pdl`: launch with programmatic dependent launch (cuda_pdl.cuh; the caller checks the device is sm_90+).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fieldprint/cuda_engine.h"  // SampleBounds
#include "fieldprint/status.h"

namespace fp::cuda_engine {

// x[t, :] = float(table[tokens[t], :]).  tokens: [n], table: [vocab, d] bf16, x: [n, d] f32.
Status LaunchEmbed(const int32_t* tokens, int n, const __nv_bfloat16* table, int d, float* x,
                   cudaStream_t stream, bool pdl = false);

// y[t, :] = bf16(x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * w).  x: [n, d] f32, w: [d] f32, y: [n, d] bf16.
Status LaunchRmsNorm(const float* x, const float* w, int n, int d, float eps, __nv_bfloat16* y,
                     cudaStream_t stream, bool pdl = false);

// (cos, sin) of every token's RoPE angles, once per step: cs[t, i] = float(cos, sin of positions[t] * inv_freq[i])
// computed in double like the CPU engine. positions: [n], inv_freq: [half] double, cs: [n, half] float2.
Status LaunchRopeTable(const int32_t* positions, const double* inv_freq, int n, int half, float2* cs,
                       cudaStream_t stream, bool pdl = false);

// One launch per layer after the QKV GEMM: RoPE ("normal" mode: adjacent pairs (2i, 2i+1) rotate by the angle of
// cs[t, i], LaunchRopeTable) on q and k, then
//   q_out[t]                 = bf16(rope(q))                       [n, Hq, hd]
//   k_pool[slot_rows[t]]     = bf16(rope(k)), v_pool[...] = bf16(v) [pool rows, Hkv, hd]
//   k_cap[t], v_cap[t]       = same rows, when k_cap != null (anchor capture)  [n, Hkv, hd]
// qkv: [n, Hq*hd + 2*Hkv*hd] f32 (q | k | v), cs: [n, hd/2] float2, slot_rows: [n].
struct RopeWriteArgs {
  const float* qkv;
  const float2* cs;
  const int64_t* slot_rows;
  __nv_bfloat16* q_out;
  __nv_bfloat16* k_pool;
  __nv_bfloat16* v_pool;
  __nv_bfloat16* k_cap;
  __nv_bfloat16* v_cap;
  int n, hq, hkv, hd;
};
Status LaunchRopeWriteKv(const RopeWriteArgs& a, cudaStream_t stream, bool pdl = false);

// The fused gate|up matrix [2*ff, d] interleaves tiles of 4 gate rows and 4 up rows (ff % 4 == 0), so the
// skinny GEMM's 8-row tile holds both halves of 4 SwiGLU outputs: the row of gate i (up = false) or up i.
__host__ __device__ constexpr int64_t GateUpRow(int64_t i, bool up) { return (i / 4) * 8 + (up ? 4 : 0) + i % 4; }

// silu(gate) * up, the one expression every SwiGLU path (kernel, GEMV and skinny epilogues) uses, so the fused
// paths are bit-identical to the separate kernel by construction.
#ifdef __CUDACC__
__device__ __forceinline__ __nv_bfloat16 SwiGluBf16(float gate, float up) {
  return __float2bfloat16(gate / (1.f + __expf(-gate)) * up);
}
#endif

// h[t, i] = bf16(silu(gate) * up), gate = gu[t, GateUpRow(i, false)], up = gu[t, GateUpRow(i, true)].
// gu: [n, 2*ff] f32, h: [n, ff] bf16.
Status LaunchSwiGlu(const float* gu, int n, int ff, __nv_bfloat16* h, cudaStream_t stream, bool pdl = false);

// out[t] = argmax_i logits[t, i] (lowest index on ties, NaN never wins).  logits: [n, vocab] f32, out: [n].
Status LaunchArgmax(const float* logits, int n, int vocab, int32_t* out, cudaStream_t stream);
// The same pick, bit for bit Sampler::Sample's greedy rule (lowest index among the maxima), with out[t] = -1 for a
// row Sample refuses (a NaN or +inf logit, or every logit -inf): the device argmax of a transcript replay.
Status LaunchArgmaxChecked(const float* logits, int n, int vocab, int32_t* out, cudaStream_t stream);
// Per row t: where picked[t]'s interval [lo, hi) lies in Sampler::Pick's softmax walk (temperature only), in
// double on the device; refused = 1 where Sample refuses the row or picked[t] is out of range
// (cuda_sample_bounds.cu has the error argument). logits: [n, vocab] f32, picked, out: [n].
Status LaunchSampleBounds(const float* logits, int n, int vocab, const int32_t* picked, double inv_temperature,
                          SampleBounds* out, cudaStream_t stream);

// dst[i] = bf16(scale * u(seed, i)), u uniform in [-1, 1) from a counter hash: random weights without the
// host.
Status LaunchRandomBf16(__nv_bfloat16* dst, size_t n, uint64_t seed, float scale, cudaStream_t stream);
// dst[i] = value.
Status LaunchFillF32(float* dst, size_t n, float value, cudaStream_t stream);
// dst[i] = bf16(src[i]).
Status LaunchF32ToBf16(const float* src, size_t n, __nv_bfloat16* dst, cudaStream_t stream);

// Small-batch GEMV (cuda_gemv.cu): y[n, out] = x[n, in] . W[out, in]^T + beta * y (f32 out), 1 <= n <= 8,
// in % 8 == 0, W and x 16-byte aligned (GemvSupported); deterministic, one launch.
inline constexpr int kGemvMaxRows = 8;
bool GemvSupported(int out, int in, const void* w, const void* x, int n);
// depth: 16-byte loads in flight per lane and row (4, 8, 16; 0 = by `in`, the measured choice).
Status LaunchGemvBf16(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y,
                      float beta, cudaStream_t stream, bool pdl = false, int depth = 0);

// One token through a GateUpRow-interleaved gate|up matrix [2*ff, in] with SwiGLU in the epilogue:
// h[ff] = bf16(silu(gate) * up), bit-identical to LaunchGemvBf16 (n = 1) + LaunchSwiGlu.
Status LaunchGemvSwiGluBf16(const __nv_bfloat16* w_gate_up, int ff, int in, const __nv_bfloat16* x,
                            __nv_bfloat16* h, cudaStream_t stream, bool pdl = false);

// One token with the RMSNorm before the GEMV fused into it: the GEMV's input is bf16(x * rsqrt(mean(x^2) + eps) *
// w), bit for bit LaunchRmsNorm's row. x: [in] f32 (the residual row), w: [in] f32, both 16-byte aligned;
// in % 8 == 0 and in <= 8192 (GemvNormSupported).
struct GemvNorm {
  const float* x;
  const float* w;
  float eps;
};
bool GemvNormSupported(int in, const GemvNorm& norm);
// LaunchRmsNorm + LaunchGemvBf16 on the q|k|v matrix [(hq + 2 hkv) hd, in] + LaunchRopeWriteKv, bit-identical,
// for one token (rope.n == 1, head_dim % 8 == 0, no anchor capture: rope.k_cap == rope.v_cap == null; rope.qkv
// is not read: the rows come from the GEMV's accumulators, and no f32 q|k|v row is written). With pdl, rope.cs and
// rope.slot_rows are read before the wait: they must not come from the kernel just before (cuda_pdl.cuh).
Status LaunchGemvNormRopeBf16(const __nv_bfloat16* w_qkv, int in, const GemvNorm& norm, const RopeWriteArgs& rope,
                              cudaStream_t stream, bool pdl = false);

// How a weight matrix W[out, in] (bf16) lies in memory. kRowMajor: [out][in]. kSegmentTiled: [ceil(out / 16)]
// [in / 32][16 rows][32 k], so the 32-k segment of a 16-row tile, what the skinny GEMM's warps read at a time,
// is 1 KiB contiguous instead of 16 pieces of 64 bytes an 8 KiB row apart (H200, n = 1, gate|up: 62 us against
// 70 row-major). Inside a row's segment the k are stored grouped by the skinny GEMM's two MMA steps,
// [0-3 | 8-11 | 16-19 | 24-27 | 4-7 | 12-15 | 20-23 | 28-31] (WeightStoredK), so that each step's 16 k are 32
// contiguous bytes, what a TMA copy feeds a wgmma (cuda_skinny_tma.cuh). Relayout: cuda_weight_layout.cu. Only
// the skinny GEMM reads it; the engine's deterministic mode keeps its GEMM weights so. Its buffers hold
// WeightLayoutRows(out) rows (zeros past out).
enum class WeightLayout : int { kRowMajor = 0, kSegmentTiled = 1 };
constexpr int kWeightTileRows = 16;
constexpr int kWeightSegK = 32;  // k of a segment: the skinny GEMM's (cuda_skinny_gemm.cuh: kSegK)
constexpr int64_t WeightLayoutRows(int64_t out) {
  return (out + kWeightTileRows - 1) / kWeightTileRows * kWeightTileRows;
}
// Where k (0..31) of a segment is stored inside a segment-tiled row's segment: its 4-k piece p = k / 4 goes to
// piece p / 2 (p even) or 4 + p / 2 (p odd).
__host__ __device__ constexpr int WeightStoredK(int k) {
  const int p = k / 4;
  return ((p % 2 == 0) ? p / 2 : 4 + p / 2) * 4 + k % 4;
}
// dst <- src in layout `to` (src in the other layout), both [WeightLayoutRows(out), in] buffers, in % 32 == 0;
// the padding rows of a kSegmentTiled dst are zeroed. Not in place.
Status LaunchWeightRelayout(const __nv_bfloat16* src, int out, int in, WeightLayout to, __nv_bfloat16* dst,
                            cudaStream_t stream);

// Batch-invariant tensor-core GEMM (cuda_skinny_gemm.cu): y[n, out] = x[n, in] . W[out, in]^T + beta * y (f32
// out), any n >= 1 (fast for n <= 64), in % 32 == 0, W and x 16-byte aligned (SkinnyGemmSupported), W in either
// layout (same bits). Each token's row of y is bit-identical whatever n is and wherever the token sits in x.
bool SkinnyGemmSupported(int out, int in, const void* w, const void* x, int n);
// Whether n tokens of a matrix with `out` rows run a tiled schedule (cuda_skinny_wgmma.cuh on sm_90a, else
// cuda_skinny_tiled.cuh): more than 16 tokens and at least one 64 x 128 tile per SM. Same bits either way; for
// tests and benches that want one schedule.
bool SkinnyTiledFills(int out, int n);
// Whether the tiled schedule is the Hopper (wgmma) one: a compute capability 9.0 device and an sm_90a build.
bool SkinnyWgmmaAvailable();
// Whether the TMA-fed schedule (cuda_skinny_tma.cuh) can run: same conditions; it runs segment-tiled W at 17-64
// tokens, and above where the tiles do not fill the SMs.
bool SkinnyTmaAvailable();
Status LaunchSkinnyGemm(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y,
                        float beta, bool pdl, cudaStream_t stream, WeightLayout layout = WeightLayout::kRowMajor);
// The same GEMM on a GateUpRow-interleaved gate|up matrix [2*ff, in] with SwiGLU in the epilogue:
// h[n, ff] = bf16(silu(gate) * up), bit-identical to LaunchSkinnyGemm + LaunchSwiGlu.
Status LaunchSkinnyGemmSwiGlu(const __nv_bfloat16* w_gate_up, int ff, int in, const __nv_bfloat16* x, int n,
                              __nv_bfloat16* h, bool pdl, cudaStream_t stream,
                              WeightLayout layout = WeightLayout::kRowMajor);

}  // namespace fp::cuda_engine
