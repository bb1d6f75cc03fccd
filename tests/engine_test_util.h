// Shared by the engine tests (CPU and CUDA): a tiny Llama written as a GGUF file from LlamaWeights
// (optionally with hostile mutations), and a byte-level BPE tokenizer (256 byte tokens + <|endoftext|>,
// <|im_start|>,
// <|im_end|>) so the generation loop runs on random models.
// defines: GgufMutations, WriteGguf, ByteToken, TinyByteModelConfig, MakeByteTokenizer
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fieldprint/dtype.h"
#include "fieldprint/engine.h"
#include "fieldprint/gguf.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/model_config.h"
#include "fieldprint/tokenizer.h"

namespace fp::testing {

struct GgufMutations {
  std::function<void(GgufBuilder&)> extra_meta;
  std::string skip_tensor;
  std::string bad_shape_tensor;
  std::string arch = "llama";
  int head_count = 4;  // written as llama.attention.head_count (tests set it to the config's)
  // F32 matrices are rounded to bf16 values before writing (still stored as F32): the CUDA engine's bf16
  // upload is then exact, so CPU and GPU run the same weights.
  bool bf16_exact = false;
};

inline std::vector<uint8_t> WriteGguf(const LlamaWeights& w, const GgufMutations& m = {}) {
  const ModelConfig& c = w.config();
  GgufBuilder b;
  b.AddString("general.architecture", m.arch);
  b.AddU32("llama.block_count", static_cast<uint32_t>(c.n_layers));
  b.AddU32("llama.context_length", static_cast<uint32_t>(c.context_length));
  b.AddU32("llama.embedding_length", static_cast<uint32_t>(c.d_model));
  b.AddU32("llama.feed_forward_length", static_cast<uint32_t>(c.d_ff));
  b.AddU32("llama.attention.head_count", static_cast<uint32_t>(m.head_count));
  b.AddU32("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  b.AddF32("llama.rope.freq_base", c.rope_base);
  b.AddF32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  if (m.extra_meta) m.extra_meta(b);
  std::vector<float> rounded;  // [rows, cols] one bf16-exact matrix at a time (AddTensor copies)
  auto mat = [&](const std::string& name, const WeightMatrix& x) {
    if (name == m.skip_tensor) return;
    const int64_t cols = name == m.bad_shape_tensor ? x.cols / 2 : x.cols;
    const int64_t rows = name == m.bad_shape_tensor ? x.rows * 2 : x.rows;
    std::span<const uint8_t> bytes(x.data, x.row_bytes * static_cast<size_t>(x.rows));
    if (m.bf16_exact && x.type == WeightType::kF32) {
      rounded.resize(bytes.size() / sizeof(float));
      std::memcpy(rounded.data(), bytes.data(), bytes.size());
      for (float& v : rounded) v = Bf16ToFloat(FloatToBf16(v));
      bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(rounded.data()), bytes.size());
    }
    ASSERT_TRUE(b.AddTensor(name, GgmlTypeOf(x.type), {cols, rows}, bytes).ok());
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    if (name == m.skip_tensor) return;
    ASSERT_TRUE(
        b.AddTensor(name, GgmlType::kF32, {static_cast<int64_t>(v.size())},
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4))
            .ok());
  };
  mat("token_embd.weight", w.token_embd());
  if (!c.tied_embeddings) mat("output.weight", w.output());
  vec("output_norm.weight", w.output_norm());
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerWeights& L = w.layer(i);
    const std::string p = "blk." + std::to_string(i) + ".";
    vec(p + "attn_norm.weight", L.attn_norm);
    vec(p + "ffn_norm.weight", L.ffn_norm);
    mat(p + "attn_q.weight", L.wq);
    mat(p + "attn_k.weight", L.wk);
    mat(p + "attn_v.weight", L.wv);
    mat(p + "attn_output.weight", L.wo);
    mat(p + "ffn_gate.weight", L.w_gate);
    mat(p + "ffn_up.weight", L.w_up);
    mat(p + "ffn_down.weight", L.w_down);
  }
  return b.Build();
}

// GPT-2's byte -> printable code point map, UTF-8 encoded: the form byte-level BPE vocabularies are stored
// in.
inline std::string ByteToken(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// The tiny untied Llama the generation tests run with MakeByteTokenizer (vocabulary 259). Untied: tied random
// weights make each token predict itself; untied logits vary.
inline ModelConfig TinyByteModelConfig() {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.d_ff = 128;
  c.vocab_size = 259;
  c.context_length = 512;
  c.tied_embeddings = false;
  return c;
}

// A CPU engine over random weights of config c (2 threads, page 8): the tiny engines of the generation, chat and
// backend tests. Null (and a test failure) if either step fails.
inline std::unique_ptr<LlamaEngine> MakeRandomEngine(const ModelConfig& c, uint64_t seed, WeightType type,
                                                     int32_t kv_capacity) {
  auto w = LlamaWeights::Random(c, seed, type);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  if (!w.ok()) return nullptr;
  EngineOptions eo;
  eo.num_threads = 2;
  eo.page_size = 8;
  eo.kv_capacity = kv_capacity;
  auto e = LlamaEngine::Create(std::move(w).value(), eo);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

// Ids: 0 <|endoftext|>, 1 <|im_start|> (bos), 2 <|im_end|> (eos), 3 + b for byte b: a vocabulary of 259.
// Null (and a test failure) if the tokenizer cannot be built.
inline std::unique_ptr<Tokenizer> MakeByteTokenizer() {
  std::vector<std::string> tokens{"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  std::vector<int32_t> types{3, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(ByteToken(b));
    types.push_back(1);
  }
  SpecialIds ids;
  ids.bos = 1;
  ids.eos = 2;
  auto tok = Tokenizer::Build(tokens, types, {}, "gpt2", ids, "");
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  if (!tok.ok()) return nullptr;
  return std::make_unique<Tokenizer>(std::move(tok).value());
}

}  // namespace fp::testing
