// bench_util.h — what every CUDA bench needs and nothing else: abort-on-error checks for CUDA calls and Status
// values (a bench with a failed call must not print numbers), a median, and the d2d copy rate (the bandwidth floor
// of every memory-bound bench), and the date a result is stamped with.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "fieldprint/status.h"

#define CK(x) CUDA_CHECK(x)
#define OK(x)                                                                                \
  do {                                                                                       \
    ::fp::Status s_ = (x);                                                                   \
    if (!s_.ok()) {                                                                          \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, s_.ToString().c_str()); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

namespace fp::bench {

// Today's UTC date, YYYY-MM-DD: the "date" of every results file (the run's, never a hard-coded one).
inline std::string TodayUtc() {
  char date[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  return date;
}

// Median of the samples (upper median for an even count); 0 for none.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Device-to-device copy rate (read + write bytes per second, TB/s) of 2 GiB, median of 10 after 3 warm-ups.
inline double CopyTbps(cudaStream_t st) {
  const size_t n = size_t{1} << 31;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < 13; ++i) {
    CK(cudaEventRecord(e0, st));
    CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (i >= 3) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * static_cast<double>(n) / (t[t.size() / 2] * 1e-3) / 1e12;
}

}  // namespace fp::bench
