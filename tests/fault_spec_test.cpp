// The --inject-fault spec (fault_injection.h): parsing (every field, defaults, random, each kind of bad
// text), the layout checks, and resolution against a sequence's committed rows (logical page -> physical
// block, bytes past the committed fill refused, random draws reproducible and always inside committed bytes).
// The end-to-end detection and rollback at several targets is in engine_generation_test.cpp.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "fieldprint/fault_injection.h"

namespace fp {
namespace {

TEST(KvFaultSpec, ParsesStepAndFields) {
  auto s = ParseKvFaultSpec("7");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->step, 7);
  EXPECT_EQ(s->target, KvFaultTarget{});  // today's default target: layer 0, K, page 0, byte 3, bit 6
  s = ParseKvFaultSpec("0:bit=1:layer=2:kv=v:page=3:byte=100");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->step, 0);
  EXPECT_EQ(s->target.layer, 2);
  EXPECT_EQ(s->target.part, KvPart::kV);
  EXPECT_EQ(s->target.page, 3);
  EXPECT_EQ(s->target.byte_offset, 100u);
  EXPECT_EQ(s->target.bit, 1);
  EXPECT_FALSE(s->target.random);
  EXPECT_EQ(KvFaultTargetString(s->target), "layer 2 V page 3 byte 100 bit 1");
  s = ParseKvFaultSpec("4:kv=K");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->target.part, KvPart::kK);
  s = ParseKvFaultSpec("5:random");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->target.random);
  EXPECT_EQ(s->target.seed, 0u);
  s = ParseKvFaultSpec("5:random=12345678901");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->target.seed, 12345678901u);
  EXPECT_EQ(KvFaultTargetString(s->target), "random (seed 12345678901)");
}

TEST(KvFaultSpec, RejectsBadText) {
  for (const char* bad : {"",
                          "x",
                          "-1",
                          "3x",
                          ":layer=1",
                          "3:",
                          "3::layer=1",
                          "3:layer",
                          "3:layer=",
                          "3:layer=-1",
                          "3:layer=a",
                          "3:page=-2",
                          "3:byte=1.5",
                          "3:bit=8",
                          "3:bit=-1",
                          "3:kv=q",
                          "3:color=red",
                          "3:layer=1:layer=2",
                          "3:random:layer=1",
                          "3:random=-4",
                          "3:random=x",
                          "3:random:random",
                          "3:layer=99999999999"}) {
    auto r = ParseKvFaultSpec(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("STEP"), std::string::npos) << "the syntax is shown";
    }
  }
}

const KvLayout kLayout{3, 10, 4, 2, 8, DType::kF32};  // 64-byte rows, 256-byte pages

TEST(KvFaultSpec, LayoutChecks) {
  KvFaultTarget t;
  EXPECT_TRUE(CheckKvFaultTarget(t, kLayout).ok());
  t.layer = 2;
  t.byte_offset = 255;
  EXPECT_TRUE(CheckKvFaultTarget(t, kLayout).ok());
  t.layer = 3;
  EXPECT_EQ(CheckKvFaultTarget(t, kLayout).code(), StatusCode::kOutOfRange);
  EXPECT_NE(CheckKvFaultTarget(t, kLayout).message().find("3 layers"), std::string::npos);
  t.layer = 0;
  t.byte_offset = 256;
  EXPECT_EQ(CheckKvFaultTarget(t, kLayout).code(), StatusCode::kOutOfRange);
  t.byte_offset = 0;
  t.bit = 8;
  EXPECT_EQ(CheckKvFaultTarget(t, kLayout).code(), StatusCode::kInvalidArgument);
  t.bit = 0;
  t.page = -1;
  EXPECT_EQ(CheckKvFaultTarget(t, kLayout).code(), StatusCode::kOutOfRange);
  KvFaultTarget r;
  r.random = true;
  EXPECT_TRUE(CheckKvFaultTarget(r, kLayout).ok());
}

TEST(KvFaultSpec, ResolvesOnlyInsideCommittedRows) {
  const std::vector<int32_t> table{7, 2, 9};  // logical page -> block
  KvFaultTarget t;
  t.layer = 1;
  t.part = KvPart::kV;
  t.page = 1;
  t.byte_offset = 70;
  t.bit = 5;
  // 6 committed tokens: page 0 full, page 1 rows [0, 2) = 128 bytes.
  auto r = ResolveKvFault(t, kLayout, table, 6);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->flip.block, 2);
  EXPECT_EQ(r->flip.layer, 1);
  EXPECT_EQ(r->flip.part, KvPart::kV);
  EXPECT_EQ(r->flip.byte_offset, 70u);
  EXPECT_EQ(r->flip.bit, 5);
  EXPECT_EQ(r->target, t);
  t.byte_offset = 128;  // row 2 of page 1: written maybe, but not committed
  EXPECT_EQ(ResolveKvFault(t, kLayout, table, 6).status().code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(ResolveKvFault(t, kLayout, table, 7).ok());
  t.page = 2;
  t.byte_offset = 0;
  auto past = ResolveKvFault(t, kLayout, table, 8);
  EXPECT_EQ(past.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(past.status().message().find("pages 0 .. 1"), std::string::npos) << past.status().ToString();
  EXPECT_TRUE(ResolveKvFault(t, kLayout, table, 9).ok());
  // Committed length past the table (cannot happen in a sane cache) is clamped to it: page 3 does not exist.
  t.page = 3;
  EXPECT_EQ(ResolveKvFault(t, kLayout, table, 40).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(ResolveKvFault(KvFaultTarget{}, kLayout, table, 0).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResolveKvFault(KvFaultTarget{}, kLayout, {}, 5).status().code(), StatusCode::kFailedPrecondition);
}

TEST(KvFaultSpec, RandomTargetsAreSeededAndCommitted) {
  const std::vector<int32_t> table{4, 0, 8, 1};
  const int32_t committed = 10;                       // pages 0, 1 full; page 2 rows [0, 2)
  std::set<std::tuple<int, int, int64_t, int>> seen;  // (layer, part, page, bit)
  for (uint64_t seed = 0; seed < 200; ++seed) {
    KvFaultTarget t;
    t.random = true;
    t.seed = seed;
    auto a = ResolveKvFault(t, kLayout, table, committed);
    auto b = ResolveKvFault(t, kLayout, table, committed);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_EQ(a->target, b->target) << "seed " << seed;
    EXPECT_FALSE(a->target.random);
    // The concrete target resolves to the same flip on its own, so it lies in committed bytes.
    auto again = ResolveKvFault(a->target, kLayout, table, committed);
    ASSERT_TRUE(again.ok()) << KvFaultTargetString(a->target) << ": " << again.status().ToString();
    EXPECT_EQ(again->flip.block, a->flip.block);
    EXPECT_EQ(again->flip.byte_offset, a->flip.byte_offset);
    seen.insert({a->target.layer, static_cast<int>(a->target.part), a->target.page, a->target.bit});
  }
  EXPECT_GT(seen.size(), 60u) << "random targets should spread over layers, K/V, pages and bits";
}

}  // namespace
}  // namespace fp
