// bench_hash.cu — SHA-256 throughput, CPU vs GPU, over tensor sizes 4 KiB .. 1 GiB (powers of 4).
// Rows per size: GPU plain chunks (independent chunks, one thread each, no tree), GPU full tree (leaves +
// nodes, GpuTreeHasher::Run), CPU tree on one core and on all cores (std::thread::hardware_concurrency), for
// chunk sizes 1, 2 and 4 KiB (CPU at 4 KiB only), plus KV-page-shaped batches. GPU time: CUDA events around
// each run, 3 warm-ups, median of many runs. Prints the card and a table; --json PATH writes DESIGN.md's format.
#include <cuda_runtime.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fieldprint/tree_hash.h"
#include "fieldprint/tree_hash_cuda.h"

#include "bench_util.h"

namespace {


// Median microseconds of fn() enqueued on stream, timed with events; reps chosen so a config takes ~0.2 s.
template <typename Fn>
double GpuTimeUs(cudaStream_t stream, Fn&& fn) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  CK(cudaStreamSynchronize(stream));
  std::vector<double> t;
  double total = 0;
  while ((t.size() < 10 || total < 2e5) && t.size() < 200) {
    CK(cudaEventRecord(a, stream));
    fn();
    CK(cudaEventRecord(b, stream));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e3);
    total += ms * 1e3;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return fp::bench::Median(t);
}

template <typename Fn>
double CpuTimeUs(Fn&& fn, int min_reps) {
  fn();
  std::vector<double> t;
  double total = 0;
  while (static_cast<int>(t.size()) < min_reps || (total < 5e5 && t.size() < 50)) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    t.push_back(us);
    total += us;
  }
  return fp::bench::Median(t);
}

__global__ void FillKernel(uint64_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
    p[i] = x;
  }
}

std::string SizeName(size_t n) {
  if (n >= (size_t{1} << 30)) return std::to_string(n >> 30) + " GiB";
  if (n >= (size_t{1} << 20)) return std::to_string(n >> 20) + " MiB";
  return std::to_string(n >> 10) + " KiB";
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_path = argv[++i];
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("card: %s, %d SMs, L2 %d MiB; host threads: %d\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, cores);

  const size_t kMax = size_t{1} << 30;
  uint8_t* dev = nullptr;
  CK(cudaMalloc(&dev, kMax + 4096));
  FillKernel<<<1024, 256>>>(reinterpret_cast<uint64_t*>(dev), (kMax + 4096) / 8, std::random_device{}());
  CK(cudaGetLastError());
  std::vector<uint8_t> host(kMax);
  CK(cudaMemcpy(host.data(), dev, kMax, cudaMemcpyDeviceToHost));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  fp::Digest* d_out = nullptr;
  CK(cudaMalloc(&d_out, (kMax / 1024 + 1024) * 32));

  // Copy floor: device-to-device 1 GiB (bytes read + written).
  uint8_t* dev2 = nullptr;
  CK(cudaMalloc(&dev2, kMax / 2));
  const double copy_us = GpuTimeUs(stream, [&] { CK(cudaMemcpyAsync(dev2, dev, kMax / 2, cudaMemcpyDeviceToDevice, stream)); });
  const double copy_tbps = 2.0 * (kMax / 2) / copy_us / 1e6;
  CK(cudaFree(dev2));
  std::printf("d2d copy: %.2f TB/s (read + write)\n\n", copy_tbps);

  nlohmann::json rows = nlohmann::json::array();
  auto add = [&](const std::string& name, nlohmann::json params, double us, double bytes, nlohmann::json peers) {
    const double gbps = bytes / us / 1e3;
    rows.push_back({{"name", name}, {"params", params}, {"time_us", us}, {"rate", gbps}, {"unit", "GB/s"},
                    {"ratio_to_floor", (bytes / (copy_tbps * 1e12) * 1e6) / us}, {"peers", peers}});
    return gbps;
  };

  std::vector<size_t> sizes;
  for (size_t n = 4096; n <= kMax; n *= 4) sizes.push_back(n);
  std::printf("%-9s %5s | %12s %12s %6s | %10s %10s | %9s %9s\n", "size", "chunk", "gpu plain", "gpu tree",
              "tree/p", "tree us", "cpu 1core", "cpu all", "all us");
  for (size_t chunk : {size_t{1024}, size_t{2048}, size_t{4096}}) {
    auto hasher = fp::GpuTreeHasher::Create(chunk).value();
    for (size_t n : sizes) {
      const double plain_us = GpuTimeUs(stream, [&] { OK(fp::Sha256ChunksGpu(dev, n, chunk, d_out, stream)); });
      fp::ByteSegment seg{dev, n};
      fp::GpuHashItem item{{&seg, 1}};
      OK(hasher->Plan({&item, 1}));
      const double tree_us = GpuTimeUs(stream, [&] { OK(hasher->Run(stream, d_out)); });
      nlohmann::json params = {{"bytes", n}, {"chunk", chunk}, {"items", 1}};
      const double plain = add("gpu_plain_chunks", params, plain_us, n, nlohmann::json::object());
      const double tree = add("gpu_tree", params, tree_us, n, {{"gpu_plain_chunks_gbps", plain}});
      double c1 = 0, call = 0, call_us = 0;
      if (chunk == fp::kDefaultChunkBytes) {
        fp::ByteSegment hs{host.data(), n};
        const double c1_us = CpuTimeUs([&] { (void)fp::TreeHashCpu({&hs, 1}, chunk, 1); }, n >= (size_t{256} << 20) ? 1 : 3);
        call_us = CpuTimeUs([&] { (void)fp::TreeHashCpu({&hs, 1}, chunk, cores); }, 3);
        c1 = add("cpu_tree_1core", params, c1_us, n, nlohmann::json::object());
        call = add("cpu_tree_all_cores", {{"bytes", n}, {"chunk", chunk}, {"threads", cores}}, call_us, n,
                   nlohmann::json::object());
        rows[rows.size() - 3]["peers"] = {{"gpu_plain_chunks_gbps", plain}, {"cpu_1core_gbps", c1},
                                          {"cpu_all_cores_gbps", call}};
      }
      std::printf("%-9s %5zu | %9.1f GB/s %9.1f GB/s %5.1f%% | %10.1f %7.2f GB/s | %6.2f GB/s %9.0f\n",
                  SizeName(n).c_str(), chunk, plain, tree, 100 * tree / plain, tree_us, c1, call, call_us);
    }
  }

  // KV-page-shaped batches: items of 64 segments x 32 KiB (a 2 MiB page over 32 layers' K and V).
  std::printf("\nKV-page batches (64 segments x 32 KiB per item):\n%6s %5s | %10s %12s\n", "items", "chunk", "time us", "rate");
  for (size_t chunk : {size_t{1024}, size_t{2048}, size_t{4096}}) {
    auto hasher = fp::GpuTreeHasher::Create(chunk).value();
    for (int items_n : {1, 8, 64, 256}) {
      std::vector<std::vector<fp::ByteSegment>> segs(items_n);
      std::vector<fp::GpuHashItem> items(items_n);
      for (int i = 0; i < items_n; ++i) {
        for (int s = 0; s < 64; ++s) segs[i].push_back({dev + (size_t(i) * 64 + s) * 32768 % kMax, 32768});
        items[i].segments = segs[i];
      }
      OK(hasher->Plan(items));
      const double us = GpuTimeUs(stream, [&] { OK(hasher->Run(stream, d_out)); });
      const double bytes = double(items_n) * 64 * 32768;
      const double r = add("gpu_tree_kv_pages", {{"items", items_n}, {"segments_per_item", 64},
                                                 {"segment_bytes", 32768}, {"chunk", chunk}}, us, bytes,
                           nlohmann::json::object());
      std::printf("%6d %5zu | %10.1f %7.1f GB/s\n", items_n, chunk, us, r);
    }
  }

  if (!json_path.empty()) {
    nlohmann::json j = {{"device", prop.name}, {"date", fp::bench::TodayUtc()}, {"commit", "uncommitted (hash helper)"},
                        {"topic", "hash"},
                        {"floors", {{"copy_tbps", copy_tbps}, {"gemm_tflops", nullptr}}},
                        {"notes", "ratio_to_floor = (bytes / d2d copy rate) / time; hashing is compute-bound"},
                        {"rows", rows}};
    std::ofstream(json_path) << j.dump(2) << "\n";
    std::printf("\nwrote %s\n", json_path.c_str());
  }
  cudaFree(d_out);
  cudaFree(dev);
  return 0;
}
