// ModelConfig / LlamaWeights from GGUF: a tiny model written with GgufBuilder from random weights loads back
// to the same logits bit for bit (zero-copy binding of Q4_1/Q8_0/F32 tensors, tied and untied output); the
// f32-widened storage agrees closely; hostile metadata and tensors are errors, never crashes.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <span>
#include <vector>

#include "fieldprint/engine.h"
#include "fieldprint/gguf.h"
#include "engine_test_util.h"

namespace fp {
namespace {

ModelConfig Tiny(bool tied) {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.d_ff = 96;
  c.vocab_size = 80;
  c.context_length = 128;
  c.rope_base = 50000.f;
  c.rms_eps = 1e-6f;
  c.tied_embeddings = tied;
  return c;
}

using Mutations = testing::GgufMutations;
using testing::WriteGguf;

std::vector<float> Logits(LlamaWeights w, const std::vector<int32_t>& tokens) {
  EngineOptions eo;
  eo.num_threads = 2;
  eo.kv_capacity = 64;
  auto e = LlamaEngine::Create(std::move(w), eo);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  auto seq = (*e)->NewSequence(nullptr);
  std::vector<float> logits;
  EXPECT_TRUE((*e)->Forward(*seq, tokens, static_cast<int32_t>(tokens.size()), &logits).ok());
  return logits;
}

TEST(EngineConfigTest, GgufRoundTripGivesSameLogits) {
  const std::vector<int32_t> tokens{3, 77, 12, 0, 45, 45, 9};
  for (WeightType type : {WeightType::kQ4_1, WeightType::kQ8_0, WeightType::kF32}) {
    for (bool tied : {true, false}) {
      auto w = LlamaWeights::Random(Tiny(tied), 17, type);
      ASSERT_TRUE(w.ok());
      const auto bytes = WriteGguf(*w);
      auto f = GgufFile::FromBuffer(bytes);
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      auto cfg = ModelConfig::FromGguf(*f);
      ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
      EXPECT_EQ(cfg->tied_embeddings, tied);
      EXPECT_EQ(cfg->vocab_size, 80) << "vocab from the embedding rows when llama.vocab_size is absent";
      EXPECT_EQ(cfg->head_dim, 16);
      EXPECT_FLOAT_EQ(cfg->rope_base, 50000.f);
      auto loaded = LlamaWeights::FromGguf(std::move(f).value(), WeightStorage::kQuantized);
      ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
      EXPECT_EQ(loaded->token_embd().data, bytes.data() + (loaded->token_embd().data - bytes.data()));
      const auto want = Logits(std::move(w).value(), tokens);
      EXPECT_EQ(Logits(std::move(loaded).value(), tokens), want) << WeightTypeName(type);
      auto f2 = GgufFile::FromBuffer(bytes);
      auto widened = LlamaWeights::FromGguf(std::move(f2).value(), WeightStorage::kF32);
      ASSERT_TRUE(widened.ok());
      EXPECT_EQ(widened->layer(0).wq.type, WeightType::kF32);
      const auto wide = Logits(std::move(widened).value(), tokens);
      double err = 0.0, rms = 0.0;
      for (size_t i = 0; i < want.size(); ++i) {
        err = std::max(err, static_cast<double>(std::fabs(wide[i] - want[i])));
        rms += static_cast<double>(want[i]) * want[i];
      }
      EXPECT_LT(err / std::sqrt(rms / static_cast<double>(want.size())), 0.15) << WeightTypeName(type);
    }
  }
}

TEST(EngineConfigTest, RejectsHostileFiles) {
  auto w = LlamaWeights::Random(Tiny(true), 5, WeightType::kQ4_1);
  ASSERT_TRUE(w.ok());
  auto expect_error = [&](const Mutations& m, const char* what) {
    const auto bytes = WriteGguf(*w, m);
    auto f = GgufFile::FromBuffer(bytes);
    if (!f.ok()) return;  // rejected by the reader itself: also fine
    auto loaded = LlamaWeights::FromGguf(std::move(f).value(), WeightStorage::kQuantized);
    EXPECT_FALSE(loaded.ok()) << what;
  };
  auto M = [](auto f) {
    Mutations m;
    f(m);
    return m;
  };
  expect_error(M([](Mutations& m) { m.arch = "gpt2"; }), "other architecture");
  expect_error(M([](Mutations& m) { m.head_count = 3; }), "heads not dividing d_model");
  expect_error(M([](Mutations& m) { m.head_count = 8; }), "q tensor shapes wrong for 8 heads of 8");
  expect_error(M([](Mutations& m) { m.skip_tensor = "blk.1.ffn_down.weight"; }), "missing tensor");
  expect_error(M([](Mutations& m) { m.skip_tensor = "output_norm.weight"; }), "missing norm");
  expect_error(M([](Mutations& m) { m.skip_tensor = "token_embd.weight"; }), "no embedding");
  expect_error(M([](Mutations& m) { m.bad_shape_tensor = "blk.0.attn_k.weight"; }), "wrong shape");
  expect_error(M([](Mutations& m) {
                 m.extra_meta = [](GgufBuilder& b) { b.AddU32("llama.rope.dimension_count", 8); };
               }),
               "partial rope");
  expect_error(M([](Mutations& m) {
                 m.extra_meta = [](GgufBuilder& b) { b.AddString("llama.rope.scaling.type", "yarn"); };
               }),
               "rope scaling");
  expect_error(
      M([](Mutations& m) { m.extra_meta = [](GgufBuilder& b) { b.AddU32("llama.vocab_size", 1000); }; }),
      "vocab mismatch");
  EXPECT_FALSE(LlamaWeights::Load("/nonexistent/model.gguf", WeightStorage::kQuantized).ok());
}

TEST(EngineConfigTest, Llama3ShapesAreValid) {
  const ModelConfig c = ModelConfig::Llama3_8B();
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.kv_dim(), 1024);
  ModelConfig bad = c;
  bad.head_dim = 512;
  bad.n_heads = 8;
  EXPECT_FALSE(bad.Validate().ok());
  // Random weights at Llama-3 head geometry but tiny width/depth run end to end.
  ModelConfig small = c;
  small.n_layers = 1;
  small.n_heads = 4;
  small.n_kv_heads = 1;
  small.d_model = 512;
  small.d_ff = 256;
  small.vocab_size = 300;
  auto w = LlamaWeights::Random(small, 1, WeightType::kQ4_1);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const auto logits = Logits(std::move(w).value(), {1, 2, 3});
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace fp
