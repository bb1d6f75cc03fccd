// fieldprint/tree_hash_cuda.h — SHA-256 and RFC 6962 tree hashing on a CUDA device, asynchronous on a stream.
// defines: GpuHashItem, GpuTreeHasher, Sha256ChunksGpu, TreeHashGpuSync
//
// Same digests as sha256.h / tree_hash.h, bit for bit. Usable from plain C++ translation units: the stream is
// taken as CUstream_st* (that is what cudaStream_t is), so this header needs no CUDA include.
// Without CUDA in the build every call returns Unimplemented.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fieldprint/sha256.h"
#include "fieldprint/status.h"
#include "fieldprint/tree_hash.h"

struct CUstream_st;  // cudaStream_t == CUstream_st*

namespace fp {

// One independent tree: the root over the chunks of these segments (device pointers, any alignment), exactly
// as TreeHashCpu defines it. For a KV page: the page's K and V bytes of every layer, in a fixed order.
struct GpuHashItem {
  std::span<const ByteSegment> segments;
};

// Owns a device workspace and a pinned staging buffer; hashes a batch of items in a few launches.
//   auto h = GpuTreeHasher::Create().value();
//   h->Plan(items);                 // host work: leaf layout, copied into pinned staging (no device sync)
//   h->Run(stream, out);            // enqueues: plan upload, leaf+subtree kernel, reduce kernels, digest store
// out: [num_items] Digests, device memory or host-pinned memory; valid once the stream reaches that point.
// One hasher serves one batch in flight: Plan waits (host) for the previous Run's plan upload to finish
// before it overwrites the staging buffer, and Runs on one stream are ordered. Use several hashers for
// concurrent batches on different streams. Not thread-safe.
class GpuTreeHasher {
 public:
  // chunk_bytes in [1, kMaxChunkBytes] (16-byte multiples take the fast aligned-load path when segments are
  // 16-byte aligned; other layouts are correct but slower); device: the CUDA device (-1 = the current one).
  static Result<std::unique_ptr<GpuTreeHasher>> Create(size_t chunk_bytes = kDefaultChunkBytes, int device = -1);
  ~GpuTreeHasher();
  GpuTreeHasher(const GpuTreeHasher&) = delete;
  GpuTreeHasher& operator=(const GpuTreeHasher&) = delete;

  // Errors: InvalidArgument for a segment with null data and size > 0; Internal for a CUDA failure.
  Status Plan(std::span<const GpuHashItem> items);
  // Enqueues the hashing of the planned items; returns after enqueueing. out must hold num_items() digests.
  Status Run(CUstream_st* stream, Digest* out);

  size_t chunk_bytes() const;
  size_t num_items() const;
  size_t num_leaves() const;

  struct Impl;  // opaque; only Create makes one
  explicit GpuTreeHasher(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// Plain SHA-256 (no leaf prefix, no tree) of independent chunks: digest i = SHA-256(data[i*chunk ..
// min((i+1)*chunk, n))), ceil(n / chunk) digests into out (device memory, or pinned host memory, which the
// kernel writes directly). One thread per chunk; the
// "plain chunk" rate of the benchmark and the way tests compare the GPU compression with OpenSSL.
Status Sha256ChunksGpu(const void* device_data, size_t n, size_t chunk_bytes, Digest* out, CUstream_st* stream);

// Convenience for tests and tools: plan, run on a private stream, wait, return the roots.
Result<std::vector<Digest>> TreeHashGpuSync(std::span<const GpuHashItem> items,
                                            size_t chunk_bytes = kDefaultChunkBytes);

}  // namespace fp
