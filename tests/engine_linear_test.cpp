// CPU linear layer: every weight type x every SIMD path against a double-precision product of the dequantised
// weights and the (quantised, for block types) activations; batch invariance (a token's outputs do not depend
// on the other tokens of the call, bit for bit); quantiser round trips; bad inputs; the thread pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fieldprint/cpu_linear.h"
#include "fieldprint/dtype.h"

namespace fp {
namespace {

struct Matrix {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
};

Matrix MakeMatrix(WeightType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  Matrix m;
  const size_t rb = WeightRowBytes(t, cols);
  m.bytes.assign(rb * static_cast<size_t>(rows), 0xAB);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng);
    uint8_t* dst = m.bytes.data() + rb * static_cast<size_t>(r);
    EXPECT_TRUE(EncodeWeightRow(t, row.data(), cols, dst).ok());
  }
  m.w = WeightMatrix{t, rows, cols, m.bytes.data(), rb};
  return m;
}

bool IsBlock(WeightType t) { return t == WeightType::kQ4_1 || t == WeightType::kQ8_0; }

class LinearTest : public ::testing::TestWithParam<std::tuple<WeightType, const char*>> {
 protected:
  void TearDown() override { ForceLinearKernel(nullptr); }
};

TEST_P(LinearTest, MatchesDoubleReference) {
  const auto [type, kernel] = GetParam();
  ForceLinearKernel(kernel);
  if (std::string(LinearKernelName()) != kernel) GTEST_SKIP() << kernel << " not available on this CPU";
  std::mt19937 rng(static_cast<uint32_t>(static_cast<int>(type) * 31 + 7));
  std::normal_distribution<float> nd;
  ThreadPool pool(3);
  for (auto [rows, cols, n] : {std::tuple{37, 96, 1}, std::tuple{64, 32, 5}, std::tuple{19, 320, 3}}) {
    Matrix m = MakeMatrix(type, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (auto& v : x) v = nd(rng);
    x[3] = 25.f;                                               // an outlier, as real activations have
    std::vector<float> y(static_cast<size_t>(n * rows), NAN);  // poisoned
    Q8Activations scratch;
    ASSERT_TRUE(LinearCpu(m.w, x.data(), n, y.data(), pool, &scratch).ok());
    // The reference multiplies the dequantised weights with the activations the kernel was meant to see:
    // for block types, the int8-quantised activations (dequantised exactly here).
    Q8Activations xq;
    QuantizeActivations(x.data(), n, cols, &xq);
    std::vector<float> wr(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_TRUE(DequantizeRow(m.w, r, wr.data()).ok());
      for (int64_t t = 0; t < n; ++t) {
        double ref = 0.0, mag = 0.0;
        for (int64_t c = 0; c < cols; ++c) {
          double xv = x[static_cast<size_t>(t * cols + c)];
          if (IsBlock(type)) {
            const auto& b = xq.blocks[static_cast<size_t>(t * (cols / 32) + c / 32)];
            xv = static_cast<double>(b.d) * b.q[c % 32];
          }
          ref += wr[static_cast<size_t>(c)] * xv;
          mag += std::fabs(wr[static_cast<size_t>(c)] * xv);
        }
        // Q4_1's min term uses the f16-rounded block sum s (as ggml's block_q8_1): allow its rounding, with
        // the block minimum (an element quantised to 0 by construction) standing for m.
        double s_tol = 0.0;
        if (type == WeightType::kQ4_1) {
          for (int64_t b = 0; b < cols / 32; ++b) {
            float mn = wr[static_cast<size_t>(b * 32)];
            for (int j = 1; j < 32; ++j) mn = std::min(mn, wr[static_cast<size_t>(b * 32 + j)]);
            s_tol += std::fabs(mn) * std::fabs(xq.blocks[static_cast<size_t>(t * (cols / 32) + b)].s) * 1e-3;
          }
        }
        const float got = y[static_cast<size_t>(t * rows + r)];
        EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-5 + s_tol) << "row " << r << " token " << t;
      }
    }
  }
}

TEST_P(LinearTest, TokenOutputsIndependentOfBatch) {
  const auto [type, kernel] = GetParam();
  ForceLinearKernel(kernel);
  if (std::string(LinearKernelName()) != kernel) GTEST_SKIP() << kernel << " not available on this CPU";
  std::mt19937 rng(99);
  std::normal_distribution<float> nd;
  Matrix m = MakeMatrix(type, 50, 128, rng);
  const int n = 6;
  std::vector<float> x(static_cast<size_t>(n * 128));
  for (auto& v : x) v = nd(rng);
  ThreadPool pool(2);
  Q8Activations s;
  std::vector<float> all(static_cast<size_t>(n * 50));
  ASSERT_TRUE(LinearCpu(m.w, x.data(), n, all.data(), pool, &s).ok());
  for (int t = 0; t < n; ++t) {
    std::vector<float> one(50);
    ThreadPool single(1);
    ASSERT_TRUE(LinearCpu(m.w, x.data() + t * 128, 1, one.data(), single, &s).ok());
    EXPECT_EQ(0, std::memcmp(one.data(), all.data() + t * 50, 50 * sizeof(float))) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypesAllKernels, LinearTest,
                         ::testing::Combine(::testing::Values(WeightType::kF32, WeightType::kF16,
                                                              WeightType::kQ8_0, WeightType::kQ4_1),
                                            ::testing::Values("scalar", "avx2", "avx512vnni")));

TEST(LinearQuantTest, QuantiserRoundTripWithinHalfStep) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> ud(-3.f, 3.f);
  std::vector<float> x(128), back(128);
  for (auto& v : x) v = ud(rng);
  for (WeightType t : {WeightType::kQ4_1, WeightType::kQ8_0}) {
    std::vector<uint8_t> bytes(WeightRowBytes(t, 128));
    ASSERT_TRUE(EncodeWeightRow(t, x.data(), 128, bytes.data()).ok());
    const WeightMatrix w{t, 1, 128, bytes.data(), bytes.size()};
    ASSERT_TRUE(DequantizeRow(w, 0, back.data()).ok());
    for (int b = 0; b < 4; ++b) {
      float lo = x[b * 32], hi = x[b * 32], amax = 0.f;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[b * 32 + j]);
        hi = std::max(hi, x[b * 32 + j]);
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
      }
      const float step = t == WeightType::kQ4_1 ? (hi - lo) / 15.f : amax / 127.f;
      for (int j = 0; j < 32; ++j) EXPECT_NEAR(back[b * 32 + j], x[b * 32 + j], 0.51f * step + 2e-3f);
    }
  }
}

TEST(LinearQuantTest, RejectsBadInput) {
  std::vector<uint8_t> bytes(WeightRowBytes(WeightType::kQ4_1, 64) * 4);
  std::vector<float> x(64), y(4);
  ThreadPool pool(1);
  Q8Activations s;
  WeightMatrix good{WeightType::kQ4_1, 4, 64, bytes.data(), WeightRowBytes(WeightType::kQ4_1, 64)};
  EXPECT_TRUE(LinearCpu(good, x.data(), 1, y.data(), pool, &s).ok());
  WeightMatrix bad = good;
  bad.cols = 48;  // not a multiple of 32
  bad.row_bytes = WeightRowBytes(WeightType::kQ4_1, 48);
  EXPECT_EQ(LinearCpu(bad, x.data(), 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad.row_bytes += 1;
  EXPECT_EQ(LinearCpu(bad, x.data(), 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad.data = nullptr;
  EXPECT_EQ(LinearCpu(bad, x.data(), 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad.rows = 0;
  EXPECT_EQ(LinearCpu(bad, x.data(), 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad.type = static_cast<WeightType>(77);
  EXPECT_EQ(LinearCpu(bad, x.data(), 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearCpu(good, nullptr, 1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearCpu(good, x.data(), 1, nullptr, pool, &s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearCpu(good, x.data(), -1, y.data(), pool, &s).code(), StatusCode::kInvalidArgument);
  Q8Activations wrong;
  QuantizeActivations(x.data(), 1, 32, &wrong);  // 32 cols for a 64-col matrix
  EXPECT_EQ(LinearCpuQ8(good, wrong, x.data(), y.data(), pool).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeRow(good, 4, y.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(DequantizeRow(good, -1, y.data()).code(), StatusCode::kOutOfRange);
}

TEST(ThreadPoolTest, EveryIndexOnceAcrossManyRegions) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 7, 1000}) {
      for (int rep = 0; rep < 50; ++rep) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.ParallelFor(n, 16, [&](int64_t b, int64_t e) {
          EXPECT_EQ(b % 16, 0);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      }
    }
  }
}

}  // namespace
}  // namespace fp
