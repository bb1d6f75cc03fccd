// fieldprint/hparams.h — Llama-architecture hyper-parameters read from GGUF metadata ({arch}.* keys).
// defines: LlamaHParams, ReadLlamaHParams
#pragma once

#include <cstdint>
#include <string>

#include "fieldprint/gguf.h"
#include "fieldprint/status.h"

namespace fp {

struct LlamaHParams {
  std::string arch;              // general.architecture ("llama")
  int64_t n_layers = 0;          // {arch}.block_count
  int64_t hidden = 0;            // {arch}.embedding_length
  int64_t n_heads = 0;           // {arch}.attention.head_count
  int64_t n_kv_heads = 0;        // {arch}.attention.head_count_kv (defaults to n_heads)
  int64_t head_dim = 0;          // {arch}.attention.key_length, else hidden / n_heads
  int64_t ffn = 0;               // {arch}.feed_forward_length
  int64_t vocab = 0;             // {arch}.vocab_size, else the token list's length
  int64_t context = 0;           // {arch}.context_length
  int64_t rope_dim = 0;          // {arch}.rope.dimension_count, else head_dim
  double rope_theta = 10000.0;   // {arch}.rope.freq_base
  double rms_eps = 1e-5;         // {arch}.attention.layer_norm_rms_epsilon
  bool tied_embeddings = false;  // no output.weight: the LM head reuses token_embd.weight
};

// Reads and sanity-checks the hyper-parameters (positive sizes, heads divide evenly, tensors present with the
// expected shapes: token_embd [hidden, vocab], blk.0.attn_q [hidden, n_heads*head_dim]).
Result<LlamaHParams> ReadLlamaHParams(const GgufFile& file);

}  // namespace fp
