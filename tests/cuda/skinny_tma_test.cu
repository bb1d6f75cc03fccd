// skinny_tma_test.cu — the skinny GEMM's TMA-fed schedule (cuda_skinny_tma.cuh: bulk tensor copies of
// segment-tiled W and of x, wgmma m64n64k16 with x's A pairs read in the MMA steps' k grouping, K slices split
// over clusters of C blocks) computes the skinny kernel's arithmetic: bit-identical to the register kernel on
// row-major W for clusters of 1, 2, 4 and 8 blocks and several rings (slices ending inside a stage), both
// epilogues, beta 0 (NaN-poisoned output) and 1, odd shapes (a part-filled row tile, two token tiles, one
// segment a slice, slices of 16 and 17 segments), within the fp64 oracle's bound; and that it refuses row-major
// W and in < 256. Skips without a GPU, and without sm_90a.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_tma.cuh"
#include "gemm_test_util.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;
using testing::Host;
using testing::RandomBf16;

#define SKIP_WITHOUT_TMA()                                                      \
  do {                                                                          \
    SKIP_WITHOUT_GPU();                                                         \
    if (!ce::SkinnyTmaAvailable()) GTEST_SKIP() << "no sm_90a device or build"; \
  } while (0)

// The reference: the register kernel (4 m-tiles, 4 row tiles a warp) on row-major W.
template <ce::Epilogue E>
void Reference(const ce::SkinnyArgs& a) {
  ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<4, 4, E, 8, 2, true, 0, false>(a, false, nullptr)));
}

using Launcher = cudaError_t (*)(const ce::SkinnyArgs&, bool, cudaStream_t);
struct Config {
  std::string name;
  Launcher store, swiglu;
};
template <int BKS, int STAGES, int C>
Config Cfg() {
  return {"bks" + std::to_string(BKS) + " st" + std::to_string(STAGES) + " c" + std::to_string(C),
          ce::LaunchSkinnyTmaKernel<ce::Epilogue::kStore, BKS, STAGES, C>,
          ce::LaunchSkinnyTmaKernel<ce::Epilogue::kSwiGlu, BKS, STAGES, C>};
}
// The engine's ring, one block a tile, 3-segment stages (slices of 16 or 17 segments end inside a stage),
// clusters of 4 and 8 (one slice a block).
std::vector<Config> Configs() {
  return {Cfg<4, 3, 2>(), Cfg<4, 3, 1>(), Cfg<3, 3, 2>(), Cfg<2, 4, 4>(), Cfg<1, 6, 8>()};
}

void CheckStore(int out, uint32_t seed, bool oracle) {
  std::mt19937 rng(seed);
  for (const int in : {256, 4192}) {
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
          SCOPED_TRACE(c.name + ": out " + std::to_string(out) + " in " + std::to_string(in) + " n " +
                       std::to_string(n) + " beta " + std::to_string(beta));
          float* dy = Dev(y0);
          ASSERT_EQ(cudaSuccess, c.store(ce::SkinnyArgs{dwt, dx, dy, nullptr, out, in, n, beta,
                                                        ce::WeightLayout::kSegmentTiled},
                                         false, nullptr));
          const auto got = Host(dy, y0.size());
          ASSERT_TRUE(testing::BitIdenticalWithinOracle(got, ref, want, mag, in, out));
          cudaFree(dy);
        }
        cudaFree(dref);
      }
      cudaFree(dx);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// out 200: a part-filled fourth row tile (checked against the oracle); 1000: 16 row tiles.
TEST(SkinnyTma, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_TMA();
  CheckStore(200, 190, true);
  CheckStore(1000, 191, false);
}

// ff 100: 200 gate|up rows, a part-filled fourth tile.
TEST(SkinnyTma, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_TMA();
  std::mt19937 rng(192);
  const bf16 poison = __float2bfloat16(std::nanf(""));
  for (const int ff : {100, 700}) {
    const int in = 4192;
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, 2 * ff, in);
    for (const int n : {17, 100}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      bf16* dref = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      Reference<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, dref, 2 * ff, in, n, 0.f});
      const auto ref = Host(dref, static_cast<size_t>(n) * ff);
      for (const Config& c : Configs()) {
        SCOPED_TRACE(c.name + ": ff " + std::to_string(ff) + " n " + std::to_string(n));
        bf16* dh = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
        ASSERT_EQ(cudaSuccess, c.swiglu(ce::SkinnyArgs{dwt, dx, nullptr, dh, 2 * ff, in, n, 0.f,
                                                       ce::WeightLayout::kSegmentTiled},
                                        false, nullptr));
        ASSERT_TRUE(testing::WrittenAndBitIdentical(Host(dh, ref.size()), ref, static_cast<size_t>(ff)));
        cudaFree(dh);
      }
      cudaFree(dx);
      cudaFree(dref);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// Row-major W (no grouping to copy) and in = 224 (a slice with no segment) are refused, not computed.
TEST(SkinnyTma, RefusesWhatItCannotRun) {
  SKIP_WITHOUT_TMA();
  bf16* w = Dev(std::vector<bf16>(64 * 256));
  bf16* x = Dev(std::vector<bf16>(17 * 256));
  float* y = Dev(std::vector<float>(17 * 64));
  const Launcher launch = ce::LaunchSkinnyTmaKernel<ce::Epilogue::kStore, 4, 3, 2>;
  EXPECT_NE(cudaSuccess, launch(ce::SkinnyArgs{w, x, y, nullptr, 64, 256, 17, 0.f}, false, nullptr));
  EXPECT_NE(cudaSuccess, launch(ce::SkinnyArgs{w, x, y, nullptr, 64, 224, 17, 0.f, ce::WeightLayout::kSegmentTiled},
                                false, nullptr));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // a refusal leaves no sticky error
  cudaFree(w);
  cudaFree(x);
  cudaFree(y);
}

// Small cases for compute-sanitizer (scripts/gpu-check runs *Sanitizer*): one block a tile and clusters of 2,
// both epilogues, a part-filled row tile and a part-filled token tile.
TEST(SkinnySanitizer, TmaSmall) {
  SKIP_WITHOUT_TMA();
  std::mt19937 rng(195);
  const int in = 288, n = 21, out = 168;
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
  for (const Config& c : {Cfg<4, 3, 1>(), Cfg<3, 3, 2>()}) {
    SCOPED_TRACE(c.name);
    float* y = Dev(std::vector<float>(ry.size(), std::nanf("")));
    bf16* h = Dev(std::vector<bf16>(rh.size(), __float2bfloat16(std::nanf(""))));
    const auto lay = ce::WeightLayout::kSegmentTiled;
    ASSERT_EQ(cudaSuccess, c.store(ce::SkinnyArgs{dwt, dx, y, nullptr, out, in, n, 0.f, lay}, false, nullptr));
    ASSERT_EQ(cudaSuccess, c.swiglu(ce::SkinnyArgs{dwt, dx, nullptr, h, out, in, n, 0.f, lay}, false, nullptr));
    EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(y, ry.size()), ry, out));
    EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(h, rh.size()), rh, out / 2));
    cudaFree(y);
    cudaFree(h);
  }
  cudaFree(dw);
  cudaFree(dwt);
  cudaFree(dx);
  cudaFree(yref);
  cudaFree(href);
}

}  // namespace
}  // namespace fp
