// BlockPool: refcounts plus a LIFO free list; every check happens before any change.
#include "fieldprint/block_pool.h"

#include <string>

namespace fp {

BlockPool::BlockPool(int32_t num_blocks) {
  if (num_blocks < 0) num_blocks = 0;
  refcount_.assign(static_cast<size_t>(num_blocks), 0);
  free_.reserve(static_cast<size_t>(num_blocks));
  // Reverse order so the stack pops 0, 1, 2, ... on a fresh pool.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

Result<int32_t> BlockPool::Allocate() {
  if (free_.empty()) return ResourceExhausted("block pool: all " + std::to_string(num_blocks()) + " pages in use");
  const int32_t b = free_.back();
  free_.pop_back();
  refcount_[static_cast<size_t>(b)] = 1;
  return b;
}

Status BlockPool::Incref(int32_t block) {
  if (!IsValid(block)) {
    return OutOfRange("block id " + std::to_string(block) + " out of range [0, " + std::to_string(num_blocks()) + ")");
  }
  int32_t& rc = refcount_[static_cast<size_t>(block)];
  if (rc == 0) return FailedPrecondition("block " + std::to_string(block) + " is free");
  ++rc;
  return Status::Ok();
}

Status BlockPool::Decref(int32_t block) {
  if (!IsValid(block)) {
    return OutOfRange("block id " + std::to_string(block) + " out of range [0, " + std::to_string(num_blocks()) + ")");
  }
  int32_t& rc = refcount_[static_cast<size_t>(block)];
  if (rc == 0) return FailedPrecondition("block " + std::to_string(block) + " is already free");
  if (--rc == 0) free_.push_back(block);
  return Status::Ok();
}

Result<int32_t> BlockPool::RefCount(int32_t block) const {
  if (!IsValid(block)) {
    return OutOfRange("block id " + std::to_string(block) + " out of range [0, " + std::to_string(num_blocks()) + ")");
  }
  return refcount_[static_cast<size_t>(block)];
}

Status BlockPool::CheckInvariants() const {
  std::vector<char> on_free(refcount_.size(), 0);
  for (int32_t b : free_) {
    if (!IsValid(b)) return Internal("free list holds bad id " + std::to_string(b));
    if (on_free[static_cast<size_t>(b)]) return Internal("block " + std::to_string(b) + " twice on the free list");
    on_free[static_cast<size_t>(b)] = 1;
    if (refcount_[static_cast<size_t>(b)] != 0) return Internal("block " + std::to_string(b) + " free but used");
  }
  for (size_t b = 0; b < refcount_.size(); ++b) {
    if (refcount_[b] < 0) return Internal("block " + std::to_string(b) + " has a negative refcount");
    if (refcount_[b] == 0 && !on_free[b]) return Internal("block " + std::to_string(b) + " leaked (refcount 0)");
  }
  return Status::Ok();
}

}  // namespace fp
