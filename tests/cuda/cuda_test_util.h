// cuda_test_util.h — the one way CUDA tests decide to run: every test calls SKIP_WITHOUT_GPU() first, so the
// CUDA test binary builds and passes (skipping) on machines without a GPU, such as CI.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace fp::testing {

inline bool HaveGpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
    return false;
  }
  return n > 0;
}

}  // namespace fp::testing

#define SKIP_WITHOUT_GPU() \
  if (!::fp::testing::HaveGpu()) GTEST_SKIP() << "no CUDA device"
