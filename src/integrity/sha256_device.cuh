// sha256_device.cuh — SHA-256 for one CUDA thread: compression in registers, message schedule computed on the
// fly in a 16-word ring (fully unrolled, so every index is a compile-time constant and nothing goes to local
// memory), big-endian word assembly with byte_perm/funnelshift.
// HashMessage<P> hashes (P prefix bytes 0x00) || data[0..n): P = 0 is plain SHA-256, P = 1 the RFC 6962 leaf.
// Data loads: 16-byte read-only loads when the pointer is 16-byte aligned, byte loads otherwise (correct for
// any address; never reads a byte outside [data, data + n)).
#pragma once

#include <cstdint>

namespace fp::sha256_device {

static __constant__ uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

__device__ __forceinline__ uint32_t Rotr(uint32_t x, int n) { return __funnelshift_r(x, x, n); }
__device__ __forceinline__ uint32_t Bswap(uint32_t x) { return __byte_perm(x, 0, 0x0123); }

__device__ __forceinline__ void Init(uint32_t st[8]) {
  st[0] = 0x6a09e667; st[1] = 0xbb67ae85; st[2] = 0x3c6ef372; st[3] = 0xa54ff53a;
  st[4] = 0x510e527f; st[5] = 0x9b05688c; st[6] = 0x1f83d9ab; st[7] = 0x5be0cd19;
}

// One 64-byte block; w [16] big-endian message words (clobbered: it is the schedule ring).
__device__ __forceinline__ void Compress(uint32_t st[8], uint32_t w[16]) {
  uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
#pragma unroll
  for (int t = 0; t < 64; ++t) {
    if (t >= 16) {
      const uint32_t w2 = w[(t - 2) & 15], w15 = w[(t - 15) & 15];
      const uint32_t s1 = Rotr(w2, 17) ^ Rotr(w2, 19) ^ (w2 >> 10);
      const uint32_t s0 = Rotr(w15, 7) ^ Rotr(w15, 18) ^ (w15 >> 3);
      w[t & 15] += s1 + w[(t - 7) & 15] + s0;
    }
    const uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[t] + w[t & 15];
    const uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

// Big-endian word of the bytes p[off .. off+4) that lie below n (bytes at or past n read as 0).
__device__ __forceinline__ uint32_t LoadWordGuarded(const uint8_t* p, uint64_t off, uint64_t n, bool aligned4) {
  if (off + 4 <= n) {
    if (aligned4) return Bswap(__ldg(reinterpret_cast<const uint32_t*>(p + off)));
    return (uint32_t{__ldg(p + off)} << 24) | (uint32_t{__ldg(p + off + 1)} << 16) |
           (uint32_t{__ldg(p + off + 2)} << 8) | uint32_t{__ldg(p + off + 3)};
  }
  uint32_t v = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (off + k < n) v |= uint32_t{__ldg(p + off + k)} << (24 - 8 * k);
  }
  return v;
}

// SHA-256 of (P zero bytes) || p[0..n) into st (state words; digest bytes are their big-endian bytes).
template <int P>
__device__ __forceinline__ void HashMessage(const uint8_t* p, uint64_t n, uint32_t st[8]) {
  static_assert(P == 0 || P == 1, "prefix is 0 or 1 byte");
  Init(st);
  // x: big-endian words of the 64 data bytes of this step. With a 1-byte prefix, message block b is
  // data[64b-1] || data[64b .. 64b+63), so each message word takes one byte from the word before it.
  uint32_t carry = 0;  // last data word of the previous step; 0 gives the 0x00 prefix in block 0
  const uint64_t nfull = n / 64;  // steps whose 64 loaded bytes all lie below n
  const bool aligned16 = (reinterpret_cast<uintptr_t>(p) & 15) == 0;
  uint32_t w[16];
  for (uint64_t blk = 0; blk < nfull; ++blk) {
    uint32_t x[16];
    const uint8_t* q = p + 64 * blk;
    if (aligned16) {
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(q) + v);
        x[4 * v] = Bswap(u.x); x[4 * v + 1] = Bswap(u.y); x[4 * v + 2] = Bswap(u.z); x[4 * v + 3] = Bswap(u.w);
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) x[i] = LoadWordGuarded(q, 4 * i, 64, false);
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) w[i] = P == 0 ? x[i] : __funnelshift_r(x[i], i == 0 ? carry : x[i - 1], 8);
    carry = x[15];
    Compress(st, w);
  }
  // Tail: T message bytes left (P = 0: 0..63, P = 1: 1..64), then 0x80, zeros, 64-bit bit length.
  const uint64_t base = 64 * nfull;
  const uint32_t T = static_cast<uint32_t>(n + P - base);
  const bool aligned4 = (reinterpret_cast<uintptr_t>(p) & 3) == 0;
  uint32_t prev = carry;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t xi = base + 4 * i < n ? LoadWordGuarded(p, base + 4 * i, n, aligned4) : 0u;
    w[i] = P == 0 ? xi : __funnelshift_r(xi, prev, 8);
    prev = xi;
    if (i == static_cast<int>(T >> 2)) w[i] |= 0x80u << (24 - 8 * (T & 3));
  }
  const uint64_t bits = (n + P) * 8;
  if (T <= 55) {
    w[14] = static_cast<uint32_t>(bits >> 32);
    w[15] = static_cast<uint32_t>(bits);
    Compress(st, w);
    return;
  }
  Compress(st, w);
#pragma unroll
  for (int i = 0; i < 16; ++i) w[i] = 0;
  if (T == 64) w[0] = 0x80000000u;
  w[14] = static_cast<uint32_t>(bits >> 32);
  w[15] = static_cast<uint32_t>(bits);
  Compress(st, w);
}

// RFC 6962 inner node: SHA-256(0x01 || l || r), l and r given as state words (big-endian digest words).
__device__ __forceinline__ void NodeHash(const uint32_t l[8], const uint32_t r[8], uint32_t st[8]) {
  uint32_t w[16];
  w[0] = 0x01000000u | (l[0] >> 8);
#pragma unroll
  for (int i = 1; i < 8; ++i) w[i] = __funnelshift_r(l[i], l[i - 1], 8);
  w[8] = __funnelshift_r(r[0], l[7], 8);
#pragma unroll
  for (int i = 1; i < 8; ++i) w[8 + i] = __funnelshift_r(r[i], r[i - 1], 8);
  Init(st);
  Compress(st, w);
  // 65 message bytes: byte 64 is r's last byte, then 0x80, zeros, length 520 bits.
  w[0] = (r[7] << 24) | 0x00800000u;
#pragma unroll
  for (int i = 1; i < 15; ++i) w[i] = 0;
  w[15] = 65 * 8;
  Compress(st, w);
}

// Canonical digest bytes (as sha256.h's Digest holds them) from state words.
__device__ __forceinline__ void StoreDigest(const uint32_t st[8], uint8_t* out32) {
  uint4* o = reinterpret_cast<uint4*>(out32);
  o[0] = make_uint4(Bswap(st[0]), Bswap(st[1]), Bswap(st[2]), Bswap(st[3]));
  o[1] = make_uint4(Bswap(st[4]), Bswap(st[5]), Bswap(st[6]), Bswap(st[7]));
}

}  // namespace fp::sha256_device
