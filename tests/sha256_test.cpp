// sha256_test.cpp — host SHA-256 against the NIST FIPS 180-2 example vectors, the RFC 6962 leaf/node
// encodings against explicitly built messages, hex round trips and bad input.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "fieldprint/sha256.h"

namespace fp {
namespace {

std::string HexOf(const std::string& s) { return Sha256(s.data(), s.size()).Hex(); }

TEST(Sha256, NistVectors) {
  EXPECT_EQ(HexOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexOf("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexOf("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(HexOf("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                  "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(HexOf(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, NullDataOnlyWithZeroSize) {
  EXPECT_EQ(Sha256(nullptr, 0), Sha256("", 0));
  auto bad = Sha256Checked(nullptr, 5);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Sha256(nullptr, 5), Digest{});  // the documented "no such digest" value, not a crash
  EXPECT_EQ(LeafHash(nullptr, 5), Digest{});
  auto good = Sha256Checked("abc", 3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, Sha256("abc", 3));
}

TEST(Sha256, LeafAndNodeEncodings) {
  std::mt19937_64 rng(std::random_device{}());
  for (size_t n : {size_t{0}, size_t{1}, size_t{55}, size_t{63}, size_t{64}, size_t{1000}, size_t{4096}}) {
    std::vector<uint8_t> chunk(n);
    for (auto& b : chunk) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> msg{0x00};
    msg.insert(msg.end(), chunk.begin(), chunk.end());
    EXPECT_EQ(LeafHash(chunk.data(), n), Sha256(msg.data(), msg.size())) << "n=" << n;
  }
  Digest l = Sha256("left", 4), r = Sha256("right", 5);
  std::vector<uint8_t> msg{0x01};
  msg.insert(msg.end(), l.bytes.begin(), l.bytes.end());
  msg.insert(msg.end(), r.bytes.begin(), r.bytes.end());
  EXPECT_EQ(NodeHash(l, r), Sha256(msg.data(), msg.size()));
  EXPECT_NE(NodeHash(l, r), NodeHash(r, l));
}

TEST(Sha256, DomainSeparation) {
  // The same 64 bytes as a leaf, as a node's children and as a plain message give three different digests.
  Digest l = Sha256("x", 1), r = Sha256("y", 1);
  std::vector<uint8_t> both(l.bytes.begin(), l.bytes.end());
  both.insert(both.end(), r.bytes.begin(), r.bytes.end());
  const Digest leaf = LeafHash(both.data(), both.size());
  const Digest node = NodeHash(l, r);
  const Digest plain = Sha256(both.data(), both.size());
  EXPECT_NE(leaf, node);
  EXPECT_NE(leaf, plain);
  EXPECT_NE(node, plain);
}

TEST(Sha256, HexRoundTripAndErrors) {
  std::mt19937_64 rng(std::random_device{}());
  Digest d;
  for (auto& b : d.bytes) b = static_cast<uint8_t>(rng());
  const std::string hex = d.Hex();
  ASSERT_EQ(hex.size(), 64u);
  auto back = Digest::FromHex(hex);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_TRUE(Digest::FromHex(upper).ok());
  EXPECT_EQ(Digest::FromHex(upper).value(), d);
  EXPECT_EQ(Digest::FromHex(hex.substr(1)).status().code(), StatusCode::kInvalidArgument);
  std::string bad = hex;
  bad[17] = 'g';
  EXPECT_EQ(Digest::FromHex(bad).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp
