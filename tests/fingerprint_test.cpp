// Tolerant fingerprints (fingerprint.h) and the tolerant transcript replay on small random models.
// The "same model, noisy replay" is a real second path through the CPU engine: the Q8_0 GGUF run with
// quantised weights (int8 activations, integer dots, f32 KV) is replayed with the weights widened to f32 (f32
// dots) and a bf16 KV cache — the kind of difference a GPU replay brings. Rejections: another seed, the same
// floats quantised Q4_1 instead of Q8_0, a token changed at a random position (caught in its own block, since
// every row of a block enters its fingerprint). FP_FINGERPRINT_TRIALS=N (default 10) sets the trials of the rate
// test; the numbers in docs/transcripts.md came from N=300 on the CPU.
#include "fieldprint/fingerprint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "engine_test_util.h"
#include "fieldprint/engine.h"
#include "fieldprint/transcript.h"

namespace fp {
namespace {

ModelConfig SmallConfig() {  // SmolLM2-shaped (GQA, untied head), small
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 128;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 32;
  c.d_ff = 256;
  c.vocab_size = 259;
  c.context_length = 512;
  c.tied_embeddings = false;
  return c;
}

// A model as GGUF bytes held alive beside its engine.
struct Loaded {
  std::shared_ptr<std::vector<uint8_t>> bytes;
  std::unique_ptr<LlamaEngine> engine;
};

Loaded Load(uint64_t seed, WeightType type, WeightStorage storage, DType kv, int32_t max_chunk = 128) {
  Loaded l;
  auto w = LlamaWeights::Random(SmallConfig(), seed, type);
  EXPECT_TRUE(w.ok());
  testing::GgufMutations m;
  m.head_count = SmallConfig().n_heads;
  l.bytes = std::make_shared<std::vector<uint8_t>>(testing::WriteGguf(*w, m));
  auto f = GgufFile::FromBuffer(*l.bytes);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  auto lw = LlamaWeights::FromGguf(std::move(f).value(), storage);
  EXPECT_TRUE(lw.ok()) << lw.status().ToString();
  EngineOptions eo;
  eo.num_threads = 2;
  eo.kv_dtype = kv;
  eo.kv_capacity = 512;
  eo.max_chunk = max_chunk;
  auto e = LlamaEngine::Create(std::move(lw).value(), eo);
  EXPECT_TRUE(e.ok());
  l.engine = std::move(e).value();
  return l;
}

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, size_t n) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % 259);
  return t;
}

// FP_FINGERPRINT_TOPK=K measures another top-k (the rate test's numbers in docs/transcripts.md).
int32_t TopK() {
  const char* e = std::getenv("FP_FINGERPRINT_TOPK");
  return e != nullptr && std::atoi(e) > 0 ? std::atoi(e) : kFingerprintTopK;
}

// Fingerprints of anchor ++ fed on one engine (the replay's computation, without a transcript).
Fingerprints Print(LlamaEngine& e, std::span<const int32_t> anchor_tokens, std::span<const int32_t> fed) {
  auto anchor = e.BuildAnchor(anchor_tokens);
  EXPECT_TRUE(anchor.ok());
  auto seq = e.NewSequence(*anchor);
  EXPECT_TRUE(seq.ok());
  std::vector<int32_t> rows(fed.size());  // every row: each block's fingerprint covers all of them
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<float> hidden;  // [fed, d_model]
  EXPECT_TRUE(e.Forward(*seq, fed, 0, nullptr, rows, &hidden).ok());
  EXPECT_TRUE(e.FreeSequence(*seq).ok());
  auto f = MakeFingerprints(hidden, e.config().d_model, static_cast<int32_t>(fed.size()), kFingerprintBlock,
                            TopK());
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? *f : Fingerprints{};
}

TEST(FingerprintTest, RowsCoverEveryBlockAndTheLastRow) {
  EXPECT_EQ(FingerprintRows(1, 32), (std::vector<int32_t>{0}));
  EXPECT_EQ(FingerprintRows(32, 32), (std::vector<int32_t>{31}));
  EXPECT_EQ(FingerprintRows(33, 32), (std::vector<int32_t>{31, 32}));
  EXPECT_EQ(FingerprintRows(64, 32), (std::vector<int32_t>{31, 63}));
  EXPECT_EQ(FingerprintRows(70, 32), (std::vector<int32_t>{31, 63, 69}));
  EXPECT_TRUE(FingerprintRows(0, 32).empty());
  EXPECT_TRUE(FingerprintRows(5, 0).empty());
}

TEST(FingerprintTest, TopKMatchesASortOracle) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> g;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> h(97);
    for (auto& v : h) v = g(rng) * 3.f;
    const int32_t k = 1 + static_cast<int32_t>(rng() % 20);
    auto f = FingerprintOfRow(h, k, 5);
    ASSERT_TRUE(f.ok());
    std::vector<int32_t> order(h.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return std::fabs(h[a]) > std::fabs(h[b]); });
    ASSERT_EQ(f->indices.size(), static_cast<size_t>(k));
    for (int32_t i = 0; i < k; ++i) {
      EXPECT_EQ(f->indices[i], order[i]);
      EXPECT_EQ(f->values[i], Bf16ToFloat(FloatToBf16(h[order[i]])));
      EXPECT_LE(std::fabs(f->values[i] - h[order[i]]), std::fabs(h[order[i]]) / 256.f);
    }
    EXPECT_EQ(f->row, 5);
  }
  std::vector<float> h(8, 1.f);
  EXPECT_FALSE(FingerprintOfRow(h, 0, 0).ok());
  EXPECT_FALSE(FingerprintOfRow(h, 9, 0).ok());
  h[3] = std::nanf("");
  EXPECT_FALSE(FingerprintOfRow(h, 2, 0).ok());
  EXPECT_FALSE(MakeFingerprints(std::vector<float>(7), 8, 1, 32, 2).ok());  // wrong size
}

// The block's vector is the signed sum of ALL its rows (an fp64 oracle), so each row can move it.
TEST(FingerprintTest, BlocksAreSignedSumsOfAllTheirRows) {
  std::mt19937_64 rng(13);
  std::normal_distribution<float> g;
  int plus = 0;
  for (int32_t r = 0; r < 4000; ++r) {
    const float s = FingerprintSign(r);
    ASSERT_TRUE(s == 1.f || s == -1.f);
    plus += s > 0;
  }
  EXPECT_GT(plus, 1800);  // balanced signs: a shared feature does not add up coherently
  EXPECT_LT(plus, 2200);
  const int32_t d = 48, n = 75, block = 32, k = 6;
  std::vector<float> hidden(static_cast<size_t>(n) * d);  // [n, d]
  for (auto& v : hidden) v = g(rng);
  auto f = MakeFingerprints(hidden, d, n, block, k);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->blocks.size(), 3u);
  for (size_t b = 0; b < 3; ++b) {
    const int32_t first = static_cast<int32_t>(b) * block, last = std::min(first + block, n) - 1;
    std::vector<float> sum(d);  // [d] oracle
    for (int32_t j = 0; j < d; ++j) {
      double acc = 0;
      for (int32_t r = first; r <= last; ++r)
        acc += FingerprintSign(r) * static_cast<double>(hidden[static_cast<size_t>(r) * d + j]);
      sum[static_cast<size_t>(j)] = static_cast<float>(acc);
    }
    auto want = FingerprintOfRow(sum, k, last);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(f->blocks[b], *want) << "block " << b;
  }
  // Any single row replaced (first, middle, last of a block) changes exactly its block's fingerprint.
  for (int32_t r : {0, 17, 31, 32, 60, 74}) {
    std::vector<float> bad = hidden;
    for (int32_t j = 0; j < d; ++j) bad[static_cast<size_t>(r) * d + j] = g(rng);
    auto fb = MakeFingerprints(bad, d, n, block, k);
    ASSERT_TRUE(fb.ok());
    const FingerprintMatch m = MatchFingerprints(*f, *fb);
    EXPECT_FALSE(m.ok) << "row " << r;
    EXPECT_EQ(m.first_bad_block, r / block) << "row " << r;
  }
  hidden[5 * d + 3] = std::nanf("");  // a NaN in a row that is no block's last row
  EXPECT_EQ(MakeFingerprints(hidden, d, n, block, k).status().code(), StatusCode::kInvalidArgument);
}

TEST(FingerprintTest, MatchToleratesSmallNoiseAndRejectsEachDefect) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g;
  const int32_t d = 128, n = 100;
  std::vector<float> hidden(static_cast<size_t>(n) * d);  // [n, d]
  for (auto& v : hidden) v = g(rng);
  auto rec = MakeFingerprints(hidden, d, n, 32, 8);
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(rec->Validate(n, d).ok());
  EXPECT_TRUE(MatchFingerprints(*rec, *rec).ok);
  std::vector<float> noisy = hidden;
  for (auto& v : noisy) v *= 1.f + 0.005f * g(rng);
  auto rep = MakeFingerprints(noisy, d, n, 32, 8);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(MatchFingerprints(*rec, *rep).ok);
  // One row of block 2 replaced: that block fails, first.
  std::vector<float> bad = hidden;
  for (int i = 0; i < d; ++i) bad[static_cast<size_t>(70 * d + i)] = g(rng);
  auto rb = MakeFingerprints(bad, d, n, 32, 8);
  const FingerprintMatch m = MatchFingerprints(*rec, *rb);
  EXPECT_FALSE(m.ok);
  EXPECT_EQ(m.first_bad_block, 2) << m.failure;
  // Same indices, values off by 30% of the scale.
  Fingerprints v = *rec;
  for (auto& x : v.blocks[1].values) x = Bf16ToFloat(FloatToBf16(x * 0.7f));
  EXPECT_EQ(MatchFingerprints(*rec, v).first_bad_block, 1);
  Fingerprints s = *rec;
  s.top_k = 7;
  EXPECT_FALSE(MatchFingerprints(*rec, s).ok);
  // Validate: each malformation.
  auto expect_bad = [&](auto mutate) {
    Fingerprints f = *rec;
    mutate(f);
    EXPECT_FALSE(f.Validate(n, d).ok());
  };
  expect_bad([](Fingerprints& f) { f.blocks.pop_back(); });
  expect_bad([](Fingerprints& f) { f.blocks[0].row = 30; });
  expect_bad([](Fingerprints& f) { f.blocks[0].indices[1] = f.blocks[0].indices[0]; });
  expect_bad([&](Fingerprints& f) { f.blocks[0].indices[1] = d; });
  expect_bad([](Fingerprints& f) { f.blocks[0].values[0] = 1.00001f; });
  expect_bad([](Fingerprints& f) { f.blocks[0].values[0] = INFINITY; });
  expect_bad([](Fingerprints& f) { f.blocks[0].values.pop_back(); });
  expect_bad([&](Fingerprints& f) { f.top_k = d + 1; });
}

TEST(FingerprintTest, EngineHiddenStatesAreWhatTheHeadReads) {
  // F32 weights: logits = output · hidden exactly up to float summation order.
  Loaded l = Load(3, WeightType::kF32, WeightStorage::kQuantized, DType::kF32, /*max_chunk=*/16);
  std::mt19937_64 rng(8);
  const auto toks = RandomTokens(rng, 45);
  const std::vector<int32_t> rows{0, 15, 16, 31, 44};  // across chunk edges
  auto seq = l.engine->NewSequence(nullptr);
  ASSERT_TRUE(seq.ok());
  std::vector<float> logits, hidden;
  ASSERT_TRUE(l.engine->Forward(*seq, toks, 45, &logits, rows, &hidden).ok());
  const int64_t d = 128, vocab = 259;
  ASSERT_EQ(hidden.size(), rows.size() * d);
  std::vector<float> w(d);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t v = 0; v < vocab; v += 37) {
      ASSERT_TRUE(DequantizeRow(l.engine->weights().output(), v, w.data()).ok());
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(w[j]) * hidden[i * d + j];
      EXPECT_NEAR(dot, logits[static_cast<size_t>(rows[i] * vocab + v)], 1e-4 * (1 + std::fabs(dot)));
    }
  }
  // Bad requests.
  auto s2 = l.engine->NewSequence(nullptr);
  ASSERT_TRUE(s2.ok());
  const std::vector<int32_t> dec{3, 2}, out{0, 45};
  EXPECT_EQ(l.engine->Forward(*s2, toks, 0, nullptr, dec, &hidden).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(l.engine->Forward(*s2, toks, 0, nullptr, out, &hidden).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(l.engine->Forward(*s2, toks, 0, nullptr, rows, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*l.engine->Length(*s2), 0);
}

// Rates over random sequences and fresh models per trial; the decision rule must make no error at all here.
TEST(FingerprintTest, AcceptsNoisyReplayRejectsOtherModelQuantAndPrompt) {
  int trials = 10;
  if (const char* e = std::getenv("FP_FINGERPRINT_TRIALS")) trials = std::max(1, std::atoi(e));
  std::mt19937_64 rng(20240607);
  int accept_row_token = 0, row_block_off = 0;
  int false_reject = 0, accept_seed = 0, accept_quant = 0, accept_token = 0, token_block_off = 0;
  double worst_same_overlap = 1, worst_same_mean = 0, worst_same_max = 0;
  double best_other_overlap = 0;
  // The bad cases' strongest evidence per trial (loose tolerance, so every block is scored): the smallest seen.
  FingerprintTolerance loose{0.0, 1e9, 1e9};
  double q4_min_mean = 1e9, q4_min_max = 1e9, tok_min_mean = 1e9, tok_min_max = 1e9;
  for (int t = 0; t < trials; ++t) {
    const uint64_t seed = 1000 + static_cast<uint64_t>(t);
    Loaded a = Load(seed, WeightType::kQ8_0, WeightStorage::kQuantized, DType::kF32);  // the run
    Loaded b = Load(seed, WeightType::kQ8_0, WeightStorage::kF32, DType::kBF16);       // noisy replay
    Loaded other = Load(seed + 7777, WeightType::kQ8_0, WeightStorage::kF32, DType::kBF16);
    Loaded q4 = Load(seed, WeightType::kQ4_1, WeightStorage::kF32, DType::kBF16);
    const auto anchor = RandomTokens(rng, rng() % 9);
    const auto fed = RandomTokens(rng, 33 + rng() % 90);
    const Fingerprints rec = Print(*a.engine, anchor, fed);
    const FingerprintMatch same = MatchFingerprints(rec, Print(*b.engine, anchor, fed));
    false_reject += !same.ok;
    worst_same_overlap = std::min(worst_same_overlap, same.min_overlap);
    worst_same_mean = std::max(worst_same_mean, same.worst_mean_err);
    worst_same_max = std::max(worst_same_max, same.worst_err);
    const FingerprintMatch s = MatchFingerprints(rec, Print(*other.engine, anchor, fed));
    accept_seed += s.ok;
    best_other_overlap = std::max(best_other_overlap, s.min_overlap);
    const Fingerprints pq = Print(*q4.engine, anchor, fed);
    accept_quant += MatchFingerprints(rec, pq).ok;
    const FingerprintMatch lq = MatchFingerprints(rec, pq, loose);
    q4_min_mean = std::min(q4_min_mean, lq.worst_mean_err);
    q4_min_max = std::min(q4_min_max, lq.worst_err);
    std::vector<int32_t> changed = fed;
    const size_t pos = rng() % fed.size();
    changed[pos] = (changed[pos] + 1 + static_cast<int32_t>(rng() % 258)) % 259;
    const Fingerprints pc = Print(*b.engine, anchor, changed);
    const FingerprintMatch c = MatchFingerprints(rec, pc);
    const FingerprintMatch lc = MatchFingerprints(rec, pc, loose);
    tok_min_mean = std::min(tok_min_mean, lc.worst_mean_err);
    tok_min_max = std::min(tok_min_max, lc.worst_err);
    accept_token += c.ok;
    if (!c.ok) token_block_off += c.first_bad_block != static_cast<int64_t>(pos / kFingerprintBlock);
    // A changed token at a block's last row (the only row the old per-row fingerprint covered): caught too.
    const auto rows = FingerprintRows(static_cast<int32_t>(fed.size()), kFingerprintBlock);
    std::vector<int32_t> at_row = fed;
    const size_t bi = rng() % rows.size();
    const auto r = static_cast<size_t>(rows[bi]);
    at_row[r] = (at_row[r] + 1 + static_cast<int32_t>(rng() % 258)) % 259;
    const FingerprintMatch cr = MatchFingerprints(rec, Print(*b.engine, anchor, at_row));
    accept_row_token += cr.ok;
    row_block_off += !cr.ok && cr.first_bad_block != static_cast<int64_t>(bi);
  }
  std::printf(
      "[fingerprint] %d trials: false reject %d (noisy same model: min overlap %.3f, worst mean err %.4f, worst "
      "err %.4f); false accept: other seed %d, Q4_1 for Q8_0 %d, changed prompt token %d (first bad block not "
      "the changed token's: %d)\n",
      trials, false_reject, worst_same_overlap, worst_same_mean, worst_same_max, accept_seed, accept_quant,
      accept_token, token_block_off);
  std::printf("[fingerprint] weakest evidence: Q4_1 worst-block mean err %.4f max err %.4f; changed token %.4f %.4f\n",
              q4_min_mean, q4_min_max, tok_min_mean, tok_min_max);
  EXPECT_EQ(false_reject, 0);
  EXPECT_EQ(accept_seed, 0);
  EXPECT_EQ(accept_quant, 0);
  std::printf("[fingerprint] changed token at a block's last row: false accept %d, wrong block %d\n",
              accept_row_token, row_block_off);
  EXPECT_EQ(accept_row_token, 0);
  EXPECT_EQ(row_block_off, 0);
  // Every row enters its block's fingerprint: a token changed anywhere is caught, in its own block (earlier
  // blocks cannot see it: causal attention).
  EXPECT_EQ(accept_token, 0);
  EXPECT_EQ(token_block_off, 0);
}

}  // namespace
}  // namespace fp
