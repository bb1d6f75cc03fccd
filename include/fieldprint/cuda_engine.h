// fieldprint/cuda_engine.h — the Llama-architecture forward pass on a CUDA device (bf16 weights, paged KV).
//
// The GPU twin of LlamaEngine (engine.h), same position convention (anchor at RoPE positions 0 .. A-1, token i
// of a sequence at A + i) and the same Forward contract, so a teacher-forced comparison against the CPU engine
// is a plain diff of logits. Per layer: RMSNorm -> fused QKV GEMM (cuBLAS, bf16 in, fp32 accumulate and out)
// -> one kernel for RoPE + K/V rows written into the paged pool at the reserved slots -> attention
// (AttentionPrefillCuda for Forward; for DecodeStep a graph-mode AttentionDecodePlan inside a CUDA graph per batch
// size, or an eager plan per step) -> O GEMM accumulating
// into the fp32 residual (beta = 1, no separate add) -> RMSNorm -> fused gate|up GEMM -> SwiGLU -> down GEMM
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
  // chosen per step to give the GPU ~2 CTAs per SM (a power of two from B and the longest length, 256 .. the
  // default): needed when B x length is small (B = 1 at 4k tokens is 8 CTAs at the default); attention bits then
  // depend on the batch (the GEMMs' already do: GEMV for B <= gemv_max_batch, cuBLAS above).
  int32_t split_tokens = -1;
  float gamma = 0.f;            // log-bias on anchor logits, every head
  bool decode_graphs = true;    // DecodeStep replays a CUDA graph per batch size (cuda_engine_decode.cu)
  int32_t gemv_max_batch = 8;   // decode GEMMs with n <= this use the bf16 GEMV kernel instead of cuBLAS (<= 8)
};

class CudaLlama {
  struct PrivateTag {
    explicit PrivateTag() = default;
  };

 public:
  // Uploads `weights` (every matrix widened to f32 on the host, rounded to bf16 on the device).
  static Result<std::unique_ptr<CudaLlama>> FromWeights(const LlamaWeights& weights, const CudaEngineOptions& options);
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

  // One batched decode step: tokens[i] is appended to seqs[i] (distinct sequences, 1 <= B <= max_batch, one
  // shared anchor or none). Everything is enqueued on stream(); the logits [B, vocab] f32 stay on the device
  // (device_logits()) and are valid once the stream reaches that point. Returns without waiting for the GPU.
  Status DecodeStep(std::span<const SeqId> seqs, std::span<const int32_t> tokens);
  const float* device_logits() const;  // [max(max_batch, max_chunk), vocab]
  // Switches graph replay / the GEMV threshold / the split rule between steps (benchmarks compare them on one
  // engine; an invalid split_tokens is ignored); drops the captured graphs.
  void SetDecodeTuning(bool decode_graphs, int32_t gemv_max_batch, int32_t split_tokens = -1);
  struct DecodeStats {
    int64_t graph_captures = 0, graph_replays = 0;
  };
  DecodeStats decode_stats() const;
  // DecodeStep + logits [B, vocab] to the host (synchronises).
  Status DecodeLogits(std::span<const SeqId> seqs, std::span<const int32_t> tokens, std::vector<float>* logits);
  // DecodeStep + greedy next token per sequence (argmax on the device, B ints to the host; synchronises).
  Status DecodeGreedy(std::span<const SeqId> seqs, std::span<const int32_t> tokens, std::vector<int32_t>* next);

  struct Impl;
  CudaLlama(std::unique_ptr<Impl> impl, PrivateTag);  // use FromWeights() / Random()

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp
