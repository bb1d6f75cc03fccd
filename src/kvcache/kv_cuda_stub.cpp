// The CUDA entry points of the KV cache in a build without CUDA: every call answers Unimplemented, so
// KvStorage / AnchorSegment on Device::kCuda fail cleanly instead of failing to link.
#include "kvcache/device_buffer.h"

#ifndef FIELDPRINT_HAVE_CUDA
namespace fp::kvcuda {

namespace {
Status NoCuda() { return Unimplemented("this build of fieldprint has no CUDA (configure with FIELDPRINT_CUDA=ON)"); }
}  // namespace

Status Malloc(std::byte** out, size_t) {
  *out = nullptr;
  return NoCuda();
}
void Free(void*) noexcept {}
Status Copy2D(void*, size_t, const void*, size_t, size_t, size_t, void*) { return NoCuda(); }
Status ScatterRows(std::byte*, std::byte*, const int64_t*, int64_t, const std::byte*, const std::byte*, int64_t,
                   int64_t, int64_t, void*) {
  return NoCuda();
}

Status HostAllocPinned(std::byte** out, size_t) {
  *out = nullptr;
  return NoCuda();
}
void HostFreePinned(void*) noexcept {}
Status EventCreate(void** event) {
  *event = nullptr;
  return NoCuda();
}
void EventDestroy(void*) noexcept {}
Status EventRecord(void*, void*) { return NoCuda(); }
Status EventSynchronize(void*) { return NoCuda(); }
Result<bool> EventDone(void*) { return NoCuda(); }

}  // namespace fp::kvcuda
#endif
