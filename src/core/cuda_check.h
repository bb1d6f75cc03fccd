// core/cuda_check.h — CUDA error handling with file, line and the error's name.
// FP_CUDA_RETURN_IF_ERROR(expr): at API boundaries, turns a failed CUDA call into an fp::Status (kInternal).
// CUDA_CHECK(expr): in tests, benches and tools, prints "file:line: cudaErrorX (message) in `expr`" and aborts.
// defines: CudaStatus, FP_CUDA_RETURN_IF_ERROR, CUDA_CHECK, DeviceBuffer
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "fieldprint/status.h"

namespace fp {

inline Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return Status::Ok();
  return Internal(std::string(file) + ":" + std::to_string(line) + ": " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ") in `" + expr + "`");
}

// Owning device allocation (cudaMalloc / cudaFree); movable, never copied.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(size_t bytes) {
    DeviceBuffer b;
    if (bytes == 0) return Result<DeviceBuffer>(std::move(b));
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err != cudaSuccess) {
      return Status(StatusCode::kResourceExhausted, "cudaMalloc(" + std::to_string(bytes) + " B): " +
                                                        cudaGetErrorName(err));
    }
    b.ptr_.reset(ptr);
    b.bytes_ = bytes;
    return Result<DeviceBuffer>(std::move(b));
  }
  void* get() const { return ptr_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const { cudaFree(p); }
  };
  std::unique_ptr<void, Free> ptr_;
  size_t bytes_ = 0;
};

}  // namespace fp

#define FP_CUDA_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                  \
    const cudaError_t fp_cuda_err_ = (expr);                                            \
    if (fp_cuda_err_ != cudaSuccess) return ::fp::CudaStatus(fp_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK(expr)                                                                              \
  do {                                                                                                \
    const cudaError_t fp_cuda_err_ = (expr);                                                          \
    if (fp_cuda_err_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s (%s) in `%s`\n", __FILE__, __LINE__, cudaGetErrorName(fp_cuda_err_), \
                   cudaGetErrorString(fp_cuda_err_), #expr);                                          \
      std::abort();                                                                                   \
    }                                                                                                 \
  } while (0)
