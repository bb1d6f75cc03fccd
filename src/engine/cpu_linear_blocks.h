// src/engine/cpu_linear_blocks.h — the GGUF block layouts the CPU linear kernels read (from model/quant.h), and
// the kernel table they are dispatched through (private to src/engine).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fieldprint/cpu_linear.h"
#include "fieldprint/quant.h"

namespace fp::detail {

// The on-disk block layouts are model/quant.h's (one definition of each ggml format).
using ::fp::BlockQ4_1;
using ::fp::BlockQ8_0;
static_assert(sizeof(BlockQ4_1::qs) * 2 == kQuantBlock && sizeof(BlockQ8_0::qs) == kQuantBlock);

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
