// fieldprint/quant.h — ggml block formats: dequantisation to f32, quantised-row · f32-vector dot products
// (the CPU matvec's inner loop) and reference quantisers for tests and tiny synthetic models.
// defines: BlockQ4_0, BlockQ4_1, BlockQ8_0, RowBytes, CanDequantize, DequantizeRow, QuantizeRow, DotFn,
//          GetDotFn, MatVec
//
// Formats (32 elements a block, scales as IEEE f16):
//   Q4_0: x[j] = d * (nib[j] - 8)      Q4_1: x[j] = d * nib[j] + m      Q8_0: x[j] = d * q[j]
//   with nib[j] = qs[j] & 15 and nib[j + 16] = qs[j] >> 4 for j < 16.
// Dot products dispatch at run time to AVX2+FMA+F16C code when the CPU has it, else to portable scalar code.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fieldprint/gguf.h"
#include "fieldprint/status.h"

namespace fp {

inline constexpr int kQBlock = 32;  // elements per Q4_0/Q4_1/Q8_0 block

struct BlockQ4_0 {
  uint16_t d;      // f16 scale
  uint8_t qs[16];  // 32 nibbles
};
struct BlockQ4_1 {
  uint16_t d;      // f16 scale
  uint16_t m;      // f16 minimum
  uint8_t qs[16];  // 32 nibbles
};
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[32];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes on disk");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes on disk");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes on disk");

// Bytes of one row of n elements (n a multiple of the type's block), or an error.
Result<size_t> RowBytes(GgmlType t, int64_t n);

// Types this build can dequantise / dot: F32, F16, BF16, Q4_0, Q4_1, Q8_0.
bool CanDequantize(GgmlType t);

// dst[n] = the n elements of src (RowBytes(t, n) bytes). n must be a multiple of the block.
Status DequantizeRow(GgmlType t, const void* src, float* dst, int64_t n);

// dst (RowBytes(t, n) bytes) = src[n] quantised (round to nearest). Q4_0, Q4_1, Q8_0, F32, F16, BF16.
Status QuantizeRow(GgmlType t, const float* src, void* dst, int64_t n);

// Dot of one row of n elements of a type with x[n] (n a multiple of the block; unchecked: hot path).
// allow_simd = false forces the portable scalar version (tests compare the two).
using DotFn = float (*)(const void* row, const float* x, int64_t n);
Result<DotFn> GetDotFn(GgmlType t, bool allow_simd = true);

// y[r - row_begin] = dot(w row r, x) for r in [row_begin, row_end). w: [rows, n] of type t, row_bytes apart.
// The engine splits rows across threads by calling this on disjoint ranges.
Status MatVec(GgmlType t, const void* w, size_t row_bytes, const float* x, int64_t n, float* y,
              int64_t row_begin, int64_t row_end);
// The same over a GGUF tensor: [rows(), cols()] times x[cols()].
Status MatVec(const GgufTensor& w, const float* x, float* y, int64_t row_begin, int64_t row_end);

// Which implementation GetDotFn picked: "avx2" or "scalar" (printed by benchmarks).
const char* DotKernelName();

}  // namespace fp
