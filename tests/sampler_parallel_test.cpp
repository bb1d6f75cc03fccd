// Sampler::Pick / the fused unfiltered path / transcript_detail::ResampleRows (the parallel re-sampling of a
// replay) against the ORIGINAL sequential sampler, kept below verbatim as the oracle (ReferenceSampler: the
// Candidates + Sample of sampler.cpp before the split): every token, on random rows with ties, -inf entries,
// temperature / top-k / top-p combinations, at several thread counts, and a row that Sample refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "fieldprint/sampler.h"
#include "engine/transcript_internal.h"

namespace fp {
namespace {

// The sequential sampler as it was (the decisions existing transcripts recorded). Valid logits only.
class ReferenceSampler {
 public:
  explicit ReferenceSampler(const SamplerConfig& c) : config_(c), state_(c.seed) {}

  int32_t Sample(std::span<const float> logits) {
    if (config_.greedy()) {
      size_t best = 0;
      for (size_t i = 1; i < logits.size(); ++i) {
        if (logits[i] > logits[best]) best = i;
      }
      return static_cast<int32_t>(best);
    }
    Candidates(logits);
    const double u = NextUniform();
    double cum = 0.0;
    for (size_t i = 0; i < ids_.size(); ++i) {
      cum += probs_[i];
      if (u < cum) return ids_[i];
    }
    return ids_.back();
  }

 private:
  double NextUniform() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
  }

  void Candidates(std::span<const float> logits) {
    std::vector<int32_t>* ids = &ids_;
    std::vector<double>* probs = &probs_;
    const auto n = static_cast<int32_t>(logits.size());
    ids->resize(static_cast<size_t>(n));
    std::iota(ids->begin(), ids->end(), 0);
    auto before = [&](int32_t a, int32_t b) {
      const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
      return la > lb || (la == lb && a < b);
    };
    const double inv_t = 1.0 / static_cast<double>(config_.temperature);
    double max_logit = -INFINITY;
    for (float v : logits) max_logit = std::max(max_logit, static_cast<double>(v));
    int32_t keep = n;
    double denom = 0.0;
    if (config_.top_k > 0 && config_.top_k < n) {
      keep = config_.top_k;
      std::partial_sort(ids->begin(), ids->begin() + keep, ids->end(), before);
    } else if (config_.top_p < 1.f) {
      double total = 0.0;
      for (float v : logits) total += std::exp((static_cast<double>(v) - max_logit) * inv_t);
      for (int32_t m = 64;; m *= 4) {
        keep = std::min(m, n);
        std::partial_sort(ids->begin(), ids->begin() + keep, ids->end(), before);
        double mass = 0.0;
        for (int32_t i = 0; i < keep; ++i) {
          mass += std::exp((logits[static_cast<size_t>((*ids)[static_cast<size_t>(i)])] - max_logit) * inv_t);
        }
        if (mass >= static_cast<double>(config_.top_p) * total || keep == n) break;
      }
      denom = total;
    }
    if (config_.top_k > 0 && config_.top_k < n) {
      while (keep > 0 && logits[static_cast<size_t>((*ids)[static_cast<size_t>(keep - 1)])] == -INFINITY) --keep;
    }
    ids->resize(static_cast<size_t>(keep));
    probs->resize(static_cast<size_t>(keep));
    double sum = 0.0;
    for (int32_t i = 0; i < keep; ++i) {
      const double p =
          std::exp((logits[static_cast<size_t>((*ids)[static_cast<size_t>(i)])] - max_logit) * inv_t);
      (*probs)[static_cast<size_t>(i)] = p;
      sum += p;
    }
    const double norm = denom > 0.0 ? denom : sum;
    for (auto& p : *probs) p /= norm;
    if (config_.top_p < 1.f) {
      double cum = 0.0;
      int32_t cut = keep;
      for (int32_t i = 0; i < keep; ++i) {
        cum += (*probs)[static_cast<size_t>(i)];
        if (cum >= static_cast<double>(config_.top_p)) {
          cut = i + 1;
          break;
        }
      }
      ids->resize(static_cast<size_t>(cut));
      probs->resize(static_cast<size_t>(cut));
      const double kept = std::accumulate(probs->begin(), probs->end(), 0.0);
      for (auto& p : *probs) p /= kept;
    }
  }

  SamplerConfig config_;
  uint64_t state_;
  std::vector<int32_t> ids_;
  std::vector<double> probs_;
};

// [rows, vocab] logits, fresh per seed. Kinds: 0 normal spread; 1 coarse (values on a 0.25 grid: many exact
// ties, also at the top); 2 normal with ~10% -inf; 3 one dominant token per row (peaked, u near the ends).
std::vector<float> RandomRows(int rows, int vocab, int kind, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 2.5f);
  std::uniform_real_distribution<float> uf(0.f, 1.f);
  std::vector<float> l(static_cast<size_t>(rows) * static_cast<size_t>(vocab));  // [rows, vocab]
  for (auto& v : l) {
    v = nd(rng);
    if (kind == 1) v = std::round(v * 4.f) / 4.f;
    if (kind == 2 && uf(rng) < 0.1f) v = -INFINITY;
  }
  for (int r = 0; r < rows; ++r) {
    float* row = l.data() + static_cast<size_t>(r) * static_cast<size_t>(vocab);
    if (kind == 2) row[static_cast<size_t>(r) % static_cast<size_t>(vocab)] = 0.5f;  // never all -inf
    if (kind == 3) row[rng() % static_cast<uint32_t>(vocab)] = 30.f;
  }
  return l;
}

std::vector<SamplerConfig> Configs(int vocab, uint64_t seed) {
  std::vector<SamplerConfig> out;
  for (float t : {0.f, 0.35f, 0.8f, 1.f, 2.5f}) {
    for (int32_t k : {0, 1, 7, vocab, vocab + 5}) {
      for (float p : {1.f, 0.9f, 0.3f, 1e-6f}) out.push_back(SamplerConfig{t, k, p, seed + out.size()});
    }
  }
  return out;
}

std::vector<int32_t> ReferenceTokens(const SamplerConfig& c, const std::vector<float>& l, int rows, int vocab) {
  ReferenceSampler ref(c);
  std::vector<int32_t> out;  // [rows]
  const auto v = static_cast<size_t>(vocab);
  for (int r = 0; r < rows; ++r) out.push_back(ref.Sample(std::span<const float>(l).subspan(r * v, v)));
  return out;
}

TEST(SamplerParallelTest, SampleAndPickMatchTheOriginalSequentialSampler) {
  int checked = 0, distinct_tokens_seen = 0;
  for (int vocab : {1, 2, 9, 300}) {
    for (int kind = 0; kind < 4; ++kind) {
      const int rows = 12;
      const auto l = RandomRows(rows, vocab, kind, static_cast<uint32_t>(vocab * 10 + kind));
      for (const SamplerConfig& c : Configs(vocab, 1000 + static_cast<uint64_t>(kind))) {
        const std::vector<int32_t> want = ReferenceTokens(c, l, rows, vocab);
        auto s = Sampler::Create(c);
        ASSERT_TRUE(s.ok());
        auto p = Sampler::Create(c);
        ASSERT_TRUE(p.ok());
        SamplerScratch scratch;
        const auto v = static_cast<size_t>(vocab);
        for (int r = 0; r < rows; ++r) {
          const auto row = std::span<const float>(l).subspan(static_cast<size_t>(r) * v, v);
          auto got = s->Sample(row);
          ASSERT_TRUE(got.ok()) << got.status().ToString();
          ASSERT_EQ(*got, want[static_cast<size_t>(r)])
              << "Sample: vocab " << vocab << " kind " << kind << " T " << c.temperature << " k " << c.top_k
              << " p " << c.top_p << " row " << r;
          const double u = c.greedy() ? 0.0 : p->NextUniform();
          auto picked = p->Pick(row, u, &scratch);
          ASSERT_TRUE(picked.ok()) << picked.status().ToString();
          ASSERT_EQ(*picked, want[static_cast<size_t>(r)]) << "Pick: vocab " << vocab << " kind " << kind;
          ++checked;
        }
        std::vector<int32_t> uniq = want;
        std::sort(uniq.begin(), uniq.end());
        distinct_tokens_seen = std::max<int>(distinct_tokens_seen,
                                             static_cast<int>(std::unique(uniq.begin(), uniq.end()) - uniq.begin()));
      }
    }
  }
  EXPECT_GT(checked, 10000);
  EXPECT_GT(distinct_tokens_seen, 6) << "the draws must reach many different tokens, or the test proves little";
}

TEST(SamplerParallelTest, ResampleRowsMatchesSequentialAtAnyThreadCount) {
  // 40 x 2000 = 80000 logits: above ResampleRows's single-thread cut-off, so the pool runs.
  const int rows = 40, vocab = 2000;
  for (int kind = 0; kind < 4; ++kind) {
    const auto l = RandomRows(rows, vocab, kind, 77u + static_cast<uint32_t>(kind));
    for (const SamplerConfig& c : {SamplerConfig{0.8f, 0, 1.f, 7}, SamplerConfig{1.f, 40, 0.95f, 8},
                                   SamplerConfig{0.6f, 0, 0.9f, 9}, SamplerConfig{0.f, 0, 1.f, 10},
                                   SamplerConfig{1.3f, vocab, 1.f, 11}}) {
      const std::vector<int32_t> want = ReferenceTokens(c, l, rows, vocab);
      for (int threads : {1, 3, 8, 0}) {
        auto s = Sampler::Create(c);
        ASSERT_TRUE(s.ok());
        const auto got = transcript_detail::ResampleRows(*s, l, vocab, rows, threads);
        ASSERT_EQ(got.size(), static_cast<size_t>(rows));
        for (int r = 0; r < rows; ++r) {
          ASSERT_TRUE(got[static_cast<size_t>(r)].ok());
          ASSERT_EQ(*got[static_cast<size_t>(r)], want[static_cast<size_t>(r)])
              << "kind " << kind << " T " << c.temperature << " threads " << threads << " row " << r;
        }
        // The stream advanced by one draw per row (none when greedy), as rows Sample calls would have.
        auto next = Sampler::Create(c);
        ASSERT_TRUE(next.ok());
        if (!c.greedy()) {
          for (int r = 0; r < rows; ++r) (void)next->NextUniform();
          EXPECT_EQ(s->NextUniform(), next->NextUniform());
        }
      }
    }
  }
}

TEST(SamplerParallelTest, TamperedTokenAndRefusedRowAreFoundAtTheirRow) {
  const int rows = 48, vocab = 1500;
  auto l = RandomRows(rows, vocab, 0, 5);
  const SamplerConfig c{0.9f, 0, 1.f, 42};
  std::vector<int32_t> recorded = ReferenceTokens(c, l, rows, vocab);
  // A tampered recorded token: the parallel picks differ from it exactly there.
  recorded[17] = (recorded[17] + 1) % vocab;
  auto s = Sampler::Create(c);
  ASSERT_TRUE(s.ok());
  auto got = transcript_detail::ResampleRows(*s, l, vocab, rows, 4);
  for (int r = 0; r < rows; ++r) {
    ASSERT_TRUE(got[static_cast<size_t>(r)].ok());
    EXPECT_EQ(*got[static_cast<size_t>(r)] != recorded[static_cast<size_t>(r)], r == 17) << "row " << r;
  }
  // A NaN in row 30: Sample refuses it (InvalidArgument) and so does the parallel pick; the rows before it are
  // still the sequential ones.
  l[30 * static_cast<size_t>(vocab) + 123] = NAN;
  auto s2 = Sampler::Create(c);
  ASSERT_TRUE(s2.ok());
  got = transcript_detail::ResampleRows(*s2, l, vocab, rows, 4);
  ReferenceSampler ref(c);
  for (int r = 0; r < 30; ++r) {
    const auto row = std::span<const float>(l).subspan(static_cast<size_t>(r) * vocab, static_cast<size_t>(vocab));
    ASSERT_TRUE(got[static_cast<size_t>(r)].ok());
    EXPECT_EQ(*got[static_cast<size_t>(r)], ref.Sample(row));
  }
  EXPECT_EQ(got[30].status().code(), StatusCode::kInvalidArgument);
}

TEST(SamplerParallelTest, PickRejectsBadInput) {
  auto s = Sampler::Create(SamplerConfig{1.f, 0, 1.f, 1});
  ASSERT_TRUE(s.ok());
  SamplerScratch scratch;
  const std::vector<float> l{0.f, 1.f, 2.f};
  EXPECT_EQ(s->Pick(l, 0.5, nullptr).status().code(), StatusCode::kInvalidArgument);
  for (double u : {-0.1, 1.0, 2.0, static_cast<double>(NAN)})
    EXPECT_EQ(s->Pick(l, u, &scratch).status().code(), StatusCode::kInvalidArgument) << u;
  EXPECT_EQ(s->Pick(std::vector<float>{}, 0.5, &scratch).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Pick(std::vector<float>{1.f, INFINITY}, 0.5, &scratch).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Pick(std::vector<float>{-INFINITY}, 0.5, &scratch).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(s->Pick(l, 0.0, &scratch).ok());
}

}  // namespace
}  // namespace fp
