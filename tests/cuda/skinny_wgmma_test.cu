// skinny_wgmma_test.cu — the skinny GEMM's Hopper schedule (cuda_skinny_wgmma.cuh: wgmma, 8-byte k regrouping
// into 64-byte-swizzled shared memory) computes the skinny kernel's arithmetic: bit-identical to the register
// kernel on row-major W, reading W row-major or segment-tiled, several ring shapes (slices ending inside a
// stage), both epilogues, beta 0 (NaN-poisoned output) and 1, odd shapes (a part-filled row tile, two token
// tiles, in with one segment so 7 empty slices, slices of 16 and 17 segments); within the fp64 oracle's
// bound. Also that the engine's dispatch above 16 tokens, which runs it or the TMA schedule, is bit-identical.
// Skips without a GPU, and without sm_90a.
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
#include "engine/cuda_skinny_wgmma.cuh"
#include "gemm_test_util.h"
#include "skinny_schedule_check.h"

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

using testing::ScheduleConfig;
const std::vector<ce::WeightLayout> kLayouts = {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled};

template <int BKS, int STAGES>
ScheduleConfig Cfg(const char* name) {
  return {name, ce::LaunchSkinnyWgmmaKernel<ce::Epilogue::kStore, BKS, STAGES>,
          ce::LaunchSkinnyWgmmaKernel<ce::Epilogue::kSwiGlu, BKS, STAGES>};
}
// The engine's ring (2-segment stages, 3 stages), a deeper one, 3-segment stages (a slice of 16 or 17
// segments ends inside a stage) and 1-segment ones.
std::vector<ScheduleConfig> Configs() {
  return {Cfg<2, 3>("bks2 st3"), Cfg<2, 4>("bks2 st4"), Cfg<3, 3>("bks3 st3"), Cfg<1, 6>("bks1 st6")};
}

// out 200: a part-filled second row tile (checked against the oracle); 1000: 8 row tiles.
TEST(SkinnyWgmma, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_WGMMA();
  testing::CheckScheduleStore(Configs(), kLayouts, 200, {32, 256, 4192}, {17, 64, 100}, 90, true);
  testing::CheckScheduleStore(Configs(), kLayouts, 1000, {32, 256, 4192}, {17, 64, 100}, 91, false);
}

// ff 100: 200 gate|up rows, a part-filled second tile.
TEST(SkinnyWgmma, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_WGMMA();
  testing::CheckScheduleSwiGlu(Configs(), kLayouts, 100, {256, 4192}, {17, 64, 100}, 92);
  testing::CheckScheduleSwiGlu(Configs(), kLayouts, 700, {256, 4192}, {17, 64, 100}, 93);
}

// The engine's dispatch (LaunchSkinnyGemm) above 16 tokens: on segment-tiled W the TMA schedule up to 64 tokens
// and, at 100, this one where the tiles fill the SMs (out 40000) or the TMA one where they do not (out 1000); on
// row-major W this one where the tiles fill the SMs, the register schedule elsewhere. All bit-identical to the
// register kernel on row-major W.
TEST(SkinnyWgmma, EngineDispatchBitIdentical) {
  SKIP_WITHOUT_WGMMA();
  std::mt19937 rng(94);
  const int in = 1024;
  for (const int out : {1000, 40000}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(out) * in, 1.f);
    bf16* dw = Dev(w);
    bf16* dwt = testing::SegmentTiledCopy(dw, out, in);
    for (const int n : {17, 40, 64, 100}) {
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * in, 1.f);
      bf16* dx = Dev(x);
      float* dref = Dev(std::vector<float>(static_cast<size_t>(n) * out, std::nanf("")));
      testing::RegisterReference<ce::Epilogue::kStore>(ce::SkinnyArgs{dw, dx, dref, nullptr, out, in, n, 0.f});
      for (const auto lay : {ce::WeightLayout::kRowMajor, ce::WeightLayout::kSegmentTiled}) {
        SCOPED_TRACE("out " + std::to_string(out) + " n " + std::to_string(n) + " layout " +
                     std::to_string(static_cast<int>(lay)));
        float* dy = Dev(std::vector<float>(static_cast<size_t>(n) * out, std::nanf("")));
        ASSERT_TRUE(ce::LaunchSkinnyGemm(lay == ce::WeightLayout::kRowMajor ? dw : dwt, out, in, dx, n, dy, 0.f, false,
                                         nullptr, lay)
                        .ok());
        EXPECT_TRUE(testing::WrittenAndBitIdentical(Host(dy, static_cast<size_t>(n) * out),
                                                    Host(dref, static_cast<size_t>(n) * out),
                                                    static_cast<size_t>(out)));
        cudaFree(dy);
      }
      cudaFree(dx);
      cudaFree(dref);
    }
    cudaFree(dw);
    cudaFree(dwt);
  }
}

// Small cases for compute-sanitizer (scripts/gpu-check runs *Sanitizer*): two rings, both epilogues and
// layouts, a part-filled row tile and a part-filled token tile.
TEST(SkinnySanitizer, WgmmaSmall) {
  SKIP_WITHOUT_WGMMA();
  testing::CheckScheduleSmall({Cfg<2, 3>("bks2 st3"), Cfg<3, 3>("bks3 st3")}, kLayouts, 256, 95);
}

}  // namespace
}  // namespace fp
