// skinny_stream_test.cu — the skinny GEMM's streaming schedule (cuda_skinny_stream.cuh: up to 16 tokens)
// computes the skinny kernel's arithmetic: bit-identical to the register kernel (MT 1) on row-major W, reading W
// row-major or segment-tiled (relayouted on the device), for the engine's configuration and others, both
// epilogues, beta 0 (NaN-poisoned output) and 1; grids of one SM's blocks (each block walks many tiles, its ring
// running on across tile boundaries) and of the device's; odd shapes (a part-filled last tile, in with 1 segment
// so 7 empty slices, slices of 16 and 17 segments); within the fp64 oracle's bound. Skips without a GPU.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_stream.cuh"
#include "gemm_test_util.h"
#include "skinny_schedule_check.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;
using testing::Host;
using testing::RandomBf16;

// Each run's grid (one SM's blocks, the device's) and W layout.
std::vector<std::pair<int, ce::WeightLayout>> Runs() {
  std::vector<std::pair<int, ce::WeightLayout>> runs;
  for (const int sms : {1, testing::DeviceSmCount()}) {
    for (const auto lay : {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}) runs.emplace_back(sms, lay);
  }
  return runs;
}

template <int NR, int RING, int MINB>
void CheckStore(int out, uint32_t seed) {
  constexpr auto kStore = ce::Epilogue::kStore;
  std::mt19937 rng(seed);
  for (const int in : {32, 256, 4192, 11008}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, out, in);
    for (const int n : {1, 2, 3, 7, 16}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      for (const float beta : {0.f, 1.f}) {
        const auto y0 = testing::ResidualInput(rng, static_cast<size_t>(n) * out, beta);
        float* dref = Dev(y0);
        ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<1, NR, kStore, 8, 1>(
                                   ce::SkinnyArgs{dw, dx, dref, nullptr, out, in, n, beta}, false, nullptr)));
        const auto ref = Host(dref, y0.size());
        std::vector<double> want, mag;
        testing::GemmOracle(w, x, beta != 0.f ? y0 : std::vector<float>(y0.size(), 0.f), beta,
                            testing::GemmProblem{out, in, n}, &want, &mag);
        for (const auto& [sms, lay] : Runs()) {
          SCOPED_TRACE("NR " + std::to_string(NR) + " ring " + std::to_string(RING) + ": out " +
                       std::to_string(out) + " in " + std::to_string(in) + " n " + std::to_string(n) + " beta " +
                       std::to_string(beta) + " sms " + std::to_string(sms) + " layout " +
                       std::to_string(static_cast<int>(lay)));
          float* dy = Dev(y0);
          const bf16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
          ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyStreamKernel<NR, kStore, RING, MINB>(
                                     ce::SkinnyArgs{wl, dx, dy, nullptr, out, in, n, beta, lay}, sms, false, nullptr)));
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

template <int NR, int RING, int MINB>
void CheckSwiGlu(int ff, uint32_t seed) {
  constexpr auto kSwiGlu = ce::Epilogue::kSwiGlu;
  std::mt19937 rng(seed);
  const bf16 poison = __float2bfloat16(std::nanf(""));
  for (const int in : {256, 4192}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(2 * ff) * in, 0.5f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, 2 * ff, in);
    for (const int n : {1, 3, 16}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      bf16* dref = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
      ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyKernel<1, NR, kSwiGlu, 8, 1>(
                                 ce::SkinnyArgs{dw, dx, nullptr, dref, 2 * ff, in, n, 0.f}, false, nullptr)));
      const auto ref = Host(dref, static_cast<size_t>(n) * ff);
      for (const auto& [sms, lay] : Runs()) {
        SCOPED_TRACE("NR " + std::to_string(NR) + " ring " + std::to_string(RING) + ": ff " + std::to_string(ff) +
                     " in " + std::to_string(in) + " n " + std::to_string(n) + " sms " + std::to_string(sms) +
                     " layout " + std::to_string(static_cast<int>(lay)));
        bf16* dh = Dev(std::vector<bf16>(static_cast<size_t>(n) * ff, poison));
        const bf16* wl = lay == ce::WeightLayout::kRowMajor ? dw : dwt;
        ASSERT_EQ(cudaSuccess, (ce::LaunchSkinnyStreamKernel<NR, kSwiGlu, RING, MINB>(
                                   ce::SkinnyArgs{wl, dx, nullptr, dh, 2 * ff, in, n, 0.f, lay}, sms, false, nullptr)));
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

// One store and one SwiGLU problem (in 256, 3 tokens), each grid and layout, against the register kernel.
template <int NR, int RING, int MINB>
void CheckSmall() {
  std::vector<testing::ScheduleConfig> configs;
  for (const int sms : {1, testing::DeviceSmCount()}) {
    configs.push_back({"NR " + std::to_string(NR) + " ring " + std::to_string(RING) + " sms " + std::to_string(sms),
                       [sms](const ce::SkinnyArgs& a, bool pdl, cudaStream_t st) {
                         return ce::LaunchSkinnyStreamKernel<NR, ce::Epilogue::kStore, RING, MINB>(a, sms, pdl, st);
                       },
                       [sms](const ce::SkinnyArgs& a, bool pdl, cudaStream_t st) {
                         return ce::LaunchSkinnyStreamKernel<NR, ce::Epilogue::kSwiGlu, RING, MINB>(a, sms, pdl, st);
                       }});
  }
  testing::CheckScheduleSmall(configs, {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}, 256, 80, 3);
}

// out 37: 3 tiles of 16 (the last part-filled); 1000 and 2052: many tiles a block on one SM's grid.
TEST(SkinnyStream, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_GPU();
  CheckStore<2, 4, 3>(37, 60);  // the engine's choice up to 8 tokens before session 9
  CheckStore<2, 4, 3>(1000, 61);
  CheckStore<4, 4, 2>(1000, 62);  // the engine's (cuda_skinny_gemm.cu)
  CheckStore<1, 6, 2>(2052, 63);
}

// ff 84: 168 gate|up rows (a half-filled last tile of NR 2); 1000: many tiles a block.
TEST(SkinnyStream, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_GPU();
  CheckSwiGlu<2, 4, 3>(84, 70);
  CheckSwiGlu<2, 4, 3>(1000, 71);
  CheckSwiGlu<4, 4, 2>(1000, 72);
}

// Small cases for compute-sanitizer (scripts/gpu-check runs *Sanitizer* under memcheck and racecheck): the engine's
// configuration and the 2-row-tile one it ran up to 8 tokens before session 9, both epilogues and layouts, a
// part-filled tile and many tiles a block on a one-SM grid.
TEST(SkinnySanitizer, StreamSmall) {
  SKIP_WITHOUT_GPU();
  CheckSmall<2, 4, 3>();
  CheckSmall<4, 4, 2>();
}

}  // namespace
}  // namespace fp
