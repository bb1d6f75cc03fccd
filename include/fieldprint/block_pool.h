// fieldprint/block_pool.h — refcounted allocator of KV page ids (metadata only, no data bytes).
//
// A page is free iff its refcount is 0, and then it sits exactly once on the free list. Pages are shared by
// forked sequences (refcount > 1) and copied on write by KvMetadata. The free list is a LIFO stack so a page
// freed by a rollback is the next one reused (warm in cache); allocation order is deterministic.
// defines: BlockPool
#pragma once

#include <cstdint>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

class BlockPool {
 public:
  BlockPool() = default;
  explicit BlockPool(int32_t num_blocks);  // num_blocks >= 0; all free, first Allocate() returns 0

  int32_t num_blocks() const { return static_cast<int32_t>(refcount_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  bool IsValid(int32_t block) const { return block >= 0 && block < num_blocks(); }

  // Takes a free page (refcount 0 -> 1). ResourceExhausted when none is free.
  Result<int32_t> Allocate();
  // Adds a reference to a used page. OutOfRange for a bad id, FailedPrecondition for a free page.
  Status Incref(int32_t block);
  // Drops a reference; the page returns to the free list at 0. Same errors as Incref.
  Status Decref(int32_t block);

  Result<int32_t> RefCount(int32_t block) const;
  const std::vector<int32_t>& refcounts() const { return refcount_; }  // [num_blocks]
  const std::vector<int32_t>& free_list() const { return free_; }      // top of the stack is back()

  // Free list == exactly the pages with refcount 0, each once; no negative refcount.
  Status CheckInvariants() const;

 private:
  std::vector<int32_t> refcount_;  // [num_blocks]
  std::vector<int32_t> free_;      // [num_free] page ids
};

}  // namespace fp
