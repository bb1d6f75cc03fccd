// Incremental Merkle tree vs a from-scratch recursive RFC 6962 reference; proofs for all pairs; tampering.
#include "fieldprint/merkle.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <vector>

namespace fp {
namespace {

Digest RandomDigest(std::mt19937_64& rng) {
  Digest d;
  for (auto& b : d.bytes) b = static_cast<uint8_t>(rng());
  return d;
}

// The reference: RFC 6962 MTH written out with plain SHA-256 over explicit prefixed buffers.
Digest RefMth(const std::vector<Digest>& e, size_t b, size_t n) {
  if (n == 0) return Sha256(nullptr, 0);
  if (n == 1) {
    uint8_t buf[33];
    buf[0] = 0x00;
    std::copy(e[b].bytes.begin(), e[b].bytes.end(), buf + 1);
    return Sha256(buf, 33);
  }
  size_t k = 1;
  while (k * 2 < n) k *= 2;
  Digest l = RefMth(e, b, k), r = RefMth(e, b + k, n - k);
  uint8_t buf[65];
  buf[0] = 0x01;
  std::copy(l.bytes.begin(), l.bytes.end(), buf + 1);
  std::copy(r.bytes.begin(), r.bytes.end(), buf + 33);
  return Sha256(buf, 65);
}

std::vector<Digest> RandomEntries(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Digest> e(n);
  for (auto& d : e) d = RandomDigest(rng);
  return e;
}

TEST(Merkle, RootsMatchRecursiveReferenceForSizes0To300) {
  auto e = RandomEntries(300, std::random_device{}());
  MerkleTree t;
  EXPECT_EQ(t.Root(), Sha256(nullptr, 0));
  for (size_t n = 1; n <= e.size(); ++n) {
    t.Append(e[n - 1]);
    ASSERT_EQ(t.size(), n);
    ASSERT_EQ(t.Root(), RefMth(e, 0, n)) << "size " << n;
  }
  // Every earlier size from the full tree.
  for (size_t n = 0; n <= e.size(); ++n) {
    auto r = t.RootAt(n);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(*r, RefMth(e, 0, n)) << "RootAt " << n;
  }
  EXPECT_FALSE(t.RootAt(301).ok());
}

TEST(Merkle, ReplaceLastAndTruncateMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  auto e = RandomEntries(97, rng());
  MerkleTree t;
  EXPECT_EQ(t.ReplaceLast(e[0]).code(), StatusCode::kFailedPrecondition);
  for (size_t n = 1; n <= e.size(); ++n) {
    // Append a provisional entry, then replace it with the real one (the partial-page re-commit).
    Digest provisional = RandomDigest(rng);
    t.Append(provisional);
    auto with_prov = e;
    with_prov[n - 1] = provisional;
    ASSERT_EQ(t.Root(), RefMth(with_prov, 0, n));
    ASSERT_TRUE(t.ReplaceLast(e[n - 1]).ok());
    ASSERT_EQ(t.Root(), RefMth(e, 0, n));
    // The superseded provisional root is still computable from the final tree.
    auto rw = t.RootAtWithLast(n, provisional);
    ASSERT_TRUE(rw.ok());
    ASSERT_EQ(*rw, RefMth(with_prov, 0, n));
  }
  for (size_t n : {97u, 64u, 63u, 33u, 1u, 0u}) {
    ASSERT_TRUE(t.TruncateTo(n).ok());
    ASSERT_EQ(t.Root(), RefMth(e, 0, n)) << n;
    // Regrow: must give the same roots as never having truncated.
    MerkleTree u = t;
    for (size_t i = n; i < e.size(); ++i) u.Append(e[i]);
    ASSERT_EQ(u.Root(), RefMth(e, 0, e.size()));
  }
  EXPECT_EQ(t.TruncateTo(1).code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(t.RootAtWithLast(0, e[0]).ok());
  EXPECT_FALSE(t.Entry(0).ok());
}

TEST(Merkle, InclusionProofsForAllIndicesAndSizes) {
  auto e = RandomEntries(70, std::random_device{}());
  MerkleTree t;
  for (auto& d : e) t.Append(d);
  for (uint64_t n = 1; n <= e.size(); ++n) {
    Digest root = RefMth(e, 0, n);
    for (uint64_t i = 0; i < n; ++i) {
      auto p = t.InclusionProof(i, n);
      ASSERT_TRUE(p.ok());
      ASSERT_LE(p->size(), 7u);
      ASSERT_TRUE(MerkleTree::VerifyInclusion(e[i], i, n, *p, root)) << i << " of " << n;
      // Wrong entry, index, size or root: rejected.
      ASSERT_FALSE(MerkleTree::VerifyInclusion(e[(i + 1) % e.size()], i, n, *p, root));
      if (n > 1) {
        ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], (i + 1) % n, n, *p, root));
      }
      Digest wrong_root = root;
      wrong_root.bytes[i % 32] ^= 0x80;
      ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], i, n, *p, wrong_root));
    }
  }
  EXPECT_FALSE(t.InclusionProof(5, 5).ok());
  EXPECT_FALSE(t.InclusionProof(0, 71).ok());
}

TEST(Merkle, ConsistencyProofsForAllPairs) {
  auto e = RandomEntries(66, std::random_device{}());
  MerkleTree t;
  for (auto& d : e) t.Append(d);
  for (uint64_t m = 1; m <= e.size(); ++m) {
    Digest old_root = RefMth(e, 0, m);
    for (uint64_t n = m; n <= e.size(); ++n) {
      Digest new_root = RefMth(e, 0, n);
      auto p = t.ConsistencyProof(m, n);
      ASSERT_TRUE(p.ok());
      ASSERT_TRUE(MerkleTree::VerifyConsistency(m, n, old_root, new_root, *p)) << m << " -> " << n;
      if (m != n) {
        ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, new_root, old_root, *p));
        ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, old_root, *p));
      }
    }
  }
  EXPECT_FALSE(t.ConsistencyProof(0, 3).ok());
  EXPECT_FALSE(t.ConsistencyProof(4, 3).ok());
  EXPECT_FALSE(t.ConsistencyProof(3, 67).ok());
}

// Every kind of tampering with a proof is rejected, and garbage never crashes.
TEST(Merkle, TamperedAndMalformedProofsAreRejected) {
  std::mt19937_64 rng(std::random_device{}());
  auto e = RandomEntries(45, rng());
  MerkleTree t;
  for (auto& d : e) t.Append(d);
  for (int trial = 0; trial < 300; ++trial) {
    uint64_t n = 2 + rng() % 44, i = rng() % n, m = 1 + rng() % (n - 1);
    Digest root = t.RootAt(n).value(), old_root = t.RootAt(m).value();
    auto inc = t.InclusionProof(i, n).value();
    auto con = t.ConsistencyProof(m, n).value();
    ASSERT_FALSE(con.empty());
    // 1. a flipped bit in one proof element
    for (auto* proof : {&inc, &con}) {
      if (proof->empty()) continue;
      auto bad = *proof;
      bad[rng() % bad.size()].bytes[rng() % 32] ^= static_cast<uint8_t>(1u << (rng() % 8));
      if (proof == &inc) {
        ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], i, n, bad, root));
      } else {
        ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, root, bad));
      }
    }
    // 2. an element dropped, 3. an element added, 4. two elements swapped
    if (!inc.empty()) {
      auto shorter = inc;
      shorter.pop_back();
      ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], i, n, shorter, root));
    }
    auto longer = inc;
    longer.push_back(RandomDigest(rng));
    ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], i, n, longer, root));
    auto cshort = con;
    cshort.pop_back();
    ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, root, cshort));
    auto clong = con;
    clong.push_back(RandomDigest(rng));
    ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, root, clong));
    if (con.size() >= 2 && !(con[0] == con[1])) {
      auto swapped = con;
      std::swap(swapped[0], swapped[1]);
      ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, root, swapped));
    }
    // 5. bad index / sizes: index >= size, size 0, old > new, old 0
    ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], n, n, inc, root));
    ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], 0, 0, inc, root));
    ASSERT_FALSE(MerkleTree::VerifyConsistency(n, m, root, old_root, con));
    ASSERT_FALSE(MerkleTree::VerifyConsistency(0, n, old_root, root, con));
    ASSERT_FALSE(MerkleTree::VerifyConsistency(m, n, old_root, root, {}));
    // 6. pure garbage of random length and huge sizes
    std::vector<Digest> junk(rng() % 70);
    for (auto& d : junk) d = RandomDigest(rng);
    ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], rng(), rng(), junk, root));
    ASSERT_FALSE(MerkleTree::VerifyConsistency(rng() % 1000 + 1, ~uint64_t{0}, old_root, root, junk));
    ASSERT_FALSE(MerkleTree::VerifyInclusion(e[i], i, ~uint64_t{0}, inc, root));
  }
  // Equal sizes: empty proof and equal roots only.
  Digest r = t.Root();
  EXPECT_TRUE(MerkleTree::VerifyConsistency(45, 45, r, r, {}));
  std::vector<Digest> one{r};
  EXPECT_FALSE(MerkleTree::VerifyConsistency(45, 45, r, r, one));
}

}  // namespace
}  // namespace fp
