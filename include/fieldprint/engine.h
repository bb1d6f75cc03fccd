// fieldprint/engine.h — the Llama-architecture forward pass on the CPU over the paged KV cache and the
// anchor.
//
// One path serves prefill (n tokens of a sequence, causal) and decode (n = 1): embeddings -> per layer
// [RMSNorm, Q/K/V, RoPE, K/V written into the paged cache, AttentionCpu over (anchor ; paged KV), output
// proj, RMSNorm, SwiGLU FFN] -> final RMSNorm -> logits. Every (token, output row) dot product is computed
// the same way whatever the batch, so a replayed prefill reproduces decode-time KV bit for bit (the rollback
// premise).
//
// Position convention: the anchor occupies RoPE positions 0 .. A-1 (A = anchor length); token i of a sequence
// (its i-th KV row) sits at position A + i. With gamma = 0 this is exactly the model run on the concatenation
// anchor ++ sequence. The anchor is prefilled once through a temporary anchor-less sequence whose K/V are
// copied into a dense AnchorSegment, then sealed.
// defines: EngineOptions, EngineStats, LlamaEngine
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/cpu_linear.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/status.h"
#include "fieldprint/thread_pool.h"

namespace fp {

struct EngineOptions {
  int num_threads = 0;           // <= 0: hardware concurrency
  DType kv_dtype = DType::kF32;  // dtype of the paged pool and anchor (f32, f16 or bf16)
  int32_t page_size = 16;        // tokens per KV page
  int32_t kv_capacity = 4096;    // tokens the pool holds over all sequences (rounded up to pages)
  int32_t max_chunk = 128;       // prefill tokens per forward chunk (bounds scratch memory)
  float gamma = 0.f;             // log-bias on anchor logits, every head
  std::vector<float> gamma_per_head;  // [n_heads] per-head log-bias; non-empty: replaces gamma
};

class LlamaEngine {
  struct PrivateTag {
    explicit PrivateTag() = default;
  };

 public:
  LlamaEngine(LlamaWeights weights, const EngineOptions& options, PrivateTag)
      : weights_(std::move(weights)), options_(options) {}  // use Create()
  static Result<std::unique_ptr<LlamaEngine>> Create(LlamaWeights weights, const EngineOptions& options);

  const ModelConfig& config() const { return weights_.config(); }
  const LlamaWeights& weights() const { return weights_; }
  const EngineOptions& options() const { return options_; }
  KvCache& cache() { return *cache_; }
  ThreadPool& pool() { return *pool_; }
  void set_gamma(float g) { gamma_.assign(static_cast<size_t>(config().n_heads), g); }
  const std::vector<float>& head_gammas() const { return gamma_; }  // [n_heads] what attention adds

  // Prefills `tokens` at positions 0 .. A-1 and returns the sealed anchor (A may be 0: an empty anchor).
  Result<std::shared_ptr<AnchorSegment>> BuildAnchor(std::span<const int32_t> tokens);
  // A new empty sequence attending to `anchor` (may be null: no anchor).
  Result<SeqId> NewSequence(const std::shared_ptr<AnchorSegment>& anchor);
  Status FreeSequence(SeqId seq) { return cache_->meta().FreeSequence(seq); }
  // Shrinks a sequence's KV to new_len tokens (rollback).
  Status Truncate(SeqId seq, int32_t new_len) { return cache_->meta().Truncate(seq, new_len); }
  Result<int32_t> Length(SeqId seq) const { return cache_->meta().Length(seq); }

  // Appends `tokens` to seq (its KV grows by tokens.size()) and writes the logits of the last n_logits of
  // them into logits: [n_logits, vocab] (n_logits in [0, tokens.size()]). ResourceExhausted when the pool is
  // full.
  Status Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::vector<float>* logits);
  // Forward, and also the final hidden states (after the final RMSNorm: the rows the LM head reads, f32) of the
  // tokens at hidden_rows (indices into `tokens`, strictly increasing) into hidden: [hidden_rows.size(),
  // d_model]. Same bits as the logits path's normalised rows (the tolerant fingerprint, fingerprint.h).
  Status Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits, std::vector<float>* logits,
                 std::span<const int32_t> hidden_rows, std::vector<float>* hidden);

 private:
  // One chunk (n <= max_chunk). capture: also write the chunk's K/V into this anchor at rows [start,
  // start+n). hidden_rows: chunk-local rows whose final-normed states go to hidden ([rows, d_model]).
  Status ForwardChunk(SeqId seq, std::span<const int32_t> tokens, int32_t pos_offset, int32_t logits_from,
                      float* logits, AnchorSegment* capture, std::span<const int32_t> hidden_rows = {},
                      float* hidden = nullptr);
  Status Attention(int layer, const KvBatch& batch, int32_t n);

  LlamaWeights weights_;
  EngineOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> cache_;
  std::vector<float> gamma_;  // [n_heads]

  // Scratch for one chunk of n tokens.
  std::vector<float> x_;     // [max_chunk, d_model] residual stream
  std::vector<float> xn_;    // [max_chunk, d_model] normalised
  std::vector<float> q_;     // [max_chunk, n_heads, head_dim]
  std::vector<float> k_;     // [max_chunk, n_kv_heads, head_dim]
  std::vector<float> v_;     // [max_chunk, n_kv_heads, head_dim]
  std::vector<float> o_;     // [max_chunk, n_heads, head_dim]
  std::vector<float> gate_;  // [max_chunk, d_ff]
  std::vector<float> up_;    // [max_chunk, d_ff]
  std::vector<float> rope_;  // [max_chunk, head_dim / 2, 2] cos, sin
  // 16-bit staging when kv_dtype is f16/bf16 (AttentionCpu takes q, K, V, o in one dtype).
  std::vector<uint16_t> q16_, o16_;  // [max_chunk, n_heads, head_dim]
  std::vector<uint16_t> k16_, v16_;  // [max_chunk, n_kv_heads, head_dim]
  std::vector<double> inv_freq_;     // [head_dim / 2]
  Q8Activations xq_;
};

}  // namespace fp
