// fieldprint/cpu_linear.h — y = W·x on the CPU for quantised or float weight matrices (the engine's
// GEMV/GEMM).
//
// Weights stay in their GGUF block format (Q4_1, Q8_0) or are float (F32, F16). For the quantised formats the
// activations are quantised per 32-element block to int8 (scale + int8, like llama.cpp's Q8 path) and the dot
// products run in integer SIMD (AVX2 / AVX-512 VNNI, picked at run time; a scalar path everywhere else). Rows
// of W are split across the pool; for a matrix (prefill) each weight row is reused for every token while it
// is in L1. The choice "quantised vs dequantised to f32 on load" was made by measurement: see docs/engine.md.
// defines: WeightType, WeightMatrix, Q8Activations, QuantizeActivations, LinearCpu, DotRowReference,
//          GgmlTypeOf, EncodeWeightRow, DequantizeRow, kQuantBlock
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fieldprint/gguf.h"
#include "fieldprint/status.h"
#include "fieldprint/thread_pool.h"

namespace fp {

inline constexpr int kQuantBlock = 32;  // elements per Q4_1 / Q8_0 block

enum class WeightType : uint8_t { kF32, kF16, kQ8_0, kQ4_1 };
const char* WeightTypeName(WeightType t);
// Bytes of one row of `cols` elements (cols must be a multiple of 32 for the block formats).
size_t WeightRowBytes(WeightType t, int64_t cols);

// A non-owning [rows, cols] row-major matrix; y = W·x has `rows` outputs. Data may be an mmap'd file region.
struct WeightMatrix {
  WeightType type = WeightType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;  // [rows, row_bytes]
  size_t row_bytes = 0;
  // Type known, dims positive, block formats with cols % 32 == 0, row_bytes consistent, data non-null.
  Status Validate(const char* name) const;
};

// Activations of n tokens quantised for the integer paths.  // blocks: [n, cols / 32]
struct Q8Activations {
  struct Block {
    float d;  // scale: x ≈ d * q
    float s;  // d * sum(q), for Q4_1's min term
    int8_t q[kQuantBlock];
  };
  int64_t n = 0;
  int64_t cols = 0;
  std::vector<Block> blocks;
};

// x: [n, cols] floats (cols % 32 == 0).
void QuantizeActivations(const float* x, int64_t n, int64_t cols, Q8Activations* out);

// y[t, r] = sum_c W[r, c] x[t, c] for t < n.  x: [n, w.cols], y: [n, w.rows]. `scratch` holds the quantised
// activations between calls (reused to avoid allocations). Validates w and the pointers.
Status LinearCpu(const WeightMatrix& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                 Q8Activations* scratch);

// Same, but the activations were already quantised (several matrices sharing one input: Q/K/V, gate/up).
Status LinearCpuQ8(const WeightMatrix& w, const Q8Activations& xq, const float* x, float* y,
                   ThreadPool& pool);

// Row r of W widened to floats (out: [w.cols]). OutOfRange for a bad row.
Status DequantizeRow(const WeightMatrix& w, int64_t r, float* out);

// The GGUF type with this kernel type's layout (the formats and their (de)quantisers live in model/quant.h).
GgmlType GgmlTypeOf(WeightType t);
// Stores one row of `cols` floats in type t (f16 rounded to nearest even, block formats quantised by
// model/quant.h's reference quantisers; cols % 32 == 0 for the block types). out: [WeightRowBytes(t, cols)]
Status EncodeWeightRow(WeightType t, const float* row, int64_t cols, uint8_t* out);

// Which SIMD path LinearCpu uses on this CPU: "avx512vnni", "avx2" or "scalar". Tests may force one.
const char* LinearKernelName();
void ForceLinearKernel(const char* name);  // nullptr = automatic

}  // namespace fp
