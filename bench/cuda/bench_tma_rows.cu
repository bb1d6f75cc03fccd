// bench_tma_rows.cu — how fast one block streams a skinny-GEMM stage ring through TMA, by the shape of its bulk
// copies: the question behind cuda_skinny_tma.cuh's x windows. One block an SM, a producer lane issuing 4-segment
// stages into a 3-deep full/empty mbarrier ring, four consumer warps releasing each stage (optionally running the
// schedule's wgmma on it, operands unchecked). W: 64-row tiles of the segment-tiled layout, a box of 64-byte rows
// a segment (the engine's), or one contiguous 1-D bulk copy a stage (a layout the engine does not have: the
// ceiling for W). x: [64 tokens][in], boxes of 64-byte rows (session 9) or 128-byte two-segment windows
// (session 10). W is SMs x 64 rows x in (69 MB at in 4096: larger than L2). Back-to-back launches timed with
// events, median of 12 batches of 50 after a warm-up batch. sm_90a only. Usage: bench_tma_rows [--json PATH]
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "engine/cuda_skinny_tma.cuh"

namespace {

namespace ce = fp::cuda_engine;
namespace pf = fp::prefill;

constexpr int kBks = 4, kStages = 3;
constexpr int kWStage = kBks * 4096, kXStage = kBks * 4096, kStage = kWStage + kXStage;
constexpr int kSmem = kStages * kStage + 1024 + 2 * kStages * 8;
enum WFrom { kWNone, kWRows64, kWBulk };
enum XFrom { kXNone, kXRows64, kXRows128 };

#if FP_SKINNY_SM90A
__device__ __forceinline__ void BulkCopy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
#endif

// Grid: one block a 64-row tile; 160 threads (4 consumer warps + the producer warp).
template <WFrom W, XFrom X, bool kMath>
__global__ void __launch_bounds__(160) RingKernel(const __grid_constant__ CUtensorMap tw,
                                                  const __grid_constant__ CUtensorMap tx64,
                                                  const __grid_constant__ CUtensorMap tx128, const char* w, int nseg,
                                                  float* sink) {
#if FP_SKINNY_SM90A
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t raw = pf::SmemAddr(smem), ring = (raw + 1023u) & ~1023u;
  uint64_t* const full = reinterpret_cast<uint64_t*>(smem + (ring - raw) + kStages * kStage);
  uint64_t* const empty = full + kStages;
  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31, tile = blockIdx.x;
  const int niter = nseg / kBks;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      pf::MbarInit(&full[s], 1);
      pf::MbarInit(&empty[s], 4);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == 4) {
    if (lane == 0) {
      constexpr uint32_t bytes = (W != kWNone ? kWStage : 0) + (X != kXNone ? kXStage : 0);
      for (int it = 0; it < niter; ++it) {
        const int st = it % kStages;
        if (it >= kStages) pf::MbarWait(&empty[st], (it / kStages - 1) & 1);
        const uint32_t bar = pf::SmemAddr(&full[st]), dst = ring + static_cast<uint32_t>(st * kStage);
        ce::TmaExpectTx(bar, bytes);
        if (W == kWRows64) {
          for (int j = 0; j < kBks; ++j) ce::TmaLoad4(dst + j * 4096, &tw, 0, 0, it * kBks + j, tile * 4, bar);
        }
        if (W == kWBulk) BulkCopy(dst, w + (size_t(tile) * nseg + it * kBks) * 4096, kWStage, bar);
        if (X == kXRows64) ce::TmaLoad3(dst + kWStage, &tx64, 0, 0, it * kBks, bar);
        if (X == kXRows128) {
          for (int m = 0; m < kBks / 2; ++m) {
            ce::TmaLoad3(dst + kWStage + m * 8192, &tx128, 0, 0, it * kBks + 2 * m, bar);
          }
        }
      }
    }
    return;
  }
  float acc[8][4] = {};
  for (int it = 0; it < niter; ++it) {
    const int st = it % kStages;
    pf::MbarWait(&full[st], (it / kStages) & 1);
    if constexpr (kMath) {  // the schedule's consumer work on the stage: A from shared memory, 8 wgmma k16 steps
      const uint32_t w_st = ring + static_cast<uint32_t>(st * kStage), x_st = w_st + kWStage;
      uint32_t a[kBks][2][4];
#pragma unroll
      for (int j = 0; j < kBks; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            asm volatile("ld.shared.b32 %0, [%1];"
                         : "=r"(a[j][h][e])
                         : "r"(x_st + j * 4096 + tid * 16 + 8 * h + 4 * e));
      pf::FenceOperand(acc);
      pf::WgmmaFence();
#pragma unroll
      for (int j = 0; j < kBks; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) ce::WgmmaRS64K(acc, a[j][h], ce::SkinnySmemDesc64(w_st + j * 4096 + 32 * h));
      pf::WgmmaCommit();
      pf::WgmmaWait<0>();
      pf::FenceOperand(acc);
    }
    __syncwarp();
    if (lane == 0) pf::MbarArrive(&empty[st]);
  }
  float s = 0;
  for (int i = 0; i < 8; ++i) s += acc[i][0] + acc[i][1] + acc[i][2] + acc[i][3];
  if (s == 1234.5f) sink[tid] = s;  // never true for these operands; keeps the math
#endif
}

// A tensor map the engine does not build (session 9's x boxes of 64-byte rows); aborts on failure.
void Encode(CUtensorMap* map, void* base, cuuint32_t rank, const cuuint64_t* dims, const cuuint64_t* strides,
            const cuuint32_t* box, CUtensorMapSwizzle swizzle) {
  if (!ce::EncodeBf16TensorMap(map, base, rank, dims, strides, box, swizzle)) {
    std::fprintf(stderr, "tensor map encoding failed\n");
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--json" && i + 1 < argc) json_path = argv[++i];
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::fprintf(stderr, "bench_tma_rows: needs an sm_90 device, found %d.%d\n", prop.major, prop.minor);
    return 1;
  }
  const int blocks = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs; one block an SM, 64-row tiles, 64 tokens, %d-segment stages x %d\n", prop.name,
              blocks, kBks, kStages);
  std::printf("%6s %-30s %9s %9s %12s\n", "in", "copies", "us", "W TB/s", "GB/s a block");
  nlohmann::json rows = nlohmann::json::array();
  float* sink = nullptr;
  CK(cudaMalloc(&sink, 4096));
  for (const int in : {4096, 14336}) {
    const int nseg = in / 32;
    const size_t w_bytes = size_t(blocks) * 64 * in * 2, x_bytes = size_t(64) * in * 2;
    char *w = nullptr, *x = nullptr;
    CK(cudaMalloc(&w, w_bytes));
    CK(cudaMalloc(&x, x_bytes));
    CK(cudaMemset(w, 0x11, w_bytes));
    CK(cudaMemset(x, 0x22, x_bytes));
    CUtensorMap tw, tx64, tx128;  // W and the x windows: the engine's maps (W is blocks x 64 rows, segment-tiled)
    const ce::SkinnyArgs shape{reinterpret_cast<const __nv_bfloat16*>(w), reinterpret_cast<const __nv_bfloat16*>(x),
                               nullptr, nullptr, blocks * 64, in, 64, 0.f, ce::WeightLayout::kSegmentTiled};
    CK(ce::SkinnyTmaMaps(shape, &tw, &tx128));
    const cuuint64_t x64_dims[3] = {32, 64, cuuint64_t(nseg)}, x_strides[2] = {cuuint64_t(in) * 2, 64};
    const cuuint32_t x64_box[3] = {32, 64, kBks};
    Encode(&tx64, x, 3, x64_dims, x_strides, x64_box, CU_TENSOR_MAP_SWIZZLE_64B);

    auto run = [&](const char* name, auto kernel, double copied_per_block) {
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      cudaEvent_t e0, e1;
      CK(cudaEventCreate(&e0));
      CK(cudaEventCreate(&e1));
      std::vector<double> t;
      for (int rep = 0; rep < 13; ++rep) {
        CK(cudaEventRecord(e0));
        for (int i = 0; i < 50; ++i) kernel<<<blocks, 160, kSmem>>>(tw, tx64, tx128, w, nseg, sink);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep > 0) t.push_back(ms * 1e3 / 50);
      }
      CK(cudaGetLastError());
      const double us = fp::bench::Median(t);
      const double w_tbps = double(w_bytes) / us / 1e6, block_gbs = copied_per_block / us / 1e3;
      std::printf("%6d %-30s %9.2f %9.2f %12.1f\n", in, name, us, w_tbps, block_gbs);
      rows.push_back({{"in", in}, {"copies", name}, {"time_us", us}, {"w_tbps", w_tbps}, {"block_gbs", block_gbs}});
    };
    const double wb = double(w_bytes) / blocks, xb = double(x_bytes);
    run("W 64-B rows + x 64-B rows", RingKernel<kWRows64, kXRows64, false>, wb + xb);
    run("W 64-B rows + x 128-B rows", RingKernel<kWRows64, kXRows128, false>, wb + xb);
    run("W 64-B rows + x 128-B + math", RingKernel<kWRows64, kXRows128, true>, wb + xb);
    run("W 64-B rows only", RingKernel<kWRows64, kXNone, false>, wb);
    run("x 64-B rows only", RingKernel<kWNone, kXRows64, false>, xb);
    run("x 128-B rows only", RingKernel<kWNone, kXRows128, false>, xb);
    run("W 1-D bulk only", RingKernel<kWBulk, kXNone, false>, wb);
    run("W 1-D bulk + x 128-B rows", RingKernel<kWBulk, kXRows128, false>, wb + xb);
    CK(cudaFree(w));
    CK(cudaFree(x));
  }
  if (!json_path.empty()) {
    const nlohmann::json j = {{"device", prop.name},
                              {"date", fp::bench::TodayUtc()},
                              {"notes", "bench/cuda/bench_tma_rows.cu: TMA ring streaming rate by copy shape"},
                              {"rows", rows}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
