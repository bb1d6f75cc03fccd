// fieldprint/sha256.h — SHA-256 digests and the RFC 6962 leaf/node hashes (host side, OpenSSL EVP).
// defines: Digest, Sha256, Sha256Checked, LeafHash, NodeHash, kLeafPrefix, kNodePrefix
//
// Domain separation (RFC 6962 section 2.1): a leaf is hashed as SHA-256(0x00 || bytes) and an inner node as
// SHA-256(0x01 || left || right), so a leaf can never be passed off as a node or the other way round.
// The GPU kernels (tree_hash_cuda.h) produce bit-identical digests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fieldprint/status.h"

namespace fp {

inline constexpr uint8_t kLeafPrefix = 0x00;
inline constexpr uint8_t kNodePrefix = 0x01;

// A SHA-256 output in its canonical byte order (the order sha256sum prints).
struct Digest {
  std::array<uint8_t, 32> bytes{};

  bool operator==(const Digest& other) const = default;
  // 64 lowercase hex characters.
  std::string Hex() const;
  // Parses 64 hex characters (either case); anything else is InvalidArgument.
  static Result<Digest> FromHex(std::string_view hex);
};
static_assert(sizeof(Digest) == 32, "Digest is stored in device arrays; it must be exactly 32 bytes");

// SHA-256 of n bytes at data (host memory). data may be null only when n == 0.
// Contract breach (null data with n > 0) returns the all-zero Digest{}, which no real input produces;
// callers that take sizes from untrusted input should use Sha256Checked.
Digest Sha256(const void* data, size_t n);
Result<Digest> Sha256Checked(const void* data, size_t n);

// SHA-256(0x00 || chunk[0..n)). Same null contract as Sha256.
Digest LeafHash(const void* chunk, size_t n);
// SHA-256(0x01 || l || r).
Digest NodeHash(const Digest& l, const Digest& r);

}  // namespace fp
