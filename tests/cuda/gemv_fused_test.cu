// gemv_fused_test.cu — the one-token q|k|v GEMV with its neighbours fused (RMSNorm before, RoPE + KV write after)
// against the separate kernels it replaces in a B = 1 step: bit for bit, on fresh random inputs with
// NaN-poisoned outputs (a missed element fails), shapes of both real models and odd ones; bad shapes rejected.
// Every test skips without a CUDA device.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "decode_test_util.h"
#include "gemm_test_util.h"
#include "engine/cuda_engine_kernels.h"

namespace fp {
namespace {

namespace ce = cuda_engine;
using bf16 = __nv_bfloat16;
using testing::DownloadBytes;
using testing::RandomBf16;
using testing::UploadBytes;

template <typename T>
DeviceBuffer Upload(const std::vector<T>& v) {
  return UploadBytes(v.data(), v.size() * sizeof(T));
}

std::vector<float> RandomF32(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

template <typename T>
void ExpectSameBits(const std::vector<T>& want, const std::vector<T>& got, const char* what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(&want[i], &got[i], sizeof(T))) << what << " element " << i;
  }
}

bf16 Bf16Nan() { return __float2bfloat16(std::nanf("")); }

// One normalized input row: the f32 residual x (a few large entries, as in a real residual stream) and its weight.
struct NormRow {
  std::vector<float> x, w;
  DeviceBuffer dx, dw;
  NormRow(std::mt19937& rng, int in) : x(RandomF32(rng, static_cast<size_t>(in), -3.f, 3.f)),
                                       w(RandomF32(rng, static_cast<size_t>(in), 0.5f, 1.5f)) {
    x[static_cast<size_t>(in) / 3] = 40.f;
    dx = Upload(x);
    dw = Upload(w);
  }
  ce::GemvNorm view(float eps) const {
    return {static_cast<const float*>(dx.get()), static_cast<const float*>(dw.get()), eps};
  }
  // The separate RMSNorm's bf16 row, the reference GEMV's input.
  DeviceBuffer Normalized(int in, float eps) const {
    DeviceBuffer xn = Upload(std::vector<bf16>(static_cast<size_t>(in), Bf16Nan()));
    EXPECT_TRUE(ce::LaunchRmsNorm(static_cast<const float*>(dx.get()), static_cast<const float*>(dw.get()), 1, in, eps,
                                  static_cast<bf16*>(xn.get()), nullptr)
                    .ok());
    return xn;
  }
};

// The q|k|v GEMV with the RMSNorm before it and RoPE + KV write after it fused: the same q row, and the same bytes in the whole K and V
// pools (the token's slot written, every other row untouched), as RMSNorm + GEMV + RopeWriteKv.
TEST(GemvFused, NormRopeMatchesRmsNormGemvRopeWrite) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  struct Shape {
    int hq, hkv, hd, in;
  };
  for (const Shape s : {Shape{9, 3, 64, 576}, Shape{32, 8, 128, 4096}, Shape{4, 4, 8, 24}}) {
    const int qd = s.hq * s.hd, kvd = s.hkv * s.hd, out = qd + 2 * kvd, pool_rows = 37;
    const float eps = 1e-5f;
    const NormRow row(rng, s.in);
    const DeviceBuffer w = Upload(RandomBf16(rng, static_cast<size_t>(out) * s.in, 0.5f));
    const int32_t position = std::uniform_int_distribution<int32_t>(0, 100000)(rng);
    const int64_t slot = std::uniform_int_distribution<int64_t>(0, pool_rows - 1)(rng);
    std::vector<double> inv_freq(static_cast<size_t>(s.hd / 2));
    for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.0, -2.0 * double(i) / s.hd);
    const DeviceBuffer d_pos = Upload(std::vector<int32_t>{position});
    const DeviceBuffer d_slot = Upload(std::vector<int64_t>{slot});
    const DeviceBuffer d_freq = Upload(inv_freq);
    DeviceBuffer d_cs = Upload(std::vector<float>(inv_freq.size() * 2, std::nanf("")));
    ASSERT_TRUE(ce::LaunchRopeTable(static_cast<const int32_t*>(d_pos.get()), static_cast<const double*>(d_freq.get()),
                                    1, s.hd / 2, static_cast<float2*>(d_cs.get()), nullptr)
                    .ok());
    // The table is the angles' (cos, sin) in double, rounded to float.
    const auto cs = DownloadBytes<float>(d_cs.get(), inv_freq.size() * 2);
    for (size_t i = 0; i < inv_freq.size(); ++i) {
      const double angle = double(position) * inv_freq[i];
      ASSERT_EQ(cs[2 * i], static_cast<float>(std::cos(angle))) << "cos, pair " << i;
      ASSERT_EQ(cs[2 * i + 1], static_cast<float>(std::sin(angle))) << "sin, pair " << i;
    }
    const std::vector<bf16> q_poison(static_cast<size_t>(qd), Bf16Nan());
    const auto pool0 = RandomBf16(rng, static_cast<size_t>(pool_rows) * kvd, 1.f);  // other rows must survive
    struct Out {
      DeviceBuffer q, k, v;
    };
    Out ref{Upload(q_poison), Upload(pool0), Upload(pool0)}, fused{Upload(q_poison), Upload(pool0), Upload(pool0)};
    auto args = [&](Out& o, const float* qkv) {
      return ce::RopeWriteArgs{qkv, static_cast<const float2*>(d_cs.get()), static_cast<const int64_t*>(d_slot.get()),
                               static_cast<bf16*>(o.q.get()),
                               static_cast<bf16*>(o.k.get()), static_cast<bf16*>(o.v.get()), nullptr, nullptr,
                               1, s.hq, s.hkv, s.hd};
    };
    const DeviceBuffer xn = row.Normalized(s.in, eps);
    DeviceBuffer qkv = Upload(std::vector<float>(static_cast<size_t>(out), std::nanf("")));
    const auto* dw = static_cast<const bf16*>(w.get());
    ASSERT_TRUE(ce::LaunchGemvBf16(dw, out, s.in, static_cast<const bf16*>(xn.get()), 1, static_cast<float*>(qkv.get()),
                                   0.f, nullptr)
                    .ok());
    ASSERT_TRUE(ce::LaunchRopeWriteKv(args(ref, static_cast<const float*>(qkv.get())), nullptr).ok());
    ASSERT_TRUE(ce::LaunchGemvNormRopeBf16(dw, s.in, row.view(eps), args(fused, nullptr), nullptr).ok());
    const size_t pool = pool0.size();
    const auto q_ref = DownloadBytes<bf16>(ref.q.get(), static_cast<size_t>(qd));
    const auto k_ref = DownloadBytes<bf16>(ref.k.get(), pool), v_ref = DownloadBytes<bf16>(ref.v.get(), pool);
    const auto q = DownloadBytes<bf16>(fused.q.get(), static_cast<size_t>(qd));
    for (const bf16 v : q) ASSERT_FALSE(std::isnan(__bfloat162float(v))) << "hq " << s.hq;
    ExpectSameBits(q_ref, q, "q");
    const auto k = DownloadBytes<bf16>(fused.k.get(), pool), v = DownloadBytes<bf16>(fused.v.get(), pool);
    ExpectSameBits(k_ref, k, "k pool");
    ExpectSameBits(v_ref, v, "v pool");
    EXPECT_NE(0, std::memcmp(&k[static_cast<size_t>(slot) * kvd], &pool0[static_cast<size_t>(slot) * kvd],
                             static_cast<size_t>(kvd) * sizeof(bf16)))
        << "the slot row was not written";
  }
}

TEST(GemvFused, RejectsBadShapes) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(24);
  const NormRow row(rng, 8200);
  const DeviceBuffer w = Upload(std::vector<bf16>(static_cast<size_t>(64) * 8200));
  DeviceBuffer y = Upload(std::vector<float>(64));
  const auto* dw = static_cast<const bf16*>(w.get());
  auto* dy = static_cast<float*>(y.get());  // an anchor-capture buffer below
  const ce::GemvNorm norm = row.view(1e-5f);
  ce::RopeWriteArgs good{};
  good.n = 1, good.hq = 2, good.hkv = 1, good.hd = 16;  // out 64
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 8200, norm, good, nullptr).ok());                  // in > 8192
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 60, norm, good, nullptr).ok());                    // in % 8
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw + 1, 64, norm, good, nullptr).ok());                // unaligned W
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 64, {norm.x + 1, norm.w, 1e-5f}, good, nullptr).ok());  // unaligned x
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 64, {nullptr, norm.w, 1e-5f}, good, nullptr).ok());     // no x
  ce::RopeWriteArgs rope{};
  rope.n = 1, rope.hq = 2, rope.hkv = 1, rope.hd = 4;  // head_dim % 8
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 64, norm, rope, nullptr).ok());
  rope.hd = 8, rope.n = 2;  // one token only
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 64, norm, rope, nullptr).ok());
  rope.n = 1, rope.k_cap = reinterpret_cast<bf16*>(dy);  // no anchor capture
  EXPECT_FALSE(ce::LaunchGemvNormRopeBf16(dw, 64, norm, rope, nullptr).ok());
}

}  // namespace
}  // namespace fp
