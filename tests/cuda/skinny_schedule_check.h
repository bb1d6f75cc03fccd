// skinny_schedule_check.h — the checks a skinny GEMM schedule must pass (skinny_wgmma_test.cu, skinny_tma_test.cu;
// the small sanitizer case also skinny_stream_test.cu):
// bit-identical to the register kernel on row-major W (the reference), store with beta 0 (NaN-poisoned output) and
// 1, within the fp64 oracle's bound where asked, and the SwiGLU epilogue; each over a list of configurations and
// weight layouts. Failures name the configuration, shape and layout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "gemm_test_util.h"

namespace fp::testing {

// The reference: the register kernel (4 m-tiles, 4 row tiles a warp, 8 contiguous K slices) on row-major W.
template <cuda_engine::Epilogue E>
void RegisterReference(const cuda_engine::SkinnyArgs& a) {
  ASSERT_EQ(cudaSuccess, (cuda_engine::LaunchSkinnyKernel<4, 4, E, 8, 2, true, 0, false>(a, false, nullptr)));
}

// One configuration of the schedule under test: its store and SwiGLU launchers (a launcher with more parameters,
// such as the streaming schedule's SM count, is bound in a lambda).
using ScheduleLauncher = std::function<cudaError_t(const cuda_engine::SkinnyArgs&, bool, cudaStream_t)>;
struct ScheduleConfig {
  std::string name;
  ScheduleLauncher store, swiglu;
};

inline std::string LayoutName(cuda_engine::WeightLayout l) {
  return l == cuda_engine::WeightLayout::kRowMajor ? "row-major" : "segment-tiled";
}

// y = x W^T + beta y0 for `out` rows, each `in` of `ins`, n of `ns`, beta 0 and 1; against the oracle when `oracle`.
inline void CheckScheduleStore(const std::vector<ScheduleConfig>& configs,
                               const std::vector<cuda_engine::WeightLayout>& layouts, int out,
                               const std::vector<int>& ins, const std::vector<int>& ns, uint32_t seed, bool oracle) {
  namespace ce = cuda_engine;
  std::mt19937 rng(seed);
  for (const int in : ins) {
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    __nv_bfloat16* dw = Dev(w);
    __nv_bfloat16* dwt = SegmentTiledCopy(dw, out, in);
    for (const int n : ns) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      __nv_bfloat16* dx = Dev(x);
      for (const float beta : {0.f, 1.f}) {
        const auto y0 = ResidualInput(rng, static_cast<size_t>(n) * out, beta);
        float* dref = Dev(y0);
        RegisterReference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, dref, nullptr, out, in, n, beta});
        const auto ref = Host(dref, y0.size());
        std::vector<double> want, mag;
        if (oracle) {
          GemmOracle(w, x, beta != 0.f ? y0 : std::vector<float>(y0.size(), 0.f), beta, GemmProblem{out, in, n},
                     &want, &mag);
        }
        for (const ScheduleConfig& c : configs) {
          for (const auto lay : layouts) {
            SCOPED_TRACE(c.name + ": out " + std::to_string(out) + " in " + std::to_string(in) + " n " +
                         std::to_string(n) + " beta " + std::to_string(beta) + " " + LayoutName(lay));
            float* dy = Dev(y0);
            const __nv_bfloat16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
            ASSERT_EQ(cudaSuccess, c.store(ce::SkinnyArgs{wl, dx, dy, nullptr, out, in, n, beta, lay}, false, nullptr));
            ASSERT_TRUE(BitIdenticalWithinOracle(Host(dy, y0.size()), ref, want, mag, in, out));
            cudaFree(dy);
          }
        }
        cudaFree(dref);
      }
      cudaFree(dx);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// h = SwiGLU of a GateUpRow-interleaved [2 ff, in] matrix, each `in` of `ins`, n of `ns`; outputs NaN-poisoned.
inline void CheckScheduleSwiGlu(const std::vector<ScheduleConfig>& configs,
                                const std::vector<cuda_engine::WeightLayout>& layouts, int ff,
                                const std::vector<int>& ins, const std::vector<int>& ns, uint32_t seed) {
  namespace ce = cuda_engine;
  std::mt19937 rng(seed);
  const __nv_bfloat16 poison = __float2bfloat16(std::nanf(""));
  for (const int in : ins) {
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    __nv_bfloat16* dw = Dev(w);
    __nv_bfloat16* dwt = SegmentTiledCopy(dw, 2 * ff, in);
    for (const int n : ns) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      __nv_bfloat16* dx = Dev(x);
      __nv_bfloat16* dref = Dev(std::vector<__nv_bfloat16>(static_cast<size_t>(n) * ff, poison));
      RegisterReference<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, dref, 2 * ff, in, n, 0.f});
      const auto ref = Host(dref, static_cast<size_t>(n) * ff);
      for (const ScheduleConfig& c : configs) {
        for (const auto lay : layouts) {
          SCOPED_TRACE(c.name + ": ff " + std::to_string(ff) + " in " + std::to_string(in) + " n " +
                       std::to_string(n) + " " + LayoutName(lay));
          __nv_bfloat16* dh = Dev(std::vector<__nv_bfloat16>(static_cast<size_t>(n) * ff, poison));
          const __nv_bfloat16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
          ASSERT_EQ(cudaSuccess,
                    c.swiglu(ce::SkinnyArgs{wl, dx, nullptr, dh, 2 * ff, in, n, 0.f, lay}, false, nullptr));
          ASSERT_TRUE(WrittenAndBitIdentical(Host(dh, ref.size()), ref, static_cast<size_t>(ff)));
          cudaFree(dh);
        }
      }
      cudaFree(dx);
      cudaFree(dref);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// A small case for compute-sanitizer: store (beta 0) and SwiGLU of a 168-row matrix (a part-filled row tile;
// gate|up of ff 84) at n tokens (21: a part-filled token tile of the 64-token schedules), every configuration and
// layout.
inline void CheckScheduleSmall(const std::vector<ScheduleConfig>& configs,
                               const std::vector<cuda_engine::WeightLayout>& layouts, int in, uint32_t seed,
                               int n = 21) {
  namespace ce = cuda_engine;
  std::mt19937 rng(seed);
  const int out = 168;
  const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 0.5f);
  const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
  __nv_bfloat16* dw = Dev(w);
  __nv_bfloat16* dwt = SegmentTiledCopy(dw, out, in);
  __nv_bfloat16* dx = Dev(x);
  float* yref = Dev(std::vector<float>(static_cast<size_t>(n) * out, 0.f));
  __nv_bfloat16* href = Dev(std::vector<__nv_bfloat16>(static_cast<size_t>(n) * out / 2));
  RegisterReference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, yref, nullptr, out, in, n, 0.f});
  RegisterReference<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, href, out, in, n, 0.f});
  const auto ry = Host(yref, static_cast<size_t>(n) * out);
  const auto rh = Host(href, static_cast<size_t>(n) * out / 2);
  for (const ScheduleConfig& c : configs) {
    for (const auto lay : layouts) {
      SCOPED_TRACE(c.name + " " + LayoutName(lay));
      const __nv_bfloat16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
      float* y = Dev(std::vector<float>(ry.size(), std::nanf("")));
      __nv_bfloat16* h = Dev(std::vector<__nv_bfloat16>(rh.size(), __float2bfloat16(std::nanf(""))));
      ASSERT_EQ(cudaSuccess, c.store(ce::SkinnyArgs{wl, dx, y, nullptr, out, in, n, 0.f, lay}, false, nullptr));
      ASSERT_EQ(cudaSuccess, c.swiglu(ce::SkinnyArgs{wl, dx, nullptr, h, out, in, n, 0.f, lay}, false, nullptr));
      EXPECT_TRUE(WrittenAndBitIdentical(Host(y, ry.size()), ry, out));
      EXPECT_TRUE(WrittenAndBitIdentical(Host(h, rh.size()), rh, out / 2));
      cudaFree(y);
      cudaFree(h);
    }
  }
  cudaFree(dw);
  cudaFree(dwt);
  cudaFree(dx);
  cudaFree(yref);
  cudaFree(href);
}

}  // namespace fp::testing
