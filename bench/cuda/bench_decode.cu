// bench_decode.cu — times the CUDA decode path on the issue's shapes against the device-to-device copy floor
// measured in the same run, and writes JSON (DESIGN.md "Evidence" format) with --json PATH.
//
// Bytes counted per launch: every paged K and V byte of every sequence once, plus the anchor's K and V ONCE per
// launch (not once per sequence: it is shared and served from L2 after the first read); q and o are not counted
// (under 0.1% here). rate = bytes / median time; ratio_to_floor = rate / copy bandwidth, where the copy bandwidth
// counts bytes read + written by cudaMemcpyAsync device-to-device of 2 GiB. Inputs are random bf16 (never zeros),
// pages shuffled over the pool; every shape's KV (>= 100 MB) exceeds L2, so no input rotation is needed.
// Usage: bench_decode [--json PATH] [--reps N] [--split TOKENS] [--warps 4|8] [--sweep]
// --sweep also times every (warps 4/8) x (split 1024..16384) x (anchor ride/own) per shape (the "sweep" rows of
// the JSON; docs/kernel-spec.md "Tuning" reads them); the main rows use the defaults (DefaultDecodeConfig, fused
// merge) and also time the same plan with the merge as its own kernel (params.merge_kernel_us).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cuda_check.h"
#include "fieldprint/attention.h"
#include "fieldprint/attention_cuda.h"

namespace {

using fp::DeviceBuffer;

__global__ void FillRandomBf16(uint16_t* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (static_cast<float>(z >> 40) / 16777216.f) * 2.f - 1.f;  // uniform [-1, 1)
    uint32_t bits;
    memcpy(&bits, &u, 4);
    x[i] = static_cast<uint16_t>(bits >> 16);
  }
}

DeviceBuffer Alloc(size_t bytes) {
  auto r = DeviceBuffer::Allocate(std::max<size_t>(bytes, 256));
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

void Fill(DeviceBuffer& b, uint64_t seed) {
  FillRandomBf16<<<1024, 256>>>(static_cast<uint16_t*>(b.get()), b.bytes() / 2, seed);
  CUDA_CHECK(cudaGetLastError());
}

template <typename F>
double MedianUs(F&& launch, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) launch();
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps));
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(ev[2 * i]));
    launch();
    CUDA_CHECK(cudaEventRecord(ev[2 * i + 1]));
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    t.push_back(ms * 1e3);
  }
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<size_t>(reps / 2)];
}

struct Shape {
  std::string name;
  int B, ctx, A, Hq, Hkv, d, P;
};

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int reps = 100, split = 0, warps = 0;
  bool sweep = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--split") && i + 1 < argc) split = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--warps") && i + 1 < argc) warps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--sweep")) sweep = true;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

  // ---- floor: device-to-device copy, 2 GiB, bytes read + written ----
  const size_t copy_bytes = size_t{2} << 30;
  double copy_tbps = 0;
  {
    DeviceBuffer a = Alloc(copy_bytes), b = Alloc(copy_bytes);
    Fill(a, 1);
    const double us = MedianUs([&] { CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), copy_bytes, cudaMemcpyDeviceToDevice)); },
                               3, 20);
    copy_tbps = 2.0 * copy_bytes / (us * 1e-6) / 1e12;
  }
  std::printf("d2d copy: %.3f TB/s (read + write)\n", copy_tbps);

  const std::vector<Shape> shapes = {
      {"llama-B64-ctx4096-A1024", 64, 4096, 1024, 32, 8, 128, 16},
      {"llama-B8-ctx32768-A4096", 8, 32768, 4096, 32, 8, 128, 16},
      {"llama-B256-ctx1024-A256", 256, 1024, 256, 32, 8, 128, 16},
      {"llama-B1-ctx131072-A1024", 1, 131072, 1024, 32, 8, 128, 16},
      {"smollm2-B64-ctx2048-A256", 64, 2048, 256, 9, 3, 64, 16},
  };
  nlohmann::json rows = nlohmann::json::array(), sweep_rows = nlohmann::json::array();
  std::printf("%-28s %10s %9s %8s %8s %6s %6s\n", "shape", "time_us", "TB/s", "ratio", "floor_us", "items", "splits");
  for (const Shape& s : shapes) {
    const int pages_per_seq = (s.ctx + s.P - 1) / s.P, num_pages = s.B * pages_per_seq;
    const size_t row = size_t(s.Hkv) * s.d;  // elements per token
    DeviceBuffer q = Alloc(size_t(s.B) * s.Hq * s.d * 2), o = Alloc(size_t(s.B) * s.Hq * s.d * 2);
    DeviceBuffer k = Alloc(size_t(num_pages) * s.P * row * 2), v = Alloc(size_t(num_pages) * s.P * row * 2);
    DeviceBuffer ak = Alloc(size_t(s.A) * row * 2), av = Alloc(size_t(s.A) * row * 2);
    DeviceBuffer lse = Alloc(size_t(s.B) * s.Hq * 4), gamma = Alloc(size_t(s.Hq) * 4);
    Fill(q, 2);
    Fill(k, 3);
    Fill(v, 4);
    Fill(ak, 5);
    Fill(av, 6);
    std::vector<float> g(static_cast<size_t>(s.Hq));
    for (int h = 0; h < s.Hq; ++h) g[static_cast<size_t>(h)] = 0.25f * static_cast<float>(h % 5) - 0.5f;
    CUDA_CHECK(cudaMemcpy(gamma.get(), g.data(), g.size() * 4, cudaMemcpyHostToDevice));
    std::vector<int32_t> table(static_cast<size_t>(num_pages)), indptr(static_cast<size_t>(s.B) + 1), lens(static_cast<size_t>(s.B), s.ctx);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(42));
    std::iota(indptr.begin(), indptr.end(), 0);
    DeviceBuffer dt = Alloc(table.size() * 4), di = Alloc(indptr.size() * 4), dl = Alloc(lens.size() * 4);
    CUDA_CHECK(cudaMemcpy(dt.get(), table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(di.get(), indptr.data(), indptr.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dl.get(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));

    fp::AttentionParams p;
    const auto dev = fp::Device::kCuda;
    p.q = fp::MakeContiguous(q.get(), fp::DType::kBF16, {s.B, s.Hq, s.d}, dev);
    p.o = fp::MakeContiguous(o.get(), fp::DType::kBF16, {s.B, s.Hq, s.d}, dev);
    p.k_pool = fp::MakeContiguous(k.get(), fp::DType::kBF16, {num_pages, s.P, s.Hkv, s.d}, dev);
    p.v_pool = fp::MakeContiguous(v.get(), fp::DType::kBF16, {num_pages, s.P, s.Hkv, s.d}, dev);
    p.anchor_k = fp::MakeContiguous(ak.get(), fp::DType::kBF16, {s.A, s.Hkv, s.d}, dev);
    p.anchor_v = fp::MakeContiguous(av.get(), fp::DType::kBF16, {s.A, s.Hkv, s.d}, dev);
    p.lse = static_cast<float*>(lse.get());
    p.gamma = static_cast<const float*>(gamma.get());
    p.scale = 1.f / std::sqrt(static_cast<float>(s.d));
    p.causal = true;
    p.batch = {s.B, static_cast<const int32_t*>(di.get()), static_cast<const int32_t*>(dl.get()),
               static_cast<const int32_t*>(dt.get()), pages_per_seq};
    const fp::AttentionBatch hb = {s.B, indptr.data(), lens.data(), table.data(), pages_per_seq};
    struct Timed {
      double us;
      int items, splits, split_tokens, warps;
    };
    auto time_plan = [&](const fp::DecodeOptions& opt) -> Timed {
      auto plan = fp::AttentionDecodePlan::Create(p, hb, opt);
      if (!plan.ok()) {
        std::fprintf(stderr, "%s: %s\n", s.name.c_str(), plan.status().ToString().c_str());
        std::exit(1);
      }
      const double t = MedianUs([&] {
        const fp::Status st = plan->Run(p);
        if (!st.ok()) {
          std::fprintf(stderr, "run: %s\n", st.ToString().c_str());
          std::exit(1);
        }
      }, 10, reps);
      return {t, plan->num_work_items(), plan->max_splits(), plan->split_tokens(), plan->warps()};
    };
    fp::DecodeOptions main_opt;
    main_opt.split_tokens = split;
    main_opt.warps = warps;
    const Timed main_t = time_plan(main_opt);
    const double us = main_t.us;
    fp::DecodeOptions graph_opt = main_opt;  // graph mode: lengths read on the device, capacity = the table row
    graph_opt.max_kv_len = pages_per_seq * s.P;
    const Timed graph_t = time_plan(graph_opt);
    fp::DecodeOptions kernel_merge_opt = main_opt;  // the split-KV merge as its own kernel (A/B of the fused merge)
    kernel_merge_opt.fused_merge = false;
    const Timed kernel_merge_t = time_plan(kernel_merge_opt);
    const double bytes = 2.0 * 2.0 * (double(s.B) * s.ctx + s.A) * double(row);  // K+V, bf16, anchor once
    const double tbps = bytes / (us * 1e-6) / 1e12;
    const double floor_us = bytes / (copy_tbps * 1e12) * 1e6;
    std::printf("%-28s %10.1f %9.3f %8.3f %8.1f %6d %6d (split %d, %d warps; graph-mode plan %.1f us; merge "
                "kernel %.1f us)\n",
                s.name.c_str(), us, tbps, tbps / copy_tbps, floor_us, main_t.items, main_t.splits, main_t.split_tokens,
                main_t.warps, graph_t.us, kernel_merge_t.us);
    if (sweep) {
      for (int w : {4, 8}) {
        for (int sp : {1024, 2048, 4096, 8192, 16384}) {
          for (auto an : {fp::AnchorSplit::kRide, fp::AnchorSplit::kOwn}) {
            fp::DecodeOptions o;
            o.split_tokens = sp;
            o.warps = w;
            o.anchor_split = an;
            const Timed t = time_plan(o);
            const double r = bytes / (t.us * 1e-6) / 1e12 / copy_tbps;
            const char* an_name = an == fp::AnchorSplit::kOwn ? "own" : "ride";
            std::printf("  sweep %-26s warps %d split %5d anchor %-4s %8.1f us %5.1f%% items %5d\n", s.name.c_str(), w,
                        sp, an_name, t.us, 100 * r, t.items);
            sweep_rows.push_back({{"name", s.name}, {"warps", w}, {"split_tokens", sp}, {"anchor", an_name},
                                  {"time_us", t.us}, {"ratio_to_floor", r}, {"work_items", t.items}});
          }
        }
      }
    }
    rows.push_back({{"name", s.name},
                    {"params", {{"B", s.B}, {"ctx", s.ctx}, {"A", s.A}, {"Hq", s.Hq}, {"Hkv", s.Hkv}, {"d", s.d},
                                {"page", s.P}, {"dtype", "bf16"}, {"split_tokens", main_t.split_tokens},
                                {"warps", main_t.warps}, {"gamma", true}, {"work_items", main_t.items},
                                {"max_splits", main_t.splits}, {"graph_mode_plan_us", graph_t.us},
                                {"merge_kernel_us", kernel_merge_t.us}}},
                    {"time_us", us},
                    {"rate", tbps},
                    {"unit", "TB/s"},
                    {"bytes", bytes},
                    {"floor_us", floor_us},
                    {"ratio_to_floor", tbps / copy_tbps},
                    {"peers", nlohmann::json::object()}});
  }
  if (!json_path.empty()) {
    nlohmann::json j = {{"device", prop.name},
                        {"floors", {{"copy_tbps", copy_tbps}}},
                        {"bytes_counted", "paged K+V of every sequence once + anchor K+V once per launch; q/o not counted"},
                        {"reps", reps},
                        {"rows", rows},
                        {"sweep", sweep_rows}};
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fputs(j.dump(2).c_str(), f);
    std::fclose(f);
  }
  return 0;
}
