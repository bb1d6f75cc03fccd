// bf16 / f16 conversions: exhaustive round trips over every 16-bit pattern and rounding against fp64.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fieldprint/dtype.h"

namespace fp {
namespace {

TEST(DType, Bf16RoundTripsEveryPattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    Bf16 h{static_cast<uint16_t>(b)};
    float f = Bf16ToFloat(h);
    Bf16 back = FloatToBf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(back)));
    } else {
      EXPECT_EQ(back.bits, h.bits) << b;
    }
  }
}

TEST(DType, F16RoundTripsEveryPattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    F16 h{static_cast<uint16_t>(b)};
    float f = F16ToFloat(h);
    F16 back = FloatToF16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(back)));
    } else {
      EXPECT_EQ(back.bits, h.bits) << b;
    }
  }
}

TEST(DType, KnownValues) {
  EXPECT_EQ(F16ToFloat(F16{0x3c00}), 1.0f);
  EXPECT_EQ(F16ToFloat(F16{0x7bff}), 65504.0f);
  EXPECT_EQ(F16ToFloat(F16{0x0001}), std::ldexp(1.0f, -24));
  EXPECT_EQ(FloatToF16(1e6f).bits, 0x7c00);    // overflow to +inf
  EXPECT_EQ(FloatToF16(-1e-9f).bits, 0x8000);  // underflow to -0
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
  EXPECT_EQ(FloatToBf16(1.00390625f).bits, 0x3f80);  // halfway 1 + 2^-8 rounds to even (1.0)
}

// Rounding to nearest: the converted value is the closest representable one (ties aside).
TEST(DType, RoundsToNearest) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> exp_dist(-26.f, 17.f);
  for (int i = 0; i < 200000; ++i) {
    float x = std::exp2(exp_dist(rng)) * ((rng() & 1) ? 1.f : -1.f);
    float h = F16ToFloat(FloatToF16(x));
    if (std::fabs(x) < 65504.f) {
      F16 hb = FloatToF16(x);
      F16 up{static_cast<uint16_t>(hb.bits + 1)};
      float neighbor = F16ToFloat(up);
      if (!std::isinf(neighbor)) {
        EXPECT_LE(std::fabs(h - x), std::fabs(neighbor - x)) << x;
      }
    }
    float b = Bf16ToFloat(FloatToBf16(x));
    EXPECT_LE(std::fabs(b - x), std::fabs(x) * (1.0f / 256.f)) << x;
  }
}

}  // namespace
}  // namespace fp
