// verifier_rollback.cpp — recovery paths: re-hash everything a sequence committed, cut the cache and the
// commitments back to the last commit that still verifies (Rollback) or that the engine asks for (Truncate).
// All of them drain in-flight hashing first: they free or rewrite pages a queued job might read.
#include "fieldprint/page_digest.h"
#include "fieldprint/verifier.h"
#include "integrity/verifier_impl.h"

namespace fp {

Result<std::vector<Digest>> Verifier::Impl::HashPrefix(SeqId seq, int64_t pg, int32_t fill, void* stream) {
  auto job = PageJob(HashJob::Kind::kAudit, seq, pg, fill);
  FP_RETURN_IF_ERROR(job.status());
  return be->HashNow(std::span<const HashJob>(&*job, 1), stream);
}

Status Verifier::Impl::RestoreTo(SeqId seq, SeqState& s, int64_t entry, std::vector<Digest> prefix_layers,
                                 int32_t target, int32_t cache_len) {
  FP_RETURN_IF_ERROR(cache->meta().Truncate(seq, cache_len));
  const int64_t full = target / page;
  std::lock_guard<std::mutex> g(s.mu);
  FP_RETURN_IF_ERROR(s.tree.TruncateTo(std::min<uint64_t>(full, s.tree.size())));
  s.layers.resize(s.tree.size());
  s.provisional_fill = target % page;
  if (s.provisional_fill > 0) {
    const CommitEntry& e = s.log.entries()[entry];
    s.tree.Append(e.last_entry);
    s.layers.push_back(std::move(prefix_layers));
  }
  FP_RETURN_IF_ERROR(s.log.TruncateTo(static_cast<size_t>(entry + 1)));
  s.scheduled = target;
  s.flags = {};
  s.corrupt = false;
  s.corrupt_page = -1;
  if (entry >= 0 && !(s.tree.Root() == s.log.entries().back().root)) {
    return Internal("verifier: restored tree does not reproduce commit root at " + std::to_string(target));
  }
  return Status::Ok();
}

Result<int32_t> Verifier::Rollback(SeqId seq, void* compute_stream) {
  Impl& m = *impl_;
  auto sp = m.Find(seq);
  FP_RETURN_IF_ERROR(sp.status());
  SeqState& s = **sp;
  FP_RETURN_IF_ERROR(m.be->Drain());
  // Re-hash every committed page at its committed fill and find the first that fails.
  std::vector<HashJob> jobs;
  std::vector<std::vector<Digest>> want;
  {
    std::lock_guard<std::mutex> g(s.mu);
    for (uint64_t pg = 0; pg < s.tree.size(); ++pg) {
      const bool last = pg + 1 == s.tree.size();
      auto job = m.PageJob(HashJob::Kind::kAudit, seq, static_cast<int64_t>(pg),
                           last && s.provisional_fill > 0 ? s.provisional_fill : m.page);
      FP_RETURN_IF_ERROR(job.status());
      jobs.push_back(std::move(*job));
      want.push_back(s.layers[pg]);
    }
  }
  auto got = m.be->HashNow(jobs, compute_stream);
  FP_RETURN_IF_ERROR(got.status());
  const size_t L = static_cast<size_t>(m.num_layers);
  int64_t bad = static_cast<int64_t>(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto [lb, le] = MismatchRange(std::span<const Digest>(*got).subspan(j * L, L), want[j]);
    if (lb != le) {
      bad = static_cast<int64_t>(j);
      break;
    }
  }
  // The latest commit whose full pages all lie before `bad` and whose provisional prefix re-verifies.
  const std::vector<CommitEntry> entries = [&] {
    std::lock_guard<std::mutex> g(s.mu);
    return s.log.entries();
  }();
  for (int64_t i = static_cast<int64_t>(entries.size()) - 1; i >= 0; --i) {
    const CommitEntry& e = entries[i];
    const int64_t full = e.position / m.page;
    const int32_t fill = e.position % m.page;
    if (full > bad || (fill > 0 && full >= static_cast<int64_t>(jobs.size()))) continue;
    std::vector<Digest> prefix;
    if (fill > 0) {
      auto p = m.HashPrefix(seq, full, fill, compute_stream);
      FP_RETURN_IF_ERROR(p.status());
      if (!(CombineLayerDigests(*p) == e.last_entry)) continue;
      prefix = std::move(*p);
    }
    FP_RETURN_IF_ERROR(m.RestoreTo(seq, s, i, std::move(prefix), e.position, e.position));
    return e.position;
  }
  FP_RETURN_IF_ERROR(m.RestoreTo(seq, s, -1, {}, 0, 0));
  return 0;
}

Status Verifier::Truncate(SeqId seq, int32_t new_len, void* compute_stream) {
  Impl& m = *impl_;
  auto sp = m.Find(seq);
  FP_RETURN_IF_ERROR(sp.status());
  SeqState& s = **sp;
  auto len = m.cache->meta().Length(seq);
  FP_RETURN_IF_ERROR(len.status());
  if (new_len < 0 || new_len > *len) return OutOfRange("verifier truncate to " + std::to_string(new_len));
  FP_RETURN_IF_ERROR(m.be->Drain());
  int64_t i;
  CommitEntry e;
  {
    std::lock_guard<std::mutex> g(s.mu);
    i = s.log.LastAtOrBefore(new_len);
    if (i >= 0) e = s.log.entries()[i];
  }
  std::vector<Digest> prefix;
  if (i >= 0 && e.position % m.page != 0) {  // the provisional page's layer digests at that fill, for audits
    auto p = m.HashPrefix(seq, e.position / m.page, e.position % m.page, compute_stream);
    FP_RETURN_IF_ERROR(p.status());
    prefix = std::move(*p);
  }
  // Bytes stay up to new_len; commitments go back to the last commit at or before it (the tail past that
  // commit is committed again by the next step's policy decision).
  return m.RestoreTo(seq, s, i, std::move(prefix), i >= 0 ? e.position : 0, new_len);
}

Result<Digest> Verifier::RecomputeRoot(SeqId seq, void* compute_stream) {
  Impl& m = *impl_;
  auto sp = m.Find(seq);
  FP_RETURN_IF_ERROR(sp.status());
  FP_RETURN_IF_ERROR(m.be->Drain());
  std::vector<HashJob> jobs;
  {
    std::lock_guard<std::mutex> g((*sp)->mu);
    const uint64_t n = (*sp)->tree.size();
    for (uint64_t pg = 0; pg < n; ++pg) {
      const int32_t fill = pg + 1 == n && (*sp)->provisional_fill > 0 ? (*sp)->provisional_fill : m.page;
      auto job = m.PageJob(HashJob::Kind::kAudit, seq, static_cast<int64_t>(pg), fill);
      FP_RETURN_IF_ERROR(job.status());
      jobs.push_back(std::move(*job));
    }
  }
  auto got = m.be->HashNow(jobs, compute_stream);
  FP_RETURN_IF_ERROR(got.status());
  const size_t L = static_cast<size_t>(m.num_layers);
  MerkleTree t;
  for (size_t j = 0; j < jobs.size(); ++j)
    t.Append(CombineLayerDigests(std::span<const Digest>(*got).subspan(j * L, L)));
  return t.Root();
}

}  // namespace fp
