// x86 SIMD dot products for the CPU linear layer: AVX2 (maddubs + madd) and AVX-512 VNNI (dpbusd on 256-bit
// lanes). Functions carry their own target attributes so the library builds without -march flags and picks a
// path at run time (Avx2Kernels / Avx512VnniKernels return null on CPUs without the instructions).
#include "cpu_linear_blocks.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FP_HAVE_X86_KERNELS 1
#endif

namespace fp::detail {

#if FP_HAVE_X86_KERNELS

#define FP_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FP_TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

FP_TARGET_AVX2 static inline float HsumAvx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
FP_TARGET_VNNI static inline float HsumVnni(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// u8 x s8 -> 8 int32 lanes, each the sum of 4 adjacent products.
FP_TARGET_AVX2 static inline __m256i DotU8S8Avx2(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
FP_TARGET_VNNI static inline __m256i DotU8S8Vnni(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

// The same four kernels for both targets; only the u8 x s8 primitive differs.
#define FP_DEFINE_KERNELS(SUFFIX, TARGET, DOT, HSUM)                                                        \
  TARGET static float DotQ4_1_##SUFFIX(const uint8_t* row, const Q8Block* x, int64_t nb) {                  \
    const auto* w = reinterpret_cast<const BlockQ4_1*>(row);                                                \
    const __m128i m4 = _mm_set1_epi8(0x0f);                                                                 \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                          \
    float mins = 0.f;                                                                                       \
    int64_t b = 0;                                                                                          \
    for (; b + 1 < nb; b += 2) {                                                                            \
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));                        \
      const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b + 1].qs));                    \
      const __m256i w0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r0, 4), m4), _mm_and_si128(r0, m4)); \
      const __m256i w1 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r1, 4), m4), _mm_and_si128(r1, m4)); \
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].q));                      \
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b + 1].q));                  \
      const __m256 p0 = _mm256_cvtepi32_ps(DOT(w0, x0));                                                    \
      const __m256 p1 = _mm256_cvtepi32_ps(DOT(w1, x1));                                                    \
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), p0, acc0);                         \
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * x[b + 1].d), p1, acc1);                 \
      mins += _cvtsh_ss(w[b].m) * x[b].s + _cvtsh_ss(w[b + 1].m) * x[b + 1].s;                              \
    }                                                                                                       \
    for (; b < nb; ++b) {                                                                                   \
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));                        \
      const __m256i w0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r0, 4), m4), _mm_and_si128(r0, m4)); \
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].q));                      \
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(DOT(w0, x0)),   \
                             acc0);                                                                         \
      mins += _cvtsh_ss(w[b].m) * x[b].s;                                                                   \
    }                                                                                                       \
    return HSUM(_mm256_add_ps(acc0, acc1)) + mins;                                                          \
  }                                                                                                         \
  /* Up to 4 tokens against one weight row: the same per-token operation sequence as DotQ4_1 (bit-identical */ \
  /* results, so prefill stays batch-invariant), with the weight unpacking shared. x: [nt][nb], stride nb.  */ \
  TARGET static void DotQ4_1x4_##SUFFIX(const uint8_t* row, const Q8Block* x, int64_t nb, int nt, float* out) {  \
    const auto* w = reinterpret_cast<const BlockQ4_1*>(row);                                                   \
    const __m128i m4 = _mm_set1_epi8(0x0f);                                                                    \
    __m256 acc0[4], acc1[4];                                                                                   \
    float mins[4];                                                                                             \
    for (int t = 0; t < 4; ++t) {                                                                              \
      acc0[t] = _mm256_setzero_ps();                                                                           \
      acc1[t] = _mm256_setzero_ps();                                                                           \
      mins[t] = 0.f;                                                                                           \
    }                                                                                                          \
    int64_t b = 0;                                                                                             \
    for (; b + 1 < nb; b += 2) {                                                                               \
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));                           \
      const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b + 1].qs));                       \
      const __m256i w0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r0, 4), m4), _mm_and_si128(r0, m4));  \
      const __m256i w1 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r1, 4), m4), _mm_and_si128(r1, m4));  \
      const float d0 = _cvtsh_ss(w[b].d), d1 = _cvtsh_ss(w[b + 1].d);                                         \
      const float n0 = _cvtsh_ss(w[b].m), n1 = _cvtsh_ss(w[b + 1].m);                                         \
      for (int t = 0; t < nt; ++t) {                                                                           \
        const Q8Block* xt = x + t * nb;                                                                        \
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt[b].q));                     \
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt[b + 1].q));                 \
        const __m256 p0 = _mm256_cvtepi32_ps(DOT(w0, x0));                                                     \
        const __m256 p1 = _mm256_cvtepi32_ps(DOT(w1, x1));                                                     \
        acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * xt[b].d), p0, acc0[t]);                                 \
        acc1[t] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * xt[b + 1].d), p1, acc1[t]);                             \
        mins[t] += n0 * xt[b].s + n1 * xt[b + 1].s;                                                            \
      }                                                                                                        \
    }                                                                                                          \
    for (; b < nb; ++b) {                                                                                      \
      const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));                           \
      const __m256i w0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(r0, 4), m4), _mm_and_si128(r0, m4));  \
      const float d0 = _cvtsh_ss(w[b].d), n0 = _cvtsh_ss(w[b].m);                                             \
      for (int t = 0; t < nt; ++t) {                                                                           \
        const Q8Block* xt = x + t * nb;                                                                        \
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt[b].q));                     \
        acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * xt[b].d), _mm256_cvtepi32_ps(DOT(w0, x0)), acc0[t]);    \
        mins[t] += n0 * xt[b].s;                                                                               \
      }                                                                                                        \
    }                                                                                                          \
    for (int t = 0; t < nt; ++t) out[t] = HSUM(_mm256_add_ps(acc0[t], acc1[t])) + mins[t];                    \
  }                                                                                                            \
  TARGET static float DotQ8_0_##SUFFIX(const uint8_t* row, const Q8Block* x, int64_t nb) {                  \
    const auto* w = reinterpret_cast<const BlockQ8_0*>(row);                                                \
    __m256 acc = _mm256_setzero_ps();                                                                       \
    for (int64_t b = 0; b < nb; ++b) {                                                                      \
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));                     \
      const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].q));                      \
      /* |w| * (x * sign(w)) keeps the u8 x s8 form of the primitive. */                                    \
      const __m256i p = DOT(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));                            \
      acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(p), acc);        \
    }                                                                                                       \
    return HSUM(acc);                                                                                       \
  }                                                                                                         \
  TARGET static float DotF32_##SUFFIX(const float* row, const float* x, int64_t n) {                        \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),                    \
           a3 = _mm256_setzero_ps();                                                                        \
    int64_t i = 0;                                                                                          \
    for (; i + 32 <= n; i += 32) {                                                                          \
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(x + i), a0);                           \
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 8), _mm256_loadu_ps(x + i + 8), a1);                   \
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 16), _mm256_loadu_ps(x + i + 16), a2);                 \
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(row + i + 24), _mm256_loadu_ps(x + i + 24), a3);                 \
    }                                                                                                       \
    float tail = 0.f;                                                                                       \
    for (; i < n; ++i) tail += row[i] * x[i];                                                               \
    return HSUM(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + tail;                        \
  }                                                                                                         \
  TARGET static float DotF16_##SUFFIX(const uint16_t* row, const float* x, int64_t n) {                     \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                              \
    int64_t i = 0;                                                                                          \
    for (; i + 16 <= n; i += 16) {                                                                          \
      const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i)));        \
      const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i + 8)));    \
      a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);                                                 \
      a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);                                             \
    }                                                                                                       \
    float tail = 0.f;                                                                                       \
    for (; i < n; ++i) tail += _cvtsh_ss(row[i]) * x[i];                                                    \
    return HSUM(_mm256_add_ps(a0, a1)) + tail;                                                              \
  }

FP_DEFINE_KERNELS(Avx2, FP_TARGET_AVX2, DotU8S8Avx2, HsumAvx2)
FP_DEFINE_KERNELS(Vnni, FP_TARGET_VNNI, DotU8S8Vnni, HsumVnni)

const LinearKernels* Avx2Kernels() {
  static const LinearKernels k{"avx2", DotQ4_1_Avx2, DotQ8_0_Avx2, DotF32_Avx2, DotF16_Avx2, DotQ4_1x4_Avx2};
  static const bool ok =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok ? &k : nullptr;
}

const LinearKernels* Avx512VnniKernels() {
  static const LinearKernels k{"avx512vnni", DotQ4_1_Vnni, DotQ8_0_Vnni, DotF32_Vnni, DotF16_Vnni, DotQ4_1x4_Vnni};
  static const bool ok = Avx2Kernels() != nullptr && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok ? &k : nullptr;
}

#else
const LinearKernels* Avx2Kernels() { return nullptr; }
const LinearKernels* Avx512VnniKernels() { return nullptr; }
#endif

}  // namespace fp::detail
