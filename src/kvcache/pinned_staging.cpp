// PinnedStaging: the ring of pinned upload buffers (pinned_staging.h). Host code over the kvcuda calls, so a
// build without CUDA links (every call answers Unimplemented there, and only CUDA storage stages uploads).
#include "kvcache/pinned_staging.h"

#include "kvcache/device_buffer.h"

namespace fp::kvcache_detail {

PinnedStaging::~PinnedStaging() {
  for (Slot& s : slots_) {
    if (s.event != nullptr) {
      (void)kvcuda::EventSynchronize(s.event);  // no copy may still read the memory freed below
      kvcuda::EventDestroy(s.event);
    }
    kvcuda::HostFreePinned(s.data);
  }
}

Result<std::byte*> PinnedStaging::Acquire(size_t bytes) {
  if (bytes == 0) return InvalidArgument("PinnedStaging::Acquire: 0 bytes");
  if (acquired_) return FailedPrecondition("PinnedStaging::Acquire: the previous slot was not released");
  Slot& s = slots_[next_];
  if (s.event == nullptr) FP_RETURN_IF_ERROR(kvcuda::EventCreate(&s.event));
  if (s.recorded) {
    auto done = kvcuda::EventDone(s.event);
    if (!done.ok()) return done.status();
    if (!*done) {
      ++waits_;
      FP_RETURN_IF_ERROR(kvcuda::EventSynchronize(s.event));
    }
  }
  if (s.capacity < bytes) {
    // Grow geometrically so a slowly rising upload size does not reallocate (cudaHostAlloc is slow) each
    // time.
    const size_t capacity = bytes > 2 * s.capacity ? bytes : 2 * s.capacity;
    kvcuda::HostFreePinned(s.data);  // its last copy completed above
    s.data = nullptr;
    s.capacity = 0;
    FP_RETURN_IF_ERROR(kvcuda::HostAllocPinned(&s.data, capacity));
    s.capacity = capacity;
  }
  acquired_ = true;
  return s.data;
}

Status PinnedStaging::Release(void* stream) {
  if (!acquired_) return FailedPrecondition("PinnedStaging::Release without Acquire");
  acquired_ = false;
  Slot& s = slots_[next_];
  next_ = (next_ + 1) % kSlots;
  s.recorded = false;
  FP_RETURN_IF_ERROR(kvcuda::EventRecord(s.event, stream));
  s.recorded = true;
  return Status::Ok();
}

}  // namespace fp::kvcache_detail
