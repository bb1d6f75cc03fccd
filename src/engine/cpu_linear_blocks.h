// src/engine/cpu_linear_blocks.h — the on-disk GGUF block layouts the CPU linear kernels read, and the kernel
// table they are dispatched through (private to src/engine).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fieldprint/cpu_linear.h"

namespace fp::detail {

// ggml's Q4_1: value = d * q + m, q in [0, 15]; qs[j] holds element j (low nibble) and j + 16 (high nibble).
struct BlockQ4_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes on disk");

// ggml's Q8_0: value = d * q, q in [-127, 127].
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[kQuantBlock];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes on disk");

using Q8Block = Q8Activations::Block;

// One weight row against one token's activations.
struct LinearKernels {
  const char* name;
  float (*dot_q4_1)(const uint8_t* row, const Q8Block* x, int64_t nblocks);
  float (*dot_q8_0)(const uint8_t* row, const Q8Block* x, int64_t nblocks);
  float (*dot_f32)(const float* row, const float* x, int64_t n);
  float (*dot_f16)(const uint16_t* row, const float* x, int64_t n);
  // Up to 4 tokens (x: [nt, nblocks]) against one Q4_1 row, bit-identical to dot_q4_1 per token; null = none.
  void (*dot_q4_1_x4)(const uint8_t* row, const Q8Block* x, int64_t nblocks, int nt, float* out);
};

const LinearKernels& ScalarKernels();
// nullptr when this CPU (or this compiler) lacks the instructions.
const LinearKernels* Avx2Kernels();
const LinearKernels* Avx512VnniKernels();

}  // namespace fp::detail
