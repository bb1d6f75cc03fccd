// The --gamma text and the engines' gamma options (head_gamma.h): good lists parse to their values, every
// kind of bad text is an InvalidArgument naming the item, and the count against n_heads is checked. The
// engine side (a per-head vector reaching the right heads) is in engine_forward_test.cpp.
#include "fieldprint/head_gamma.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace fp {
namespace {

TEST(HeadGamma, ParsesOneValueOrAList) {
  EXPECT_EQ(*ParseGammaList("0"), std::vector<float>{0.f});
  EXPECT_EQ(*ParseGammaList("-1.5"), std::vector<float>{-1.5f});
  EXPECT_EQ(*ParseGammaList("1e-2"), std::vector<float>{1e-2f});
  EXPECT_EQ(*ParseGammaList("0.5,0,-1,2"), (std::vector<float>{0.5f, 0.f, -1.f, 2.f}));
  EXPECT_EQ(*ParseGammaList("0.5, 1 ,2"), (std::vector<float>{0.5f, 1.f, 2.f}));
}

TEST(HeadGamma, RejectsBadText) {
  for (const char* bad : {"", ",", "1,", ",1", "1,,2", "x", "1x", "1.5.2", "1;2", "nan", "inf", "-inf",
                          "1e99", "0x", " ", "1, ,2"}) {
    auto r = ParseGammaList(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  // The message names the bad item.
  EXPECT_NE(ParseGammaList("1,zz,2").status().message().find("item 2 'zz'"), std::string::npos)
      << ParseGammaList("1,zz,2").status().ToString();
}

TEST(HeadGamma, ResolvesAgainstHeadCount) {
  EXPECT_EQ(*ResolveHeadGammas(0.25f, {}, 3), (std::vector<float>{0.25f, 0.25f, 0.25f}));
  const std::vector<float> four{1.f, 2.f, 3.f, 4.f};
  EXPECT_EQ(*ResolveHeadGammas(9.f, four, 4), four);  // the vector wins over the scalar
  auto wrong = ResolveHeadGammas(0.f, four, 5);
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("4 values for 5 heads"), std::string::npos)
      << wrong.status().ToString();
  EXPECT_EQ(ResolveHeadGammas(0.f, std::vector<float>{1.f}, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveHeadGammas(NAN, {}, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveHeadGammas(0.f, std::vector<float>{0.f, INFINITY}, 2).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveHeadGammas(0.f, {}, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsUniform(std::vector<float>{2.f, 2.f}));
  EXPECT_FALSE(IsUniform(std::vector<float>{2.f, 2.f, 1.f}));
  EXPECT_TRUE(IsUniform({}));
}

}  // namespace
}  // namespace fp
