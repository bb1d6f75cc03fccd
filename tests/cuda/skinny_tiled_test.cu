// skinny_tiled_test.cu — the skinny GEMM's tiled schedule (cuda_skinny_tiled.cuh: 17+ tokens) computes the
// skinny kernel's arithmetic: bit-identical to the register kernel (MT 4, NR 4) for the engine's configuration
// and another stage shape, both epilogues, beta 0 (NaN-poisoned output) and 1, odd shapes (a part-filled last
// row tile, in with 1 segment so 7 empty slices, slices of 16 and 17 segments, tokens across tile boundaries);
// within the fp64 oracle's bound. Skips without a GPU.
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
#include "engine/cuda_skinny_tiled.cuh"
#include "gemm_test_util.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;
using testing::Host;
using testing::RandomBf16;

// The engine's configuration (cuda_skinny_gemm.cu: 2 segments a stage, 4 stages, 2 blocks an SM) and a 1-block
// one with 6 stages.
template <ce::Epilogue E>
void LaunchBoth(const ce::SkinnyArgs& a, int variant) {
  const cudaError_t e = variant == 0 ? ce::LaunchSkinnyTiledKernel<E, 2, 4, 2>(a, false, nullptr)
                                     : ce::LaunchSkinnyTiledKernel<E, 2, 6, 1>(a, false, nullptr);
  ASSERT_EQ(cudaSuccess, e);
}

TEST(SkinnyTiled, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(50);
  struct Shape {
    int out, in;
  };
  // in 32: one segment (slices 0-6 empty); 4192: 131 segments (slices of 16 and 17); 11008: 43 a slice.
  for (const Shape s : {Shape{200, 32}, Shape{520, 256}, Shape{1000, 4192}, Shape{136, 11008}}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(s.out) * s.in, 1.f);
    bf16* dw = Dev(w);
    for (const int n : {17, 40, 64, 65, 130}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * s.in, 1.f);
      bf16* dx = Dev(x);
      for (const float beta : {0.f, 1.f}) {
        const auto y0 = testing::ResidualInput(rng, static_cast<size_t>(n) * s.out, beta);
        float* dref = Dev(y0);
        ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<4, 4, ce::Epilogue::kStore, 8, 2>(
                                   ce::SkinnyArgs{dw, dx, dref, nullptr, s.out, s.in, n, beta}, false, nullptr)));
        const auto ref = Host(dref, y0.size());
        std::vector<double> want, mag;
        testing::GemmOracle(w, x, beta != 0.f ? y0 : std::vector<float>(y0.size(), 0.f), beta,
                            testing::GemmProblem{s.out, s.in, n}, &want, &mag);
        for (const int variant : {0, 1}) {
          SCOPED_TRACE("out " + std::to_string(s.out) + " in " + std::to_string(s.in) + " n " + std::to_string(n) +
                       " beta " + std::to_string(beta) + " variant " + std::to_string(variant));
          float* dy = Dev(y0);
          LaunchBoth<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, dy, nullptr, s.out, s.in, n, beta}, variant);
          const auto got = Host(dy, y0.size());
          ASSERT_TRUE(testing::BitIdenticalWithinOracle(got, ref, want, mag, s.in, s.out));
          cudaFree(dy);
        }
        cudaFree(dref);
      }
      cudaFree(dx);
    }
    cudaFree(dw);
  }
}

TEST(SkinnyTiled, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(51);
  const bf16 poison = __float2bfloat16(std::nanf(""));
  // ff 84: 168 gate|up rows, a part-filled row tile; ff 3100: 49 row tiles.
  for (const int ff : {84, 3100}) {
    const int in = 4192;
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    bf16* dw = Dev(w);
    for (const int n : {20, 64, 70}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      bf16* dref = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<4, 4, ce::Epilogue::kSwiGlu, 8, 2>(
                                 ce::SkinnyArgs{dw, dx, nullptr, dref, 2 * ff, in, n, 0.f}, false, nullptr)));
      const auto ref = Host(dref, static_cast<size_t>(n) * ff);
      for (const int variant : {0, 1}) {
        SCOPED_TRACE("ff " + std::to_string(ff) + " n " + std::to_string(n) + " variant " + std::to_string(variant));
        bf16* dh = Dev(std::vector<bf16>(ref.size(), poison));
        LaunchBoth<ce::Epilogue::kSwiGlu>(ce::SkinnyArgs{dw, dx, nullptr, dh, 2 * ff, in, n, 0.f}, variant);
        ASSERT_TRUE(testing::WrittenAndBitIdentical(Host(dh, ref.size()), ref, static_cast<size_t>(ff)));
        cudaFree(dh);
      }
      cudaFree(dx);
      cudaFree(dref);
    }
    cudaFree(dw);
  }
}

// LaunchSkinnyGemm picks the tiled schedule only where its tiles fill the SMs, and above 16 tokens.
TEST(SkinnyTiled, DispatchRule) {
  SKIP_WITHOUT_GPU();
  const int sms = testing::DeviceSmCount();
  EXPECT_TRUE(ce::SkinnyTiledFills(128 * sms, 17));
  EXPECT_FALSE(ce::SkinnyTiledFills(128 * sms - 128, 64));
  EXPECT_TRUE(ce::SkinnyTiledFills(128 * sms - 128, 65));  // two token tiles
  EXPECT_FALSE(ce::SkinnyTiledFills(128 * sms, 16));       // the W ring's
}

}  // namespace
}  // namespace fp
