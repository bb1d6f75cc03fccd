// fieldprint/tree_hash.h — RFC 6962 Merkle tree hash over fixed-size chunks of a list of byte segments (CPU).
// defines: kDefaultChunkBytes, ByteSegment, CountLeaves, TreeHashCpu, MerkleRootOfLeaves, MerkleRootRecursive
//
// Leaves: every segment is cut into ceil(size / chunk_bytes) chunks (the last may be short, an empty segment
// gives no leaf); the leaves of all segments, in order, are LeafHash(chunk). The root is RFC 6962's MTH:
//   MTH({})      = SHA-256("")
//   MTH({d0})    = LeafHash(d0)
//   MTH(d0..n-1) = NodeHash(MTH(d0..k-1), MTH(dk..n-1)), k the largest power of two < n.
// That equals pairing left to right level by level with an odd last node promoted unchanged (tested), which is
// what the multi-threaded CPU path and the GPU kernels compute.
#pragma once

#include <cstddef>
#include <span>

#include "fieldprint/sha256.h"
#include "fieldprint/status.h"

namespace fp {

// 4 KiB: see docs/hashing.md (measured: bulk GPU tree rate vs chunk size, and one-page latency).
inline constexpr size_t kDefaultChunkBytes = 4096;
// Chunk sizes above this are refused (a GPU thread hashes one chunk; huge chunks mean no parallelism).
inline constexpr size_t kMaxChunkBytes = size_t{1} << 24;

// A byte range. Host memory for the CPU functions, device memory for GpuTreeHasher.
struct ByteSegment {
  const void* data = nullptr;
  size_t size = 0;
};

// Number of leaves the segments give at chunk_bytes (0 when chunk_bytes == 0).
size_t CountLeaves(std::span<const ByteSegment> segments, size_t chunk_bytes);

// The tree root over all segments' chunks (host memory). threads > 1 hashes leaves and wide levels on that
// many std::threads (threads <= 0 means std::thread::hardware_concurrency()).
// Errors: InvalidArgument for chunk_bytes == 0 or > kMaxChunkBytes, or a segment with null data and size > 0.
Result<Digest> TreeHashCpu(std::span<const ByteSegment> segments, size_t chunk_bytes = kDefaultChunkBytes,
                           int threads = 1);

// MTH over already-computed leaf hashes (level-by-level pairing). Empty input gives SHA-256("").
Digest MerkleRootOfLeaves(std::span<const Digest> leaf_hashes);
// The same root by RFC 6962's recursive definition; the reference the level-wise code is tested against.
Digest MerkleRootRecursive(std::span<const Digest> leaf_hashes);

}  // namespace fp
