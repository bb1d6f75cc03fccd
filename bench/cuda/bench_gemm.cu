// bench_gemm.cu — the decode GEMMs alone: the skinny tensor-core GEMM (engine default for n <= 64), the
// CUDA-core GEMV and cuBLAS on the Llama-3-8B matrices (qkv, o, gate|up, down, LM head) at n = 1 .. 64
// tokens, plus a sweep of the skinny kernel's template parameters (rows/warp NR, warps/block W, segments in
// flight U) that picked the engine's configuration. Rate = weight bytes / time against the d2d copy rate
// measured in the same run; the weights rotate through 1 GiB so no launch finds its matrix in L2. Median of
// 15 event-timed launches after 3 warm-ups, each behind a 100 us sleeping kernel that covers its host enqueue
// (so the events time the kernel, since session 10). The engine's kernel runs in both weight layouts (row-major
// and segment-tiled: WeightLayout). Usage: bench_gemm [--json PATH] [--quick] [--tiled] [--stream] [--ncu]
// [--n N] (--tiled: only 17, 32 and 64 tokens, the tiled schedule's stage shapes against the register schedule;
// --stream: only 1, 8 and 16 tokens, the streaming schedule's configurations in both layouts;
// --ncu: one launch of the default kernel per n, for profiling; --n: only that token count of the list).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "engine/cuda_engine_kernels.h"
#include "engine/cuda_skinny_gemm.cuh"
#include "engine/cuda_skinny_stream.cuh"
#include "engine/cuda_skinny_tiled.cuh"
#include "engine/cuda_skinny_tma.cuh"
#include "engine/cuda_skinny_wgmma.cuh"

namespace {

namespace ce = fp::cuda_engine;
using bf16 = __nv_bfloat16;

struct Shape {
  const char* name;
  int out, in;
};
constexpr Shape kShapes[] = {{"qkv", 6144, 4096},
                             {"o", 4096, 4096},
                             {"gate|up", 28672, 4096},
                             {"down", 4096, 14336},
                             {"lm_head", 128256, 4096}};

// One skinny configuration of the sweep.
struct Variant {
  std::string name;
  std::function<void(const ce::SkinnyArgs&, cudaStream_t)> launch;
};

template <int MT, int NR, int W, int U, bool C = true, int MB = 0, bool DB = true>
Variant V() {
  return {"skinny MT" + std::to_string(MT) + " NR" + std::to_string(NR) + " W" + std::to_string(W) + " U" +
              std::to_string(U) + (C ? " contig" : " inter") + (MB ? " minb" + std::to_string(MB) : "") +
              (DB ? "" : " nodb"),
          [](const ce::SkinnyArgs& a, cudaStream_t st) {
            const dim3 grid((a.out + 8 * NR - 1) / (8 * NR));
            CK(fp::LaunchKernel(false, ce::SkinnyGemmKernel<MT, NR, ce::Epilogue::kStore, W, U, C, MB, DB>,
                                grid, dim3(W * 32), 0, st, a));
          }};
}

std::vector<Variant> SweepFor(int n) {
  if (n <= 16) {
    return {V<1, 1, 4, 8, false>(), V<1, 1, 4, 8, true, 0, false>(), V<1, 1, 8, 8, true, 0, false>(),
            V<1, 2, 8, 4>(), V<1, 2, 8, 8, true, 0, false>(), V<1, 4, 8, 2>()};
  }
  if (n <= 32)
    return {V<2, 2, 4, 4, false>(), V<2, 2, 8, 4, true, 0, false>(), V<2, 4, 8, 2, true, 0, false>()};
  // NR 8: 64 rows a block halve x's L2 re-reads (gate|up 137 -> 125 us at n = 64, o slower: fewer blocks).
  return {V<4, 4, 4, 2, false>(), V<4, 2, 8, 2>(), V<4, 4, 8, 2, true, 0, false>(), V<4, 8, 8, 1, true, 0, false>()};
}

// A tiled-schedule configuration (cuda_skinny_tiled.cuh): BKS segments a stage, STAGES stages, MINB blocks/SM.
template <int BKS, int STAGES, int MINB = 1>
Variant VT() {
  return {"tiled bks" + std::to_string(BKS) + " st" + std::to_string(STAGES) + " minb" + std::to_string(MINB),
          [](const ce::SkinnyArgs& a, cudaStream_t st) {
            CK((ce::LaunchSkinnyTiledKernel<ce::Epilogue::kStore, BKS, STAGES, MINB>(a, false, st)));
          }};
}

// A wgmma-schedule configuration (cuda_skinny_wgmma.cuh): BKS segments a stage, STAGES; segment-tiled W (the
// deterministic mode's layout).
template <int BKS, int STAGES>
Variant VW() {
  return {"wgmma bks" + std::to_string(BKS) + " st" + std::to_string(STAGES),
          [](const ce::SkinnyArgs& a, cudaStream_t st) {
            ce::SkinnyArgs t = a;
            t.layout = ce::WeightLayout::kSegmentTiled;
            CK((ce::LaunchSkinnyWgmmaKernel<ce::Epilogue::kStore, BKS, STAGES>(t, false, st)));
          }};
}

// A TMA-schedule configuration (cuda_skinny_tma.cuh): BKS segments a stage, STAGES, clusters of C blocks a
// tile; segment-tiled W.
template <int BKS, int STAGES, int C>
Variant VM() {
  return {"tma bks" + std::to_string(BKS) + " st" + std::to_string(STAGES) + " c" + std::to_string(C),
          [](const ce::SkinnyArgs& a, cudaStream_t st) {
            ce::SkinnyArgs t = a;
            t.layout = ce::WeightLayout::kSegmentTiled;
            CK((ce::LaunchSkinnyTmaKernel<ce::Epilogue::kStore, BKS, STAGES, C>(t, false, st)));
          }};
}

// A streaming configuration (cuda_skinny_stream.cuh): NR row tiles a tile, RING stages, MINB blocks/SM; the
// args' layout.
template <int NR, int RING, int MINB>
Variant VS() {
  return {"stream NR" + std::to_string(NR) + " ring" + std::to_string(RING) + " minb" + std::to_string(MINB),
          [](const ce::SkinnyArgs& a, cudaStream_t st) {
            static const int sms = [] {
              int v = 0;
              CK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
              return v;
            }();
            CK((ce::LaunchSkinnyStreamKernel<NR, ce::Epilogue::kStore, RING, MINB>(a, sms, false, st)));
          }};
}

}  // namespace

// Keeps the GPU busy for `ns` nanoseconds, so that a timed launch's host work (tensor-map encoding, cuBLAS's
// heuristics) runs while it waits, and events around the launch time the kernel alone.
__global__ void HostCover(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines survive an abort
  std::string json_path;
  bool quick = false, ncu = false, tiled = false, stream = false;
  int only_n = 0;  // --n: one token count of the list
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else if (a == "--quick")
      quick = true;
    else if (a == "--ncu")
      ncu = true;
    else if (a == "--tiled")
      tiled = true;
    else if (a == "--stream")
      stream = true;
    else if (a == "--n" && i + 1 < argc)
      only_n = std::stoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_gemm [--json PATH] [--quick] [--tiled] [--stream] [--ncu] [--n N]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const size_t pool_elems = size_t{1} << 29;  // 1 GiB of bf16 weights, rotated through
  bf16* pool = nullptr;
  CK(cudaMalloc(&pool, pool_elems * sizeof(bf16)));
  OK(ce::LaunchRandomBf16(pool, pool_elems, 1, 0.05f, st));
  const int max_n = 64, max_in = 14336, max_out = 128256;
  bf16* x = nullptr;
  float* y = nullptr;
  CK(cudaMalloc(&x, size_t{2} * max_n * max_in));
  CK(cudaMalloc(&y, size_t{4} * max_n * max_out));
  bf16* h = nullptr;  // SwiGLU outputs [max_n, max_out / 2]
  CK(cudaMalloc(&h, size_t{2} * max_n * max_out / 2));
  OK(ce::LaunchRandomBf16(x, size_t{max_n} * max_in, 2, 1.f, st));
  cublasHandle_t blas;
  cublasCreate(&blas);
  cublasSetStream(blas, st);
  const double copy_tbps = ncu ? 0 : fp::bench::CopyTbps(st);
  std::printf("device: %s, %d SMs | d2d copy %.2f TB/s\n", prop.name, prop.multiProcessorCount, copy_tbps);

  if (stream) {
    std::printf("stream blocks/SM: NR2 ring6 minb2 %d, NR4 ring3 minb2 %d\n",
                ce::SkinnyStreamBlocksPerSm<2, ce::Epilogue::kStore, 6, 2>(),
                ce::SkinnyStreamBlocksPerSm<4, ce::Epilogue::kStore, 3, 2>());
  }
  if (ncu) {  // one launch each of the engine's kernel for o (n = 1, 16, 64) and gate|up (n = 64): `ncu -k
              // regex:Skinny bench_gemm --ncu`
    const auto tiled_w = ce::WeightLayout::kSegmentTiled;  // the deterministic mode's layout
    for (int n : {1, 16, 64}) OK(ce::LaunchSkinnyGemm(pool, 4096, 4096, x, n, y, 0.f, false, st, tiled_w));
    OK(ce::LaunchSkinnyGemm(pool, 28672, 4096, x, 64, y, 0.f, false, st, tiled_w));  // gate|up: the tiled schedule
    CK(cudaStreamSynchronize(st));
    return 0;
  }

  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  size_t rot = 0;
  // Median time of `fn(w)` with w rotating through the pool.
  auto time_us = [&](const Shape& s, const std::function<void(const bf16*)>& fn) {
    const size_t elems = size_t(s.out) * s.in;
    std::vector<double> t;
    for (int i = 0; i < 18; ++i) {
      if (rot + elems > pool_elems) rot = 0;
      const bf16* w = pool + rot;
      rot += (elems + 127) / 128 * 128;
      HostCover<<<1, 1, 0, st>>>(100000);
      CK(cudaEventRecord(e0, st));
      fn(w);
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 3) t.push_back(ms * 1e3);
    }
    return fp::bench::Median(t);
  };

  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-8s %3s %-28s %9s %8s %7s\n", "matrix", "n", "kernel", "us", "GB/s", "%copy");
  const std::vector<int> ns = tiled    ? std::vector<int>{17, 32, 64}
                               : stream ? std::vector<int>{1, 8, 16}
                                        : std::vector<int>{1, 2, 4, 8, 16, 32, 64};
  for (int n : ns) {
    if (only_n != 0 && n != only_n) continue;
    for (const Shape& s : kShapes) {
      if (quick && std::string(s.name) != "o" && std::string(s.name) != "gate|up") continue;
      const double bytes = 2.0 * s.out * s.in;
      auto report = [&](const std::string& kernel, double us) {
        const double gbs = bytes / (us * 1e-6) / 1e9;
        std::printf("%-8s %3d %-28s %9.1f %8.0f %6.1f%%\n", s.name, n, kernel.c_str(), us, gbs,
                    100 * gbs / (copy_tbps * 1e3));
        rows.push_back({{"matrix", s.name},
                        {"n", n},
                        {"out", s.out},
                        {"in", s.in},
                        {"kernel", kernel},
                        {"time_us", us},
                        {"gb_per_s", gbs},
                        {"ratio_to_copy", gbs / (copy_tbps * 1e3)}});
      };
      report("cublas", time_us(s, [&](const bf16* w) {
               const float one = 1.f, zero = 0.f;
               cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.out, n, s.in, &one, w, CUDA_R_16BF, s.in, x,
                            CUDA_R_16BF, s.in, &zero, y, CUDA_R_32F, s.out, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT);
             }));
      // The engine's schedules in both weight layouts (cuda_engine_kernels.h: WeightLayout).
      const ce::WeightLayout kRow = ce::WeightLayout::kRowMajor, kTiledW = ce::WeightLayout::kSegmentTiled;
      auto engine_rows = [&] {
        for (const ce::WeightLayout lay : {kRow, kTiledW}) {
          const std::string tag = lay == kRow ? "" : " tiled-W";
          report("skinny (engine)" + tag, time_us(s, [&](const bf16* w) {
                   OK(ce::LaunchSkinnyGemm(w, s.out, s.in, x, n, y, 0.f, false, st, lay));
                 }));
          if (std::string(s.name) == "gate|up") {
            report("swiglu skinny (engine)" + tag, time_us(s, [&](const bf16* w) {
                     OK(ce::LaunchSkinnyGemmSwiGlu(w, s.out / 2, s.in, x, n, h, false, st, lay));
                   }));
          }
        }
      };
      if (stream) {  // the streaming schedule's configurations (n <= 16) in both layouts, against the fp32 GEMV
        if (n == 1) {
          report("gemv (engine)",
                 time_us(s, [&](const bf16* w) { OK(ce::LaunchGemvBf16(w, s.out, s.in, x, n, y, 0.f, st)); }));
        }
        engine_rows();
        // shared memory a block: NR2 ring3/4/6 56/72/104 KiB, NR1 ring6 76, NR4 ring3/4 88/112
        for (const Variant& v : {VS<2, 3, 4>(), VS<2, 4, 3>(), VS<2, 6, 2>(), VS<1, 6, 2>(), VS<4, 3, 2>(),
                                 VS<4, 4, 2>()}) {
          for (const ce::WeightLayout lay : {kRow, kTiledW}) {
            report(v.name + (lay == kRow ? "" : " tiled-W"), time_us(s, [&](const bf16* w) {
                     v.launch(ce::SkinnyArgs{w, x, y, h, s.out, s.in, n, 0.f, lay}, st);
                   }));
          }
        }
        continue;
      }
      if (n <= ce::kGemvMaxRows && !tiled) {  // (n = 2, 4: where the GEMV stops paying, for gemv_max_batch)
        report("gemv (engine)",
               time_us(s, [&](const bf16* w) { OK(ce::LaunchGemvBf16(w, s.out, s.in, x, n, y, 0.f, st)); }));
        for (int depth : {4, 8, 16}) {
          report("gemv d" + std::to_string(depth), time_us(s, [&](const bf16* w) {
                   OK(ce::LaunchGemvBf16(w, s.out, s.in, x, n, y, 0.f, st, false, depth));
                 }));
        }
      }
      engine_rows();
      if (tiled) {
        report("skinny register MT4 NR4 U2", time_us(s, [&](const bf16* w) {
                 CK((ce::LaunchSkinnyKernel<4, 4, ce::Epilogue::kStore, 8, 2, true, 0, false>(
                     ce::SkinnyArgs{w, x, y, nullptr, s.out, s.in, n, 0.f}, false, st)));
               }));
        std::vector<Variant> vs = {VT<2, 4, 2>()};
        if (ce::SkinnyWgmmaAvailable()) {
          for (const Variant& v : {VW<2, 3>(), VW<4, 3>()}) vs.push_back(v);
          for (const Variant& v : {VM<4, 3, 1>(), VM<4, 6, 1>(), VM<2, 6, 1>(), VM<8, 3, 1>(), VM<4, 3, 2>(),
                                   VM<4, 6, 2>(), VM<8, 3, 2>(), VM<4, 3, 4>()}) {
            vs.push_back(v);
          }
        }
        for (const Variant& v : vs) {
          report(v.name, time_us(s, [&](const bf16* w) {
                   v.launch(ce::SkinnyArgs{w, x, y, nullptr, s.out, s.in, n, 0.f}, st);
                 }));
        }
        continue;
      }
      for (const Variant& v : n == 2 || n == 4 ? std::vector<Variant>{} : SweepFor(n)) {
        report(v.name, time_us(s, [&](const bf16* w) {
                 v.launch(ce::SkinnyArgs{w, x, y, nullptr, s.out, s.in, n, 0.f}, st);
               }));
      }
    }
  }
  const std::string date = fp::bench::TodayUtc();
  if (!json_path.empty()) {
    std::ofstream(json_path) << nlohmann::json{{"device", prop.name},
                                               {"date", date},
                                               {"floors", {{"copy_tbps", copy_tbps}}},
                                               {"notes",
                                                "bench/cuda/bench_gemm.cu; Llama-3-8B matrices, bf16 "
                                                "weights rotated through 1 GiB, fp32 out; median of 15 "
                                                "launches, each behind a sleeping kernel covering its host "
                                                "enqueue (kernel time)"},
                                               {"rows", rows}}
                                    .dump(2)
                             << "\n";
  }
  return 0;
}
