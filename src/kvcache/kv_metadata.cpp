// KvMetadata: sequences over a BlockPool. Each mutation first computes everything that can fail (ids, ranges,
// the number of free pages it needs), and only then changes state, so errors leave it untouched.
#include "fieldprint/kv_metadata.h"

#include <algorithm>
#include <limits>
#include <string>

namespace fp {

namespace {
std::string SeqName(SeqId s) { return "sequence " + std::to_string(s); }
}  // namespace

AttentionBatch KvBatch::view() const {
  AttentionBatch b;
  b.num_seqs = num_seqs();
  b.q_indptr = q_indptr.data();
  b.kv_lens = kv_lens.data();
  b.block_table = block_table.data();
  b.max_blocks_per_seq = max_blocks_per_seq;
  return b;
}

Result<KvMetadata> KvMetadata::Create(const KvLayout& layout) {
  FP_RETURN_IF_ERROR(layout.Validate());
  KvMetadata m;
  m.layout_ = layout;
  m.pool_ = BlockPool(layout.num_blocks);
  return m;
}

Result<KvMetadata::Sequence*> KvMetadata::Find(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return OutOfRange("unknown " + SeqName(seq));
  return &it->second;
}

Result<const KvMetadata::Sequence*> KvMetadata::Find(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return OutOfRange("unknown " + SeqName(seq));
  return &it->second;
}

SeqId KvMetadata::CreateSequence() {
  const SeqId id = next_id_++;
  seqs_.emplace(id, Sequence{});
  return id;
}

Status KvMetadata::FreeSequence(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return OutOfRange("FreeSequence: unknown " + SeqName(seq));
  for (int32_t b : it->second.table) FP_RETURN_IF_ERROR(pool_.Decref(b));  // cannot fail: table pages are used
  seqs_.erase(it);  // detaches the anchor
  return Status::Ok();
}

Result<Reservation> KvMetadata::Reserve(SeqId seq, int32_t n_new_tokens) {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  Sequence& s = **found;
  if (n_new_tokens < 0) return InvalidArgument("Reserve: negative token count " + std::to_string(n_new_tokens));
  const int64_t P = layout_.page_size;
  const int64_t old_len = s.length;
  const int64_t new_len = old_len + n_new_tokens;
  if (new_len > std::numeric_limits<int32_t>::max()) {
    return OutOfRange("Reserve: " + SeqName(seq) + " would exceed 2^31 - 1 tokens");
  }
  // A partially filled last page that another sequence also references must be copied before we write it.
  const bool cow = n_new_tokens > 0 && old_len % P != 0 && pool_.refcounts()[static_cast<size_t>(s.table.back())] > 1;
  const int64_t new_pages = layout_.PagesFor(new_len) - static_cast<int64_t>(s.table.size());
  const int64_t need = new_pages + (cow ? 1 : 0);
  if (need > pool_.num_free()) {
    return ResourceExhausted("Reserve: " + SeqName(seq) + " needs " + std::to_string(need) + " free pages for " +
                             std::to_string(n_new_tokens) + " tokens, " + std::to_string(pool_.num_free()) +
                             " free");
  }
  // From here on nothing can fail (the pages exist).
  Reservation r;
  r.seq = seq;
  r.start = static_cast<int32_t>(old_len);
  if (cow) {
    const int32_t src = s.table.back();
    const int32_t dst = pool_.Allocate().value();
    FP_RETURN_IF_ERROR(pool_.Decref(src));  // stays >= 1: still shared by the others
    s.table.back() = dst;
    r.copies.push_back({src, dst});
  }
  for (int64_t i = 0; i < new_pages; ++i) s.table.push_back(pool_.Allocate().value());
  r.slots.reserve(static_cast<size_t>(n_new_tokens));
  for (int64_t pos = old_len; pos < new_len; ++pos) {
    r.slots.push_back({s.table[static_cast<size_t>(pos / P)], static_cast<int32_t>(pos % P)});
  }
  s.length = static_cast<int32_t>(new_len);
  return r;
}

Status KvMetadata::Truncate(SeqId seq, int32_t new_len) {
  auto found = Find(seq);
  FP_RETURN_IF_ERROR(found.status());
  Sequence& s = **found;
  if (new_len < 0 || new_len > s.length) {
    return OutOfRange("Truncate: " + SeqName(seq) + " has length " + std::to_string(s.length) +
                      ", cannot truncate to " + std::to_string(new_len));
  }
  const auto keep = static_cast<size_t>(layout_.PagesFor(new_len));
  for (size_t i = keep; i < s.table.size(); ++i) FP_RETURN_IF_ERROR(pool_.Decref(s.table[i]));
  s.table.resize(keep);
  s.length = new_len;
  return Status::Ok();
}

Result<SeqId> KvMetadata::Fork(SeqId seq) {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  Sequence copy = **found;  // attaches the anchor once more
  for (int32_t b : copy.table) FP_RETURN_IF_ERROR(pool_.Incref(b));  // cannot fail: table pages are used
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::move(copy));
  return id;
}

Status KvMetadata::AttachAnchor(SeqId seq, std::shared_ptr<AnchorSegment> anchor) {
  auto found = Find(seq);
  FP_RETURN_IF_ERROR(found.status());
  Sequence& s = **found;
  if (!anchor) return InvalidArgument("AttachAnchor: null anchor");
  if (!anchor->sealed()) return FailedPrecondition("AttachAnchor: the anchor is not sealed");
  if (s.anchor.get()) return FailedPrecondition("AttachAnchor: " + SeqName(seq) + " already has an anchor");
  if (s.length != 0) return FailedPrecondition("AttachAnchor: " + SeqName(seq) + " is not empty");
  if (anchor->num_layers() != layout_.num_layers || anchor->num_kv_heads() != layout_.num_kv_heads ||
      anchor->head_dim() != layout_.head_dim || anchor->dtype() != layout_.dtype) {
    return InvalidArgument("AttachAnchor: anchor geometry (layers, kv heads, head_dim, dtype) differs from the cache");
  }
  s.anchor = kvcache_detail::AnchorRef(std::move(anchor));
  return Status::Ok();
}

std::vector<SeqId> KvMetadata::SequenceIds() const {
  std::vector<SeqId> ids;
  ids.reserve(seqs_.size());
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  return ids;
}

Result<int32_t> KvMetadata::Length(SeqId seq) const {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  return (*found)->length;
}

Result<std::span<const int32_t>> KvMetadata::BlockTable(SeqId seq) const {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  return std::span<const int32_t>((*found)->table);
}

Result<std::shared_ptr<AnchorSegment>> KvMetadata::Anchor(SeqId seq) const {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  return (*found)->anchor.get();
}

Result<KvSlot> KvMetadata::SlotOf(SeqId seq, int32_t pos) const {
  auto found = Find(seq);
  if (!found.ok()) return found.status();
  const Sequence& s = **found;
  if (pos < 0 || pos >= s.length) {
    return OutOfRange("SlotOf: position " + std::to_string(pos) + " outside " + SeqName(seq) + " of length " +
                      std::to_string(s.length));
  }
  return KvSlot{s.table[static_cast<size_t>(pos / layout_.page_size)], pos % layout_.page_size};
}

Result<KvBatch> KvMetadata::BuildBatch(std::span<const SeqId> seqs, std::span<const int32_t> q_lens) const {
  if (seqs.size() != q_lens.size()) {
    return InvalidArgument("BuildBatch: " + std::to_string(seqs.size()) + " sequences but " +
                           std::to_string(q_lens.size()) + " query lengths");
  }
  if (seqs.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return InvalidArgument("BuildBatch: too many sequences");
  }
  std::vector<const Sequence*> ss;
  ss.reserve(seqs.size());
  int64_t total_q = 0;
  size_t max_pages = 1;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto found = Find(seqs[i]);
    if (!found.ok()) return found.status();
    const Sequence* s = *found;
    if (q_lens[i] < 0 || q_lens[i] > s->length) {
      return InvalidArgument("BuildBatch: " + std::to_string(q_lens[i]) + " query rows for " + SeqName(seqs[i]) +
                             " of length " + std::to_string(s->length) + " (its new K/V must be in the cache)");
    }
    if (i > 0 && s->anchor.get() != ss[0]->anchor.get()) {
      return InvalidArgument("BuildBatch: " + SeqName(seqs[i]) + " has a different anchor than " + SeqName(seqs[0]));
    }
    total_q += q_lens[i];
    max_pages = std::max(max_pages, s->table.size());
    ss.push_back(s);
  }
  if (total_q > std::numeric_limits<int32_t>::max()) return InvalidArgument("BuildBatch: too many query rows");
  KvBatch b;
  b.max_blocks_per_seq = static_cast<int32_t>(max_pages);
  b.q_indptr.reserve(ss.size() + 1);
  b.q_indptr.push_back(0);
  b.kv_lens.reserve(ss.size());
  b.block_table.assign(ss.size() * max_pages, 0);  // padding: page 0, valid but never read
  for (size_t i = 0; i < ss.size(); ++i) {
    b.q_indptr.push_back(b.q_indptr.back() + q_lens[i]);
    b.kv_lens.push_back(ss[i]->length);
    std::copy(ss[i]->table.begin(), ss[i]->table.end(), b.block_table.begin() + static_cast<ptrdiff_t>(i * max_pages));
  }
  if (!ss.empty()) b.anchor = ss[0]->anchor.get();
  return b;
}

Status KvMetadata::CheckInvariants() const {
  FP_RETURN_IF_ERROR(pool_.CheckInvariants());
  std::vector<int32_t> refs(static_cast<size_t>(pool_.num_blocks()), 0);
  for (const auto& [id, s] : seqs_) {
    if (s.length < 0 || static_cast<int64_t>(s.table.size()) != layout_.PagesFor(s.length)) {
      return Internal(SeqName(id) + ": " + std::to_string(s.table.size()) + " pages for length " +
                      std::to_string(s.length));
    }
    for (int32_t b : s.table) {
      if (!pool_.IsValid(b)) return Internal(SeqName(id) + " holds bad page " + std::to_string(b));
      ++refs[static_cast<size_t>(b)];
    }
  }
  for (size_t b = 0; b < refs.size(); ++b) {
    if (refs[b] != pool_.refcounts()[b]) {
      return Internal("page " + std::to_string(b) + ": refcount " + std::to_string(pool_.refcounts()[b]) + ", " +
                      std::to_string(refs[b]) + " table entries");
    }
  }
  return Status::Ok();
}

}  // namespace fp
