// fieldprint/attention_cuda.h — CUDA entry points of PagedFieldprintAttention (contract: attention.h).
//
// Every entry point validates with ValidateAttention on host copies of the batch arrays and returns an error
// before any launch; tensors and p.batch's arrays live on the device. Only defined in CUDA builds
// (FIELDPRINT_HAVE_CUDA); the header itself needs no CUDA headers so CPU code may include it.
// defines: CudaStream, AnchorSplit, DecodeOptions, DecodeConfig, DefaultDecodeConfig, AttentionDecodePlan,
//          AttentionDecodeCuda, AttentionPrefillCuda
// (append new entry points at the end, one block each)
#pragma once

#include <cstddef>
#include <memory>

#include "fieldprint/attention.h"
#include "fieldprint/status.h"

// Same declaration as cuda_runtime_api.h's (a repeated identical typedef is legal C++).
struct CUstream_st;
typedef CUstream_st* cudaStream_t;  // NOLINT(modernize-use-using)

namespace fp {

// ---- decode / small multi-query (1..8 query rows per sequence; any count is correct, >8 is slower) --------
// How the anchor's tokens are cut into splits (docs/kernel-spec.md, "Split-KV").
enum class AnchorSplit {
  kAuto,  // the tuned default for (head_dim, group) (DefaultDecodeConfig)
  kRide,  // the anchor rides in the first paged split, or is one split of its own when anchor_len > split / 2
  kOwn,   // the anchor is cut into its own splits of split_tokens tokens, merged by LSE like the rest
};

struct DecodeOptions {
  // Fixed KV split SIZE in paged tokens (not a split count): a sequence's work depends only on its own length,
  // so its result is bit-identical whatever batch it is in. 0 = the tuned default for (head_dim, group); else
  // must be >= 64. split_tokens, warps and anchor_split are deployment constants: changing one changes bits.
  int split_tokens = 0;
  // Warps per CTA: 4 or 8 (0 = tuned default; 8 falls back to 4 where the device lacks the shared memory).
  int warps = 0;
  AnchorSplit anchor_split = AnchorSplit::kAuto;
  // Graph mode when > 0: the work items are cut for lengths up to max_kv_len (every sequence gets the splits of
  // that length) and the kernel reads each sequence's length from the device batch at launch, so one plan (and
  // a CUDA graph of its launches) serves every later step with lengths <= max_kv_len: call Update() with the new
  // host batch before each replay. Splits past a sequence's length are empty and merge with weight 0; the result
  // is bit-identical to a plan cut for the exact lengths (test CapacityPlanMatchesExactPlan).
  int max_kv_len = 0;
  // Split-KV merge inside the decode kernel (the CTA finishing a row block's last split merges; no merge kernel
  // and no launch gap after the attention) or, when false, by a merge kernel after it. Same bits either way.
  bool fused_merge = true;
  // Launch with programmatic dependent launch (needs compute capability >= 9.0): the kernel may start while the
  // previous one drains, lets the next kernel launch at once, and waits for the previous one before reading q or
  // the LAST n_q KV rows of each sequence (the step's new tokens); older rows (positions < kv_len - n_q) and the
  // anchor it may read before that wait, so the previous kernel must not write them. The uploaded batch arrays
  // must be complete before the previous kernel starts (a copy earlier in the stream). For callers whose kernels
  // follow the same contract (core/cuda_pdl.cuh): the engine.
  bool pdl = false;
};

// The tuned defaults per (head_dim, group), measured in bench/cuda/bench_decode.cu --sweep (docs/kernel-spec.md).
struct DecodeConfig {
  int split_tokens, warps;
  AnchorSplit anchor_split;
};
DecodeConfig DefaultDecodeConfig(int head_dim, int group);

// plan(): validates, schedules (sequence, kv head, split) work items into a device workspace it owns.
// Run(): launches for tensors of the same shapes and the same batch metadata (the device block table may hold
// other page ids). Supports bf16/f16, head_dim 64/128, any page size, any GQA group (16 query rows per CTA; more
// rows take more CTAs); others return Unimplemented from Create. A plan's workspace holds split partials: run one
// plan on one stream at a time. The kernel reads kv_lens from the device batch (clamped to the planned length,
// so a bad device value can never index past the block table row).
class AttentionDecodePlan {
 public:
  static Result<AttentionDecodePlan> Create(const AttentionParams& p, const AttentionBatch& host_batch,
                                            const DecodeOptions& options = {}, cudaStream_t stream = nullptr);
  Status Run(const AttentionParams& p, cudaStream_t stream = nullptr) const;
  // Validates the next step's batch against the plan (same shapes, same q offsets, every kv_len <= the planned
  // one: max_kv_len in graph mode) without touching the device: the caller uploads the device arrays of
  // p.batch (the kernel reads them at launch) and then calls Run() or replays a graph captured around Run().
  // An error means the plan does not fit this batch: launch nothing (re-plan).
  Status Update(const AttentionParams& p, const AttentionBatch& host_batch) const;

  int num_work_items() const;  // CTAs of the main launch(es)
  int max_splits() const;      // most splits of any sequence (1 = no merge pass)
  int split_tokens() const;    // the resolved split size
  int warps() const;           // the resolved warps per CTA
  size_t workspace_bytes() const;

  AttentionDecodePlan(AttentionDecodePlan&&) noexcept;
  AttentionDecodePlan& operator=(AttentionDecodePlan&&) noexcept;
  ~AttentionDecodePlan();

  struct Impl;

 private:
  explicit AttentionDecodePlan(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One-shot: Create + Run (allocates its workspace each call; the plan is for repeated launches).
Status AttentionDecodeCuda(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream = nullptr,
                           const DecodeOptions& options = {});

// ---- prefill (helper "prefill" owns this block) -------------------------------------------------------------
// Many query rows per sequence (q_indptr), chunked prefill on a paged context, anchor + gamma, causal on the
// paged part, GQA, optional lse. bf16/f16, head_dim 64/128 (others: Unimplemented), any page size; tensors
// 16-byte aligned. Validates on host_batch before launch; bit-identical reruns (no atomics). Asynchronous on
// `stream`; no workspace. bf16 with head_dim 128 on a 9.0 device (sm_90a build) runs the wgmma kernel
// (FP_PREFILL_WGMMA=0 in the environment: the mma.sync one); its rounding differs from the mma.sync kernel's.
Status AttentionPrefillCuda(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream = nullptr);

}  // namespace fp
