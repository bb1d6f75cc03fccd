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

#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_tma.cuh"
#include "gemm_test_util.h"
#include "skinny_schedule_check.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;

#define SKIP_WITHOUT_TMA()                                                      \
  do {                                                                          \
    SKIP_WITHOUT_GPU();                                                         \
    if (!ce::SkinnyTmaAvailable()) GTEST_SKIP() << "no sm_90a device or build"; \
  } while (0)

using testing::ScheduleConfig;
const std::vector<ce::WeightLayout> kTiled = {ce::WeightLayout::kSegmentTiled};

template <int BKS, int STAGES, int C>
ScheduleConfig Cfg() {
  return {"bks" + std::to_string(BKS) + " st" + std::to_string(STAGES) + " c" + std::to_string(C),
          ce::LaunchSkinnyTmaKernel<ce::Epilogue::kStore, BKS, STAGES, C>,
          ce::LaunchSkinnyTmaKernel<ce::Epilogue::kSwiGlu, BKS, STAGES, C>};
}
// The engine's ring, one block a tile, 6-segment stages (slices of 16 or 17 segments end inside a stage, and
// block 1 of a pair starts at an odd segment), clusters of 4 and 8 (one slice a block).
std::vector<ScheduleConfig> Configs() {
  return {Cfg<4, 3, 2>(), Cfg<4, 3, 1>(), Cfg<6, 3, 2>(), Cfg<2, 4, 4>(), Cfg<2, 6, 8>()};
}

// out 200: a part-filled fourth row tile (checked against the oracle); 1000: 16 row tiles.
TEST(SkinnyTma, StoreBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_TMA();
  testing::CheckScheduleStore(Configs(), kTiled, 200, {256, 4192}, {17, 64, 100}, 190, true);
  testing::CheckScheduleStore(Configs(), kTiled, 1000, {256, 4192}, {17, 64, 100}, 191, false);
}

// ff 100: 200 gate|up rows, a part-filled fourth tile.
TEST(SkinnyTma, SwiGluBitIdenticalToRegisterKernel) {
  SKIP_WITHOUT_TMA();
  testing::CheckScheduleSwiGlu(Configs(), kTiled, 100, {4192}, {17, 100}, 192);
  testing::CheckScheduleSwiGlu(Configs(), kTiled, 700, {4192}, {17, 100}, 193);
}

// Row-major W (no grouping to copy) and in = 224 (a slice with no segment) are refused, not computed.
TEST(SkinnyTma, RefusesWhatItCannotRun) {
  SKIP_WITHOUT_TMA();
  bf16* w = Dev(std::vector<bf16>(64 * 256));
  bf16* x = Dev(std::vector<bf16>(17 * 256));
  float* y = Dev(std::vector<float>(17 * 64));
  const testing::ScheduleLauncher launch = ce::LaunchSkinnyTmaKernel<ce::Epilogue::kStore, 4, 3, 2>;
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
  testing::CheckScheduleSmall({Cfg<4, 3, 1>(), Cfg<6, 3, 2>()}, kTiled, 288, 195);
}

}  // namespace
}  // namespace fp
