// fieldprint/commit_log.h — the per-sequence record of commitments: (position, tree size, root).
//
// Entry i says: "the first `position` tokens of the sequence hash to `root`, a tree of `tree_size` page
// digests". tree_size == ceil(position / page_size); when position is not a page multiple the last page is
// PROVISIONAL: its digest (`last_entry`) covers only the filled rows, and a later commit replaces that leaf
// (MerkleTree::ReplaceLast), so the old root is no longer a prefix root of the tree. The log keeps
// last_entry so such a root stays reproducible (MerkleTree::RootAtWithLast). Positions strictly increase.
// Serialized form (little endian): "FPCL" u32 version=1, u32 page_size, u64 count, count x {u32 position,
// u64 tree_size, 32 B root, 32 B last_entry}, then SHA-256 of all preceding bytes. Truncated, corrupted or
// inconsistent logs are errors, never a crash.
// defines: CommitEntry, CommitLog
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fieldprint/merkle.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"

namespace fp {

struct CommitEntry {
  int32_t position = 0;    // tokens covered
  uint64_t tree_size = 0;  // page digests in the tree at this commit
  Digest root;             // MTH of those page digests
  Digest last_entry;       // digest of page tree_size-1 as committed then (provisional if partial)
  bool operator==(const CommitEntry&) const = default;
};

class CommitLog {
 public:
  explicit CommitLog(int32_t page_size = 16) : page_size_(page_size) {}

  int32_t page_size() const { return page_size_; }
  const std::vector<CommitEntry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  // Position of the last commit, 0 when none.
  int32_t last_position() const { return entries_.empty() ? 0 : entries_.back().position; }

  // Appends after checking the entry against the log: position > last, tree_size == ceil(position/page).
  Status Append(const CommitEntry& e);
  // Keeps the first n entries. OutOfRange if n > size().
  Status TruncateTo(size_t n);
  // Index of the last entry with position <= pos, or -1.
  int64_t LastAtOrBefore(int32_t pos) const;

  // Every entry's root is reproduced by `tree` (which holds at least the last entry's pages) and every
  // non-provisional entry's last_entry equals the tree entry: DataLoss naming the first bad entry otherwise.
  Status CheckAgainst(const MerkleTree& tree) const;

  std::vector<uint8_t> Serialize() const;
  // DataLoss for truncated / checksum-failing bytes, InvalidArgument for an inconsistent log.
  static Result<CommitLog> Parse(std::span<const uint8_t> bytes);

 private:
  int32_t page_size_;
  std::vector<CommitEntry> entries_;
};

}  // namespace fp
