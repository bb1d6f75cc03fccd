// Dequantisation, reference quantisers and dot products for the ggml block formats this project loads.
// The dot products are the CPU decode's inner loop: Q4_1/Q8_0/F32 have AVX2+FMA+F16C versions chosen at run
// time (compiled with target attributes, so the library still runs on any x86-64 and builds without -march
// flags); everything else, and non-x86 hosts, use the scalar code, which is also the reference the tests
// compare against.
#include "fieldprint/quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "fieldprint/dtype.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define FP_QUANT_X86 1
#endif

namespace fp {

namespace {

// f16 -> f32 through the shared table: the scalar paths decode two scales per 32 elements.
inline float H(uint16_t bits) { return F16ToFloatTable()[bits]; }
inline uint16_t ToH(float f) { return FloatToF16(f).bits; }

// ---- dequantise ----

void DequantQ4_0(const void* src, float* dst, int64_t nb) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < nb; ++i, dst += kQBlock) {
    const float d = H(b[i].d);
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * static_cast<float>((b[i].qs[j] & 15) - 8);
      dst[j + 16] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

void DequantQ4_1(const void* src, float* dst, int64_t nb) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < nb; ++i, dst += kQBlock) {
    const float d = H(b[i].d), m = H(b[i].m);
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * static_cast<float>(b[i].qs[j] & 15) + m;
      dst[j + 16] = d * static_cast<float>(b[i].qs[j] >> 4) + m;
    }
  }
}

void DequantQ8_0(const void* src, float* dst, int64_t nb) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < nb; ++i, dst += kQBlock) {
    const float d = H(b[i].d);
    for (int j = 0; j < kQBlock; ++j) dst[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

// ---- quantise (reference: round to nearest; used by tests and synthetic models) ----

void QuantQ8_0(const float* x, void* dst, int64_t nb) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQBlock) {
    float amax = 0.f;
    for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    b[i].d = ToH(amax / 127.f);
    const float d = H(b[i].d);  // quantise against the scale a decoder will see
    const float id = d > 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < kQBlock; ++j) {
      b[i].qs[j] = static_cast<int8_t>(std::clamp(std::lround(x[j] * id), -127L, 127L));
    }
  }
}

void QuantQ4_1(const float* x, void* dst, int64_t nb) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQBlock) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < kQBlock; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    // Quantise against the f16-rounded scale and minimum, as a decoder will see them.
    b[i].d = ToH((hi - lo) / 15.f);
    b[i].m = ToH(lo);
    const float d = H(b[i].d), m = H(b[i].m);
    const float id = d > 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < 16; ++j) {
      const long q0 = std::clamp(std::lround((x[j] - m) * id), 0L, 15L);
      const long q1 = std::clamp(std::lround((x[j + 16] - m) * id), 0L, 15L);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantQ4_0(const float* x, void* dst, int64_t nb) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < nb; ++i, x += kQBlock) {
    // The signed extreme maps to -8 so that the full [-8, 7] range is used.
    float ext = 0.f;
    for (int j = 0; j < kQBlock; ++j) {
      if (std::fabs(x[j]) > std::fabs(ext)) ext = x[j];
    }
    b[i].d = ToH(ext / -8.f);
    const float d = H(b[i].d);
    const float id = d != 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < 16; ++j) {
      const long q0 = std::clamp(std::lround(x[j] * id) + 8, 0L, 15L);
      const long q1 = std::clamp(std::lround(x[j + 16] * id) + 8, 0L, 15L);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// ---- scalar dot products ----

float DotF32(const void* row, const float* x, int64_t n) {
  const float* w = static_cast<const float*>(row);
  float acc[8] = {};  // 8 partial sums: lets the compiler vectorise without -ffast-math
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += w[i + k] * x[i + k];
  }
  for (; i < n; ++i) acc[0] += w[i] * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float DotF16(const void* row, const float* x, int64_t n) {
  const uint16_t* w = static_cast<const uint16_t*>(row);
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += H(w[i]) * x[i];
  return acc;
}

float DotBF16(const void* row, const float* x, int64_t n) {
  const Bf16* w = static_cast<const Bf16*>(row);
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += Bf16ToFloat(w[i]) * x[i];
  return acc;
}

float DotQ4_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  float acc = 0.f;
  for (int64_t i = 0; i < n / kQBlock; ++i, x += kQBlock) {
    float s = 0.f;
    for (int j = 0; j < 16; ++j) {
      s += static_cast<float>((b[i].qs[j] & 15) - 8) * x[j] +
           static_cast<float>((b[i].qs[j] >> 4) - 8) * x[j + 16];
    }
    acc += H(b[i].d) * s;
  }
  return acc;
}

float DotQ4_1(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  float acc = 0.f;
  for (int64_t i = 0; i < n / kQBlock; ++i, x += kQBlock) {
    float s = 0.f, sx = 0.f;  // sum(q * x), sum(x): the minimum factors out of the block
    for (int j = 0; j < 16; ++j) {
      s += static_cast<float>(b[i].qs[j] & 15) * x[j] + static_cast<float>(b[i].qs[j] >> 4) * x[j + 16];
      sx += x[j] + x[j + 16];
    }
    acc += H(b[i].d) * s + H(b[i].m) * sx;
  }
  return acc;
}

float DotQ8_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  float acc = 0.f;
  for (int64_t i = 0; i < n / kQBlock; ++i, x += kQBlock) {
    float s = 0.f;
    for (int j = 0; j < kQBlock; ++j) s += static_cast<float>(b[i].qs[j]) * x[j];
    acc += H(b[i].d) * s;
  }
  return acc;
}

// ---- AVX2 dot products ----
#ifdef FP_QUANT_X86
#define FP_AVX2 __attribute__((target("avx2,fma,f16c")))

FP_AVX2 inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

FP_AVX2 float DotF32Avx2(const void* row, const float* x, int64_t n) {
  const float* w = static_cast<const float*>(row);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float acc = HSum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) acc += w[i] * x[i];
  return acc;
}

// 8 unsigned bytes -> 8 floats.
FP_AVX2 inline __m256 U8x8ToF32(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }

FP_AVX2 float DotQ4_1Avx2(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  const __m128i low_mask = _mm_set1_epi8(15);
  __m256 acc_q = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQBlock; ++i, x += kQBlock) {
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_and_si128(qs, low_mask);                     // elements 0..15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low_mask);  // elements 16..31
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    const __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    __m256 s = _mm256_mul_ps(U8x8ToF32(lo), x0);
    s = _mm256_fmadd_ps(U8x8ToF32(_mm_srli_si128(lo, 8)), x1, s);
    s = _mm256_fmadd_ps(U8x8ToF32(hi), x2, s);
    s = _mm256_fmadd_ps(U8x8ToF32(_mm_srli_si128(hi, 8)), x3, s);
    const __m256 sx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    acc_q = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, acc_q);
    acc_m = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].m)), sx, acc_m);
  }
  return HSum(_mm256_add_ps(acc_q, acc_m));
}

FP_AVX2 inline __m256 I8x8ToF32(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

FP_AVX2 float DotQ8_0Avx2(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQBlock; ++i, x += kQBlock) {
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 16));
    __m256 s = _mm256_mul_ps(I8x8ToF32(q0), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(I8x8ToF32(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(I8x8ToF32(q1), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(I8x8ToF32(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), s);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, acc);
  }
  return HSum(acc);
}

bool HaveAvx2() {
  // F16C via cpuid (leaf 1, ecx bit 29): older clang's __builtin_cpu_supports does not know "f16c".
  static const bool have = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return have;
}
#else
bool HaveAvx2() { return false; }
#endif

}  // namespace

bool CanDequantize(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
      return true;
    default:
      return false;
  }
}

Result<size_t> RowBytes(GgmlType t, int64_t n) {
  auto traits = GgmlTypeInfo(static_cast<uint32_t>(t));
  if (!traits.ok()) return traits.status();
  if (n < 0 || n % traits->block_elems != 0) {
    return InvalidArgument("quant: row length " + std::to_string(n) + " is not a multiple of the " +
                           traits->name + " block (" + std::to_string(traits->block_elems) + ")");
  }
  return static_cast<size_t>(n / traits->block_elems) * traits->block_bytes;
}

static Status CheckRow(GgmlType t, int64_t n) {
  if (!CanDequantize(t)) return Unimplemented(std::string("quant: no kernels for ") + GgmlTypeName(t));
  auto rb = RowBytes(t, n);
  return rb.ok() ? Status::Ok() : rb.status();
}

Status DequantizeRow(GgmlType t, const void* src, float* dst, int64_t n) {
  FP_RETURN_IF_ERROR(CheckRow(t, n));
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = H(static_cast<const uint16_t*>(src)[i]);
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(static_cast<const Bf16*>(src)[i]);
      break;
    case GgmlType::kQ4_0:
      DequantQ4_0(src, dst, n / kQBlock);
      break;
    case GgmlType::kQ4_1:
      DequantQ4_1(src, dst, n / kQBlock);
      break;
    case GgmlType::kQ8_0:
      DequantQ8_0(src, dst, n / kQBlock);
      break;
    default:
      break;
  }
  return Status::Ok();
}

Status QuantizeRow(GgmlType t, const float* src, void* dst, int64_t n) {
  FP_RETURN_IF_ERROR(CheckRow(t, n));
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = ToH(src[i]);
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<Bf16*>(dst)[i] = FloatToBf16(src[i]);
      break;
    case GgmlType::kQ4_0:
      QuantQ4_0(src, dst, n / kQBlock);
      break;
    case GgmlType::kQ4_1:
      QuantQ4_1(src, dst, n / kQBlock);
      break;
    case GgmlType::kQ8_0:
      QuantQ8_0(src, dst, n / kQBlock);
      break;
    default:
      break;
  }
  return Status::Ok();
}

Result<DotFn> GetDotFn(GgmlType t, bool allow_simd) {
  const bool avx2 = allow_simd && HaveAvx2();
  switch (t) {
#ifdef FP_QUANT_X86
    case GgmlType::kF32:
      return avx2 ? &DotF32Avx2 : &DotF32;
    case GgmlType::kQ4_1:
      return avx2 ? &DotQ4_1Avx2 : &DotQ4_1;
    case GgmlType::kQ8_0:
      return avx2 ? &DotQ8_0Avx2 : &DotQ8_0;
#else
    case GgmlType::kF32:
      return &DotF32;
    case GgmlType::kQ4_1:
      return &DotQ4_1;
    case GgmlType::kQ8_0:
      return &DotQ8_0;
#endif
    case GgmlType::kF16:
      return &DotF16;
    case GgmlType::kBF16:
      return &DotBF16;
    case GgmlType::kQ4_0:
      return &DotQ4_0;
    default:
      break;
  }
  (void)avx2;
  return Unimplemented(std::string("quant: no dot product for ") + GgmlTypeName(t));
}

const char* DotKernelName() { return HaveAvx2() ? "avx2" : "scalar"; }

Status MatVec(GgmlType t, const void* w, size_t row_bytes, const float* x, int64_t n, float* y,
              int64_t row_begin, int64_t row_end) {
  FP_RETURN_IF_ERROR(CheckRow(t, n));
  auto rb = RowBytes(t, n);
  if (row_bytes < *rb) return InvalidArgument("quant: row stride smaller than a row");
  if (row_begin < 0 || row_end < row_begin) return InvalidArgument("quant: bad row range");
  auto dot = GetDotFn(t);
  if (!dot.ok()) return dot.status();
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = row_begin; r < row_end; ++r) {
    y[r - row_begin] = (*dot)(base + static_cast<size_t>(r) * row_bytes, x, n);
  }
  return Status::Ok();
}

Status MatVec(const GgufTensor& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (row_end > w.rows()) return OutOfRange("quant: row range past tensor '" + std::string(w.name) + "'");
  auto rb = RowBytes(w.type, w.cols());
  if (!rb.ok()) return rb.status();
  return MatVec(w.type, w.data, *rb, x, w.cols(), y, row_begin, row_end);
}

}  // namespace fp
