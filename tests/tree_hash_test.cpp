// tree_hash_test.cpp — the CPU tree root against a straightforward oracle: chunks cut by hand, leaves hashed
// from explicitly prefixed buffers, root by RFC 6962's recursive MTH. Also: level-wise pairing == recursive
// MTH for every n up to 300, threads agree with one thread, and bad input is an error, not a crash.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fieldprint/tree_hash.h"

namespace fp {
namespace {

// The oracle: independent of TreeHashCpu's chunking and of LeafHash.
Digest OracleRoot(const std::vector<std::vector<uint8_t>>& segs, size_t chunk) {
  std::vector<Digest> leaves;
  for (const auto& s : segs) {
    for (size_t off = 0; off < s.size(); off += chunk) {
      std::vector<uint8_t> msg{0x00};
      msg.insert(msg.end(), s.begin() + off, s.begin() + std::min(s.size(), off + chunk));
      leaves.push_back(Sha256(msg.data(), msg.size()));
    }
  }
  return MerkleRootRecursive(leaves);
}

std::vector<ByteSegment> Views(const std::vector<std::vector<uint8_t>>& segs) {
  std::vector<ByteSegment> v;
  for (const auto& s : segs) v.push_back({s.data(), s.size()});
  return v;
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST(TreeHash, LevelwiseEqualsRecursiveMth) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<Digest> d(300);
  for (auto& x : d) x = Sha256(RandomBytes(rng, 8).data(), 8);
  for (size_t n = 0; n <= d.size(); ++n) {
    std::span<const Digest> s(d.data(), n);
    ASSERT_EQ(MerkleRootOfLeaves(s), MerkleRootRecursive(s)) << "n=" << n;
  }
}

TEST(TreeHash, SmallTreesByHand) {
  std::mt19937_64 rng(std::random_device{}());
  const size_t c = 64;
  auto data = RandomBytes(rng, 3 * c - 5);  // 3 leaves, the last short
  const uint8_t* p = data.data();
  const Digest l0 = LeafHash(p, c), l1 = LeafHash(p + c, c), l2 = LeafHash(p + 2 * c, c - 5);
  ByteSegment seg{p, data.size()};
  auto root = TreeHashCpu({&seg, 1}, c);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(*root, NodeHash(NodeHash(l0, l1), l2));
  // One leaf: the root is that leaf's hash; no leaves: SHA-256 of the empty string.
  ByteSegment one{p, 10};
  EXPECT_EQ(TreeHashCpu({&one, 1}, c).value(), LeafHash(p, 10));
  EXPECT_EQ(TreeHashCpu({}, c).value(), Sha256(nullptr, 0));
  ByteSegment empty{nullptr, 0};
  EXPECT_EQ(TreeHashCpu({&empty, 1}, c).value(), Sha256(nullptr, 0));
}

TEST(TreeHash, MatchesOracleOnEdgeAndRandomSizes) {
  std::mt19937_64 rng(std::random_device{}());
  for (size_t chunk : {size_t{64}, size_t{100}, size_t{1024}, size_t{4096}}) {
    std::vector<size_t> sizes = {0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 7 * chunk + 3, 33 * chunk};
    for (int i = 0; i < 4; ++i) sizes.push_back(rng() % (40 * chunk));
    for (size_t n : sizes) {
      std::vector<std::vector<uint8_t>> segs{RandomBytes(rng, n)};
      const Digest want = OracleRoot(segs, chunk);
      auto views = Views(segs);
      for (int threads : {1, 3}) {
        auto got = TreeHashCpu(views, chunk, threads);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_EQ(*got, want) << "chunk=" << chunk << " n=" << n << " threads=" << threads;
      }
    }
  }
}

TEST(TreeHash, MultiSegmentMatchesOracle) {
  std::mt19937_64 rng(std::random_device{}());
  const size_t chunk = 256;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::vector<uint8_t>> segs(1 + rng() % 12);
    for (auto& s : segs) s = RandomBytes(rng, rng() % 4 == 0 ? 0 : rng() % (9 * chunk));
    const Digest want = OracleRoot(segs, chunk);
    auto views = Views(segs);
    EXPECT_EQ(TreeHashCpu(views, chunk, 1).value(), want) << "trial " << trial;
    EXPECT_EQ(TreeHashCpu(views, chunk, 0).value(), want) << "trial " << trial << " (all cores)";
  }
}

TEST(TreeHash, ThreadedWideLevels) {
  // Enough leaves (> 2 * 2048) that the node levels are split across threads too.
  std::mt19937_64 rng(std::random_device{}());
  const size_t chunk = 64;
  std::vector<std::vector<uint8_t>> segs{RandomBytes(rng, 5000 * chunk + 17)};
  auto views = Views(segs);
  EXPECT_EQ(TreeHashCpu(views, chunk, 4).value(), OracleRoot(segs, chunk));
}

TEST(TreeHash, SegmentBoundariesAndEveryByteMatter) {
  std::mt19937_64 rng(std::random_device{}());
  const size_t chunk = 64;
  auto all = RandomBytes(rng, 200);
  ByteSegment whole{all.data(), 200};
  ByteSegment split[2] = {{all.data(), 100}, {all.data() + 100, 100}};
  const Digest a = TreeHashCpu({&whole, 1}, chunk).value(), b = TreeHashCpu(split, chunk).value();
  EXPECT_NE(a, b);  // chunks are cut per segment, so the layout is part of what is committed
  const size_t pos = rng() % all.size();
  all[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
  EXPECT_NE(TreeHashCpu({&whole, 1}, chunk).value(), a) << "flipped byte " << pos;
  EXPECT_NE(TreeHashCpu({&whole, 1}, chunk).value(), TreeHashCpu({&whole, 1}, 2 * chunk).value());
}

TEST(TreeHash, BadInputIsAnError) {
  uint8_t buf[16] = {};
  ByteSegment ok{buf, 16};
  ByteSegment null_seg{nullptr, 8};
  EXPECT_EQ(TreeHashCpu({&ok, 1}, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TreeHashCpu({&ok, 1}, kMaxChunkBytes + 1).status().code(), StatusCode::kInvalidArgument);
  ByteSegment segs[2] = {ok, null_seg};
  EXPECT_EQ(TreeHashCpu(segs, 64).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TreeHashCpu(segs, 64, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CountLeaves({&ok, 1}, 0), 0u);
  EXPECT_EQ(CountLeaves({&ok, 1}, 5), 4u);
}

}  // namespace
}  // namespace fp
