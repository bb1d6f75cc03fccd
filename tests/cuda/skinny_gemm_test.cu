// skinny_gemm_test.cu — the engine's GEMM kernels (skinny tensor-core GEMM, CUDA-core GEMV) against an fp64
// oracle, and the skinny GEMM's batch invariance: a token's output row must be bit-identical whatever the
// batch size and wherever the token sits in it (the property batch_invariant mode is built on). Fresh random
// bf16 operands, NaN-poisoned outputs, odd shapes (out not a multiple of the row tile, n across the m-tile
// and pass boundaries). Every test skips without a CUDA device.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "gemm_test_util.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;

using testing::Dev;
using testing::GemmErrorBound;
using testing::Host;
using testing::RandomBf16;
using Problem = testing::GemmProblem;

enum class Kernel { kSkinny, kGemv };

void CheckAgainstOracle(Kernel kind, const Problem& p, float beta, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto w = RandomBf16(rng, static_cast<size_t>(p.out) * p.in, 1.f);
  const auto x = RandomBf16(rng, static_cast<size_t>(p.n) * p.in, 1.f);
  const auto y0 = testing::ResidualInput(rng, static_cast<size_t>(p.n) * p.out, beta);
  bf16* dw = Dev(w);
  bf16* dx = Dev(x);
  float* dy = Dev(y0);
  const Status st = kind == Kernel::kSkinny
                        ? ce::LaunchSkinnyGemm(dw, p.out, p.in, dx, p.n, dy, beta, false, nullptr)
                        : ce::LaunchGemvBf16(dw, p.out, p.in, dx, p.n, dy, beta, nullptr);
  ASSERT_TRUE(st.ok()) << st.ToString();
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = Host(dy, y0.size());
  std::vector<double> want, mag;
  testing::GemmOracle(w, x, y0, beta, p, &want, &mag);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i << " not written (poison survived)";
    const double bound = GemmErrorBound(p.in, mag[i]);
    worst = std::max(worst, std::fabs(got[i] - want[i]) / bound);
  }
  EXPECT_LE(worst, 1.0) << (kind == Kernel::kSkinny ? "skinny" : "gemv") << " out " << p.out << " in " << p.in
                        << " n " << p.n << " beta " << beta;
  cudaFree(dw);
  cudaFree(dx);
  cudaFree(dy);
}

TEST(SkinnyGemm, MatchesFp64Oracle) {
  SKIP_WITHOUT_GPU();
  const Problem shapes[] = {{8, 32, 1},      {13, 64, 1},    {100, 96, 3},  {64, 576, 16},  {37, 576, 17},
                            {200, 1536, 33}, {256, 256, 64}, {72, 160, 65}, {40, 128, 130}, {4096, 4096, 1},
                            {6151, 64, 1},   {6200, 96, 16}};  // out >= 6144: 4 row tiles a warp up to n = 16
  uint32_t seed = 1;
  for (const Problem& p : shapes) {
    CheckAgainstOracle(Kernel::kSkinny, p, 0.f, seed++);
    CheckAgainstOracle(Kernel::kSkinny, p, 1.f, seed++);  // the residual add of the O and down projections
  }
}

TEST(Gemv, MatchesFp64Oracle) {
  SKIP_WITHOUT_GPU();
  const Problem shapes[] = {{8, 32, 1},   {13, 64, 2},  {100, 96, 3},
                            {64, 576, 5}, {37, 576, 8}, {4096, 4096, 1}};
  uint32_t seed = 100;
  for (const Problem& p : shapes) {
    CheckAgainstOracle(Kernel::kGemv, p, 0.f, seed++);
    CheckAgainstOracle(Kernel::kGemv, p, 1.f, seed++);
  }
}

// Token rows computed in batches of every size and order are bit-identical to the same token alone.
TEST(SkinnyGemm, BatchInvariant) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  // 130: three m-tile widths and two passes; out 6150 also takes the 4-row-tile schedule up to n = 16.
  for (const int out : {200, 6150}) {
    SCOPED_TRACE("out " + std::to_string(out));
    const int in = 1536, nmax = 130;
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    const auto x = RandomBf16(rng, static_cast<size_t>(nmax) * in, 1.f);
    bf16* dw = Dev(w);
    // Reference: every token alone (n = 1).
    std::vector<float> alone(static_cast<size_t>(nmax) * out);
    {
      std::vector<bf16> one(static_cast<size_t>(in));
      for (int t = 0; t < nmax; ++t) {
        std::copy_n(x.begin() + static_cast<ptrdiff_t>(t) * in, in, one.begin());
        bf16* dx = Dev(one);
        float* dy = Dev(std::vector<float>(static_cast<size_t>(out), std::nanf("")));
        ASSERT_TRUE(ce::LaunchSkinnyGemm(dw, out, in, dx, 1, dy, 0.f, false, nullptr).ok());
        const auto y = Host(dy, static_cast<size_t>(out));
        std::copy(y.begin(), y.end(), alone.begin() + static_cast<ptrdiff_t>(t) * out);
        cudaFree(dx);
        cudaFree(dy);
      }
    }
    // Batches: sizes across every dispatch bucket, tokens drawn in a random order (a token lands at any row).
    for (int n : {2, 5, 16, 17, 31, 32, 33, 64, 65, 100, 130}) {
      std::vector<int> order(static_cast<size_t>(nmax));
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      order.resize(static_cast<size_t>(n));
      std::vector<bf16> xb(static_cast<size_t>(n) * in);
      for (int i = 0; i < n; ++i) {
        std::copy_n(x.begin() + static_cast<ptrdiff_t>(order[static_cast<size_t>(i)]) * in, in,
                    xb.begin() + static_cast<ptrdiff_t>(i) * in);
      }
      bf16* dx = Dev(xb);
      float* dy = Dev(std::vector<float>(static_cast<size_t>(n) * out, std::nanf("")));
      ASSERT_TRUE(ce::LaunchSkinnyGemm(dw, out, in, dx, n, dy, 0.f, false, nullptr).ok());
      const auto y = Host(dy, static_cast<size_t>(n) * out);
      for (int i = 0; i < n; ++i) {
        const int t = order[static_cast<size_t>(i)];
        ASSERT_EQ(0, std::memcmp(y.data() + static_cast<ptrdiff_t>(i) * out,
                                 alone.data() + static_cast<ptrdiff_t>(t) * out, out * sizeof(float)))
            << "token " << t << " at row " << i << " of a batch of " << n << " differs from the token alone";
      }
      cudaFree(dx);
      cudaFree(dy);
    }
    cudaFree(dw);
  }
}

// The SwiGLU epilogue equals the plain GEMM followed by the SwiGLU kernel, bit for bit, for every n bucket.
TEST(SkinnyGemm, SwiGluEpilogueMatchesSeparateKernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  // ff 84 (168 rows: the wider row tiles, 16 and 32 rows per block, end half-full); ff 3100 (6200 rows: 4 row
  // tiles a warp up to n = 16).
  for (const int ff : {84, 3100}) {
    SCOPED_TRACE("ff " + std::to_string(ff));
    const int in = 320;
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    bf16* dw = Dev(w);
    for (int n : {1, 7, 20, 40, 70}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      float* dgu = Dev(std::vector<float>(static_cast<size_t>(n) * 2 * ff, std::nanf("")));
      const bf16 poison = __float2bfloat16(std::nanf(""));
      bf16* dh1 = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      bf16* dh2 = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      ASSERT_TRUE(ce::LaunchSkinnyGemm(dw, 2 * ff, in, dx, n, dgu, 0.f, false, nullptr).ok());
      ASSERT_TRUE(ce::LaunchSwiGlu(dgu, n, ff, dh1, nullptr).ok());
      ASSERT_TRUE(ce::LaunchSkinnyGemmSwiGlu(dw, ff, in, dx, n, dh2, false, nullptr).ok());
      const auto h1 = Host(dh1, static_cast<size_t>(n) * ff);
      const auto h2 = Host(dh2, static_cast<size_t>(n) * ff);
      const auto gu = Host(dgu, static_cast<size_t>(n) * 2 * ff);
      ASSERT_TRUE(testing::WrittenAndBitIdentical(h2, h1, static_cast<size_t>(ff))) << "n " << n;
      for (size_t i = 0; i < h1.size(); ++i) {
        // And the interleaved layout means what GateUpRow says: gate i and up i of token t.
        const size_t t = i / ff, f = i % ff;
        const float g = gu[t * 2 * ff + static_cast<size_t>(ce::GateUpRow(static_cast<int64_t>(f), false))];
        const float u = gu[t * 2 * ff + static_cast<size_t>(ce::GateUpRow(static_cast<int64_t>(f), true))];
        const float want = g / (1.f + std::exp(-g)) * u;
        EXPECT_NEAR(__bfloat162float(h2[i]), want, 1e-2f * std::fabs(want) + 1e-3f)
            << "n " << n << " element " << i;
      }
      cudaFree(dx);
      cudaFree(dgu);
      cudaFree(dh1);
      cudaFree(dh2);
    }
    cudaFree(dw);
  }
}

// The GEMV's SwiGLU epilogue (one token) equals GEMV + the SwiGLU kernel bit for bit.
TEST(Gemv, SwiGluEpilogueMatchesSeparateKernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(10);
  for (const auto [ff, in] : {std::pair{84, 320}, std::pair{1536, 576}}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    const auto x = RandomBf16(rng, static_cast<size_t>(in), 1.f);
    bf16* dw = Dev(w);
    bf16* dx = Dev(x);
    float* dgu = Dev(std::vector<float>(static_cast<size_t>(2 * ff), std::nanf("")));
    const bf16 poison = __float2bfloat16(std::nanf(""));
    bf16* dh1 = Dev(std::vector<bf16>(static_cast<size_t>(ff), poison));
    bf16* dh2 = Dev(std::vector<bf16>(static_cast<size_t>(ff), poison));
    ASSERT_TRUE(ce::LaunchGemvBf16(dw, 2 * ff, in, dx, 1, dgu, 0.f, nullptr).ok());
    ASSERT_TRUE(ce::LaunchSwiGlu(dgu, 1, ff, dh1, nullptr).ok());
    ASSERT_TRUE(ce::LaunchGemvSwiGluBf16(dw, ff, in, dx, dh2, nullptr).ok());
    const auto h1 = Host(dh1, static_cast<size_t>(ff));
    const auto h2 = Host(dh2, static_cast<size_t>(ff));
    ASSERT_TRUE(testing::WrittenAndBitIdentical(h2, h1, static_cast<size_t>(ff))) << "ff " << ff;
    EXPECT_FALSE(ce::LaunchGemvSwiGluBf16(dw, 30, in, dx, dh2, nullptr).ok());  // ff % 4
    EXPECT_FALSE(ce::LaunchGemvSwiGluBf16(dw, ff, in, dx, nullptr, nullptr).ok());
    for (void* p : {static_cast<void*>(dw), static_cast<void*>(dx), static_cast<void*>(dgu),
                    static_cast<void*>(dh1), static_cast<void*>(dh2)}) {
      cudaFree(p);
    }
  }
}

TEST(SkinnyGemm, RejectsBadShapes) {
  SKIP_WITHOUT_GPU();
  std::vector<bf16> w(64 * 64), x(64 * 2);
  bf16* dw = Dev(w);
  bf16* dx = Dev(x);
  float* dy = Dev(std::vector<float>(128));
  EXPECT_FALSE(ce::LaunchSkinnyGemm(dw, 64, 48, dx, 1, dy, 0.f, false, nullptr).ok());       // in % 32
  EXPECT_FALSE(ce::LaunchSkinnyGemm(dw, 64, 64, dx, 0, dy, 0.f, false, nullptr).ok());       // n = 0
  EXPECT_FALSE(ce::LaunchSkinnyGemm(dw, 0, 64, dx, 1, dy, 0.f, false, nullptr).ok());        // out = 0
  EXPECT_FALSE(ce::LaunchSkinnyGemm(dw + 1, 64, 64, dx, 1, dy, 0.f, false, nullptr).ok());   // unaligned W
  EXPECT_FALSE(ce::LaunchSkinnyGemm(dw, 64, 64, dx, 1, nullptr, 0.f, false, nullptr).ok());  // no output
  EXPECT_FALSE(
      ce::LaunchSkinnyGemmSwiGlu(dw, 30, 64, dx, 1, reinterpret_cast<bf16*>(dy), false, nullptr).ok());
  cudaFree(dw);
  cudaFree(dx);
  cudaFree(dy);
}

}  // namespace
}  // namespace fp
