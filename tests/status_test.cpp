// Status / Result basics.
#include <gtest/gtest.h>

#include "fieldprint/status.h"

namespace fp {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status Chain(int x) {
  auto r = Half(x);
  FP_RETURN_IF_ERROR(r.status());
  return Status::Ok();
}

TEST(Status, OkAndErrors) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = OutOfRange("block 7 >= 4");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.ToString(), "OutOfRange: block 7 >= 4");
}

TEST(Status, ResultCarriesValueOrError) {
  auto a = Half(8);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 4);
  auto b = Half(3);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "odd: 3");
  EXPECT_EQ(Chain(5).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Chain(6).ok());
}

}  // namespace
}  // namespace fp
