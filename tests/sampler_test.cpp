// Sampler: greedy, temperature, top-k, top-p distributions against direct computation; empirical frequencies
// of seeded draws against the distribution; seed reproducibility; bad inputs.
#include "fieldprint/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

namespace fp {
namespace {

std::vector<float> RandomLogits(int n, uint32_t seed, float scale = 2.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> l(static_cast<size_t>(n));
  for (auto& v : l) v = nd(rng);
  return l;
}

// softmax(l / t) restricted to `keep` (others 0), in double.
std::vector<double> Softmax(const std::vector<float>& l, double t, const std::vector<bool>& keep) {
  double mx = -INFINITY;
  for (size_t i = 0; i < l.size(); ++i) {
    if (keep[i]) mx = std::max(mx, static_cast<double>(l[i]));
  }
  std::vector<double> p(l.size(), 0.0);
  double s = 0.0;
  for (size_t i = 0; i < l.size(); ++i) {
    if (keep[i]) s += p[i] = std::exp((l[i] - mx) / t);
  }
  for (auto& v : p) v /= s;
  return p;
}

Sampler Make(float t, int k, float p, uint64_t seed) {
  auto s = Sampler::Create(SamplerConfig{t, k, p, seed});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

TEST(SamplerTest, GreedyIsArgmaxLowestIdOnTies) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto l = RandomLogits(257, seed);
    Sampler s = Make(0.f, 0, 1.f, seed);
    auto t = s.Sample(l);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(*t, std::max_element(l.begin(), l.end()) - l.begin());
  }
  std::vector<float> tie{1.f, 3.f, -2.f, 3.f};
  Sampler s = Make(0.f, 0, 1.f, 1);
  EXPECT_EQ(*s.Sample(tie), 1);
}

TEST(SamplerTest, TemperatureDistributionIsSoftmax) {
  auto l = RandomLogits(50, 7);
  for (float t : {0.3f, 1.f, 2.5f}) {
    Sampler s = Make(t, 0, 1.f, 3);
    std::vector<float> p;
    ASSERT_TRUE(s.Distribution(l, &p).ok());
    const auto ref = Softmax(l, t, std::vector<bool>(l.size(), true));
    for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(p[i], ref[i], 1e-6) << "t=" << t << " i=" << i;
  }
}

TEST(SamplerTest, TopKKeepsTheKLargest) {
  auto l = RandomLogits(100, 11);
  Sampler s = Make(0.8f, 7, 1.f, 3);
  std::vector<float> p;
  ASSERT_TRUE(s.Distribution(l, &p).ok());
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  std::vector<bool> keep(l.size());
  for (size_t i = 0; i < l.size(); ++i) keep[i] = l[i] >= sorted[6];
  const auto ref = Softmax(l, 0.8, keep);
  for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(p[i], ref[i], 1e-6);
  EXPECT_EQ(std::count_if(p.begin(), p.end(), [](float v) { return v > 0.f; }), 7);
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  // Small vocabularies, and a large flat one where the kept set outgrows the sampler's first sorted prefixes.
  for (auto [n, scale, top_p] :
       {std::tuple{60, 2.f, 0.7f}, std::tuple{3000, 0.5f, 0.9f}, std::tuple{3000, 4.f, 0.5f}}) {
    auto l = RandomLogits(n, 5, scale);
    Sampler s = Make(1.f, 0, top_p, 3);
    std::vector<float> p;
    ASSERT_TRUE(s.Distribution(l, &p).ok());
    const auto full = Softmax(l, 1.0, std::vector<bool>(l.size(), true));
    std::vector<size_t> order(l.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return full[a] > full[b]; });
    std::vector<bool> keep(l.size(), false);
    double cum = 0.0;
    size_t kept = 0;
    for (size_t i : order) {
      keep[i] = true;
      ++kept;
      cum += full[i];
      if (cum >= top_p) break;
    }
    const auto ref = Softmax(l, 1.0, keep);
    for (size_t i = 0; i < l.size(); ++i) ASSERT_NEAR(p[i], ref[i], 1e-6) << "n " << n << " i " << i;
    if (n == 3000 && scale < 1.f) {
      EXPECT_GT(kept, 256u) << "the case meant to outgrow the first prefixes did not";
    }
  }
}

TEST(SamplerTest, DrawFrequenciesMatchDistribution) {
  const std::vector<float> l{0.f, 1.f, 2.f, -1.f, 0.5f, 1.5f};
  Sampler s = Make(1.3f, 5, 0.95f, 12345);
  std::vector<float> p;
  ASSERT_TRUE(s.Distribution(l, &p).ok());
  const int n = 40000;
  std::vector<int> count(l.size(), 0);
  for (int i = 0; i < n; ++i) ++count[static_cast<size_t>(*s.Sample(l))];
  double chi2 = 0.0;
  int dof = -1;
  for (size_t i = 0; i < l.size(); ++i) {
    if (p[i] == 0.f) {
      EXPECT_EQ(count[i], 0) << "token " << i << " is outside the kept set";
      continue;
    }
    const double e = n * static_cast<double>(p[i]);
    chi2 += (count[i] - e) * (count[i] - e) / e;
    ++dof;
  }
  // 99.9th percentile of chi-square with <= 4 degrees of freedom is 18.5.
  EXPECT_LT(chi2, 18.5) << "dof " << dof;
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDiffers) {
  auto run = [](uint64_t seed) {
    Sampler s = Make(1.f, 40, 0.9f, seed);
    std::vector<int32_t> out;
    for (uint32_t i = 0; i < 64; ++i) out.push_back(*s.Sample(RandomLogits(300, i, 1.f)));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
  Sampler s = Make(1.f, 0, 1.f, 9);
  auto l = RandomLogits(300, 1, 1.f);
  const int32_t first = *s.Sample(l);
  s.Reseed(9);
  EXPECT_EQ(*s.Sample(l), first);
}

TEST(SamplerTest, MinusInfinityIsNeverSampled) {
  std::vector<float> l(10, -INFINITY);
  l[3] = 0.f;
  l[8] = 0.5f;
  Sampler s = Make(2.f, 0, 1.f, 1);
  for (int i = 0; i < 200; ++i) {
    const int32_t t = *s.Sample(l);
    EXPECT_TRUE(t == 3 || t == 8);
  }
}

TEST(SamplerTest, RejectsBadInput) {
  EXPECT_FALSE(Sampler::Create(SamplerConfig{1.f, -1, 1.f, 0}).ok());
  EXPECT_FALSE(Sampler::Create(SamplerConfig{1.f, 0, 0.f, 0}).ok());
  EXPECT_FALSE(Sampler::Create(SamplerConfig{1.f, 0, 1.5f, 0}).ok());
  EXPECT_FALSE(Sampler::Create(SamplerConfig{NAN, 0, 1.f, 0}).ok());
  for (float t : {0.f, 1.f}) {
    Sampler s = Make(t, 0, 1.f, 0);
    EXPECT_EQ(s.Sample(std::vector<float>{}).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.Sample(std::vector<float>{1.f, NAN}).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.Sample(std::vector<float>{1.f, INFINITY}).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.Sample(std::vector<float>{-INFINITY, -INFINITY}).status().code(),
              StatusCode::kInvalidArgument);
    EXPECT_FALSE(s.Distribution(std::vector<float>{1.f}, nullptr).ok());
  }
}

}  // namespace
}  // namespace fp
