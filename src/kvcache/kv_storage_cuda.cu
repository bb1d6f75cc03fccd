// The CUDA twin of the KV storage: allocation, page copies and the scatter of new token rows into the pools.
//
// A decode step writes one row (Hkv * d elements, e.g. 8 * 128 * 2 B = 2 KiB) per sequence and per layer into
// scattered slots: one CTA per (token, K|V) copies its row with the widest unit (16/8/4/2/1 B) that divides the
// row size, both base addresses and both strides, so bf16 rows of d = 128 move as 16-byte loads. Page copies
// (copy-on-write) are plain contiguous cudaMemcpyAsync device-to-device. Everything is async on the caller's
// stream; no managed memory. The slot rows are uploaded from pinned staging (pinned_staging.h), whose pinned
// buffers and events are allocated here too.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kvcache/device_buffer.h"

namespace fp::kvcuda {

namespace {

Status CudaError(cudaError_t e, const char* what) {
  return Internal(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// One CTA per (token, K or V): blockIdx.x = token, blockIdx.y = 0 for K, 1 for V.
template <typename U>
__global__ void ScatterRowsKernel(std::byte* __restrict__ k_pool, std::byte* __restrict__ v_pool,
                                  const int64_t* __restrict__ rows, const std::byte* __restrict__ k,
                                  const std::byte* __restrict__ v, int64_t k_stride_bytes,
                                  int64_t v_stride_bytes, int64_t row_bytes) {
  const int64_t token = blockIdx.x;
  const bool is_v = blockIdx.y != 0;
  const U* src = reinterpret_cast<const U*>(is_v ? v + token * v_stride_bytes : k + token * k_stride_bytes);
  U* dst = reinterpret_cast<U*>((is_v ? v_pool : k_pool) + rows[token] * row_bytes);
  const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
  for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
}

template <typename U>
Status Launch(std::byte* k_pool, std::byte* v_pool, const int64_t* rows, int64_t n, const std::byte* k,
              const std::byte* v, int64_t ks, int64_t vs, int64_t row_bytes, cudaStream_t stream) {
  const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
  const int threads = units >= 256 ? 256 : (units >= 64 ? 128 : 32);
  const dim3 grid(static_cast<unsigned>(n), 2);
  ScatterRowsKernel<U><<<grid, threads, 0, stream>>>(k_pool, v_pool, rows, k, v, ks, vs, row_bytes);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok() : CudaError(e, "ScatterRowsKernel launch");
}

}  // namespace

Status Malloc(std::byte** out, size_t bytes) {
  *out = nullptr;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: later calls must not report this failure
    return ResourceExhausted("cudaMalloc of " + std::to_string(bytes) + " bytes: out of device memory");
  }
  if (e != cudaSuccess) return CudaError(e, "cudaMalloc");
  // Zero-filled like the host pools, so a fresh cache hashes the same on both.
  e = cudaMemset(p, 0, bytes);
  if (e != cudaSuccess) {
    cudaFree(p);
    return CudaError(e, "cudaMemset");
  }
  *out = static_cast<std::byte*>(p);
  return Status::Ok();
}

void Free(void* p) noexcept {
  if (p) cudaFree(p);
}

Status Copy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, void* stream) {
  if (width == 0 || height == 0) return Status::Ok();
  const cudaError_t e = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDefault,
                                          static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? Status::Ok() : CudaError(e, "cudaMemcpy2DAsync");
}

Status HostAllocPinned(std::byte** out, size_t bytes) {
  *out = nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return ResourceExhausted("cudaHostAlloc of " + std::to_string(bytes) + " bytes: out of pinned memory");
  }
  if (e != cudaSuccess) return CudaError(e, "cudaHostAlloc");
  *out = static_cast<std::byte*>(p);
  return Status::Ok();
}

void HostFreePinned(void* p) noexcept {
  if (p) cudaFreeHost(p);
}

Status EventCreate(void** event) {
  cudaEvent_t ev = nullptr;
  const cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  if (e != cudaSuccess) return CudaError(e, "cudaEventCreateWithFlags");
  *event = ev;
  return Status::Ok();
}

void EventDestroy(void* event) noexcept {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

Status EventRecord(void* event, void* stream) {
  const cudaError_t e = cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? Status::Ok() : CudaError(e, "cudaEventRecord");
}

Status EventSynchronize(void* event) {
  const cudaError_t e = cudaEventSynchronize(static_cast<cudaEvent_t>(event));
  return e == cudaSuccess ? Status::Ok() : CudaError(e, "cudaEventSynchronize");
}

Result<bool> EventDone(void* event) {
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  return CudaError(e, "cudaEventQuery");
}

Status ScatterRows(std::byte* k_pool, std::byte* v_pool, const int64_t* rows, int64_t n, const std::byte* k,
                   const std::byte* v, int64_t k_stride_bytes, int64_t v_stride_bytes, int64_t row_bytes,
                   void* stream) {
  if (n == 0 || row_bytes == 0) return Status::Ok();
  if (n > 0x7fffffff) return InvalidArgument("ScatterRows: too many rows for one launch");
  // The widest unit dividing every address and stride involved (cudaMalloc'd pools are 256-B aligned).
  const uint64_t mix = static_cast<uint64_t>(row_bytes) | static_cast<uint64_t>(k_stride_bytes) |
                       static_cast<uint64_t>(v_stride_bytes) | reinterpret_cast<uintptr_t>(k) |
                       reinterpret_cast<uintptr_t>(v) | reinterpret_cast<uintptr_t>(k_pool) |
                       reinterpret_cast<uintptr_t>(v_pool);
  const auto s = static_cast<cudaStream_t>(stream);
  if (mix % 16 == 0) return Launch<uint4>(k_pool, v_pool, rows, n, k, v, k_stride_bytes, v_stride_bytes, row_bytes, s);
  if (mix % 8 == 0) return Launch<uint2>(k_pool, v_pool, rows, n, k, v, k_stride_bytes, v_stride_bytes, row_bytes, s);
  if (mix % 4 == 0) return Launch<uint32_t>(k_pool, v_pool, rows, n, k, v, k_stride_bytes, v_stride_bytes, row_bytes, s);
  if (mix % 2 == 0) return Launch<uint16_t>(k_pool, v_pool, rows, n, k, v, k_stride_bytes, v_stride_bytes, row_bytes, s);
  return Launch<uint8_t>(k_pool, v_pool, rows, n, k, v, k_stride_bytes, v_stride_bytes, row_bytes, s);
}

}  // namespace fp::kvcuda
