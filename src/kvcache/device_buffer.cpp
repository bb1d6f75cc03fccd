// DeviceBuffer: host buffers through make_unique (zeroed), device buffers through kvcuda::Malloc.
#include "kvcache/device_buffer.h"

#include <new>

namespace fp::kvcache_detail {

void DeviceDeleter::operator()(std::byte* p) const noexcept {
  if (device == Device::kCuda) {
    kvcuda::Free(p);
  } else {
    std::default_delete<std::byte[]>()(p);
  }
}

Result<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes, Device device) {
  DeviceBuffer b;
  b.device_ = device;
  b.size_ = bytes;
  b.data_ = std::unique_ptr<std::byte[], DeviceDeleter>(nullptr, DeviceDeleter{device});
  if (bytes == 0) return b;
  if (device == Device::kCuda) {
    std::byte* p = nullptr;
    FP_RETURN_IF_ERROR(kvcuda::Malloc(&p, bytes));
    b.data_.reset(p);
  } else {
    try {
      b.data_.reset(std::make_unique<std::byte[]>(bytes).release());
    } catch (const std::bad_alloc&) {
      return ResourceExhausted("host allocation of " + std::to_string(bytes) + " bytes failed");
    }
  }
  return b;
}

}  // namespace fp::kvcache_detail
