// LlamaEngine (CPU) on tiny random models against an independent double-precision Llama forward written here
// (dense causal attention over anchor ++ sequence, gamma on anchor logits, normal-pair RoPE at positions
// 0 .. A+n-1); prefill == chunked prefill == token-by-token decode bit for bit (logits and KV bytes);
// truncate + replay reproduces the KV bits; bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fieldprint/engine.h"

namespace fp {
namespace {

ModelConfig TinyConfig(bool tied) {
  ModelConfig c;
  c.name = "tiny";
  c.n_layers = 2;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.d_ff = 96;
  c.vocab_size = 101;
  c.context_length = 256;
  c.rope_base = 10000.f;
  c.rms_eps = 1e-5f;
  c.tied_embeddings = tied;
  return c;
}

std::vector<double> Dense(const WeightMatrix& w) {  // [rows, cols]
  std::vector<double> out(static_cast<size_t>(w.rows * w.cols));
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    EXPECT_TRUE(DequantizeRow(w, r, row.data()).ok());
    for (int64_t c = 0; c < w.cols; ++c)
      out[static_cast<size_t>(r * w.cols + c)] = row[static_cast<size_t>(c)];
  }
  return out;
}

std::vector<double> MatVec(const std::vector<double>& w, int64_t rows, int64_t cols,
                           const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      y[static_cast<size_t>(r)] += w[static_cast<size_t>(r * cols + c)] * x[static_cast<size_t>(c)];
  }
  return y;
}

std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
  double ss = 0.0;
  for (double v : x) ss += v * v;
  const double s = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
  return y;
}

// Logits [tokens.size(), vocab] of the model on `tokens`; the first `anchor_len` get gamma[h] on head h's
// logits (gamma: [n_heads]).
std::vector<double> ReferenceForward(const LlamaWeights& w, const std::vector<int32_t>& tokens,
                                     int anchor_len, const std::vector<double>& gamma) {
  const ModelConfig& c = w.config();
  const int64_t n = static_cast<int64_t>(tokens.size()), d = c.d_model, hd = c.head_dim;
  const auto emb = Dense(w.token_embd());
  std::vector<std::vector<double>> x(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    x[static_cast<size_t>(t)].assign(emb.begin() + tokens[static_cast<size_t>(t)] * d,
                                     emb.begin() + (tokens[static_cast<size_t>(t)] + 1) * d);
  }
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double th =
            static_cast<double>(pos) * std::pow(static_cast<double>(c.rope_base), -2.0 * i / hd);
        double& a = v[static_cast<size_t>(h * hd + 2 * i)];
        double& b = v[static_cast<size_t>(h * hd + 2 * i + 1)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(th) - b0 * std::sin(th);
        b = a0 * std::sin(th) + b0 * std::cos(th);
      }
    }
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layer(l);
    const auto wq = Dense(L.wq), wk = Dense(L.wk), wv = Dense(L.wv), wo = Dense(L.wo);
    const auto wg = Dense(L.w_gate), wu = Dense(L.w_up), wd = Dense(L.w_down);
    std::vector<std::vector<double>> q(static_cast<size_t>(n)), k(static_cast<size_t>(n)),
        v(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      const auto xn = RmsNorm(x[static_cast<size_t>(t)], L.attn_norm, c.rms_eps);
      q[static_cast<size_t>(t)] = MatVec(wq, c.q_dim(), d, xn);
      k[static_cast<size_t>(t)] = MatVec(wk, c.kv_dim(), d, xn);
      v[static_cast<size_t>(t)] = MatVec(wv, c.kv_dim(), d, xn);
      rope(q[static_cast<size_t>(t)], c.n_heads, t);
      rope(k[static_cast<size_t>(t)], c.n_kv_heads, t);
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> o(static_cast<size_t>(c.q_dim()), 0.0);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t kh = h / c.group_size();
        // The anchor is fully visible to sequence tokens; inside the anchor (its own prefill) it is causal.
        const int64_t last = t < anchor_len ? t : std::max<int64_t>(t, anchor_len - 1);
        std::vector<double> logit(static_cast<size_t>(last + 1));
        double mx = -INFINITY;
        for (int64_t s = 0; s <= last; ++s) {
          double dot = 0.0;
          for (int64_t i = 0; i < hd; ++i) {
            dot += q[static_cast<size_t>(t)][static_cast<size_t>(h * hd + i)] *
                   k[static_cast<size_t>(s)][static_cast<size_t>(kh * hd + i)];
          }
          logit[static_cast<size_t>(s)] =
              dot / std::sqrt(static_cast<double>(hd)) + (s < anchor_len && t >= anchor_len ? gamma[static_cast<size_t>(h)] : 0.0);
          mx = std::max(mx, logit[static_cast<size_t>(s)]);
        }
        double sum = 0.0;
        for (auto& lg : logit) sum += lg = std::exp(lg - mx);
        for (int64_t s = 0; s <= last; ++s) {
          for (int64_t i = 0; i < hd; ++i) {
            o[static_cast<size_t>(h * hd + i)] += logit[static_cast<size_t>(s)] / sum *
                                                  v[static_cast<size_t>(s)][static_cast<size_t>(kh * hd + i)];
          }
        }
      }
      const auto att = MatVec(wo, d, c.q_dim(), o);
      for (int64_t i = 0; i < d; ++i)
        x[static_cast<size_t>(t)][static_cast<size_t>(i)] += att[static_cast<size_t>(i)];
    }
    for (int64_t t = 0; t < n; ++t) {
      const auto xn = RmsNorm(x[static_cast<size_t>(t)], L.ffn_norm, c.rms_eps);
      auto g = MatVec(wg, c.d_ff, d, xn);
      const auto u = MatVec(wu, c.d_ff, d, xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const auto down = MatVec(wd, d, c.d_ff, g);
      for (int64_t i = 0; i < d; ++i)
        x[static_cast<size_t>(t)][static_cast<size_t>(i)] += down[static_cast<size_t>(i)];
    }
  }
  const auto out = Dense(w.output());
  std::vector<double> logits;
  for (int64_t t = 0; t < n; ++t) {
    const auto l =
        MatVec(out, c.vocab_size, d, RmsNorm(x[static_cast<size_t>(t)], w.output_norm(), c.rms_eps));
    logits.insert(logits.end(), l.begin(), l.end());
  }
  return logits;
}

std::vector<double> ReferenceForward(const LlamaWeights& w, const std::vector<int32_t>& tokens,
                                     int anchor_len, double gamma) {
  return ReferenceForward(w, tokens, anchor_len,
                          std::vector<double>(static_cast<size_t>(w.config().n_heads), gamma));
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

std::unique_ptr<LlamaEngine> MakeEngine(WeightType type, bool tied, EngineOptions eo = {},
                                        uint64_t seed = 1) {
  auto w = LlamaWeights::Random(TinyConfig(tied), seed, type);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  if (eo.num_threads == 0) eo.num_threads = 2;
  eo.kv_capacity = 512;
  auto e = LlamaEngine::Create(std::move(w).value(), eo);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

// Max |a - b| over the logits, relative to the reference's RMS.
double RelErr(const std::vector<float>& got, const std::vector<double>& ref, size_t ref_offset) {
  double err = 0.0, rms = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - ref[ref_offset + i]));
    rms += ref[ref_offset + i] * ref[ref_offset + i];
  }
  return err / std::sqrt(rms / static_cast<double>(got.size()));
}

TEST(EngineForwardTest, PrefillMatchesReference) {
  for (WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_1}) {
    for (bool tied : {false, true}) {
      auto e = MakeEngine(type, tied);
      const auto tokens = RandomTokens(11, 101, 3);
      auto seq = e->NewSequence(nullptr);
      ASSERT_TRUE(seq.ok());
      std::vector<float> logits(5, NAN);
      ASSERT_TRUE(e->Forward(*seq, tokens, 11, &logits).ok());
      const auto ref = ReferenceForward(e->weights(), tokens, 0, 0.0);
      // Float weights: only fp32 rounding. Block types: int8 activations add ~1% noise per matmul.
      const double tol = (type == WeightType::kF32 || type == WeightType::kF16) ? 2e-4 : 0.15;
      EXPECT_LT(RelErr(logits, ref, 0), tol) << WeightTypeName(type) << " tied " << tied;
    }
  }
}

TEST(EngineForwardTest, AnchorPlusSequenceMatchesConcatenationAndGamma) {
  for (float gamma : {0.f, 0.8f, -1.5f}) {
    EngineOptions eo;
    eo.gamma = gamma;
    auto e = MakeEngine(WeightType::kF32, false, eo);
    const auto all = RandomTokens(14, 101, 8);
    const std::vector<int32_t> anchor_tokens(all.begin(), all.begin() + 5), rest(all.begin() + 5, all.end());
    auto anchor = e->BuildAnchor(anchor_tokens);
    ASSERT_TRUE(anchor.ok()) << anchor.status().ToString();
    EXPECT_TRUE((*anchor)->sealed());
    EXPECT_EQ((*anchor)->length(), 5);
    auto seq = e->NewSequence(*anchor);
    ASSERT_TRUE(seq.ok());
    std::vector<float> logits;
    ASSERT_TRUE(e->Forward(*seq, rest, static_cast<int32_t>(rest.size()), &logits).ok());
    const auto ref = ReferenceForward(e->weights(), all, 5, gamma);
    EXPECT_LT(RelErr(logits, ref, 5 * 101), 2e-4) << "gamma " << gamma;
    if (gamma != 0.f) {
      const auto plain = ReferenceForward(e->weights(), all, 5, 0.0);
      EXPECT_GT(RelErr(logits, plain, 5 * 101), 1e-2) << "gamma had no effect";
    }
  }
}

// Per-head gamma (EngineOptions::gamma_per_head) against the reference with the same vector; the reference with
// the vector reversed must NOT match (the heads get their own values, in order), and a uniform vector is the
// scalar option bit for bit.
TEST(EngineForwardTest, PerHeadGammaMatchesReferenceHeadByHead) {
  const std::vector<float> per_head{1.5f, 0.f, -2.f, 0.7f};  // [n_heads]
  const auto all = RandomTokens(13, 101, 21);
  const std::vector<int32_t> anchor_tokens(all.begin(), all.begin() + 6), rest(all.begin() + 6, all.end());
  auto run = [&](const EngineOptions& eo, std::vector<float>* logits, std::vector<double>* ref) {
    auto e = MakeEngine(WeightType::kF32, false, eo);
    auto anchor = e->BuildAnchor(anchor_tokens);
    ASSERT_TRUE(anchor.ok()) << anchor.status().ToString();
    auto seq = e->NewSequence(*anchor);
    ASSERT_TRUE(seq.ok());
    ASSERT_TRUE(e->Forward(*seq, rest, static_cast<int32_t>(rest.size()), logits).ok());
    std::vector<double> g(e->head_gammas().begin(), e->head_gammas().end());
    EXPECT_EQ(g.size(), 4u);
    if (ref) *ref = ReferenceForward(e->weights(), all, 6, g);
  };
  EngineOptions eo;
  eo.gamma = 99.f;  // ignored: the vector wins
  eo.gamma_per_head = per_head;
  std::vector<float> logits;
  std::vector<double> ref;
  run(eo, &logits, &ref);
  EXPECT_LT(RelErr(logits, ref, 6 * 101), 2e-4);
  const std::vector<double> reversed(per_head.rbegin(), per_head.rend());
  EXPECT_GT(RelErr(logits, ReferenceForward(MakeEngine(WeightType::kF32, false)->weights(), all, 6, reversed),
                   6 * 101),
            1e-2)
      << "gamma reached the wrong heads";
  // Changing one head's value changes the logits.
  for (size_t h = 0; h < per_head.size(); ++h) {
    EngineOptions one = eo;
    one.gamma_per_head[h] += 1.f;
    std::vector<float> changed;
    run(one, &changed, nullptr);
    EXPECT_NE(changed, logits) << "head " << h << "'s gamma had no effect";
  }
  // Uniform vector == scalar, bit for bit.
  EngineOptions scalar, vec;
  scalar.gamma = -0.9f;
  vec.gamma_per_head.assign(4, -0.9f);
  std::vector<float> a, b;
  run(scalar, &a, nullptr);
  run(vec, &b, nullptr);
  EXPECT_EQ(a, b);
}

TEST(EngineForwardTest, RejectsBadPerHeadGamma) {
  for (const std::vector<float>& g : {std::vector<float>{1.f, 2.f, 3.f}, std::vector<float>(5, 0.f),
                                      std::vector<float>{0.f, NAN, 0.f, 0.f},
                                      std::vector<float>{0.f, 0.f, INFINITY, 0.f}}) {
    auto w = LlamaWeights::Random(TinyConfig(false), 1, WeightType::kF32);
    ASSERT_TRUE(w.ok());
    EngineOptions eo;
    eo.num_threads = 1;
    eo.gamma_per_head = g;
    auto e = LlamaEngine::Create(std::move(w).value(), eo);
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << g.size();
  }
}

std::vector<uint8_t> KvBytes(LlamaEngine& e, SeqId seq) {
  std::vector<uint8_t> out;
  const int32_t len = *e.Length(seq);
  auto table = e.cache().meta().BlockTable(seq);
  EXPECT_TRUE(table.ok());
  const int32_t page = e.cache().layout().page_size;
  for (int l = 0; l < e.config().n_layers; ++l) {
    for (size_t p = 0; p < table->size(); ++p) {
      const int32_t rows = std::min(page, len - static_cast<int32_t>(p) * page);
      for (bool v : {false, true}) {
        auto b = v ? e.cache().storage().PageBytesV(l, (*table)[p], rows)
                   : e.cache().storage().PageBytesK(l, (*table)[p], rows);
        EXPECT_TRUE(b.ok());
        const auto* u = reinterpret_cast<const uint8_t*>(b->data());
        out.insert(out.end(), u, u + b->size());
      }
    }
  }
  return out;
}

TEST(EngineForwardTest, PrefillChunkedAndDecodeAreBitIdentical) {
  for (DType kv : {DType::kF32, DType::kBF16}) {
    EngineOptions eo;
    eo.kv_dtype = kv;
    eo.page_size = 4;
    eo.max_chunk = 3;
    auto chunked = MakeEngine(WeightType::kQ4_1, true, eo);
    eo.max_chunk = 64;
    auto whole = MakeEngine(WeightType::kQ4_1, true, eo);
    const auto tokens = RandomTokens(10, 101, 21);
    auto s1 = whole->NewSequence(nullptr);
    auto s2 = chunked->NewSequence(nullptr);
    auto s3 = whole->NewSequence(nullptr);
    std::vector<float> l1, l2, l3;
    ASSERT_TRUE(whole->Forward(*s1, tokens, 10, &l1).ok());
    ASSERT_TRUE(chunked->Forward(*s2, tokens, 10, &l2).ok());
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::vector<float> one;
      ASSERT_TRUE(whole->Forward(*s3, std::span(tokens).subspan(t, 1), 1, &one).ok());
      l3.insert(l3.end(), one.begin(), one.end());
    }
    EXPECT_EQ(l1, l2);
    EXPECT_EQ(l1, l3);
    EXPECT_EQ(KvBytes(*whole, *s1), KvBytes(*chunked, *s2));
    EXPECT_EQ(KvBytes(*whole, *s1), KvBytes(*whole, *s3));
  }
}

TEST(EngineForwardTest, TruncateAndReplayReproducesKvBits) {
  EngineOptions eo;
  eo.page_size = 4;
  auto e = MakeEngine(WeightType::kQ4_1, true, eo);
  auto anchor = e->BuildAnchor(RandomTokens(6, 101, 2));
  ASSERT_TRUE(anchor.ok());
  auto seq = e->NewSequence(*anchor);
  const auto tokens = RandomTokens(9, 101, 4);
  std::vector<float> logits;
  for (size_t t = 0; t < tokens.size(); ++t)
    ASSERT_TRUE(e->Forward(*seq, std::span(tokens).subspan(t, 1), 1, &logits).ok());
  const auto before = KvBytes(*e, *seq);
  const auto last_logits = logits;
  ASSERT_TRUE(e->Truncate(*seq, 3).ok());
  EXPECT_EQ(*e->Length(*seq), 3);
  ASSERT_TRUE(e->Forward(*seq, std::span(tokens).subspan(3), 1, &logits).ok());
  EXPECT_EQ(KvBytes(*e, *seq), before);
  EXPECT_EQ(logits, last_logits);
}

TEST(EngineForwardTest, RejectsBadInput) {
  auto e = MakeEngine(WeightType::kF32, false);
  auto seq = e->NewSequence(nullptr);
  std::vector<float> logits;
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>{1, 101}, 1, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>{1, -1}, 1, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>{1, 2}, 3, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>{1, 2}, -1, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>{1, 2}, 1, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(e->Forward(12345, std::vector<int32_t>{1}, 1, &logits).ok());
  EXPECT_EQ(*e->Length(*seq), 0) << "a rejected call must not grow the sequence";
  EXPECT_EQ(e->Forward(*seq, std::vector<int32_t>(257, 1), 0, nullptr).code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(e->BuildAnchor(std::vector<int32_t>{5, 500}).ok());
  // The pool (512 tokens at 16 per page) runs out before the context (256) only with several sequences.
  std::vector<SeqId> seqs;
  Status last;
  for (int i = 0; i < 5 && last.ok(); ++i) {
    seqs.push_back(*e->NewSequence(nullptr));
    last = e->Forward(seqs.back(), std::vector<int32_t>(200, 3), 0, nullptr);
  }
  EXPECT_EQ(last.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(*e->Length(seqs.back()), 0) << "a failed forward leaves the sequence as it was";
  EngineOptions bad;
  bad.page_size = 0;
  auto w = LlamaWeights::Random(TinyConfig(true), 1, WeightType::kF32);
  EXPECT_FALSE(LlamaEngine::Create(std::move(w).value(), bad).ok());
  ModelConfig c = TinyConfig(true);
  c.n_kv_heads = 3;
  EXPECT_FALSE(LlamaWeights::Random(c, 1, WeightType::kF32).ok());
}

}  // namespace
}  // namespace fp
