// fieldprint/cuda_engine.h — the Llama-architecture forward pass on a CUDA device (bf16 weights, paged KV).
//
// The GPU twin of LlamaEngine (engine.h), same position convention (anchor at RoPE positions 0 .. A-1, token i
// of a sequence at A + i) and the same Forward contract, so a teacher-forced comparison against the CPU engine
// is a plain diff of logits. Per layer: RMSNorm -> fused QKV GEMM (bf16 in, fp32 accumulate and out; GEMV,
// skinny tensor-core GEMM or cuBLAS by token count)
// -> one kernel for RoPE + K/V rows written into the paged pool at the reserved slots -> attention
// (AttentionPrefillCuda for Forward; for DecodeStep a graph-mode AttentionDecodePlan inside a CUDA graph per batch
// size, or an eager plan per step) -> O GEMM accumulating
// into the fp32 residual (beta = 1, no separate add) -> RMSNorm -> fused gate|up GEMM (SwiGLU in its epilogue on
// the skinny path) -> down GEMM
// into the residual. Weights: uploaded from LlamaWeights (any type, dequantised to f32 then rounded to bf16)
// or drawn on the device from a seed (Llama-3-8B shapes without a 16 GB host detour).
// Not thread-safe; all device work is ordered on one compute stream (stream()). Only defined in CUDA builds
// (without CUDA, Create* return Unimplemented).
// defines: CudaEngineOptions, CudaLlama
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/model_config.h"
#include "fieldprint/status.h"

struct CUstream_st;  // cudaStream_t == CUstream_st*

namespace fp {

struct CudaEngineOptions {
  int32_t page_size = 16;       // tokens per KV page
  int32_t kv_capacity = 4096;   // tokens the pool holds over all sequences (rounded up to pages)
  int32_t max_batch = 16;       // sequences per DecodeStep
  int32_t max_chunk = 256;      // prefill tokens per forward chunk (bounds scratch memory)
  // Decode split-KV size: >= 64 fixed, 0 = the kernel's tuned default (both batch-invariant attention), -1 =
  // chosen per step from B and the longest length (512 while that gives at most ~8 CTAs per SM, else a power of
  // two giving ~2 per SM, up to the default; measured, cuda_engine.cu DecodeSplit): needed when B x length is
  // small (B = 1 at 4k tokens is 8 CTAs at the default); attention bits then depend on the batch (the GEMMs'
  // already do: GEMV for B <= gemv_max_batch, cuBLAS above).
  int32_t split_tokens = -1;
  float gamma = 0.f;            // log-bias on anchor logits, every head
  std::vector<float> gamma_per_head;  // [n_heads] per-head log-bias; non-empty: replaces gamma
  bool decode_graphs = true;    // DecodeStep replays a CUDA graph per batch size (cuda_engine_decode.cu)
  // GEMM choice by token count n: n <= gemv_max_batch (<= 8): the CUDA-core GEMV; n <= skinny_max_batch: the
  // tensor-core skinny GEMM (cuda_skinny_gemm.cu, SwiGLU fused into the gate|up GEMM); else cuBLAS. Defaults
  // from bench_gemm on an H200: the GEMV wins at n = 1 only; from n = 2 cuBLAS is faster in sum over a layer's
  // matrices (the skinny GEMM wins only on the small O projection up to n = 16, and for SmolLM2 at B = 16).
  int32_t gemv_max_batch = 1;
  int32_t skinny_max_batch = 0;
  bool pdl = true;  // programmatic dependent launch between a step's kernels (sm_90+; ignored on older GPUs)
  // The decode attention kernel with PDL too (when pdl is on), and its split-KV merge fused into it
  // (DecodeOptions::fused_merge; off: a merge kernel after it). Attention bits are the same either way.
  bool attention_pdl = true;
  bool fused_merge = true;
  // At one token (the GEMV path), the RMSNorm before the q|k|v GEMV and RoPE + KV write after it run inside it
  // (cuda_gemv.cu); the output bits are the same either way. kAuto fuses where the q|k|v matrix has at least one
  // 8-row block per SM, where every block normalizing the row again is hidden by the others. Measured (bench_e2e
  // fuse / nofuse, B = 1, H200, three rounds in one call): Llama-3-8B (768 blocks) 4542-4562 -> 4494-4516 us;
  // SmolLM2 (120 blocks on 132 SMs) 650-658 -> 658-661 us. RoPE alone in the epilogue (the norm its own kernel) was
  // slower on both (4592-4607, 689-697) and is not built.
  enum class FusedQkv { kAuto, kOn, kOff };
  FusedQkv fused_qkv = FusedQkv::kAuto;
  // Batch-invariant (deterministic) mode: every GEMM of every step runs one fixed configuration whatever the
  // token count (batch_invariant_gemm), and attention always runs the decode kernel (prefill chunks as
  // multi-query decode) with a fixed split size (split_tokens if >= 64, the kernel default for 0, 512 for -1).
  // Then a token's logits, its KV bytes and so every commit root are bit-identical whatever batch it runs in and
  // whether its KV was built by one prefill, chunked prefill or decode (tests/cuda/cuda_engine_determinism_test.cu).
  // Costs: bench_e2e "det" rows.
  bool batch_invariant = false;
  enum class InvariantGemm {
    kCublasPadded,  // cuBLAS on blocks of exactly 64 token rows (rows past n are scratch): one shape, one kernel
    // The skinny tensor-core GEMM on segment-tiled weights (cuda_skinny_gemm.cu): our own arithmetic, the same bits
    // in every schedule and on every card that runs its mma.sync; cheaper than kCublasPadded at B = 1 and 16
    // (bench_e2e det rows). Needs d_model, q_dim and d_ff multiples of 32 (SkinnyInvariantGemmFits).
    kSkinny,
  };
  InvariantGemm batch_invariant_gemm = InvariantGemm::kCublasPadded;
};

// Whether a model's shapes allow InvariantGemm::kSkinny (its K dimensions, d_model, q_dim and d_ff, in 32-element
// segments).
inline bool SkinnyInvariantGemmFits(const ModelConfig& c) {
  return c.d_model % 32 == 0 && c.q_dim() % 32 == 0 && c.d_ff % 32 == 0;
}

// Where a recorded token's interval [lo, hi) lies in Sampler::Pick's temperature-only softmax walk, computed on the
// device (CudaLlama::ForwardSampleBounds); refused = 1 where the host sampler would refuse the row (a NaN or +inf
// logit, every logit -inf) or the token is out of range.
struct SampleBounds {
  double lo = 0.0, hi = 0.0;
  int32_t refused = 0;
};

class CudaLlama {
  struct PrivateTag {
    explicit PrivateTag() = default;
  };

 public:
  // Uploads `weights` (every matrix widened to f32 on the host, rounded to bf16 on the device). progress
  // (optional): called once per layer uploaded, then for the embedding / output (total = n_layers + 1).
  static Result<std::unique_ptr<CudaLlama>> FromWeights(const LlamaWeights& weights, const CudaEngineOptions& options,
                                                        const LoadProgress& progress = {});
  // Random bf16 weights drawn on the device (uniform, scaled like LlamaWeights::Random). Deterministic in seed.
  static Result<std::unique_ptr<CudaLlama>> Random(const ModelConfig& config, uint64_t seed,
                                                   const CudaEngineOptions& options);
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  const ModelConfig& config() const;
  const CudaEngineOptions& options() const;
  KvCache& cache();
  CUstream_st* stream() const;
  // Bytes of weight matrices read per decode step (every layer matrix and the LM head).
  size_t weight_bytes() const;

  // Prefills `tokens` at positions 0 .. A-1 and returns the sealed anchor (CUDA device; A may be 0).
  Result<std::shared_ptr<AnchorSegment>> BuildAnchor(std::span<const int32_t> tokens);
  // A new empty sequence attending to `anchor` (may be null).
  Result<SeqId> NewSequence(const std::shared_ptr<AnchorSegment>& anchor);
  Status FreeSequence(SeqId seq);
  Status Truncate(SeqId seq, int32_t new_len);
  Result<int32_t> Length(SeqId seq) const;

  // LlamaEngine::Forward's contract: appends `tokens` to seq (prefill kernel, chunks of max_chunk) and writes the
  // logits of the last n_logits of them into logits [n_logits, vocab] on the host. Synchronises the stream.
  // On any error the sequence keeps its old length.
  Status Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::vector<float>* logits);
  // Forward into caller memory: logits must hold exactly [n_logits, vocab] floats (InvalidArgument otherwise).
  // Nothing is zero-filled first, and with pinned host memory (cudaMallocHost) the copy is one DMA at bus speed
  // instead of a staged pageable copy: the replay of sampling transcripts (transcript_cuda.cpp), whose [generated,
  // vocab] logits all go to the host. In cuda_engine_forward.cu.
  Status ForwardInto(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::span<float> logits);
  // Forward that returns, instead of logits, the greedy pick of each of the last n_ids rows, computed on the device
  // (n_ids ints cross the bus, not [n_ids, vocab] floats): ids [n_ids], exactly Sampler::Sample's greedy choice of
  // that row's logits (lowest id among the maxima), or -1 where Sample would refuse the row (a NaN or +inf logit,
  // or every logit -inf). Synchronises; on error the sequence keeps its old length. The replay of greedy
  // transcripts (transcript_cuda.cpp).
  Status ForwardGreedy(SeqId seq, std::span<const int32_t> tokens, int32_t n_ids, std::vector<int32_t>* ids);
  // Forward that returns, for each of the last picked.size() rows, the SampleBounds of picked[i] under a
  // temperature-only sampler (inv_temperature = 1 / T, > 0), computed on the device: 24 bytes a row cross the
  // bus. The replay of sampling transcripts (transcript_cuda.cpp) decides a row from them when its draw lies
  // clear of both bounds. Synchronises; on error the sequence keeps its old length. In
  // cuda_engine_forward.cu.
  Status ForwardSampleBounds(SeqId seq, std::span<const int32_t> tokens, std::span<const int32_t> picked,
                             double inv_temperature, std::vector<SampleBounds>* bounds);
  // Forward without logits that returns the final hidden states (after the final RMSNorm, kept f32: the LM
  // head's input before its bf16 rounding) of the tokens at hidden_rows (indices into tokens, strictly
  // increasing) into hidden [hidden_rows.size(), d_model] on the host. Synchronises; on error the sequence keeps
  // its old length. For the tolerant fingerprint (fingerprint.h); in cuda_engine_hidden.cu.
  Status ForwardHidden(SeqId seq, std::span<const int32_t> tokens, std::span<const int32_t> hidden_rows,
                       std::vector<float>* hidden);

  // One batched decode step: tokens[i] is appended to seqs[i] (distinct sequences, 1 <= B <= max_batch, one
  // shared anchor or none). Everything is enqueued on stream(); the logits [B, vocab] f32 stay on the device
  // (device_logits()) and are valid once the stream reaches that point. Returns without waiting for the GPU.
  Status DecodeStep(std::span<const SeqId> seqs, std::span<const int32_t> tokens);
  const float* device_logits() const;  // [max(max_batch, max_chunk), vocab]
  // The step choices benchmarks and tests switch between steps on one engine (each field means what the
  // CudaEngineOptions field of the same name means).
  struct DecodeTuning {
    bool decode_graphs = true;
    int32_t gemv_max_batch = 1, skinny_max_batch = 0, split_tokens = -1;
    bool pdl = true, batch_invariant = false, attention_pdl = true, fused_merge = true;
    CudaEngineOptions::FusedQkv fused_qkv = CudaEngineOptions::FusedQkv::kAuto;
    CudaEngineOptions::InvariantGemm batch_invariant_gemm = CudaEngineOptions::InvariantGemm::kCublasPadded;
  };
  // Replaces those fields of options() (an invalid split_tokens or threshold is ignored, batch_invariant is
  // ignored where the shapes do not allow it), drops the captured graphs and moves the GEMM weights to the layout
  // the new options want (segment-tiled in the skinny batch-invariant mode; the same results either way). An
  // error (no memory for the move's scratch) leaves the old options in place.
  Status SetDecodeTuning(const DecodeTuning& tuning);
  struct DecodeStats {
    int64_t graph_captures = 0, graph_replays = 0;
  };
  DecodeStats decode_stats() const;
  // DecodeStep + logits [B, vocab] to the host (synchronises).
  Status DecodeLogits(std::span<const SeqId> seqs, std::span<const int32_t> tokens, std::vector<float>* logits);
  // DecodeStep + greedy next token per sequence (argmax on the device, B ints to the host; synchronises).
  Status DecodeGreedy(std::span<const SeqId> seqs, std::span<const int32_t> tokens, std::vector<int32_t>* next);

  // One-time process and engine start-up work, done before anything is timed: runs a 1-token anchor, a 1-token
  // prefill with its device argmax and (page_size >= 2) one decode step with its argmax on a scratch sequence, so
  // lazy module loading, cuBLAS's first calls and the first launch of every kernel of those paths (in this
  // engine's mode) are paid here and not by the first timed anchor / prefill / decode. Afterwards the engine is as
  // before: the scratch page's KV bytes restored, the block pool's free list and refcounts, the captured decode
  // graphs, the eager plan and the decode counters unchanged (checked: Internal otherwise); only the next SeqId
  // has advanced (ids are opaque handles). Needs one free KV page. Synchronises. Not in FromWeights/Random:
  // tests compare a warmed engine with a fresh one, and benchmarks of cold starts stay possible.
  Status Warmup();

  struct Impl;
  CudaLlama(std::unique_ptr<Impl> impl, PrivateTag);  // use FromWeights() / Random()

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp
