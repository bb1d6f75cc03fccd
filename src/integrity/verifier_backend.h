// verifier_backend.h (internal) — the hashing engines behind Verifier: a batch of page jobs in, layer
// digests out through a sink called on the backend's own thread, in submission order.
// defines: HashJob, PendingCommit, HashBatch, VerifierBackend, MakeCpuVerifierBackend,
// MakeCudaVerifierBackend
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "fieldprint/kv_metadata.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"
#include "fieldprint/tree_hash.h"

namespace fp::integrity_detail {

// One page (all layers) or the anchor to hash.
struct HashJob {
  enum class Kind : uint8_t { kCommit, kAudit, kAnchor };
  Kind kind = Kind::kCommit;
  SeqId seq = -1;
  int64_t page = -1;
  int32_t block = -1;
  int32_t fill = 0;
  std::vector<ByteSegment> segments;  // [2 * num_layers] K, V of each layer (host or device pointers)
  std::vector<Digest> expected;       // [num_layers] audits and anchor checks; empty for commits
  uint64_t bytes = 0;
};

// A commit whose pages are jobs [first_job, first_job + num_jobs) of its batch, in page order.
struct PendingCommit {
  SeqId seq = -1;
  int32_t position = 0;
  size_t first_job = 0, num_jobs = 0;
};

struct HashBatch {
  uint64_t step = 0;
  std::vector<HashJob> jobs;
  std::vector<PendingCommit> commits;
  // Appends `other` after this batch (deferred work merged into the next step's).
  void Merge(HashBatch&& other);
};

class VerifierBackend {
 public:
  // digests: [jobs.size() * num_layers], job-major.
  using Sink = std::function<void(HashBatch& batch, std::span<const Digest> digests)>;
  virtual ~VerifierBackend() = default;
  // Queues the batch after the work already enqueued on compute_stream (CUDA) / already done (CPU).
  virtual Status Submit(HashBatch&& batch, void* compute_stream) = 0;
  // Returns once every submitted batch went through the sink.
  virtual Status Drain() = 0;
  // Hashes jobs now on the calling thread (after compute_stream drained), bypassing the sink.
  virtual Result<std::vector<Digest>> HashNow(std::span<const HashJob> jobs, void* compute_stream) = 0;
  // The first error a background thread met (sticky), ok otherwise.
  virtual Status background_status() = 0;
  virtual uint64_t deferred_batches() const { return 0; }
};

std::unique_ptr<VerifierBackend> MakeCpuVerifierBackend(int num_layers, size_t chunk_bytes,
                                                        VerifierBackend::Sink sink);
// Unimplemented without CUDA.
Result<std::unique_ptr<VerifierBackend>> MakeCudaVerifierBackend(int num_layers, size_t chunk_bytes,
                                                                 int slots, VerifierBackend::Sink sink);

}  // namespace fp::integrity_detail
