// weight_layout_test.cu — the segment-tiled weight layout (WeightLayout, cuda_weight_layout.cu): the device relayout
// against a host permutation (odd row counts: zero padding rows), the round trip, bad arguments; and the skinny
// GEMM on segment-tiled W bit-identical to row-major W in every schedule the dispatcher picks (streaming n <= 16,
// register and tiled above) and both epilogues. Skips without a GPU.
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
#include "gemm_test_util.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::Dev;
using testing::Host;
using testing::RandomBf16;

// Host oracle: tiled[((row / 16) * (in / 32) + s) * 512 + (row % 16) * 32 + pos] = w[row * in + s * 32 + kk],
// where a segment stores its k grouped by the two MMA steps: pos 0..31 hold kk = kStored[pos].
constexpr int kStored[32] = {0, 1, 2,  3,  8,  9,  10, 11, 16, 17, 18, 19, 24, 25, 26, 27,
                             4, 5, 6,  7,  12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
std::vector<bf16> HostTiled(const std::vector<bf16>& w, int out, int in) {
  const int rows = static_cast<int>(ce::WeightLayoutRows(out)), nseg = in / 32;
  std::vector<bf16> t(static_cast<size_t>(rows) * in, __float2bfloat16(0.f));
  for (int row = 0; row < out; ++row) {
    for (int s = 0; s < nseg; ++s) {
      for (int pos = 0; pos < 32; ++pos) {
        const size_t at = ((static_cast<size_t>(row / 16) * nseg + s) * 16 + row % 16) * 32 + pos;
        t[at] = w[static_cast<size_t>(row) * in + s * 32 + kStored[pos]];
      }
    }
  }
  return t;
}

TEST(WeightLayout, StoredKMatchesTheGrouping) {
  for (int pos = 0; pos < 32; ++pos) EXPECT_EQ(pos, ce::WeightStoredK(kStored[pos])) << pos;
}

bf16* Alloc(int out, int in) {
  bf16* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, static_cast<size_t>(ce::WeightLayoutRows(out)) * in * sizeof(bf16)));
  return d;
}

TEST(WeightLayout, RelayoutMatchesHostPermutationAndRoundTrips) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(90);
  struct Shape {
    int out, in;
  };
  for (const Shape s : {Shape{16, 32}, Shape{37, 96}, Shape{1000, 4192}, Shape{5, 64}}) {
    SCOPED_TRACE("out " + std::to_string(s.out) + " in " + std::to_string(s.in));
    const auto w = RandomBf16(rng, static_cast<size_t>(s.out) * s.in, 1.f);
    bf16* dw = Alloc(s.out, s.in);
    CUDA_CHECK(cudaMemcpy(dw, w.data(), w.size() * sizeof(bf16), cudaMemcpyHostToDevice));
    // Poisoned destination: the padding rows must be written (zeros), every other element from w.
    const size_t padded = static_cast<size_t>(ce::WeightLayoutRows(s.out)) * s.in;
    bf16* dt = Dev(std::vector<bf16>(padded, __float2bfloat16(std::nanf(""))));
    ASSERT_TRUE(ce::LaunchWeightRelayout(dw, s.out, s.in, ce::WeightLayout::kSegmentTiled, dt, nullptr).ok());
    const auto got = Host(dt, padded);
    const auto want = HostTiled(w, s.out, s.in);
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), padded * sizeof(bf16)));
    bf16* back = Dev(std::vector<bf16>(w.size(), __float2bfloat16(std::nanf(""))));
    ASSERT_TRUE(ce::LaunchWeightRelayout(dt, s.out, s.in, ce::WeightLayout::kRowMajor, back, nullptr).ok());
    const auto round = Host(back, w.size());
    ASSERT_EQ(0, std::memcmp(round.data(), w.data(), w.size() * sizeof(bf16)));
    cudaFree(dw);
    cudaFree(dt);
    cudaFree(back);
  }
}

TEST(WeightLayout, RelayoutRejectsBadArguments) {
  SKIP_WITHOUT_GPU();
  bf16* a = Alloc(32, 64);
  bf16* b = Alloc(32, 64);
  const auto to = ce::WeightLayout::kSegmentTiled;
  EXPECT_FALSE(ce::LaunchWeightRelayout(a, 32, 48, to, b, nullptr).ok());  // in not a multiple of 32
  EXPECT_FALSE(ce::LaunchWeightRelayout(a, 0, 64, to, b, nullptr).ok());
  EXPECT_FALSE(ce::LaunchWeightRelayout(a, 32, 64, to, a, nullptr).ok());  // in place
  EXPECT_FALSE(ce::LaunchWeightRelayout(nullptr, 32, 64, to, b, nullptr).ok());
  EXPECT_FALSE(ce::LaunchWeightRelayout(a + 1, 32, 64, to, b, nullptr).ok());  // unaligned
  cudaFree(a);
  cudaFree(b);
}

// LaunchSkinnyGemm / LaunchSkinnyGemmSwiGlu on tiled W against row-major W, bit for bit. out 17000 at in 64 has
// enough 128-row tiles for the tiled schedule above 16 tokens (SkinnyTiledFills; traced), out 300 runs the
// register schedule; n <= 16 the streaming one.
TEST(WeightLayout, SkinnyGemmBitIdenticalAcrossLayouts) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(91);
  struct Shape {
    int out, in;
  };
  for (const Shape s : {Shape{300, 4192}, Shape{17000, 64}}) {
    const auto w = RandomBf16(rng, static_cast<size_t>(s.out) * s.in, 1.f);
    bf16* dw = Dev(w);
    bf16* dt = testing::SegmentTiledCopy(dw, s.out, s.in);
    for (const int n : {1, 7, 16, 17, 40, 64, 70}) {
      SCOPED_TRACE("out " + std::to_string(s.out) + " in " + std::to_string(s.in) + " n " + std::to_string(n) +
                   (ce::SkinnyTiledFills(s.out, n) ? " (tiled schedule)" : ""));
      const auto x = RandomBf16(rng, static_cast<size_t>(n) * s.in, 1.f);
      bf16* dx = Dev(x);
      const std::vector<float> poison(static_cast<size_t>(n) * s.out, std::nanf(""));
      float* yr = Dev(poison);
      float* yt = Dev(poison);
      ASSERT_TRUE(ce::LaunchSkinnyGemm(dw, s.out, s.in, dx, n, yr, 0.f, false, nullptr).ok());
      ASSERT_TRUE(ce::LaunchSkinnyGemm(dt, s.out, s.in, dx, n, yt, 0.f, false, nullptr,
                                       ce::WeightLayout::kSegmentTiled)
                      .ok());
      ASSERT_TRUE(testing::WrittenAndBitIdentical(Host(yt, poison.size()), Host(yr, poison.size()),
                                                  static_cast<size_t>(s.out)));
      // SwiGLU: the matrix as gate|up of ff = out / 2 (rows rounded down to a multiple of 8).
      const int ff = s.out / 8 * 4;
      const std::vector<bf16> hpoison(static_cast<size_t>(n) * ff, __float2bfloat16(std::nanf("")));
      bf16* hr = Dev(hpoison);
      bf16* ht = Dev(hpoison);
      bf16* dt2 = testing::SegmentTiledCopy(dw, 2 * ff, s.in);
      ASSERT_TRUE(ce::LaunchSkinnyGemmSwiGlu(dw, ff, s.in, dx, n, hr, false, nullptr).ok());
      ASSERT_TRUE(
          ce::LaunchSkinnyGemmSwiGlu(dt2, ff, s.in, dx, n, ht, false, nullptr, ce::WeightLayout::kSegmentTiled).ok());
      ASSERT_TRUE(testing::WrittenAndBitIdentical(Host(ht, hpoison.size()), Host(hr, hpoison.size()),
                                                  static_cast<size_t>(ff)));
      cudaFree(dx);
      cudaFree(yr);
      cudaFree(yt);
      cudaFree(hr);
      cudaFree(ht);
      cudaFree(dt2);
    }
    cudaFree(dw);
    cudaFree(dt);
  }
}

}  // namespace
}  // namespace fp
