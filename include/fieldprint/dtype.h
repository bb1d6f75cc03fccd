// fieldprint/dtype.h — element types and host-side bf16/f16 <-> f32 conversion.
// defines: DType, DTypeSize, DTypeName, Bf16, F16, BitsToFloat helpers, F16ToFloatTable
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fp {

enum class DType : uint8_t { kF32, kF16, kBF16 };

constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }
const char* DTypeName(DType t);

// Storage types: raw 16-bit patterns. Device code uses __nv_bfloat16 / __half with the same layout.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2 && sizeof(F16) == 2);

inline float Bf16ToFloat(Bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline Bf16 FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>((u + rounding) >> 16)};
}

float F16ToFloat(F16 h);
F16 FloatToF16(float f);  // round to nearest even, overflow to inf, subnormals kept
// [65536] F16ToFloat of every bit pattern, built once per process: one load instead of F16ToFloat's branches in
// the hot loops that widen f16 (quantised weight scales, f16 KV).
const float* F16ToFloatTable();

// Reads element i of a buffer of type t as float.
inline float LoadAsFloat(const void* base, DType t, size_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(base)[i];
    case DType::kBF16: return Bf16ToFloat(static_cast<const Bf16*>(base)[i]);
    case DType::kF16: return F16ToFloat(static_cast<const F16*>(base)[i]);
  }
  return 0.f;
}

// Writes v (rounded) into element i of a buffer of type t.
inline void StoreFromFloat(void* base, DType t, size_t i, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(base)[i] = v; break;
    case DType::kBF16: static_cast<Bf16*>(base)[i] = FloatToBf16(v); break;
    case DType::kF16: static_cast<F16*>(base)[i] = FloatToF16(v); break;
  }
}

}  // namespace fp
