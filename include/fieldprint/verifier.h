// fieldprint/verifier.h — the off-critical-path integrity pipeline over a KvCache (docs/integrity.md).
//
// The engine's scheduler thread calls OnStepWritten after each step's KV writes were ENQUEUED. The verifier
// applies the commit policy, resolves the page bytes to hash (block tables are read here, on the engine
// thread), adds audit re-hashes within a byte budget and hands one batch to its backend:
//   CPU:  a worker thread hashes the host pool and updates the trees.
//   CUDA: an event is recorded on the compute stream, a side stream waits on it, GpuTreeHasher hashes the
//         pages into pinned host memory, a host thread waits for the side stream's event and updates the
//         trees. The compute stream never waits on the side stream; OnStepWritten never blocks on the GPU.
//         When every staging slot is still busy the batch is deferred to the next step (the pages are
//         immutable, so hashing later reads the same bytes).
// Snapshot rule: only rows [0, fill) of committed pages are hashed and decode only appends, so those bytes
// never change after the step that wrote them; everything that rewrites or frees pages (Rollback, Truncate,
// Forget) goes through the verifier, which drains in-flight hashing first.
// Thread model: every method below is for the engine thread; results land from the backend thread.
// defines: VerifierBackendKind, VerifierConfig, CorruptionEvent, VerifierStats, Verifier
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fieldprint/commit_log.h"
#include "fieldprint/commit_policy.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/merkle.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"
#include "fieldprint/tree_hash.h"

namespace fp {

enum class VerifierBackendKind : uint8_t { kCpu, kCuda };

struct VerifierConfig {
  size_t chunk_bytes = kDefaultChunkBytes;
  CommitPolicyConfig policy;
  // Bytes of committed pages re-hashed per step (audits, round-robin over all tracked sequences). 0 = none.
  size_t audit_bytes_per_step = 0;
  // Re-check the anchor root every this many steps. 0 = never.
  int32_t anchor_every_steps = 0;
  // CUDA: batches in flight at once (each owns a GpuTreeHasher and a pinned digest buffer).
  int32_t cuda_slots = 4;
};

struct CorruptionEvent {
  enum class Kind : uint8_t { kPage, kAnchor };
  Kind kind = Kind::kPage;
  SeqId seq = -1;                          // kPage only
  int64_t page = -1;                       // logical page index in the sequence (kPage only)
  int32_t block = -1;                      // physical block id (kPage only)
  int32_t layer_begin = 0, layer_end = 0;  // mismatching layers: [layer_begin, layer_end)
  uint64_t step = 0;                       // OnStepWritten count when the audit was scheduled
  std::string ToString() const;
};

struct VerifierStats {
  uint64_t steps = 0;
  uint64_t commits = 0;       // completed
  uint64_t pages_hashed = 0;  // commit hashing, completed
  uint64_t pages_audited = 0;
  uint64_t anchor_checks = 0;
  uint64_t audit_cycles = 0;      // full round-robin passes over every committed page
  uint64_t deferred_batches = 0;  // CUDA: steps whose work waited for a free slot
  uint64_t bytes_hashed = 0;
};

class Verifier {
 public:
  // `cache` must outlive the verifier. With kCuda the cache must live on the GPU; with kCpu on the host.
  // `anchor` (may be null) is the shared anchor; its root is computed now (synchronously) and re-checked on
  // schedule. InvalidArgument for a bad config, Unimplemented for kCuda in a build without CUDA.
  static Result<std::unique_ptr<Verifier>> Create(KvCache* cache, std::shared_ptr<const AnchorSegment> anchor,
                                                  const VerifierConfig& config, VerifierBackendKind backend);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Starts verifying seq (any current length; its first step commits per the policy).
  Status Track(SeqId seq);
  // child = Fork(parent) was just done in the cache: the child starts from the parent's commits (drains).
  Status TrackFork(SeqId parent, SeqId child);
  // Stops verifying seq; call BEFORE freeing it in the cache (drains, so no hash reads a freed page).
  Status Forget(SeqId seq);

  // After a step's KV writes for `seqs` were enqueued on `compute_stream` (a cudaStream_t; ignored by the CPU
  // backend). Never waits for the GPU. Returns a background failure (a CUDA error) if one happened.
  Status OnStepWritten(std::span<const SeqId> seqs, void* compute_stream = nullptr);
  // Boundaries the engine knows: commit at the next OnStepWritten even mid-page.
  Status MarkTurnEnd(SeqId seq);
  Status RequestCommit(SeqId seq);

  // Waits for everything in flight (tests, shutdown, before reading roots exactly).
  Status Drain();

  // Corruption events raised since the last call.
  std::vector<CorruptionEvent> TakeEvents();
  bool IsCorrupt(SeqId seq) const;
  // The last position whose commit is hashed and appended and whose pages have passed every audit so far;
  // on a corrupt sequence, the last commit lying wholly before the corrupt page. 0 before the first commit.
  Result<int32_t> VerifiedWatermark(SeqId seq) const;

  // On corruption: drains, re-hashes the sequence's committed pages, picks the last commit whose pages all
  // re-verify, truncates the cache to it (freeing what follows), restores the tree and log to that commit
  // and returns the position the engine regenerates from. `compute_stream` is synchronized first.
  Result<int32_t> Rollback(SeqId seq, void* compute_stream = nullptr);
  // Engine-initiated shrink (e.g. rejected speculative tokens): drains, truncates the cache to new_len and
  // the commitments to the last commit at or before it.
  Status Truncate(SeqId seq, int32_t new_len, void* compute_stream = nullptr);

  // Completed state (exact after Drain()).
  Result<Digest> Root(SeqId seq) const;
  Result<CommitLog> Log(SeqId seq) const;
  Result<MerkleTree> Tree(SeqId seq) const;
  // Re-hashes every committed page of seq now (synchronously) and returns the root from scratch; equals
  // Root(seq) when nothing is corrupt.
  Result<Digest> RecomputeRoot(SeqId seq, void* compute_stream = nullptr);
  // The anchor root computed at Create (SHA-256("") without an anchor).
  Digest AnchorRoot() const;
  VerifierStats stats() const;
  VerifierBackendKind backend() const;

  struct Impl;

 private:
  explicit Verifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp
