// CPU linear layer: validation, activation quantisation, the scalar reference kernels, quantisers, and the
// row-parallel drivers for one token (decode) and many (prefill). SIMD kernels live in cpu_linear_simd.cpp.
#include "fieldprint/cpu_linear.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_linear_blocks.h"
#include "fieldprint/dtype.h"
#include "fieldprint/quant.h"

namespace fp {

using detail::BlockQ4_1;
using detail::BlockQ8_0;
using detail::LinearKernels;
using detail::Q8Block;

namespace {

inline float H2F(uint16_t h) { return F16ToFloat(F16{h}); }
inline uint16_t F2H(float f) { return FloatToF16(f).bits; }

float ScalarDotQ4_1(const uint8_t* row, const Q8Block* x, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ4_1*>(row);
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t acc = 0;
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      acc += (w[b].qs[j] & 0x0f) * x[b].q[j] + (w[b].qs[j] >> 4) * x[b].q[j + kQuantBlock / 2];
    }
    sum += H2F(w[b].d) * x[b].d * static_cast<float>(acc) + H2F(w[b].m) * x[b].s;
  }
  return sum;
}

float ScalarDotQ8_0(const uint8_t* row, const Q8Block* x, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ8_0*>(row);
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t acc = 0;
    for (int j = 0; j < kQuantBlock; ++j) acc += w[b].qs[j] * x[b].q[j];
    sum += H2F(w[b].d) * x[b].d * static_cast<float>(acc);
  }
  return sum;
}

float ScalarDotF32(const float* row, const float* x, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += row[i] * x[i];
  return s;
}

float ScalarDotF16(const uint16_t* row, const float* x, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += H2F(row[i]) * x[i];
  return s;
}

std::atomic<const LinearKernels*> g_forced{nullptr};

const LinearKernels& Kernels() {
  if (const LinearKernels* f = g_forced.load(std::memory_order_acquire)) return *f;
  static const LinearKernels* best = [] {
    if (const auto* k = detail::Avx512VnniKernels()) return k;
    if (const auto* k = detail::Avx2Kernels()) return k;
    return &detail::ScalarKernels();
  }();
  return *best;
}

bool IsBlockType(WeightType t) { return t == WeightType::kQ4_1 || t == WeightType::kQ8_0; }

}  // namespace

namespace detail {
const LinearKernels& ScalarKernels() {
  static const LinearKernels k{"scalar", ScalarDotQ4_1, ScalarDotQ8_0, ScalarDotF32, ScalarDotF16, nullptr};
  return k;
}
}  // namespace detail

const char* LinearKernelName() { return Kernels().name; }

void ForceLinearKernel(const char* name) {
  const LinearKernels* k = nullptr;
  if (name != nullptr) {
    const std::string n = name;
    if (n == "scalar") k = &detail::ScalarKernels();
    if (n == "avx2") k = detail::Avx2Kernels();
    if (n == "avx512vnni") k = detail::Avx512VnniKernels();
  }
  g_forced.store(k, std::memory_order_release);
}

const char* WeightTypeName(WeightType t) {
  switch (t) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kF16:
      return "f16";
    case WeightType::kQ8_0:
      return "q8_0";
    case WeightType::kQ4_1:
      return "q4_1";
  }
  return "?";
}

GgmlType GgmlTypeOf(WeightType t) {
  switch (t) {
    case WeightType::kF32:
      return GgmlType::kF32;
    case WeightType::kF16:
      return GgmlType::kF16;
    case WeightType::kQ8_0:
      return GgmlType::kQ8_0;
    case WeightType::kQ4_1:
      return GgmlType::kQ4_1;
  }
  return GgmlType::kF32;
}

Status EncodeWeightRow(WeightType t, const float* row, int64_t cols, uint8_t* out) {
  return QuantizeRow(GgmlTypeOf(t), row, out, cols);
}

size_t WeightRowBytes(WeightType t, int64_t cols) {
  const auto c = static_cast<size_t>(cols);
  switch (t) {
    case WeightType::kF32:
      return c * 4;
    case WeightType::kF16:
      return c * 2;
    case WeightType::kQ8_0:
      return c / kQuantBlock * sizeof(BlockQ8_0);
    case WeightType::kQ4_1:
      return c / kQuantBlock * sizeof(BlockQ4_1);
  }
  return 0;
}

Status WeightMatrix::Validate(const char* name) const {
  const std::string n = name ? name : "weight";
  if (type != WeightType::kF32 && type != WeightType::kF16 && type != WeightType::kQ8_0 &&
      type != WeightType::kQ4_1) {
    return InvalidArgument(n + ": unknown weight type");
  }
  if (rows <= 0 || cols <= 0) {
    return InvalidArgument(n + ": dims must be positive, got [" + std::to_string(rows) + ", " +
                           std::to_string(cols) + "]");
  }
  if (IsBlockType(type) && cols % kQuantBlock != 0) {
    return InvalidArgument(n + ": " + WeightTypeName(type) + " needs cols % 32 == 0, got " +
                           std::to_string(cols));
  }
  if (row_bytes != WeightRowBytes(type, cols)) {
    return InvalidArgument(n + ": row_bytes " + std::to_string(row_bytes) +
                           " != " + std::to_string(WeightRowBytes(type, cols)));
  }
  if (data == nullptr) return InvalidArgument(n + ": null data");
  return Status::Ok();
}

void QuantizeActivations(const float* x, int64_t n, int64_t cols, Q8Activations* out) {
  const int64_t nb = cols / kQuantBlock;
  out->n = n;
  out->cols = cols;
  out->blocks.resize(static_cast<size_t>(n * nb));
  for (int64_t i = 0; i < n * nb; ++i) {
    const float* xb = x + i * kQuantBlock;
    float amax = 0.f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    Q8Block& b = out->blocks[static_cast<size_t>(i)];
    b.d = amax / 127.f;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    int32_t sum = 0;
    for (int j = 0; j < kQuantBlock; ++j) {
      const int v = static_cast<int>(std::nearbyint(xb[j] * inv));
      b.q[j] = static_cast<int8_t>(std::clamp(v, -127, 127));
      sum += b.q[j];
    }
    // ggml keeps d and d * sum(q) as f16 (block_q8_1); rounding them the same way keeps our logits within
    // noise of llama.cpp's on the same file (the reference test compares greedy tokens).
    b.s = H2F(F2H(b.d * static_cast<float>(sum)));
    b.d = H2F(F2H(b.d));
  }
}

Status LinearCpuQ8(const WeightMatrix& w, const Q8Activations& xq, const float* x, float* y,
                   ThreadPool& pool) {
  FP_RETURN_IF_ERROR(w.Validate("linear weight"));
  if (y == nullptr) return InvalidArgument("linear: null output");
  if (xq.n < 0 || xq.cols != w.cols) {
    return InvalidArgument("linear: activations have " + std::to_string(xq.cols) + " cols, weight has " +
                           std::to_string(w.cols));
  }
  if (IsBlockType(w.type) && xq.blocks.size() != static_cast<size_t>(xq.n * (w.cols / kQuantBlock))) {
    return InvalidArgument("linear: quantised activations have " + std::to_string(xq.cols) +
                           " cols, weight has " + std::to_string(w.cols));
  }
  if (!IsBlockType(w.type) && x == nullptr) return InvalidArgument("linear: float weights need float input");
  const LinearKernels& k = Kernels();
  const int64_t rows = w.rows, cols = w.cols, nb = cols / kQuantBlock;
  const int64_t ntok = xq.n;
  // 16-row grains keep each thread's output rows on whole cache lines.
  pool.ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
      int64_t t0 = 0;
      if (w.type == WeightType::kQ4_1 && k.dot_q4_1_x4 != nullptr) {
        // Prefill: 4 tokens per pass over the row share the weight unpacking (same results as one by one).
        float v4[4];
        for (; t0 + 1 < ntok; t0 += 4) {
          const int nt = static_cast<int>(std::min<int64_t>(4, ntok - t0));
          k.dot_q4_1_x4(row, xq.blocks.data() + t0 * nb, nb, nt, v4);
          for (int j = 0; j < nt; ++j) y[(t0 + j) * rows + r] = v4[j];
        }
      }
      for (int64_t t = t0; t < ntok; ++t) {
        float v = 0.f;
        switch (w.type) {
          case WeightType::kQ4_1:
            v = k.dot_q4_1(row, xq.blocks.data() + t * nb, nb);
            break;
          case WeightType::kQ8_0:
            v = k.dot_q8_0(row, xq.blocks.data() + t * nb, nb);
            break;
          case WeightType::kF32:
            v = k.dot_f32(reinterpret_cast<const float*>(row), x + t * cols, cols);
            break;
          case WeightType::kF16:
            v = k.dot_f16(reinterpret_cast<const uint16_t*>(row), x + t * cols, cols);
            break;
        }
        y[t * rows + r] = v;
      }
    }
  });
  return Status::Ok();
}

Status LinearCpu(const WeightMatrix& w, const float* x, int64_t n, float* y, ThreadPool& pool,
                 Q8Activations* scratch) {
  FP_RETURN_IF_ERROR(w.Validate("linear weight"));
  if (x == nullptr || y == nullptr || scratch == nullptr) return InvalidArgument("linear: null pointer");
  if (n < 0) return InvalidArgument("linear: negative token count");
  if (IsBlockType(w.type)) {
    QuantizeActivations(x, n, w.cols, scratch);
  } else {
    scratch->n = n;  // float paths read x directly; n travels in the scratch
    scratch->cols = w.cols;
  }
  return LinearCpuQ8(w, *scratch, x, y, pool);
}

Status DequantizeRow(const WeightMatrix& w, int64_t r, float* out) {
  FP_RETURN_IF_ERROR(w.Validate("weight"));
  if (r < 0 || r >= w.rows) {
    return OutOfRange("row " + std::to_string(r) + " outside [0, " + std::to_string(w.rows) + ")");
  }
  if (out == nullptr) return InvalidArgument("dequantize: null output");
  return DequantizeRow(GgmlTypeOf(w.type), w.data + static_cast<size_t>(r) * w.row_bytes, out, w.cols);
}

}  // namespace fp
