// gemm_test_util.h — device buffers, the SM count, random operands, the residual input y0, the fp64 GEMM oracle,
// segment-tiled weight copies and the bit-identity checks shared by the GEMM tests (skinny_gemm_test.cu,
// skinny_tiled_test.cu, skinny_stream_test.cu, skinny_wgmma_test.cu, skinny_tma_test.cu, weight_layout_test.cu,
// gemv_fused_test.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"

namespace fp::testing {

template <typename T>
T* Dev(const std::vector<T>& h) {
  T* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> Host(const T* d, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Device 0's SM count (grid sizes and dispatch rules).
inline int DeviceSmCount() {
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  return sms;
}

inline std::vector<__nv_bfloat16> RandomBf16(std::mt19937& rng, size_t n, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<__nv_bfloat16> v(n);
  for (auto& x : v) x = __float2bfloat16(u(rng));
  return v;
}

// The y0 a GEMM with beta adds to: NaN at beta 0 (the kernel must not read it), else uniform in [-4, 4).
inline std::vector<float> ResidualInput(std::mt19937& rng, size_t n, float beta) {
  std::vector<float> y0(n, std::nanf(""));
  if (beta != 0.f) {
    std::uniform_real_distribution<float> u(-4.f, 4.f);
    for (auto& v : y0) v = u(rng);
  }
  return y0;
}

struct GemmProblem {
  int out, in, n;
};

// y = x . W^T (+ beta * y0) in fp64; also sum |x||w| per element for the error bound.
inline void GemmOracle(const std::vector<__nv_bfloat16>& w, const std::vector<__nv_bfloat16>& x,
                       const std::vector<float>& y0, float beta, const GemmProblem& p, std::vector<double>* y,
                       std::vector<double>* mag) {
  y->assign(static_cast<size_t>(p.n) * p.out, 0.0);
  mag->assign(y->size(), 0.0);
  for (int t = 0; t < p.n; ++t) {
    for (int r = 0; r < p.out; ++r) {
      double s = 0, m = 0;
      for (int k = 0; k < p.in; ++k) {
        const double a = __bfloat162float(x[static_cast<size_t>(t) * p.in + k]);
        const double b = __bfloat162float(w[static_cast<size_t>(r) * p.in + k]);
        s += a * b;
        m += std::fabs(a * b);
      }
      const size_t i = static_cast<size_t>(t) * p.out + r;
      (*y)[i] = s + (beta != 0.f ? beta * static_cast<double>(y0[i]) : 0.0);
      (*mag)[i] = m + std::fabs(beta * static_cast<double>(y0[i]));
    }
  }
}

// fp32 accumulation of `in` exact bf16 products: error <= ~in * 2^-24 * sum|a b|; the tests allow 4x that.
inline double GemmErrorBound(int in, double mag) { return 4.0 * in * std::ldexp(1.0, -24) * mag + 1e-30; }

// A segment-tiled copy (cuda_engine_kernels.h: WeightLayout) of the row-major device matrix dw [out, in], with
// WeightLayoutRows(out) rows; the caller frees it.
inline __nv_bfloat16* SegmentTiledCopy(const __nv_bfloat16* dw, int out, int in) {
  __nv_bfloat16* t = nullptr;
  CUDA_CHECK(cudaMalloc(&t, static_cast<size_t>(cuda_engine::WeightLayoutRows(out)) * in * sizeof(__nv_bfloat16)));
  const Status st = cuda_engine::LaunchWeightRelayout(dw, out, in, cuda_engine::WeightLayout::kSegmentTiled, t, nullptr);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return t;
}

// got [rows, cols] (float or bf16, NaN-poisoned before the kernel) fully written and bit-identical to ref; the
// failure names the first differing (row, column): for GEMM outputs, (token, output row or SwiGLU index).
template <typename T>
::testing::AssertionResult WrittenAndBitIdentical(const std::vector<T>& got, const std::vector<T>& ref, size_t cols) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure() << got.size() << " elements, want " << ref.size();
  }
  auto value = [](T v) -> float {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      return __bfloat162float(v);
    } else {
      return static_cast<float>(v);
    }
  };
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(value(got[i]))) {
      return ::testing::AssertionFailure() << "(" << i / cols << ", " << i % cols << ") not written";
    }
    if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << "(" << i / cols << ", " << i % cols << "): " << value(got[i]) << " vs "
                                           << value(ref[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

// A GEMM output y [n, out] against the reference kernel's: every element written and bit-identical
// (WrittenAndBitIdentical), and within the fp64 oracle's bound (GemmOracle's want / mag; not checked when want is
// empty). Failures name (token, output row).
inline ::testing::AssertionResult BitIdenticalWithinOracle(const std::vector<float>& got, const std::vector<float>& ref,
                                                           const std::vector<double>& want,
                                                           const std::vector<double>& mag, int in, int out) {
  ::testing::AssertionResult same = WrittenAndBitIdentical(got, ref, static_cast<size_t>(out));
  if (!same) return same;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const double bound = GemmErrorBound(in, mag[i]);
    if (std::fabs(got[i] - want[i]) > bound) {
      return ::testing::AssertionFailure() << "(" << i / out << ", " << i % out << "): " << got[i]
                                           << " is off the oracle's " << want[i] << " by more than " << bound;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace fp::testing
