// skinny_wgmma_test.cu — the skinny GEMM's Hopper schedule (cuda_skinny_wgmma.cuh: wgmma, 8-byte k regrouping
// into 64-byte-swizzled shared memory) computes the skinny kernel's arithmetic: bit-identical to the register
// kernel on row-major W, reading W row-major or segment-tiled, several ring shapes (slices ending inside a
// stage), both epilogues, beta 0 (NaN-poisoned output) and 1, odd shapes (a part-filled row tile, two token
// tiles, in with one segment so 7 empty slices, slices of 16 and 17 segments); within the fp64 oracle's
// bound. Also that the engine's dispatch runs it bit-identically for 17-64 tokens. Skips without a GPU, and
// without sm_90a.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_wgmma.cuh"
#include "gemm_test_util.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;
using testing::Host;
using testing::RandomBf16;

#define SKIP_WITHOUT_WGMMA()                                                      \
  do {                                                                            \
    SKIP_WITHOUT_GPU();                                                           \
    if (!ce::SkinnyWgmmaAvailable()) GTEST_SKIP() << "no sm_90a device or build"; \
  } while (0)

// The reference: the register kernel (4 m-tiles, 4 row tiles a warp) on row-major W.
template <ce::Epilogue E>
void Reference(const ce::SkinnyArgs& a) {
  ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<4, 4, E, 8, 2, true, 0, false>(a, false, nullptr)));
}

using Launcher = cudaError_t (*)(const ce::SkinnyArgs&, bool, cudaStream_t);
struct Config {
  const char* name;
  Launcher store, swiglu;
};
template <int BKS, int STAGES>
Config Cfg(const char* name) {
  return {name, ce::LaunchSkinnyWgmmaKernel<ce::Epilogue::kStore, BKS, STAGES>,
          ce::LaunchSkinnyWgmmaKernel<ce::Epilogue::kSwiGlu, BKS, STAGES>};
}
// The engine's ring (2-segment stages, 3 stages), a deeper one, 3-segment stages (a slice of 16 or 17
// segments ends inside a stage) and 1-segment ones.
std::vector<Config> Configs() {
  return {Cfg<2, 3>("bks2 st3"), Cfg<2, 4>("bks2 st4"), Cfg<3, 3>("bks3 st3"), Cfg<1, 6>("bks1 st6")};
}

void CheckStore(int out, uint32_t seed, bool oracle) {
  std::mt19937 rng(seed);
  for (const int in : {32, 256, 4192}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, out, in);
    for (const int n : {17, 64, 100}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      for (const float beta : {0.f, 1.f}) {
        const auto y0 = testing::ResidualInput(rng, static_cast<size_t>(n) * out, beta);
        float* dref = Dev(y0);
        Reference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, dref, nullptr, out, in, n, beta});
        const auto ref = Host(dref, y0.size());
        std::vector<double> want, mag;
        if (oracle) {
          testing::GemmOracle(w, x, beta != 0.f ? y0 : std::vector<float>(y0.size(), 0.f), beta,
                              testing::GemmProblem{out, in, n}, &want, &mag);
        }
        for (const Config& c : Configs()) {
          for (const auto lay : {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}) {
            SCOPED_TRACE(std::string(c.name) + ": out " + std::to_string(out) + " in " + std::to_string(in) +
                         " n " + std::to_string(n) + " beta " + std::to_string(beta) + " layout " +
                         std::to_string(static_cast<int>(lay)));
            float* dy = Dev(y0);
            const bf16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
            ASSERT_EQ(cudaSuccess,
                      c.store(ce::SkinnyArgs{wl, dx, dy, nullptr, out, in, n, beta, lay}, false, nullptr));
            const auto got = Host(dy, y0.size());
            ASSERT_TRUE(testing::BitIdenticalWithinOracle(got, ref, want, mag, in, out));
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

void CheckSwiGlu(int ff, uint32_t seed) {
  std::mt19937 rng(seed);
  const bf16 poison = __float2bfloat16(std::nanf(""));
  for (const int in : {256, 4192}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, 2 * ff, in);
    for (const int n : {17, 64, 100}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      bf16* dref = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      Reference<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, dref, 2 * ff, in, n, 0.f});
      const auto ref = Host(dref, static_cast<size_t>(n) * ff);
      for (const Config& c : Configs()) {
        for (const auto lay : {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}) {
          SCOPED_TRACE(std::string(c.name) + ": ff " + std::to_string(ff) + " in " + std::to_string(in) +
                       " n " + std::to_string(n) + " layout " + std::to_string(static_cast<int>(lay)));
          bf16* dh = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
          const bf16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
          ASSERT_EQ(cudaSuccess,
                    c.swiglu(ce::SkinnyArgs{wl, dx, nullptr, dh, 2 * ff, in, n, 0.f, lay}, false, nullptr));
          ASSERT_TRUE(testing::WrittenAndBitIdentical(Host(dh, ref.size()), ref, static_cast<size_t>(ff)));
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

// out 200: a part-filled second row tile (checked against the oracle); 1000: 8 row tiles.
TEST(SkinnyWgmma, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_WGMMA();
  CheckStore(200, 90, true);
  CheckStore(1000, 91, false);
}

// ff 100: 200 gate|up rows, a part-filled second tile.
TEST(SkinnyWgmma, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_WGMMA();
  CheckSwiGlu(100, 92);
  CheckSwiGlu(700, 93);
}

// The engine's dispatch (LaunchSkinnyGemm) at 17-64 tokens on segment-tiled W: this schedule for a matrix whose
// tiles fill the SMs, the TMA schedule (cuda_skinny_tma.cuh) for one whose do not; both bit-identical to the
// register kernel on row-major W.
TEST(SkinnyWgmma, EngineDispatchBitIdentical) {
  SKIP_WITHOUT_WGMMA();
  std::mt19937 rng(94);
  const int in = 1024;
  for (const int out : {1000, 40000}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, out, in);
    for (const int n : {17, 40, 64}) {
      SCOPED_TRACE("out " + std::to_string(out) + " n " + std::to_string(n));
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      float* dref = Dev(std::vector<float>(static_cast<size_t>(n) * out, std::nanf("")));
      float* dy = Dev(std::vector<float>(static_cast<size_t>(n) * out, std::nanf("")));
      Reference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, dref, nullptr, out, in, n, 0.f});
      ASSERT_TRUE(
          ce::LaunchSkinnyGemm(dwt, out, in, dx, n, dy, 0.f, false, nullptr, ce::WeightLayout::kSegmentTiled)
              .ok());
      EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(dy, static_cast<size_t>(n) * out),
                                                  Host(dref, static_cast<size_t>(n) * out),
                                                  static_cast<size_t>(out)));
      cudaFree(dx);
      cudaFree(dref);
      cudaFree(dy);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// Small cases for compute-sanitizer (scripts/gpu-check runs *Sanitizer*): two rings, both epilogues and
// layouts, a part-filled row tile and a part-filled token tile.
TEST(SkinnySanitizer, WgmmaSmall) {
  SKIP_WITHOUT_WGMMA();
  std::mt19937 rng(95);
  const int in = 256, n = 21, out = 168;
  const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 0.5f);
  const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
  bf16* dw = Dev(w);
  bf16* dwt = testing::SegmentTiledCopy(dw, out, in);
  bf16* dx = Dev(x);
  float* yref = Dev(std::vector<float>(static_cast<size_t>(n) * out, 0.f));
  bf16* href = Dev(std::vector<bf16>(static_cast<size_t>(n) * out / 2));
  Reference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, yref, nullptr, out, in, n, 0.f});
  Reference<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, href, out, in, n, 0.f});
  const auto ry = Host(yref, static_cast<size_t>(n) * out);
  const auto rh = Host(href, static_cast<size_t>(n) * out / 2);
  for (const Config& c : {Cfg<2, 3>("bks2 st3"), Cfg<3, 3>("bks3 st3")}) {
    for (const auto lay : {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}) {
      SCOPED_TRACE(std::string(c.name) + " layout " + std::to_string(static_cast<int>(lay)));
      const bf16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
      float* y = Dev(std::vector<float>(ry.size(), std::nanf("")));
      bf16* h = Dev(std::vector<bf16>(rh.size(), __float2bfloat16(std::nanf(""))));
      ASSERT_EQ(cudaSuccess,
                c.store(ce::SkinnyArgs{wl, dx, y, nullptr, out, in, n, 0.f, lay}, false, nullptr));
      ASSERT_EQ(cudaSuccess,
                c.swiglu(ce::SkinnyArgs{wl, dx, nullptr, h, out, in, n, 0.f, lay}, false, nullptr));
      EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(y, ry.size()), ry, out));
      EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(h, rh.size()), rh, out / 2));
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

}  // namespace
}  // namespace fp
