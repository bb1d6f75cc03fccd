// bench_util.h — what every CUDA bench needs and nothing else: abort-on-error checks for CUDA calls and Status
// values (a bench with a failed call must not print numbers), and a median.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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

// Median of the samples (upper median for an even count); 0 for none.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace fp::bench
