// sha256_cpu.cpp — host SHA-256 through OpenSSL's EVP interface (SHA-NI / AVX2 where the CPU has them).
// The MD is fetched once and each thread keeps one EVP_MD_CTX: per-call fetch and context allocation cost
// more than hashing a 1 KiB chunk.
#include <openssl/evp.h>

#include <memory>

#include "fieldprint/sha256.h"

namespace fp {
namespace {

struct CtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

const EVP_MD* Sha256Md() {
  // Fetched once for the process (thread-safe static init); never freed, like OpenSSL's own builtins.
  static const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md != nullptr ? md : EVP_sha256();
}

EVP_MD_CTX* ThreadCtx() {
  thread_local std::unique_ptr<EVP_MD_CTX, CtxDeleter> ctx(EVP_MD_CTX_new());
  return ctx.get();
}

// Hashes prefix (0 or 1 byte) then up to two byte ranges. Returns false only if OpenSSL fails.
bool HashParts(const uint8_t* prefix, size_t prefix_len, const void* a, size_t na, const void* b, size_t nb,
               Digest* out) {
  EVP_MD_CTX* ctx = ThreadCtx();
  unsigned int len = 0;
  if (ctx == nullptr || EVP_DigestInit_ex2(ctx, Sha256Md(), nullptr) != 1) return false;
  if (prefix_len > 0 && EVP_DigestUpdate(ctx, prefix, prefix_len) != 1) return false;
  if (na > 0 && EVP_DigestUpdate(ctx, a, na) != 1) return false;
  if (nb > 0 && EVP_DigestUpdate(ctx, b, nb) != 1) return false;
  return EVP_DigestFinal_ex(ctx, out->bytes.data(), &len) == 1 && len == 32;
}

}  // namespace

std::string Digest::Hex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHex[bytes[i] >> 4];
    s[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return s;
}

Result<Digest> Digest::FromHex(std::string_view hex) {
  if (hex.size() != 64) return InvalidArgument("digest hex must be 64 characters, got " + std::to_string(hex.size()));
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Digest d;
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("digest hex has a non-hex character near offset " + std::to_string(2 * i));
    d.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

Result<Digest> Sha256Checked(const void* data, size_t n) {
  if (data == nullptr && n > 0) return InvalidArgument("Sha256: null data with size " + std::to_string(n));
  Digest d;
  if (!HashParts(nullptr, 0, data, n, nullptr, 0, &d)) return Internal("OpenSSL SHA-256 failed");
  return d;
}

Digest Sha256(const void* data, size_t n) {
  Digest d;
  if (data == nullptr && n > 0) return Digest{};
  if (!HashParts(nullptr, 0, data, n, nullptr, 0, &d)) return Digest{};
  return d;
}

Digest LeafHash(const void* chunk, size_t n) {
  Digest d;
  if (chunk == nullptr && n > 0) return Digest{};
  if (!HashParts(&kLeafPrefix, 1, chunk, n, nullptr, 0, &d)) return Digest{};
  return d;
}

Digest NodeHash(const Digest& l, const Digest& r) {
  Digest d;
  if (!HashParts(&kNodePrefix, 1, l.bytes.data(), 32, r.bytes.data(), 32, &d)) return Digest{};
  return d;
}

}  // namespace fp
