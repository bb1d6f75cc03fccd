// mma_bits_test.cu — the tensor-core facts the skinny GEMM's schedules rest on (cuda_skinny_wgmma.cuh): one
// k16 MMA step's fp32 result does not depend on the order of its 16 k (the same permutation of A's and B's
// k), and one wgmma k16 step (m64n64 and m64n8 with A in shared memory, m64n64 with A in registers) gives the
// bits of one mma.sync m16n8k16 on the same operands. Four chained k16 steps, accumulators zero or random,
// operands normal or spread over 2^-20..2^20. If a card breaks either fact, the wgmma schedule no longer
// computes the mma.sync bits. Skips without a GPU; the wgmma half without sm_90a.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "attention/attention_prefill_wgmma.cuh"
#include "core/cuda_check.h"
#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"  // Mma: the skinny kernels' mma.sync

namespace fp {
namespace {

using namespace fp::prefill;  // NOLINT: the wgmma wrappers

// A [M][K], B [N][K] (both K-major), D [M][N] = C + A B^T over 4 k16 steps.
constexpr int M = 64, N = 64, K = 64;

__device__ __forceinline__ uint32_t Pair(const __nv_bfloat16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// One warp per (16-row, 8-col) tile: grid (M/16, N/8).
__global__ void MmaSyncKernel(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, q = lane & 3, m0 = blockIdx.x * 16, n0 = blockIdx.y * 8;
  float d[4] = {C[(m0 + g) * N + n0 + 2 * q], C[(m0 + g) * N + n0 + 2 * q + 1],
                C[(m0 + g + 8) * N + n0 + 2 * q], C[(m0 + g + 8) * N + n0 + 2 * q + 1]};
  for (int ks = 0; ks < K / 16; ++ks) {
    const int k = ks * 16 + 2 * q;
    cuda_engine::Mma(d, Pair(A + (m0 + g) * K + k), Pair(A + (m0 + g + 8) * K + k),
                     Pair(A + (m0 + g) * K + k + 8), Pair(A + (m0 + g + 8) * K + k + 8),
                     Pair(B + (n0 + g) * K + k), Pair(B + (n0 + g) * K + k + 8));
  }
  D[(m0 + g) * N + n0 + 2 * q] = d[0];
  D[(m0 + g) * N + n0 + 2 * q + 1] = d[1];
  D[(m0 + g + 8) * N + n0 + 2 * q] = d[2];
  D[(m0 + g + 8) * N + n0 + 2 * q + 1] = d[3];
}

#if FP_PREFILL_SM90A
__device__ __forceinline__ void WgmmaSS8(float (&d)[1][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
      : "l"(da), "l"(db), "r"(1));
}
// A from registers, B K-major (trans-b 0).
__device__ __forceinline__ void WgmmaRS64K(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : FP_WGMMA_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
#endif

// One warpgroup. mode 0: SS m64n64; 1: SS m64n8 (8 launches of column tiles via n0 = 8 * blockIdx.x); 2: RS
// m64n64.
__global__ void WgmmaKernel(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* C, float* D,
                            int mode) {
#if FP_PREFILL_SM90A
  __shared__ __align__(1024) __nv_bfloat16 sA[M * K], sB[N * K];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int n0 = mode == 1 ? 8 * blockIdx.x : 0;
  for (int c = tid; c < M * K / 8; c += 128) {  // 16-byte chunks: row c / 8, chunk c % 8
    const int r = c / 8, ch = c % 8;
    *reinterpret_cast<uint4*>(sA + SwizzleOffset128<M>(r, ch)) =
        *reinterpret_cast<const uint4*>(A + r * K + ch * 8);
  }
  const int nb = mode == 1 ? 8 : N;
  for (int c = tid; c < nb * K / 8; c += 128) {
    const int r = c / 8, ch = c % 8;
    *reinterpret_cast<uint4*>(sB + SwizzleOffset128<N>(r, ch)) =
        *reinterpret_cast<const uint4*>(B + (n0 + r) * K + ch * 8);
  }
  FenceProxyAsync();
  __syncthreads();
  const int r0 = 16 * warp + g;
  if (mode == 1) {
    float d[1][4] = {{C[r0 * N + n0 + 2 * q], C[r0 * N + n0 + 2 * q + 1], C[(r0 + 8) * N + n0 + 2 * q],
                      C[(r0 + 8) * N + n0 + 2 * q + 1]}};
    WgmmaFence();
    for (int ks = 0; ks < K / 16; ++ks) WgmmaSS8(d, SmemDesc128(sA + ks * 16), SmemDesc128(sB + ks * 16));
    WgmmaCommit();
    WgmmaWait<0>();
    FenceOperand(d);
    D[r0 * N + n0 + 2 * q] = d[0][0];
    D[r0 * N + n0 + 2 * q + 1] = d[0][1];
    D[(r0 + 8) * N + n0 + 2 * q] = d[0][2];
    D[(r0 + 8) * N + n0 + 2 * q + 1] = d[0][3];
    return;
  }
  float d[8][4];
  for (int i = 0; i < 8; ++i) {
    d[i][0] = C[r0 * N + 8 * i + 2 * q];
    d[i][1] = C[r0 * N + 8 * i + 2 * q + 1];
    d[i][2] = C[(r0 + 8) * N + 8 * i + 2 * q];
    d[i][3] = C[(r0 + 8) * N + 8 * i + 2 * q + 1];
  }
  uint32_t a[4][4];
  for (int ks = 0; ks < 4; ++ks) {
    const int k = ks * 16 + 2 * q;
    a[ks][0] = Pair(A + r0 * K + k);
    a[ks][1] = Pair(A + (r0 + 8) * K + k);
    a[ks][2] = Pair(A + r0 * K + k + 8);
    a[ks][3] = Pair(A + (r0 + 8) * K + k + 8);
  }
  FenceOperand(a);
  WgmmaFence();
  for (int ks = 0; ks < K / 16; ++ks) {
    if (mode == 0)
      WgmmaSS64(d, SmemDesc128(sA + ks * 16), SmemDesc128(sB + ks * 16), 1);
    else
      WgmmaRS64K(d, a[ks], SmemDesc128(sB + ks * 16));
  }
  WgmmaCommit();
  WgmmaWait<0>();
  FenceOperand(d);
  FenceOperand(a);
  for (int i = 0; i < 8; ++i) {
    D[r0 * N + 8 * i + 2 * q] = d[i][0];
    D[r0 * N + 8 * i + 2 * q + 1] = d[i][1];
    D[(r0 + 8) * N + 8 * i + 2 * q] = d[i][2];
    D[(r0 + 8) * N + 8 * i + 2 * q + 1] = d[i][3];
  }
#endif
}

std::mt19937 rng(12345);
float Draw(int dist) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  if (dist == 0) return nd(rng);
  const float s = u(rng) < 0.5f ? -1.f : 1.f;
  return s * std::ldexp(1.f + u(rng), static_cast<int>(u(rng) * 40) - 20);  // wide exponents
}

struct Bufs {
  __nv_bfloat16 *A = nullptr, *B = nullptr;
  float *C = nullptr, *D = nullptr;
  Bufs() {
    CUDA_CHECK(cudaMalloc(&A, M * K * 2));
    CUDA_CHECK(cudaMalloc(&B, N * K * 2));
    CUDA_CHECK(cudaMalloc(&C, M * N * 4));
    CUDA_CHECK(cudaMalloc(&D, M * N * 4));
  }
  ~Bufs() {
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    cudaFree(D);
  }
};

// kernel 0: mma.sync; 1: wgmma SS m64n64; 2: wgmma SS m64n8; 3: wgmma RS m64n64. D poisoned first.
std::vector<float> RunKernel(int kernel, const std::vector<__nv_bfloat16>& a,
                             const std::vector<__nv_bfloat16>& b, const std::vector<float>& c, Bufs& g) {
  CUDA_CHECK(cudaMemcpy(g.A, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(g.B, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(g.C, c.data(), c.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(g.D, 0xff, M * N * 4));
  if (kernel == 0) MmaSyncKernel<<<dim3(M / 16, N / 8), 32>>>(g.A, g.B, g.C, g.D);
  if (kernel == 1) WgmmaKernel<<<1, 128>>>(g.A, g.B, g.C, g.D, 0);
  if (kernel == 2) WgmmaKernel<<<N / 8, 128>>>(g.A, g.B, g.C, g.D, 1);
  if (kernel == 3) WgmmaKernel<<<1, 128>>>(g.A, g.B, g.C, g.D, 2);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> d(M * N);
  CUDA_CHECK(cudaMemcpy(d.data(), g.D, M * N * 4, cudaMemcpyDeviceToHost));
  return d;
}

int Differ(const std::vector<float>& x, const std::vector<float>& y) {
  int n = 0;
  for (size_t i = 0; i < x.size(); ++i) n += std::isnan(x[i]) || std::memcmp(&x[i], &y[i], 4) != 0;
  return n;
}

// The same permutation of the 16 k of every k16 step, on an operand [rows][K].
std::vector<__nv_bfloat16> Permute(const std::vector<__nv_bfloat16>& v, int rows, const int* perm) {
  std::vector<__nv_bfloat16> o(v.size());
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < K; ++k) o[r * K + (k / 16) * 16 + perm[k % 16]] = v[r * K + k];
  }
  return o;
}

struct Operands {
  std::vector<__nv_bfloat16> a, b;
  std::vector<float> c;
};
Operands DrawOperands(int dist, bool zero_c) {
  Operands o{std::vector<__nv_bfloat16>(M * K), std::vector<__nv_bfloat16>(N * K), std::vector<float>(M * N)};
  for (auto& x : o.a) x = __float2bfloat16(Draw(dist));
  for (auto& x : o.b) x = __float2bfloat16(Draw(dist));
  for (auto& x : o.c) x = zero_c ? 0.f : Draw(dist) * 4.f;
  return o;
}

TEST(MmaBits, KOrderWithinAStepDoesNotChangeBits) {
  SKIP_WITHOUT_GPU();
  Bufs g;
  for (int trial = 0; trial < 24; ++trial) {
    const Operands o = DrawOperands(trial % 2, trial % 4 < 2);
    const auto ref = RunKernel(0, o.a, o.b, o.c, g);
    int perm[16];
    for (int i = 0; i < 16; ++i) perm[i] = i;
    std::shuffle(perm, perm + 16, rng);  // any order, across the step's two 8-k halves too
    EXPECT_EQ(0, Differ(ref, RunKernel(0, Permute(o.a, M, perm), Permute(o.b, N, perm), o.c, g)))
        << "trial " << trial;
  }
}

TEST(MmaBits, WgmmaGivesMmaSyncBits) {
  SKIP_WITHOUT_GPU();
  if (!cuda_engine::SkinnyWgmmaAvailable()) GTEST_SKIP() << "no sm_90a device or build";
  Bufs g;
  for (int trial = 0; trial < 24; ++trial) {
    const Operands o = DrawOperands(trial % 2, trial % 4 < 2);
    const auto ref = RunKernel(0, o.a, o.b, o.c, g);
    for (int kernel = 1; kernel <= 3; ++kernel) {
      EXPECT_EQ(0, Differ(ref, RunKernel(kernel, o.a, o.b, o.c, g)))
          << "trial " << trial << " wgmma variant " << kernel;
    }
  }
}

}  // namespace
}  // namespace fp
