// verifier.cpp — commit scheduling, audits, completion, watermark and the public API (backend-independent).
//
// Locking: the engine thread is the only one that inserts/erases sequences or touches the scheduling fields
// (scheduled, flags, audit cursor), so it reads the map without a lock; the backend thread looks sequences up
// under map_mu_. Each sequence's completed state (tree, log, layer digests, corruption) sits under its own
// mutex, held only for O(log n) tree updates: page digests are combined before the lock is taken.
#include "fieldprint/verifier.h"

#include <string>

#include "fieldprint/page_digest.h"
#include "integrity/verifier_impl.h"

namespace fp {

std::string CorruptionEvent::ToString() const {
  std::string layers = "layers [" + std::to_string(layer_begin) + ", " + std::to_string(layer_end) + ")";
  if (kind == Kind::kAnchor) return "anchor corrupt: " + layers + " (step " + std::to_string(step) + ")";
  return "sequence " + std::to_string(seq) + " page " + std::to_string(page) + " (block " +
         std::to_string(block) + ") corrupt: " + layers + " (step " + std::to_string(step) + ")";
}

void Verifier::Impl::ScheduleAudits(HashBatch& b) {
  if (cfg.audit_bytes_per_step == 0 || seqs.empty()) return;
  credit = std::min<uint64_t>(credit + cfg.audit_bytes_per_step, cfg.audit_bytes_per_step + PageBytes(page));
  // At most one visit per committed page per step (bounds the loop when the budget exceeds the pages).
  uint64_t total_pages = 0;
  for (auto& [id, s] : seqs) {
    std::lock_guard<std::mutex> g(s->mu);
    total_pages += s->tree.size();
  }
  for (uint64_t visits = 0; visits <= total_pages + seqs.size(); ++visits) {
    auto it = seqs.find(audit_seq);
    bool advance = it == seqs.end();
    int32_t fill = 0;
    std::vector<Digest> expected;
    if (!advance) {
      std::lock_guard<std::mutex> g(it->second->mu);
      SeqState& s = *it->second;
      if (s.corrupt || audit_page >= static_cast<int64_t>(s.tree.size())) {
        advance = true;
      } else {
        const bool last = audit_page + 1 == static_cast<int64_t>(s.tree.size());
        fill = last && s.provisional_fill > 0 ? s.provisional_fill : page;
        expected = s.layers[audit_page];
      }
    }
    if (advance) {
      it = seqs.upper_bound(audit_seq);
      if (it == seqs.end()) {  // wrapped: one pass over every committed page is done
        if (audited_in_cycle > 0) {
          std::lock_guard<std::mutex> g(ev_mu);
          ++st.audit_cycles;
        }
        audited_in_cycle = 0;
        it = seqs.begin();
      }
      audit_seq = it->first;
      audit_page = 0;
      continue;
    }
    if (credit < PageBytes(fill)) return;
    auto job = PageJob(HashJob::Kind::kAudit, audit_seq, audit_page, fill);
    if (!job.ok()) {  // the cache shrank under us: skip this sequence's remaining pages
      audit_page = INT64_MAX;
      continue;
    }
    job->expected = std::move(expected);
    credit -= job->bytes;
    b.jobs.push_back(std::move(*job));
    ++audit_page;
    ++audited_in_cycle;
  }
}

void Verifier::Impl::Complete(HashBatch& b, std::span<const Digest> d) {
  const size_t L = static_cast<size_t>(num_layers);
  std::vector<Digest> page_digest(b.jobs.size());  // [jobs], combined outside any lock
  for (size_t j = 0; j < b.jobs.size(); ++j) {
    if (b.jobs[j].kind == HashJob::Kind::kCommit) page_digest[j] = CombineLayerDigests(d.subspan(j * L, L));
  }
  uint64_t pages = 0, bytes = 0, audited = 0, anchors = 0, commits = 0;
  for (const PendingCommit& c : b.commits) {
    SeqState* s = nullptr;
    {
      std::lock_guard<std::mutex> g(map_mu);
      auto it = seqs.find(c.seq);
      if (it != seqs.end()) s = it->second.get();
    }
    if (s == nullptr) continue;
    std::lock_guard<std::mutex> g(s->mu);
    for (size_t j = c.first_job; j < c.first_job + c.num_jobs; ++j) {
      const HashJob& job = b.jobs[j];
      std::vector<Digest> layers(d.begin() + j * L, d.begin() + (j + 1) * L);
      if (job.page + 1 == static_cast<int64_t>(s->tree.size())) {  // the provisional page, re-committed
        (void)s->tree.ReplaceLast(page_digest[j]);
        s->layers.back() = std::move(layers);
      } else {
        s->tree.Append(page_digest[j]);
        s->layers.push_back(std::move(layers));
      }
      ++pages;
      bytes += job.bytes;
    }
    s->provisional_fill = c.position % page;
    CommitEntry e{c.position, s->tree.size(), s->tree.Root(), s->tree.Entry(s->tree.size() - 1).value()};
    (void)s->log.Append(e);  // positions increase and sizes match by construction
    ++commits;
  }
  for (size_t j = 0; j < b.jobs.size(); ++j) {
    const HashJob& job = b.jobs[j];
    if (job.kind == HashJob::Kind::kCommit) continue;
    auto [lb, le] = MismatchRange(d.subspan(j * L, L), job.expected);
    bytes += job.bytes;
    if (job.kind == HashJob::Kind::kAnchor)
      ++anchors;
    else
      ++audited;
    if (lb == le) continue;
    CorruptionEvent ev;
    ev.kind =
        job.kind == HashJob::Kind::kAnchor ? CorruptionEvent::Kind::kAnchor : CorruptionEvent::Kind::kPage;
    ev.seq = job.seq;
    ev.page = job.page;
    ev.block = job.block;
    ev.layer_begin = lb;
    ev.layer_end = le;
    ev.step = b.step;
    if (ev.kind == CorruptionEvent::Kind::kPage) {
      std::lock_guard<std::mutex> g(map_mu);
      auto it = seqs.find(job.seq);
      if (it != seqs.end()) {
        std::lock_guard<std::mutex> g2(it->second->mu);
        it->second->corrupt = true;
        if (it->second->corrupt_page < 0 || job.page < it->second->corrupt_page)
          it->second->corrupt_page = job.page;
      }
    }
    Raise(ev);
  }
  std::lock_guard<std::mutex> g(ev_mu);
  st.commits += commits;
  st.pages_hashed += pages;
  st.pages_audited += audited;
  st.anchor_checks += anchors;
  st.bytes_hashed += bytes;
}

// ---- public API
// ---------------------------------------------------------------------------------------------

Verifier::Verifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Verifier::~Verifier() {
  if (impl_ && impl_->be) {
    (void)impl_->be->Drain();
    impl_->be.reset();  // stop the backend thread while the state its sink writes still exists
  }
}

Result<std::unique_ptr<Verifier>> Verifier::Create(KvCache* cache,
                                                   std::shared_ptr<const AnchorSegment> anchor,
                                                   const VerifierConfig& config,
                                                   VerifierBackendKind backend) {
  if (cache == nullptr) return InvalidArgument("verifier: null cache");
  if (config.chunk_bytes < 64 || config.chunk_bytes > kMaxChunkBytes) {
    return InvalidArgument("verifier: chunk_bytes must be in [64, 2^24]");
  }
  if (config.anchor_every_steps < 0 || config.cuda_slots < 1)
    return InvalidArgument("verifier: bad schedule");
  const Device want = backend == VerifierBackendKind::kCuda ? Device::kCuda : Device::kCpu;
  if (cache->device() != want) return InvalidArgument("verifier: the backend must match the cache's device");
  if (anchor && anchor->device() != want) return InvalidArgument("verifier: anchor on the wrong device");
  auto impl = std::make_unique<Impl>();
  const KvLayout& L = cache->layout();
  auto policy = CommitPolicy::Create(config.policy, L.page_size);
  FP_RETURN_IF_ERROR(policy.status());
  impl->cache = cache;
  impl->anchor = std::move(anchor);
  impl->cfg = config;
  impl->policy = *policy;
  impl->kind = backend;
  impl->num_layers = L.num_layers;
  impl->page = L.page_size;
  impl->token_bytes = L.token_bytes();
  Impl* raw = impl.get();
  auto sink = [raw](HashBatch& b, std::span<const Digest> d) { raw->Complete(b, d); };
  if (backend == VerifierBackendKind::kCpu) {
    impl->be = integrity_detail::MakeCpuVerifierBackend(L.num_layers, config.chunk_bytes, sink);
  } else {
    auto be =
        integrity_detail::MakeCudaVerifierBackend(L.num_layers, config.chunk_bytes, config.cuda_slots, sink);
    FP_RETURN_IF_ERROR(be.status());
    impl->be = std::move(*be);
  }
  impl->anchor_root = Sha256(nullptr, 0);
  if (impl->anchor && impl->anchor->length() > 0) {
    if (impl->anchor->num_layers() != L.num_layers) return InvalidArgument("verifier: anchor layer count");
    auto segs = AnchorLayerSegments(*impl->anchor);
    FP_RETURN_IF_ERROR(segs.status());
    HashJob j;
    j.kind = HashJob::Kind::kAnchor;
    j.segments = std::move(*segs);
    auto d = impl->be->HashNow(std::span<const HashJob>(&j, 1), nullptr);
    FP_RETURN_IF_ERROR(d.status());
    impl->anchor_layers = std::move(*d);
    impl->anchor_root = CombineLayerDigests(impl->anchor_layers);
  }
  return std::unique_ptr<Verifier>(new Verifier(std::move(impl)));
}

Status Verifier::Track(SeqId seq) {
  if (!impl_->cache->meta().Contains(seq))
    return InvalidArgument("verifier: unknown sequence " + std::to_string(seq));
  if (impl_->seqs.count(seq)) return FailedPrecondition("verifier: sequence already tracked");
  std::lock_guard<std::mutex> g(impl_->map_mu);
  impl_->seqs.emplace(seq, std::make_unique<SeqState>(impl_->page));
  return Status::Ok();
}

Status Verifier::TrackFork(SeqId parent, SeqId child) {
  auto p = impl_->Find(parent);
  FP_RETURN_IF_ERROR(p.status());
  FP_RETURN_IF_ERROR(Track(child));
  FP_RETURN_IF_ERROR(impl_->be->Drain());
  SeqState& c = *impl_->seqs.at(child);
  std::scoped_lock g((*p)->mu, c.mu);
  c.scheduled = (*p)->scheduled;
  c.tree = (*p)->tree;
  c.log = (*p)->log;
  c.layers = (*p)->layers;
  c.provisional_fill = (*p)->provisional_fill;
  c.corrupt = (*p)->corrupt;
  c.corrupt_page = (*p)->corrupt_page;
  return Status::Ok();
}

Status Verifier::Forget(SeqId seq) {
  FP_RETURN_IF_ERROR(impl_->Find(seq).status());
  FP_RETURN_IF_ERROR(impl_->be->Drain());
  std::lock_guard<std::mutex> g(impl_->map_mu);
  impl_->seqs.erase(seq);
  return Status::Ok();
}

Status Verifier::MarkTurnEnd(SeqId seq) {
  auto s = impl_->Find(seq);
  FP_RETURN_IF_ERROR(s.status());
  (*s)->flags.turn_end = true;
  return Status::Ok();
}

Status Verifier::RequestCommit(SeqId seq) {
  auto s = impl_->Find(seq);
  FP_RETURN_IF_ERROR(s.status());
  (*s)->flags.on_demand = true;
  return Status::Ok();
}

Status Verifier::OnStepWritten(std::span<const SeqId> seqs, void* compute_stream) {
  Impl& m = *impl_;
  FP_RETURN_IF_ERROR(m.be->background_status());
  // Decide for every sequence first, so a bad one leaves all of them untouched.
  std::vector<std::pair<SeqState*, CommitDecision>> decisions;
  for (SeqId seq : seqs) {
    auto sp = m.Find(seq);
    FP_RETURN_IF_ERROR(sp.status());
    auto len = m.cache->meta().Length(seq);
    FP_RETURN_IF_ERROR(len.status());
    auto dec = m.policy.Decide((*sp)->scheduled, *len, (*sp)->flags);
    FP_RETURN_IF_ERROR(dec.status());
    decisions.emplace_back(*sp, *dec);
  }
  HashBatch b;
  b.step = ++m.step;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqId seq = seqs[i];
    SeqState& s = *decisions[i].first;
    const CommitDecision* dec = &decisions[i].second;
    {
      std::lock_guard<std::mutex> g(s.mu);
      if (s.corrupt) continue;  // nothing new is committed on top of a corrupt page
    }
    if (dec->reason == CommitReason::kNone) continue;
    s.flags = {};
    PendingCommit c{seq, dec->position, b.jobs.size(), 0};
    const int64_t first = s.scheduled / m.page, full = dec->position / m.page;
    const int32_t partial = dec->position % m.page;
    for (int64_t pg = first; pg < full + (partial > 0 ? 1 : 0); ++pg) {
      auto job = m.PageJob(HashJob::Kind::kCommit, seq, pg, pg < full ? m.page : partial);
      FP_RETURN_IF_ERROR(job.status());
      b.jobs.push_back(std::move(*job));
      ++c.num_jobs;
    }
    b.commits.push_back(c);
    s.scheduled = dec->position;
  }
  m.ScheduleAudits(b);
  if (m.anchor && !m.anchor_layers.empty() && m.cfg.anchor_every_steps > 0 &&
      m.step % static_cast<uint64_t>(m.cfg.anchor_every_steps) == 0) {
    HashJob j;
    j.kind = HashJob::Kind::kAnchor;
    auto segs = AnchorLayerSegments(*m.anchor);
    FP_RETURN_IF_ERROR(segs.status());
    j.segments = std::move(*segs);
    j.expected = m.anchor_layers;
    j.bytes = 2ull * m.anchor->length() * m.anchor->token_bytes() * m.num_layers;
    b.jobs.push_back(std::move(j));
  }
  {
    std::lock_guard<std::mutex> g(m.ev_mu);
    ++m.st.steps;
  }
  if (b.jobs.empty()) return Status::Ok();
  return m.be->Submit(std::move(b), compute_stream);
}

Status Verifier::Drain() { return impl_->be->Drain(); }

std::vector<CorruptionEvent> Verifier::TakeEvents() {
  std::lock_guard<std::mutex> g(impl_->ev_mu);
  return std::exchange(impl_->events, {});
}

bool Verifier::IsCorrupt(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return false;
  std::lock_guard<std::mutex> g(it->second->mu);
  return it->second->corrupt;
}

Result<int32_t> Verifier::VerifiedWatermark(SeqId seq) const {
  auto s = impl_->Find(seq);
  FP_RETURN_IF_ERROR(s.status());
  std::lock_guard<std::mutex> g((*s)->mu);
  if (!(*s)->corrupt) return (*s)->log.last_position();
  for (auto it = (*s)->log.entries().rbegin(); it != (*s)->log.entries().rend(); ++it) {
    if (static_cast<int64_t>(it->tree_size) <= (*s)->corrupt_page) return it->position;
  }
  return 0;
}

Result<Digest> Verifier::Root(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return InvalidArgument("verifier: sequence not tracked");
  std::lock_guard<std::mutex> g(it->second->mu);
  return it->second->tree.Root();
}

Result<CommitLog> Verifier::Log(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return InvalidArgument("verifier: sequence not tracked");
  std::lock_guard<std::mutex> g(it->second->mu);
  return it->second->log;
}

Result<MerkleTree> Verifier::Tree(SeqId seq) const {
  auto it = impl_->seqs.find(seq);
  if (it == impl_->seqs.end()) return InvalidArgument("verifier: sequence not tracked");
  std::lock_guard<std::mutex> g(it->second->mu);
  return it->second->tree;
}

Digest Verifier::AnchorRoot() const { return impl_->anchor_root; }

VerifierStats Verifier::stats() const {
  std::lock_guard<std::mutex> g(impl_->ev_mu);
  VerifierStats s = impl_->st;
  s.deferred_batches = impl_->be->deferred_batches();
  return s;
}

VerifierBackendKind Verifier::backend() const { return impl_->kind; }

}  // namespace fp