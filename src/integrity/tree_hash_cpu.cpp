// tree_hash_cpu.cpp — RFC 6962 tree root over fixed-size chunks on the host, single- or multi-threaded.
// Leaves are hashed into one array [num_leaves] Digest, then reduced level by level (pair left to right, odd
// last node promoted), ping-ponging between two arrays so a level can be split across threads without races.
// The recursive MTH is kept beside it as the reference the level-wise form is tested against.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "fieldprint/tree_hash.h"

namespace fp {
namespace {

// Levels narrower than this are reduced on the calling thread: spawning costs more than ~1k node hashes.
constexpr size_t kMinParallelNodes = 2048;

// Runs fn(begin, end) over [0, n) split into `threads` contiguous ranges (threads >= 1).
template <typename Fn>
void ParallelFor(size_t n, int threads, Fn&& fn) {
  const size_t t = std::min<size_t>(static_cast<size_t>(threads), n);
  if (t <= 1) {
    fn(size_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(t - 1);
  const size_t step = (n + t - 1) / t;
  for (size_t i = 1; i < t; ++i) {
    const size_t b = std::min(n, i * step), e = std::min(n, (i + 1) * step);
    pool.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn(size_t{0}, std::min(n, step));
  for (auto& th : pool) th.join();
}

Digest EmptyRoot() { return Sha256(nullptr, 0); }

Digest RecursiveMth(std::span<const Digest> d) {
  if (d.size() == 1) return d[0];
  size_t k = 1;
  while (k * 2 < d.size()) k *= 2;  // largest power of two < n
  return NodeHash(RecursiveMth(d.first(k)), RecursiveMth(d.subspan(k)));
}

// Reduces `cur` ([n] nodes of one level) to the root, using `next` as scratch.
Digest ReduceLevels(std::vector<Digest>& cur, std::vector<Digest>& next, int threads) {
  size_t n = cur.size();
  if (n == 0) return EmptyRoot();
  next.resize((n + 1) / 2);
  while (n > 1) {
    const size_t pairs = n / 2;
    const int t = pairs >= kMinParallelNodes ? threads : 1;
    ParallelFor(pairs, t, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) next[i] = NodeHash(cur[2 * i], cur[2 * i + 1]);
    });
    if (n % 2 == 1) next[pairs] = cur[n - 1];  // odd last node is promoted unchanged
    n = (n + 1) / 2;
    std::swap(cur, next);
  }
  return cur[0];
}

}  // namespace

size_t CountLeaves(std::span<const ByteSegment> segments, size_t chunk_bytes) {
  if (chunk_bytes == 0) return 0;
  size_t n = 0;
  for (const auto& s : segments) n += s.size / chunk_bytes + (s.size % chunk_bytes != 0 ? 1 : 0);
  return n;
}

Result<Digest> TreeHashCpu(std::span<const ByteSegment> segments, size_t chunk_bytes, int threads) {
  if (chunk_bytes == 0 || chunk_bytes > kMaxChunkBytes) {
    return InvalidArgument("TreeHashCpu: chunk_bytes " + std::to_string(chunk_bytes) + " outside [1, " +
                           std::to_string(kMaxChunkBytes) + "]");
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].data == nullptr && segments[i].size > 0) {
      return InvalidArgument("TreeHashCpu: segment " + std::to_string(i) + " has null data and size " +
                             std::to_string(segments[i].size));
    }
  }
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  // [num_leaves] the chunk each leaf covers, in tree order.
  std::vector<ByteSegment> chunks;
  chunks.reserve(CountLeaves(segments, chunk_bytes));
  for (const auto& s : segments) {
    const auto* p = static_cast<const uint8_t*>(s.data);
    for (size_t off = 0; off < s.size; off += chunk_bytes) {
      chunks.push_back({p + off, std::min(chunk_bytes, s.size - off)});
    }
  }
  if (chunks.empty()) return EmptyRoot();

  std::vector<Digest> level(chunks.size());  // [num_leaves]
  std::vector<Digest> scratch;                 // [ceil(num_leaves / 2)]
  ParallelFor(chunks.size(), threads, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) level[i] = LeafHash(chunks[i].data, chunks[i].size);
  });
  return ReduceLevels(level, scratch, threads);
}

Digest MerkleRootOfLeaves(std::span<const Digest> leaf_hashes) {
  std::vector<Digest> cur(leaf_hashes.begin(), leaf_hashes.end()), next;
  return ReduceLevels(cur, next, 1);
}

Digest MerkleRootRecursive(std::span<const Digest> leaf_hashes) {
  if (leaf_hashes.empty()) return EmptyRoot();
  return RecursiveMth(leaf_hashes);
}

}  // namespace fp
