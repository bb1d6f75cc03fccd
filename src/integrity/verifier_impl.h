// verifier_impl.h (internal) — the verifier's state shared by verifier.cpp (scheduling, completion, API)
// and verifier_rollback.cpp (rollback, truncate, from-scratch re-hash). Locking rules: see verifier.cpp.
// defines: SeqState, MismatchRange, Verifier::Impl
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "fieldprint/verifier.h"
#include "integrity/verifier_backend.h"

namespace fp {
namespace integrity_detail {

struct SeqState {
  // Engine thread only.
  int32_t scheduled = 0;  // position of the last commit handed to the backend
  CommitFlags flags;
  // Completed state, under mu.
  mutable std::mutex mu;
  MerkleTree tree;
  CommitLog log;
  std::vector<std::vector<Digest>> layers;  // [tree.size()][num_layers] committed layer digests
  int32_t provisional_fill = 0;             // fill of the last page when provisional, else 0
  bool corrupt = false;
  int64_t corrupt_page = -1;  // lowest corrupt page seen
  explicit SeqState(int32_t page) : log(page) {}
};

// First index where two layer-digest lists differ, as [begin, end) of mismatching layers; {0,0} if equal.
inline std::pair<int32_t, int32_t> MismatchRange(std::span<const Digest> got, std::span<const Digest> want) {
  int32_t b = -1, e = -1;
  for (size_t l = 0; l < std::min(got.size(), want.size()); ++l) {
    if (!(got[l] == want[l])) {
      if (b < 0) b = static_cast<int32_t>(l);
      e = static_cast<int32_t>(l) + 1;
    }
  }
  if (got.size() != want.size() && b < 0) return {0, static_cast<int32_t>(want.size())};
  return b < 0 ? std::pair<int32_t, int32_t>{0, 0} : std::pair<int32_t, int32_t>{b, e};
}

}  // namespace integrity_detail

using integrity_detail::HashBatch;
using integrity_detail::HashJob;
using integrity_detail::MismatchRange;
using integrity_detail::PendingCommit;
using integrity_detail::SeqState;
using integrity_detail::VerifierBackend;

struct Verifier::Impl {
  KvCache* cache = nullptr;
  std::shared_ptr<const AnchorSegment> anchor;
  VerifierConfig cfg;
  CommitPolicy policy = CommitPolicy::Create({}, 1).value();
  VerifierBackendKind kind = VerifierBackendKind::kCpu;
  int num_layers = 0;
  int32_t page = 0;
  size_t token_bytes = 0;
  std::unique_ptr<VerifierBackend> be;

  std::mutex map_mu;
  std::map<SeqId, std::unique_ptr<SeqState>> seqs;
  std::vector<Digest> anchor_layers;  // [num_layers]
  Digest anchor_root;

  mutable std::mutex ev_mu;  // events and stats
  std::vector<CorruptionEvent> events;
  VerifierStats st;

  // Audit cursor (engine thread).
  SeqId audit_seq = -1;
  int64_t audit_page = 0;
  uint64_t audited_in_cycle = 0;
  uint64_t credit = 0;
  uint64_t step = 0;

  uint64_t PageBytes(int32_t fill) const { return 2ull * fill * token_bytes * num_layers; }

  Result<SeqState*> Find(SeqId seq) {
    auto it = seqs.find(seq);
    if (it == seqs.end())
      return InvalidArgument("verifier: sequence " + std::to_string(seq) + " is not tracked");
    return it->second.get();
  }

  Result<HashJob> PageJob(HashJob::Kind k, SeqId seq, int64_t pg, int32_t fill) const {
    auto table = cache->meta().BlockTable(seq);
    FP_RETURN_IF_ERROR(table.status());
    if (pg < 0 || pg >= static_cast<int64_t>(table->size())) {
      return OutOfRange("verifier: page " + std::to_string(pg) + " past sequence " + std::to_string(seq));
    }
    HashJob j;
    j.kind = k;
    j.seq = seq;
    j.page = pg;
    j.block = (*table)[pg];
    j.fill = fill;
    auto segs = PageLayerSegments(cache->storage(), j.block, fill);
    FP_RETURN_IF_ERROR(segs.status());
    j.segments = std::move(*segs);
    j.bytes = PageBytes(fill);
    return j;
  }

  void Raise(CorruptionEvent e) {
    std::lock_guard<std::mutex> g(ev_mu);
    events.push_back(e);
  }

  void ScheduleAudits(HashBatch& b);
  void Complete(HashBatch& b, std::span<const Digest> d);
  // Cuts the cache to cache_len and the commitments back to log entry `entry` (-1: none) at position target.
  Status RestoreTo(SeqId seq, SeqState& s, int64_t entry, std::vector<Digest> prefix_layers, int32_t target,
                   int32_t cache_len);
  Result<std::vector<Digest>> HashPrefix(SeqId seq, int64_t pg, int32_t fill, void* stream);
};

}  // namespace fp
