// attention_prefill_launch.cuh — internal entry of the prefill kernel with an explicit tile configuration, so the
// benchmark can measure the alternatives it records in docs/kernel-spec.md ("Prefill"). The public entry
// (AttentionPrefillCuda in fieldprint/attention_cuda.h) calls this with the measured default.
// defines: PrefillConfig, AttentionPrefillCudaConfig (declares AttentionPrefillCuda)
#pragma once

#include <cuda_runtime.h>

#include "fieldprint/attention.h"

namespace fp {

// Which kernel runs. kAuto takes the Hopper (wgmma) kernel where it applies (bf16, head_dim 128, a compute
// capability 9.0 device, code built for sm_90a) and is enabled (kPrefillHopperByDefault; FP_PREFILL_WGMMA=0 or 1 in
// the environment overrides it), the mma.sync kernel otherwise. kHopper asks for it explicitly: Unimplemented where
// it does not apply. kMmaSync forces the mma.sync kernel.
enum class PrefillPath { kAuto = 0, kMmaSync = 1, kHopper = 2 };

// Which Hopper kernel. kCtaBarrier: all 256 threads copy, a CTA barrier per KV tile (attention_prefill_hopper.cuh;
// block_n, stages, pingpong apply). kWarpSpecialized: a producer warpgroup and mbarrier rings
// (attention_prefill_hopper_ws.cuh; built for block_n 128 and 2 stages only; pingpong does not apply: its consumers
// always take turns). kDefault: kPrefillHopperPipeline.
enum class HopperPipeline { kDefault = 0, kCtaBarrier = 1, kWarpSpecialized = 2 };

struct PrefillConfig {
  int warps = 0;  // mma.sync: 8 (16 rows each, BM 128) or 4 (32 rows each at d = 64, 16 at d = 128); 0 = default
  PrefillPath path = PrefillPath::kAuto;
  int block_n = 0;        // Hopper path: keys per KV tile, 64 or 128; 0 = default (128)
  int stages = 0;         // Hopper path: K/V buffers, 2 or 3; 0 = default (2)
  bool pingpong = true;   // Hopper path: warpgroup 1 issues its S MMAs after warpgroup 0's
  HopperPipeline pipeline = HopperPipeline::kDefault;  // Hopper path: which kernel
  int ctas = 0;  // warp-specialized kernel: CTAs walking the work items; 0 = one per SM, -1 = one per item
};

// kDefault's Hopper kernel: the warp-specialized one ran at 27-51% more TFLOP/s than the CTA-barrier one on an
// H100 (docs/kernel-spec.md, Prefill, has the measurements).
inline constexpr HopperPipeline kPrefillHopperPipeline = HopperPipeline::kWarpSpecialized;

// Whether kAuto takes the Hopper path (where it applies). On since it passed the oracle tests on an H200
// (PrefillHopper.*, and PrefillCuda.* through kAuto with it on; docs/kernel-spec.md, Prefill).
inline constexpr bool kPrefillHopperByDefault = true;

// The public entry, also declared in fieldprint/attention_cuda.h: validates p against host_batch (host copies of
// p.batch's arrays), then launches on `stream`. q, K, V, anchor and o on the device, bf16 or f16, head_dim 64/128.
Status AttentionPrefillCuda(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream);

// Same contract as AttentionPrefillCuda; `cfg` picks the tile shape.
Status AttentionPrefillCudaConfig(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream,
                                  PrefillConfig cfg);

}  // namespace fp
