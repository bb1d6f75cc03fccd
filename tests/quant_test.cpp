// Dequantisation and dot products against a straightforward decode written here from the format description
// (not the library's code), on random blocks; quantise -> dequantise error bounds; SIMD vs scalar dots;
// MatVec.
#include "fieldprint/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "fieldprint/dtype.h"
#include "fieldprint/gguf.h"
#include "model_test_util.h"

namespace fp {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A finite f16 in about [-2, 2] (random sign, exponent 0..15 -> 2^-15 .. 2^0, random mantissa).
uint16_t RandomScale(std::mt19937& rng) {
  const uint16_t sign = static_cast<uint16_t>((rng() & 1) << 15);
  const uint16_t exp = static_cast<uint16_t>(rng() % 16);
  return static_cast<uint16_t>(sign | (exp << 10) | (rng() & 0x3ff));
}

// Random row bytes of n elements of type t: random quants, finite scales.
std::vector<uint8_t> RandomRow(GgmlType t, int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> row(testing::V(RowBytes(t, n)));
  for (auto& b : row) b = static_cast<uint8_t>(rng());
  const int64_t nb = n / 32;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t* blk = row.data();
    uint16_t d = RandomScale(rng), m = RandomScale(rng);
    if (t == GgmlType::kQ4_0) blk += i * 18, std::memcpy(blk, &d, 2);
    if (t == GgmlType::kQ8_0) blk += i * 34, std::memcpy(blk, &d, 2);
    if (t == GgmlType::kQ4_1) blk += i * 20, std::memcpy(blk, &d, 2), std::memcpy(blk + 2, &m, 2);
  }
  if (t == GgmlType::kF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = FloatToF16(std::normal_distribution<float>()(rng)).bits;
      std::memcpy(row.data() + 2 * i, &h, 2);
    }
  }
  if (t == GgmlType::kBF16 || t == GgmlType::kF32) {
    for (int64_t i = 0; i < n; ++i)
      StoreFromFloat(row.data(), t == GgmlType::kF32 ? DType::kF32 : DType::kBF16, i,
                     std::normal_distribution<float>()(rng));
  }
  return row;
}

// The reference decode, element by element, straight from the format description.
double RefElement(GgmlType t, const uint8_t* row, int64_t i) {
  auto f16 = [](const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return static_cast<double>(F16ToFloat(F16{h}));
  };
  const int64_t b = i / 32, j = i % 32;
  auto nibble = [&](const uint8_t* qs) { return j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4); };
  switch (t) {
    case GgmlType::kF32: {
      float v;
      std::memcpy(&v, row + 4 * i, 4);
      return v;
    }
    case GgmlType::kF16:
      return f16(row + 2 * i);
    case GgmlType::kBF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * i, 2);
      return Bf16ToFloat(Bf16{h});
    }
    case GgmlType::kQ4_0: {
      const uint8_t* blk = row + b * 18;
      return f16(blk) * (nibble(blk + 2) - 8);
    }
    case GgmlType::kQ4_1: {
      const uint8_t* blk = row + b * 20;
      return f16(blk) * nibble(blk + 4) + f16(blk + 2);
    }
    case GgmlType::kQ8_0: {
      const uint8_t* blk = row + b * 34;
      return f16(blk) * static_cast<int8_t>(blk[2 + j]);
    }
    default:
      return kNaN;
  }
}

const GgmlType kTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16,
                           GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0};

TEST(Quant, BlockSizesMatchTypeTable) {
  EXPECT_EQ(GgmlTypeInfo(static_cast<uint32_t>(GgmlType::kQ4_0))->block_bytes, sizeof(BlockQ4_0));
  EXPECT_EQ(GgmlTypeInfo(static_cast<uint32_t>(GgmlType::kQ4_1))->block_bytes, sizeof(BlockQ4_1));
  EXPECT_EQ(GgmlTypeInfo(static_cast<uint32_t>(GgmlType::kQ8_0))->block_bytes, sizeof(BlockQ8_0));
  EXPECT_EQ(testing::V(RowBytes(GgmlType::kQ4_1, 576)), 18u * 20);
  EXPECT_FALSE(RowBytes(GgmlType::kQ4_1, 40).ok());
}

TEST(Quant, DequantizeMatchesReference) {
  std::mt19937 rng(7);
  for (GgmlType t : kTypes) {
    for (int64_t n : {32, 96, 576}) {
      const auto row = RandomRow(t, n, rng);
      std::vector<float> out(n, kNaN);  // poisoned
      ASSERT_TRUE(DequantizeRow(t, row.data(), out.data(), n).ok());
      for (int64_t i = 0; i < n; ++i) {
        const double ref = RefElement(t, row.data(), i);
        ASSERT_NEAR(out[i], ref, 1e-6 * std::fabs(ref) + 1e-30) << GgmlTypeName(t) << " element " << i;
      }
    }
  }
}

TEST(Quant, DotMatchesReferenceSimdAndScalar) {
  std::mt19937 rng(11);
  for (GgmlType t : kTypes) {
    for (int64_t n : {32, 64, 576, 1536}) {
      const auto row = RandomRow(t, n, rng);
      std::vector<float> x(n);
      for (auto& v : x) v = std::normal_distribution<float>()(rng);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += RefElement(t, row.data(), i) * x[i];
        mag += std::fabs(RefElement(t, row.data(), i) * x[i]);
      }
      for (bool simd : {false, true}) {
        auto dot = GetDotFn(t, simd);
        ASSERT_TRUE(dot.ok());
        const float got = (*dot)(row.data(), x.data(), n);
        EXPECT_NEAR(got, ref, 2e-6 * mag + 1e-30) << GgmlTypeName(t) << " n=" << n << " simd=" << simd;
      }
    }
  }
  EXPECT_FALSE(GetDotFn(GgmlType::kQ6_K).ok());
}

TEST(Quant, QuantizeRoundTripWithinHalfStep) {
  std::mt19937 rng(3);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kF16, GgmlType::kBF16}) {
    const int64_t n = 32 * 16;
    std::vector<float> x(n);
    for (auto& v : x) v = std::normal_distribution<float>(0.3f, 2.f)(rng);
    x[5] = 0.f;
    std::vector<uint8_t> q(testing::V(RowBytes(t, n)));
    ASSERT_TRUE(QuantizeRow(t, x.data(), q.data(), n).ok());
    std::vector<float> y(n, kNaN);
    ASSERT_TRUE(DequantizeRow(t, q.data(), y.data(), n).ok());
    for (int64_t b = 0; b < n / 32; ++b) {
      float lo = x[b * 32], hi = lo, amax = 0;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[b * 32 + j]);
        hi = std::max(hi, x[b * 32 + j]);
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
      }
      for (int j = 0; j < 32; ++j) {
        const float xv = x[b * 32 + j], err = std::fabs(y[b * 32 + j] - xv);
        float bound = 0;
        switch (t) {
          // Half a step of the f16-rounded scale, plus a clip at +-127 when the scale rounded down.
          case GgmlType::kQ8_0:
            bound = 0.5f * amax / 127 * 1.002f + amax / 1024 + 1e-6f;
            break;
          case GgmlType::kQ4_1:
            bound = 0.5f * (hi - lo) / 15 * 1.002f + std::fabs(lo) / 1024 + 1e-6f;
            break;
          case GgmlType::kQ4_0:
            bound = amax / 8 * 1.002f + 1e-6f;
            break;  // the +7 side clips a full step
          case GgmlType::kF16:
            bound = std::fabs(xv) / 2048 + 1e-7f;
            break;
          case GgmlType::kBF16:
            bound = std::fabs(xv) / 256 + 1e-30f;
            break;
          default:
            break;
        }
        ASSERT_LE(err, bound) << GgmlTypeName(t) << " block " << b << " j " << j << " x " << xv;
      }
    }
  }
}

TEST(Quant, RejectsUnsupported) {
  std::vector<float> out(256);
  std::vector<uint8_t> in(210);
  EXPECT_EQ(DequantizeRow(GgmlType::kQ6_K, in.data(), out.data(), 256).code(), StatusCode::kUnimplemented);
  EXPECT_FALSE(DequantizeRow(GgmlType::kQ8_0, in.data(), out.data(), 33).ok());
  EXPECT_FALSE(QuantizeRow(GgmlType::kQ5_0, out.data(), in.data(), 32).ok());
}

TEST(Quant, MatVecOverGgufTensor) {
  std::mt19937 rng(5);
  const int64_t rows = 7, cols = 96;
  std::vector<uint8_t> w;
  for (int64_t r = 0; r < rows; ++r) {
    auto row = RandomRow(GgmlType::kQ4_1, cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  GgufBuilder b;
  ASSERT_TRUE(b.AddTensor("w", GgmlType::kQ4_1, {cols, rows}, w).ok());
  const auto img = b.Build();
  auto f = GgufFile::FromBuffer(img);
  ASSERT_TRUE(f.ok());
  const GgufTensor& t = *f->FindTensor("w");
  std::vector<float> x(cols), y(rows, kNaN);
  for (auto& v : x) v = std::normal_distribution<float>()(rng);
  ASSERT_TRUE(MatVec(t, x.data(), y.data() + 2, 2, rows).ok());
  for (int64_t r = 2; r < rows; ++r) {
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < cols; ++i) {
      ref += RefElement(GgmlType::kQ4_1, w.data() + r * t.row_bytes(), i) * x[i];
      mag += std::fabs(RefElement(GgmlType::kQ4_1, w.data() + r * t.row_bytes(), i) * x[i]);
    }
    EXPECT_NEAR(y[r], ref, 2e-6 * mag);
  }
  EXPECT_TRUE(std::isnan(y[0]));  // rows outside the range are untouched
  EXPECT_FALSE(MatVec(t, x.data(), y.data(), 0, rows + 1).ok());
  EXPECT_FALSE(MatVec(t, x.data(), y.data(), 3, 2).ok());
}

TEST(Quant, RealModelRowsDequantizeAndDot) {
  FP_REQUIRE_SMOLLM2(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  std::mt19937 rng(17);
  for (const char* name :
       {"token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"}) {
    const GgufTensor* t = f->FindTensor(name);
    ASSERT_NE(t, nullptr) << name;
    ASSERT_TRUE(CanDequantize(t->type));
    const int64_t r = static_cast<int64_t>(rng() % static_cast<uint32_t>(t->rows()));
    const uint8_t* row = t->data + r * t->row_bytes();
    std::vector<float> v(t->cols(), kNaN), x(t->cols());
    ASSERT_TRUE(DequantizeRow(t->type, row, v.data(), t->cols()).ok());
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < t->cols(); ++i) {
      ASSERT_TRUE(std::isfinite(v[i])) << name;
      ASSERT_NEAR(v[i], RefElement(t->type, row, i), 1e-6 * std::fabs(v[i]) + 1e-30);
      x[i] = std::normal_distribution<float>()(rng);
      ref += static_cast<double>(v[i]) * x[i];
      mag += std::fabs(static_cast<double>(v[i]) * x[i]);
    }
    EXPECT_NEAR((testing::V(GetDotFn(t->type)))(row, x.data(), t->cols()), ref, 2e-6 * mag + 1e-30) << name;
  }
}

}  // namespace
}  // namespace fp
