// fieldprint/model_config.h — the hyper-parameters of a Llama-architecture model.
//
// Read from GGUF metadata (llama.* keys) or built for a known shape (Llama-3-8B, used with random weights for
// throughput work). Everything the forward pass sizes a buffer by is checked in Validate, so a hostile file
// is a Status here rather than an out-of-bounds access later. defines: ModelConfig
#pragma once

#include <cstdint>
#include <string>

#include "fieldprint/gguf.h"
#include "fieldprint/status.h"

namespace fp {

struct ModelConfig {
  std::string name = "llama";
  int32_t n_layers = 0;          // llama.block_count
  int32_t d_model = 0;           // llama.embedding_length
  int32_t n_heads = 0;           // llama.attention.head_count
  int32_t n_kv_heads = 0;        // llama.attention.head_count_kv (GQA)
  int32_t head_dim = 0;          // d_model / n_heads (llama.rope.dimension_count when present must agree)
  int32_t d_ff = 0;              // llama.feed_forward_length
  int32_t vocab_size = 0;        // llama.vocab_size, else the token list / embedding rows
  int32_t context_length = 0;    // llama.context_length
  float rope_base = 10000.f;     // llama.rope.freq_base
  float rms_eps = 1e-5f;         // llama.attention.layer_norm_rms_epsilon
  bool tied_embeddings = false;  // no output.weight: logits use token_embd

  int32_t group_size() const { return n_heads / n_kv_heads; }
  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }

  // Positive dims, n_heads % n_kv_heads == 0, d_model == n_heads * head_dim, head_dim even and
  // <= kMaxHeadDim, d_model and d_ff multiples of 32 (block formats), sane eps and rope base, sizes bounded.
  Status Validate() const;

  // From llama.* metadata of a GGUF whose general.architecture is "llama"; tied_embeddings is set when the
  // file has token_embd.weight but no output.weight.
  static Result<ModelConfig> FromGguf(const GgufFile& file);
  // Llama-3-8B shapes: 32 layers, 4096 model dim, 32/8 heads of 128, 14336 FFN, vocab 128256, rope 500000.
  static ModelConfig Llama3_8B();
  // "30 layers, d 576, heads 9/3 x 64, ffn 1536, vocab 49152"
  std::string Summary() const;
};

}  // namespace fp
