// Commit policy boundaries (vs a brute-force reference) and commit logs: tree cross-check, serialization,
// and every kind of truncated / corrupted / inconsistent log rejected.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fieldprint/commit_log.h"
#include "fieldprint/commit_policy.h"

namespace fp {
namespace {

// Reference: scan every token position in (last, len] for the boundary kinds, in the documented order.
CommitDecision RefDecide(const CommitPolicyConfig& c, int32_t page, int32_t last, int32_t len,
                         CommitFlags f) {
  if (len == last) return {};
  if (f.turn_end) return {len, CommitReason::kTurnEnd};
  if (f.on_demand) return {len, CommitReason::kOnDemand};
  for (int32_t p = last + 1; p <= len; ++p) {
    if (c.every_n_tokens > 0 && p % c.every_n_tokens == 0) return {len, CommitReason::kEveryN};
  }
  int32_t best = 0;
  for (int32_t p = last + 1; p <= len; ++p) {
    if (c.page_full && p % page == 0) best = p;
  }
  return best ? CommitDecision{best, CommitReason::kPageFull} : CommitDecision{};
}

TEST(CommitPolicy, MatchesBruteForceReference) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 3000; ++trial) {
    CommitPolicyConfig c;
    c.every_n_tokens = rng() % 3 == 0 ? 0 : 1 + static_cast<int32_t>(rng() % 40);
    c.page_full = rng() % 5 != 0;
    const int32_t page = 1 + static_cast<int32_t>(rng() % 20);
    auto pol = CommitPolicy::Create(c, page);
    ASSERT_TRUE(pol.ok());
    const int32_t last = static_cast<int32_t>(rng() % 200), len = last + static_cast<int32_t>(rng() % 70);
    CommitFlags f{rng() % 7 == 0, rng() % 7 == 0};
    auto d = pol->Decide(last, len, f);
    ASSERT_TRUE(d.ok());
    CommitDecision want = RefDecide(c, page, last, len, f);
    ASSERT_EQ(d->position, want.position)
        << last << " -> " << len << " page " << page << " N " << c.every_n_tokens;
    ASSERT_EQ(d->reason, want.reason);
    if (d->reason != CommitReason::kNone) {
      ASSERT_GT(d->position, last);
    }
  }
}

TEST(CommitPolicy, SpecificBoundariesAndErrors) {
  auto pol = CommitPolicy::Create({.every_n_tokens = 0, .page_full = true}, 16).value();
  EXPECT_EQ(pol.Decide(0, 15, {})->reason, CommitReason::kNone);
  EXPECT_EQ(pol.Decide(0, 16, {})->position, 16);
  EXPECT_EQ(pol.Decide(15, 40, {})->position, 32);  // a prefill chunk: full pages only
  EXPECT_EQ(pol.Decide(20, 25, {.turn_end = true})->position, 25);
  EXPECT_EQ(pol.Decide(25, 25, {.turn_end = true})->reason, CommitReason::kNone);
  EXPECT_EQ(pol.Decide(5, 4, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pol.Decide(-1, 4, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(CommitPolicy::Create({}, 0).ok());
  EXPECT_FALSE(CommitPolicy::Create({.every_n_tokens = -1}, 16).ok());
}

Digest Rand(std::mt19937_64& rng) {
  Digest d;
  for (auto& b : d.bytes) b = static_cast<uint8_t>(rng());
  return d;
}

// Builds a tree + log the way the verifier does: page digests appended, provisional last leaf replaced.
struct Built {
  MerkleTree tree;
  CommitLog log{4};
};
Built BuildRandom(std::mt19937_64& rng, int commits) {
  Built b;
  int32_t pos = 0;
  for (int i = 0; i < commits; ++i) {
    const int32_t next = pos + 1 + static_cast<int32_t>(rng() % 9);
    const uint64_t first = pos / 4, pages = (next + 3) / 4;
    for (uint64_t pg = first; pg < pages; ++pg) {
      if (pg < b.tree.size()) {
        EXPECT_TRUE(b.tree.ReplaceLast(Rand(rng)).ok());
      } else
        b.tree.Append(Rand(rng));
    }
    EXPECT_TRUE(
        b.log.Append({next, b.tree.size(), b.tree.Root(), b.tree.Entry(b.tree.size() - 1).value()}).ok());
    pos = next;
  }
  return b;
}

TEST(CommitLog, CheckAgainstTreeIncludingSupersededProvisionalRoots) {
  std::mt19937_64 rng(std::random_device{}());
  Built b = BuildRandom(rng, 60);
  ASSERT_TRUE(b.log.CheckAgainst(b.tree).ok());
  // A different tree (one page changed) fails, naming a commit.
  MerkleTree other = b.tree;
  const uint64_t victim = rng() % (other.size() - 1);
  MerkleTree rebuilt;
  for (uint64_t i = 0; i < other.size(); ++i)
    rebuilt.Append(i == victim ? Rand(rng) : other.Entry(i).value());
  Status s = b.log.CheckAgainst(rebuilt);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  // A tree too small for the log.
  ASSERT_TRUE(other.TruncateTo(other.size() - 1).ok());
  EXPECT_EQ(b.log.CheckAgainst(other).code(), StatusCode::kDataLoss);
}

TEST(CommitLog, AppendRejectsInconsistentEntries) {
  CommitLog log(16);
  Digest d{};
  EXPECT_TRUE(log.Append({16, 1, d, d}).ok());
  EXPECT_EQ(log.Append({16, 1, d, d}).code(), StatusCode::kInvalidArgument);  // not increasing
  EXPECT_EQ(log.Append({10, 1, d, d}).code(), StatusCode::kInvalidArgument);  // backwards
  EXPECT_EQ(log.Append({33, 2, d, d}).code(), StatusCode::kInvalidArgument);  // ceil(33/16) = 3
  EXPECT_TRUE(log.Append({33, 3, d, d}).ok());
  EXPECT_EQ(log.LastAtOrBefore(32), 0);
  EXPECT_EQ(log.LastAtOrBefore(15), -1);
  EXPECT_EQ(log.TruncateTo(3).code(), StatusCode::kOutOfRange);
  CommitLog bad(0);
  EXPECT_FALSE(bad.Append({1, 1, d, d}).ok());
}

TEST(CommitLog, SerializationRoundTripsAndRejectsDamage) {
  std::mt19937_64 rng(std::random_device{}());
  Built b = BuildRandom(rng, 25);
  auto bytes = b.log.Serialize();
  auto back = CommitLog::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entries(), b.log.entries());
  EXPECT_EQ(back->page_size(), 4);
  EXPECT_TRUE(back->CheckAgainst(b.tree).ok());
  // Every truncation length is an error, never a crash.
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = CommitLog::Parse(std::span<const uint8_t>(bytes.data(), n));
    ASSERT_FALSE(r.ok()) << n;
  }
  // Extra bytes.
  auto padded = bytes;
  padded.push_back(0);
  EXPECT_FALSE(CommitLog::Parse(padded).ok());
  // Any single bit flip anywhere.
  for (int t = 0; t < 300; ++t) {
    auto bad = bytes;
    bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    ASSERT_FALSE(CommitLog::Parse(bad).ok());
  }
  // A huge count field with a valid checksum: refused by the size check before any allocation.
  auto huge = bytes;
  for (int i = 0; i < 8; ++i) huge[12 + i] = 0xff;
  Digest sum = Sha256(huge.data(), huge.size() - 32);
  std::copy(sum.bytes.begin(), sum.bytes.end(), huge.end() - 32);
  EXPECT_EQ(CommitLog::Parse(huge).status().code(), StatusCode::kDataLoss);
}

// Inconsistent content under a valid checksum (a buggy or malicious writer): InvalidArgument.
TEST(CommitLog, ValidChecksumInconsistentContentIsRejected) {
  std::mt19937_64 rng(std::random_device{}());
  Built b = BuildRandom(rng, 6);
  auto reseal = [](std::vector<uint8_t> v) {
    Digest sum = Sha256(v.data(), v.size() - 32);
    std::copy(sum.bytes.begin(), sum.bytes.end(), v.end() - 32);
    return v;
  };
  const size_t e1 = 20 + 76;  // second entry
  auto swapped = b.log.Serialize();
  // Position of entry 1 set to entry 0's: not increasing.
  std::copy(swapped.begin() + 20, swapped.begin() + 24, swapped.begin() + e1);
  EXPECT_EQ(CommitLog::Parse(reseal(swapped)).status().code(), StatusCode::kInvalidArgument);
  auto badsize = b.log.Serialize();
  badsize[e1 + 4] ^= 0x40;  // tree size no longer ceil(position / page)
  EXPECT_EQ(CommitLog::Parse(reseal(badsize)).status().code(), StatusCode::kInvalidArgument);
  auto magic = b.log.Serialize();
  magic[0] = 'X';
  EXPECT_EQ(CommitLog::Parse(reseal(magic)).status().code(), StatusCode::kInvalidArgument);
  auto page0 = b.log.Serialize();
  page0[8] = page0[9] = page0[10] = page0[11] = 0;
  EXPECT_EQ(CommitLog::Parse(reseal(page0)).status().code(), StatusCode::kInvalidArgument);
  // A root edited under a valid checksum parses, but no longer matches the tree.
  auto root = b.log.Serialize();
  root[e1 + 12] ^= 1;
  auto parsed = CommitLog::Parse(reseal(root));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->CheckAgainst(b.tree).code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace fp
