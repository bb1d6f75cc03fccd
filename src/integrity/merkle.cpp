// merkle.cpp — the incremental RFC 6962 tree: per-level arrays of complete aligned subtree roots.
//
// levels_[k] holds MTH of every complete block of 2^k leaves, so appending touches at most log2(n) levels
// and any RFC 6962 recursion (root, PATH, PROOF) resolves its left halves, always aligned powers of two,
// by a look-up; only the right spine is recomputed: O(log n) NodeHash calls per query.
#include "fieldprint/merkle.h"

#include <bit>
#include <string>

namespace fp {
namespace {

Digest LeafNode(const Digest& entry) { return LeafHash(entry.bytes.data(), entry.bytes.size()); }

// Largest power of two strictly below n (n >= 2).
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

}  // namespace

void MerkleTree::AppendNode(const Digest& leaf_node) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(leaf_node);
  // Each level whose count became even just completed a pair: its parent is now a complete subtree.
  for (size_t k = 0; levels_[k].size() % 2 == 0; ++k) {
    const size_t n = levels_[k].size();
    Digest parent = NodeHash(levels_[k][n - 2], levels_[k][n - 1]);
    if (levels_.size() == k + 1) levels_.emplace_back();
    levels_[k + 1].push_back(parent);
  }
}

void MerkleTree::Append(const Digest& entry) {
  entries_.push_back(entry);
  AppendNode(LeafNode(entry));
}

Status MerkleTree::TruncateTo(uint64_t new_size) {
  if (new_size > size()) {
    return OutOfRange("Merkle truncate to " + std::to_string(new_size) + " > size " + std::to_string(size()));
  }
  entries_.resize(new_size);
  if (new_size == 0) {
    levels_.clear();
    return Status::Ok();
  }
  // A tree of n leaves has exactly n >> k complete subtrees at level k.
  for (size_t k = 0; k < levels_.size(); ++k) levels_[k].resize(new_size >> k);
  while (levels_.size() > 1 && levels_.back().empty()) levels_.pop_back();
  return Status::Ok();
}

Status MerkleTree::ReplaceLast(const Digest& entry) {
  if (empty()) return FailedPrecondition("Merkle ReplaceLast on an empty tree");
  FP_RETURN_IF_ERROR(TruncateTo(size() - 1));
  Append(entry);
  return Status::Ok();
}

Result<Digest> MerkleTree::Entry(uint64_t index) const {
  if (index >= size())
    return OutOfRange("Merkle entry " + std::to_string(index) + " >= size " + std::to_string(size()));
  return entries_[index];
}

Digest MerkleTree::Subtree(uint64_t begin, uint64_t end, const Digest* last) const {
  const uint64_t n = end - begin;
  if (n == 0) return Sha256(nullptr, 0);
  if (n == 1 && last != nullptr) return LeafNode(*last);
  if (last == nullptr && std::has_single_bit(n) && begin % n == 0) {
    return levels_[std::countr_zero(n)][begin / n];
  }
  const uint64_t k = SplitPoint(n);
  // The left half never holds entry end-1, so only the right half sees the substitute.
  return NodeHash(Subtree(begin, begin + k, nullptr), Subtree(begin + k, end, last));
}

Digest MerkleTree::Root() const { return Subtree(0, size(), nullptr); }

Result<Digest> MerkleTree::RootAt(uint64_t tree_size) const {
  if (tree_size > size()) {
    return OutOfRange("Merkle root at " + std::to_string(tree_size) + " > size " + std::to_string(size()));
  }
  return Subtree(0, tree_size, nullptr);
}

Result<Digest> MerkleTree::RootAtWithLast(uint64_t tree_size, const Digest& last) const {
  if (tree_size == 0 || tree_size > size()) {
    return OutOfRange("Merkle root-with-last at " + std::to_string(tree_size) + " not in [1, " +
                      std::to_string(size()) + "]");
  }
  return Subtree(0, tree_size, &last);
}

Result<std::vector<Digest>> MerkleTree::InclusionProof(uint64_t index, uint64_t tree_size) const {
  if (tree_size > size() || index >= tree_size) {
    return OutOfRange("inclusion proof of entry " + std::to_string(index) + " in a tree of " +
                      std::to_string(tree_size) + " (stored " + std::to_string(size()) + ")");
  }
  // Walk down from the root, collecting siblings; RFC order is leaf-upward, so reverse at the end.
  std::vector<Digest> path;
  uint64_t begin = 0, end = tree_size, m = index;
  while (end - begin > 1) {
    const uint64_t k = SplitPoint(end - begin);
    if (m < k) {
      path.push_back(Subtree(begin + k, end, nullptr));
      end = begin + k;
    } else {
      path.push_back(Subtree(begin, begin + k, nullptr));
      begin += k;
      m -= k;
    }
  }
  return std::vector<Digest>(path.rbegin(), path.rend());
}

void MerkleTree::SubProof(uint64_t m, uint64_t begin, uint64_t end, bool whole,
                          std::vector<Digest>& out) const {
  const uint64_t n = end - begin;
  if (m == n) {
    if (!whole) out.push_back(Subtree(begin, end, nullptr));
    return;
  }
  const uint64_t k = SplitPoint(n);
  if (m <= k) {
    SubProof(m, begin, begin + k, whole, out);
    out.push_back(Subtree(begin + k, end, nullptr));
  } else {
    SubProof(m - k, begin + k, end, false, out);
    out.push_back(Subtree(begin, begin + k, nullptr));
  }
}

Result<std::vector<Digest>> MerkleTree::ConsistencyProof(uint64_t old_size, uint64_t new_size) const {
  if (old_size == 0 || old_size > new_size || new_size > size()) {
    return InvalidArgument("consistency proof needs 0 < old_size (" + std::to_string(old_size) +
                           ") <= new_size (" + std::to_string(new_size) + ") <= size (" +
                           std::to_string(size()) + ")");
  }
  std::vector<Digest> out;
  SubProof(old_size, 0, new_size, true, out);
  return out;
}

bool MerkleTree::VerifyInclusion(const Digest& entry, uint64_t index, uint64_t tree_size,
                                 std::span<const Digest> proof, const Digest& root) {
  if (index >= tree_size) return false;
  uint64_t fn = index, sn = tree_size - 1;
  Digest r = LeafNode(entry);
  for (const Digest& p : proof) {
    if (sn == 0) return false;  // proof longer than the path
    if ((fn & 1) || fn == sn) {
      r = NodeHash(p, r);
      // A right-edge node with no right sibling climbs levels without hashing.
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool MerkleTree::VerifyConsistency(uint64_t old_size, uint64_t new_size, const Digest& old_root,
                                   const Digest& new_root, std::span<const Digest> proof) {
  if (old_size == 0 || old_size > new_size) return false;
  if (old_size == new_size) return proof.empty() && old_root == new_root;
  if (proof.empty() || proof.size() > 128) return false;
  std::vector<Digest> path;
  path.reserve(proof.size() + 1);
  // When the old tree is a complete subtree its root is itself a node of the new tree: the proof omits it.
  if (std::has_single_bit(old_size)) path.push_back(old_root);
  path.insert(path.end(), proof.begin(), proof.end());
  uint64_t fn = old_size - 1, sn = new_size - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Digest fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Digest& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = NodeHash(c, fr);
      sr = NodeHash(c, sr);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      sr = NodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == old_root && sr == new_root && sn == 0;
}

}  // namespace fp
