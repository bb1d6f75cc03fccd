// kvcache/pinned_staging.h (internal) — pinned host staging for asynchronous uploads (KvStorage::Write).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fieldprint/status.h"

namespace fp::kvcache_detail {

// A ring of pinned host staging buffers for asynchronous host -> device uploads on a caller's stream. A
// pageable source makes cudaMemcpyAsync stage through the driver (synchronous with the host); copying into
// pinned memory first lets the DMA run in stream order while the host goes on. Each slot's event is recorded
// after the copy that reads it, and Acquire waits on it before handing the slot out again, so a slot is never
// overwritten while a copy from it is in flight, whatever the caller does with its own buffer after
// returning. Buffers grow on demand (freed only once their last copy completed).
class PinnedStaging {
 public:
  static constexpr int kSlots = 4;
  PinnedStaging() = default;
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // A pinned buffer of at least `bytes` (> 0) that no in-flight copy reads. Call Release(stream) after
  // enqueuing the copy out of it (or Release(nullptr) if none was enqueued) before the next Acquire.
  Result<std::byte*> Acquire(size_t bytes);
  // Records the slot's event on `stream` (after the copy) and moves to the next slot.
  Status Release(void* stream);
  // Acquires that found their slot still in flight and waited (tests: the ring does wait).
  uint64_t waits() const { return waits_; }

 private:
  struct Slot {
    std::byte* data = nullptr;  // [capacity] pinned
    size_t capacity = 0;
    void* event = nullptr;  // cudaEvent_t, recorded after the last copy out of data
    bool recorded = false;
  };
  Slot slots_[kSlots];
  int next_ = 0;
  bool acquired_ = false;
  uint64_t waits_ = 0;
};

}  // namespace fp::kvcache_detail
