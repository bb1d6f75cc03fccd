// core/cuda_device.h — facts about the current device that launchers ask for on every launch, looked up once per
// device: its SM count, and whether it runs a kernel's sm_90a code.
// defines: CurrentDeviceSms, Sm90aKernelRuns
#pragma once

#include <cuda_runtime.h>

#include <atomic>

namespace fp {

// The current device's SM count, cached per device (devices 0-63); 0 when it cannot be read (then asked again).
inline int CurrentDeviceSms() {
  static std::atomic<int> cache[64] = {};  // 0 unknown
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  int sms = cache[dev].load(std::memory_order_relaxed);
  if (sms == 0) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
      (void)cudaGetLastError();
      return 0;
    }
    cache[dev].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

// Whether the current device runs Kernel's sm_90a code: a compute capability 9.0 device, and a binary built with
// 90a (other builds compile an empty stub of an sm_90a-only kernel, recognised by using fewer than `min_regs`
// registers). Cached per device (devices 0-63; others: false).
template <auto Kernel>
bool Sm90aKernelRuns(int min_regs) {
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  int known = cache[dev].load(std::memory_order_relaxed);
  if (known == 0) {
    int major = 0, minor = 0;
    cudaFuncAttributes attr{};
    const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
                    major == 9 && minor == 0 && cudaFuncGetAttributes(&attr, Kernel) == cudaSuccess &&
                    attr.numRegs >= min_regs;
    (void)cudaGetLastError();  // a missing kernel image is an answer here, not a sticky error
    known = ok ? 1 : 2;
    cache[dev].store(known, std::memory_order_relaxed);
  }
  return known == 1;
}

}  // namespace fp
