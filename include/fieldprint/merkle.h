// fieldprint/merkle.h — an append-only RFC 6962 / RFC 9162 Merkle tree over page digests, with proofs.
//
// Entries are 32-byte page digests; the tree is RFC 6962's MTH over those entries, so leaf node i is
// LeafHash(entry_i) = SHA-256(0x00 || entry_i) and inner nodes are NodeHash. Append is O(log n) amortised:
// the tree stores, per level, the roots of every complete aligned power-of-two subtree (the right frontier
// plus everything left of it), so the root at ANY earlier size and every proof cost O(log n) node look-ups.
// ReplaceLast / TruncateTo serve the provisional partial-page leaf and rollback (docs/integrity.md).
// Verification functions are static, take untrusted input and never crash: any malformed proof is `false`.
// defines: MerkleTree
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fieldprint/sha256.h"
#include "fieldprint/status.h"

namespace fp {

class MerkleTree {
 public:
  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  bool empty() const { return size() == 0; }

  // Appends entry (a page digest); its leaf node is LeafHash(entry).
  void Append(const Digest& entry);
  // Replaces the last entry (the provisional partial page re-committed). FailedPrecondition when empty.
  Status ReplaceLast(const Digest& entry);
  // Drops entries [new_size, size). OutOfRange if new_size > size.
  Status TruncateTo(uint64_t new_size);

  // Entry i as appended. OutOfRange past the end.
  Result<Digest> Entry(uint64_t index) const;

  // MTH of the current tree; SHA-256("") when empty.
  Digest Root() const;
  // MTH of the first `tree_size` entries (0 <= tree_size <= size()).
  Result<Digest> RootAt(uint64_t tree_size) const;
  // MTH of the first tree_size entries with entry tree_size-1 replaced by `last` (a superseded provisional
  // commit's root). tree_size in [1, size()].
  Result<Digest> RootAtWithLast(uint64_t tree_size, const Digest& last) const;

  // RFC 6962 PATH(index, D[0:tree_size]); index < tree_size <= size().
  Result<std::vector<Digest>> InclusionProof(uint64_t index, uint64_t tree_size) const;
  // RFC 6962 PROOF(old_size, D[0:new_size]); 0 < old_size <= new_size <= size(). old_size == 0 is refused:
  // the empty tree commits to nothing, so there is nothing to prove.
  Result<std::vector<Digest>> ConsistencyProof(uint64_t old_size, uint64_t new_size) const;

  // RFC 9162 2.1.3.2: does `entry` sit at `index` of the tree of `tree_size` entries whose root is `root`?
  static bool VerifyInclusion(const Digest& entry, uint64_t index, uint64_t tree_size,
                              std::span<const Digest> proof, const Digest& root);
  // RFC 9162 2.1.4.2: is the tree (new_size, new_root) an append-only extension of (old_size, old_root)?
  // old_size must be in [1, new_size]; old_size == new_size needs an empty proof and equal roots.
  static bool VerifyConsistency(uint64_t old_size, uint64_t new_size, const Digest& old_root,
                                const Digest& new_root, std::span<const Digest> proof);

 private:
  // MTH of entries [begin, end) of the stored tree (end <= size()); when `last` is non-null it stands in for
  // entry end-1.
  Digest Subtree(uint64_t begin, uint64_t end, const Digest* last) const;
  void AppendNode(const Digest& leaf_node);
  void SubProof(uint64_t m, uint64_t begin, uint64_t end, bool whole, std::vector<Digest>& out) const;

  std::vector<Digest> entries_;              // [size] page digests as appended
  std::vector<std::vector<Digest>> levels_;  // levels_[k][i] = MTH(leaves [i*2^k, (i+1)*2^k)), complete only
};

}  // namespace fp
