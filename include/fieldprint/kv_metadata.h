// fieldprint/kv_metadata.h — sequences, block tables and copy-on-write over a BlockPool (no data bytes).
//
// Every operation is all-or-nothing: on an error the metadata is exactly as before (checked by a property
// test against snapshots). Reserve hands out the slots for new tokens plus the page copies the storage must do
// first (copy-on-write of a shared, partially filled last page after a Fork). Truncate is the rollback
// primitive: it frees whole pages past the new length. Sequence ids are never reused, so a stale id is an error,
// not another sequence. Invariant: a sequence of length L holds exactly ceil(L / page_size) pages.
// Not thread-safe: the engine's scheduler thread owns it.
// defines: SeqId, Reservation, KvBatch, KvMetadata
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/attention.h"
#include "fieldprint/block_pool.h"
#include "fieldprint/kv_layout.h"
#include "fieldprint/status.h"

namespace fp {

using SeqId = int64_t;

// What Reserve hands out. The storage must perform `copies` (all layers, K and V) before writing `slots`.
struct Reservation {
  SeqId seq = -1;
  int32_t start = 0;               // position of the first new token
  std::vector<KvSlot> slots;       // [n_new_tokens], slots[i] holds position start + i
  std::vector<PageCopy> copies;    // [0 or 1] copy-on-write orders
};

// Host arrays for one attention launch over several sequences; `view()` points into them (keep this alive).
struct KvBatch {
  std::vector<int32_t> q_indptr;     // [num_seqs + 1]
  std::vector<int32_t> kv_lens;      // [num_seqs]
  std::vector<int32_t> block_table;  // [num_seqs, max_blocks_per_seq], padded with page 0 (never read)
  int32_t max_blocks_per_seq = 1;    // >= 1 so the table is never empty
  std::shared_ptr<AnchorSegment> anchor;  // shared by all sequences of the batch, or null

  int32_t num_seqs() const { return static_cast<int32_t>(kv_lens.size()); }
  int32_t num_tokens() const { return q_indptr.empty() ? 0 : q_indptr.back(); }
  AttentionBatch view() const;
};

class KvMetadata {
 public:
  // InvalidArgument for a bad layout.
  static Result<KvMetadata> Create(const KvLayout& layout);

  const KvLayout& layout() const { return layout_; }
  const BlockPool& pool() const { return pool_; }
  int32_t num_free_blocks() const { return pool_.num_free(); }
  Result<int32_t> RefCount(int32_t block) const { return pool_.RefCount(block); }

  SeqId CreateSequence();
  // Releases the sequence's pages and detaches its anchor. OutOfRange for an unknown id.
  Status FreeSequence(SeqId seq);
  // Slots for n_new_tokens (>= 0) tokens appended to seq; allocates pages, copy-on-write of a shared partial
  // last page. ResourceExhausted (nothing changed) when the pool cannot cover it.
  Result<Reservation> Reserve(SeqId seq, int32_t n_new_tokens);
  // Shrinks seq to new_len (0 <= new_len <= length; OutOfRange otherwise), freeing whole pages past it.
  Status Truncate(SeqId seq, int32_t new_len);
  // A new sequence sharing all of seq's pages (and anchor); later writes to a shared page copy it first.
  Result<SeqId> Fork(SeqId seq);
  // Attaches a sealed anchor whose geometry matches the layout to an empty sequence without one.
  // FailedPrecondition: unsealed anchor, sequence not empty, or already attached. InvalidArgument: mismatch.
  Status AttachAnchor(SeqId seq, std::shared_ptr<AnchorSegment> anchor);

  bool Contains(SeqId seq) const { return seqs_.count(seq) != 0; }
  std::vector<SeqId> SequenceIds() const;  // ascending
  int32_t num_sequences() const { return static_cast<int32_t>(seqs_.size()); }
  Result<int32_t> Length(SeqId seq) const;
  // [ceil(length / page_size)] page ids; the span is valid until the next mutation.
  Result<std::span<const int32_t>> BlockTable(SeqId seq) const;
  // The attached anchor or null.
  Result<std::shared_ptr<AnchorSegment>> Anchor(SeqId seq) const;
  // Slot of token `pos` (0 <= pos < length).
  Result<KvSlot> SlotOf(SeqId seq, int32_t pos) const;

  // q_lens[i] query rows (0 <= q_lens[i] <= length) for seqs[i]. All sequences must share one anchor (or none).
  Result<KvBatch> BuildBatch(std::span<const SeqId> seqs, std::span<const int32_t> q_lens) const;

  // Refcount of every page == number of block-table entries naming it; pool invariants; table sizes.
  Status CheckInvariants() const;

 private:
  struct Sequence {
    int32_t length = 0;
    std::vector<int32_t> table;  // [ceil(length / page_size)] page ids
    kvcache_detail::AnchorRef anchor;
  };
  Result<Sequence*> Find(SeqId seq);
  Result<const Sequence*> Find(SeqId seq) const;

  KvLayout layout_;
  BlockPool pool_;
  std::map<SeqId, Sequence> seqs_;
  SeqId next_id_ = 0;
};

}  // namespace fp
