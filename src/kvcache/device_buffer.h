// kvcache/device_buffer.h (internal) — an owned, zero-filled byte buffer on the host or a CUDA device, and the
// few CUDA runtime calls the KV cache needs. The CUDA functions live in kv_storage_cuda.cu; in a build without
// CUDA, kv_cuda_stub.cpp answers Unimplemented so the host code never needs #ifdefs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp::kvcuda {
// cudaMalloc + cudaMemset 0. bytes > 0.
Status Malloc(std::byte** out, size_t bytes);
void Free(void* p) noexcept;
// cudaMemcpy2DAsync(..., cudaMemcpyDefault, stream): either side may be host or device memory.
Status Copy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, void* stream);
// For i < n: copy row_bytes from k + i * k_stride (v likewise) to k_pool + rows[i] * row_bytes (v_pool).
// `rows` is device memory [n]. All pointers device memory.
Status ScatterRows(std::byte* k_pool, std::byte* v_pool, const int64_t* rows, int64_t n, const std::byte* k,
                   const std::byte* v, int64_t k_stride_bytes, int64_t v_stride_bytes, int64_t row_bytes,
                   void* stream);
// Pinned host memory (cudaHostAlloc) and the events that say when an asynchronous copy out of it is done.
Status HostAllocPinned(std::byte** out, size_t bytes);
void HostFreePinned(void* p) noexcept;
Status EventCreate(void** event);  // timing disabled
void EventDestroy(void* event) noexcept;
Status EventRecord(void* event, void* stream);
Status EventSynchronize(void* event);  // a never-recorded event is complete
Result<bool> EventDone(void* event);   // cudaEventQuery: true when complete
}  // namespace fp::kvcuda

namespace fp::kvcache_detail {

// Frees with cudaFree or delete[] by the buffer's device.
struct DeviceDeleter {
  Device device = Device::kCpu;
  void operator()(std::byte* p) const noexcept;
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // bytes may be 0 (null data).
  static Result<DeviceBuffer> Allocate(size_t bytes, Device device);

  std::byte* data() const { return data_.get(); }
  size_t size() const { return size_; }
  Device device() const { return device_; }

 private:
  std::unique_ptr<std::byte[], DeviceDeleter> data_;
  size_t size_ = 0;
  Device device_ = Device::kCpu;
};

}  // namespace fp::kvcache_detail
