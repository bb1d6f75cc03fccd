// verifier_harness.h — a KvCache + Verifier rig shared by the CPU and CUDA verifier tests: random step sizes,
// every written token kept (so a rollback can be replayed byte for byte), flips at random committed bytes.
// `stage` copies host rows to wherever the cache lives (identity for a host cache).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "fieldprint/fault_injection.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/verifier.h"

namespace fp::testing {

struct SeqRecord {
  std::vector<uint16_t> rows;  // [len, L, 2, Hkv * d] bf16 bit patterns as written
  std::vector<int32_t> steps;  // token count of each step, in order
};

struct VerifierHarness {
  KvLayout layout;
  Device device = Device::kCpu;
  std::unique_ptr<KvCache> cache;
  std::shared_ptr<AnchorSegment> anchor;
  std::unique_ptr<Verifier> ver;
  std::mt19937_64 rng{std::random_device{}()};
  std::map<SeqId, SeqRecord> rec;
  std::vector<SeqId> live;
  // Returns a pointer in the cache's memory holding `bytes` copied from `host` (valid until the next call).
  std::function<void*(const void* host, size_t bytes)> stage = [](const void* h, size_t) {
    return const_cast<void*>(h);
  };
  void* stream = nullptr;

  size_t row_elems() const { return static_cast<size_t>(layout.num_kv_heads) * layout.head_dim; }
  size_t token_elems() const { return static_cast<size_t>(layout.num_layers) * 2 * row_elems(); }

  Status Init(const KvLayout& l, Device d, int anchor_len, const VerifierConfig& cfg) {
    layout = l;
    device = d;
    auto c = KvCache::Create(l, d);
    FP_RETURN_IF_ERROR(c.status());
    cache = std::make_unique<KvCache>(std::move(*c));
    if (anchor_len > 0) {
      auto a = AnchorSegment::Create(l.num_layers, anchor_len, l.num_kv_heads, l.head_dim, l.dtype, d);
      FP_RETURN_IF_ERROR(a.status());
      anchor = *a;
      const size_t n = static_cast<size_t>(anchor_len) * row_elems();
      std::vector<uint16_t> host(2 * n);  // [2, A, Hkv, d]: K then V
      for (int layer = 0; layer < l.num_layers; ++layer) {
        for (auto& x : host) x = static_cast<uint16_t>(rng());
        auto* p = static_cast<uint16_t*>(stage(host.data(), host.size() * 2));
        TensorView k = MakeContiguous(p, l.dtype, {anchor_len, l.num_kv_heads, l.head_dim}, d);
        TensorView v = MakeContiguous(p + n, l.dtype, {anchor_len, l.num_kv_heads, l.head_dim}, d);
        FP_RETURN_IF_ERROR(anchor->Write(layer, 0, k, v, stream));
      }
      anchor->Seal();
    }
    auto v = Verifier::Create(cache.get(), anchor, cfg,
                              d == Device::kCuda ? VerifierBackendKind::kCuda : VerifierBackendKind::kCpu);
    FP_RETURN_IF_ERROR(v.status());
    ver = std::move(*v);
    return Status::Ok();
  }

  Result<SeqId> NewSeq() {
    SeqId s = cache->meta().CreateSequence();
    FP_RETURN_IF_ERROR(ver->Track(s));
    rec[s] = {};
    live.push_back(s);
    return s;
  }

  // Appends n tokens to seq: fresh random rows, or rows [from, from + n) of its record when replaying.
  Status Write(SeqId seq, int32_t n, int64_t replay_from = -1) {
    SeqRecord& r = rec[seq];
    std::vector<uint16_t> tok(static_cast<size_t>(n) * token_elems());  // [n, L, 2, Hkv*d]
    for (size_t i = 0; i < tok.size(); ++i) {
      tok[i] = replay_from >= 0 ? r.rows[static_cast<size_t>(replay_from) * token_elems() + i]
                                : static_cast<uint16_t>(rng());
    }
    // Per layer/part contiguous [n, Hkv, d] blocks, staged one buffer for all.
    std::vector<uint16_t> planar(tok.size());  // [L, 2, n, Hkv*d]
    const size_t re = row_elems();
    for (int32_t t = 0; t < n; ++t) {
      for (size_t lp = 0; lp < static_cast<size_t>(layout.num_layers) * 2; ++lp) {
        std::copy_n(tok.begin() + (t * token_elems() + lp * re), re, planar.begin() + (lp * n + t) * re);
      }
    }
    auto* base = static_cast<uint16_t*>(stage(planar.data(), planar.size() * 2));
    std::vector<TensorView> k, v;
    for (int l = 0; l < layout.num_layers; ++l) {
      k.push_back(MakeContiguous(base + (2 * l) * n * re, layout.dtype,
                                 {n, layout.num_kv_heads, layout.head_dim}, device));
      v.push_back(MakeContiguous(base + (2 * l + 1) * n * re, layout.dtype,
                                 {n, layout.num_kv_heads, layout.head_dim}, device));
    }
    FP_RETURN_IF_ERROR(cache->Append(seq, k, v, stream));
    r.rows.resize(static_cast<size_t>(cache->meta().Length(seq).value()) * token_elems());
    if (replay_from < 0) {
      std::copy(tok.begin(), tok.end(), r.rows.end() - static_cast<ptrdiff_t>(tok.size()));
    }
    return Status::Ok();
  }

  // Random-sized steps for every live sequence until each holds about `tokens` tokens.
  void Grow(int32_t tokens, int max_step) {
    for (bool more = true; more;) {
      more = false;
      std::vector<SeqId> stepped;
      for (SeqId s : live) {
        const int32_t len = cache->meta().Length(s).value();
        if (len >= tokens) continue;
        const int32_t n = 1 + static_cast<int32_t>(rng() % max_step);
        ASSERT_TRUE(Write(s, n).ok());
        rec[s].steps.push_back(n);
        stepped.push_back(s);
        more = true;
      }
      if (!stepped.empty()) {
        ASSERT_TRUE(ver->OnStepWritten(stepped, stream).ok());
      }
    }
  }

  // Replays seq's recorded steps from position `from` to its recorded length. `from` may sit inside a step (a
  // page-full commit inside a multi-token step): the rest of that step is written first, as the engine would.
  void Replay(SeqId seq, int32_t from) {
    SeqRecord& r = rec[seq];
    const int64_t total = static_cast<int64_t>(r.rows.size() / token_elems());
    int64_t end = 0;
    size_t i = 0;
    while (i < r.steps.size() && end <= from) end += r.steps[i++];
    std::vector<uint16_t> keep = r.rows;
    int64_t pos = from;
    for (bool first = true; pos < total; first = false) {
      const int32_t n = static_cast<int32_t>(first ? end - from : r.steps[i++]);
      r.rows = keep;
      ASSERT_TRUE(Write(seq, n, pos).ok());
      pos += n;
      std::vector<SeqId> one{seq};
      ASSERT_TRUE(ver->OnStepWritten(one, stream).ok());
    }
    r.rows = keep;
    ASSERT_EQ(pos, total);
  }
};

}  // namespace fp::testing

namespace fp::testing {

// Flips one random committed bit of a random sequence, runs audit-only steps until the corruption event,
// checks what it names, rolls back, checks the target position and the restored roots, replays the lost
// steps and checks the commit log comes back identical. `label` tags failures.
inline void FlipDetectRollbackReplay(VerifierHarness& h, const std::string& label) {
  ASSERT_TRUE(h.ver->Drain().ok());
  ASSERT_TRUE(h.ver->TakeEvents().empty()) << label;
  std::vector<SeqId> cands;
  uint64_t total_pages = 0;
  for (SeqId s : h.live) {
    const uint64_t n = h.ver->Tree(s)->size();
    total_pages += n;
    if (n > 0) cands.push_back(s);
  }
  ASSERT_FALSE(cands.empty());
  const SeqId seq = cands[h.rng() % cands.size()];
  const MerkleTree tree = h.ver->Tree(seq).value();
  const CommitLog log = h.ver->Log(seq).value();
  const int32_t P = h.layout.page_size;
  const int64_t pg = static_cast<int64_t>(h.rng() % tree.size());
  const int32_t last_fill = log.last_position() % P;
  const int32_t fill = pg + 1 == static_cast<int64_t>(tree.size()) && last_fill > 0 ? last_fill : P;
  const int32_t t_in = static_cast<int32_t>(h.rng() % fill);
  const size_t tb = h.layout.token_bytes();
  KvBitFlip f;
  f.layer = static_cast<int>(h.rng() % h.layout.num_layers);
  f.part = h.rng() % 2 ? KvPart::kV : KvPart::kK;
  f.block = h.cache->meta().BlockTable(seq).value()[pg];
  f.byte_offset = t_in * tb + h.rng() % tb;
  f.bit = static_cast<int>(h.rng() % 8);
  ASSERT_TRUE(FlipKvBit(h.cache->storage(), f).ok());

  // Detection: within one audit cycle (no more audited pages than there are committed pages, plus slack for
  // the audits already scheduled when the flip landed).
  const uint64_t audited0 = h.ver->stats().pages_audited;
  std::vector<CorruptionEvent> ev;
  while (ev.empty()) {
    ASSERT_TRUE(h.ver->OnStepWritten(h.live, h.stream).ok());
    ASSERT_TRUE(h.ver->Drain().ok());
    ev = h.ver->TakeEvents();
    ASSERT_LE(h.ver->stats().pages_audited - audited0, total_pages + 4) << label << ": flip not detected";
  }
  ASSERT_EQ(ev.size(), 1u) << label;
  EXPECT_EQ(ev[0].kind, CorruptionEvent::Kind::kPage);
  EXPECT_EQ(ev[0].seq, seq);
  EXPECT_EQ(ev[0].page, pg);
  EXPECT_EQ(ev[0].block, f.block);
  EXPECT_EQ(ev[0].layer_begin, f.layer) << ev[0].ToString();
  EXPECT_EQ(ev[0].layer_end, f.layer + 1);
  EXPECT_TRUE(h.ver->IsCorrupt(seq));

  // Expected target: the last commit that does not cover the flipped token.
  const int32_t t = static_cast<int32_t>(pg) * P + t_in;
  int32_t want = 0;
  Digest want_root = Sha256(nullptr, 0);
  for (const CommitEntry& e : log.entries()) {
    if (e.position <= t) {
      want = e.position;
      want_root = e.root;
    }
  }
  EXPECT_LE(h.ver->VerifiedWatermark(seq).value(), want);
  auto back = h.ver->Rollback(seq, h.stream);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(*back, want) << label << " flip at token " << t;
  EXPECT_EQ(h.cache->meta().Length(seq).value(), want);
  EXPECT_FALSE(h.ver->IsCorrupt(seq));
  EXPECT_EQ(h.ver->Root(seq).value(), want_root);
  EXPECT_EQ(h.ver->RecomputeRoot(seq, h.stream).value(), want_root);
  EXPECT_EQ(h.ver->VerifiedWatermark(seq).value(), want);

  // Regenerate the lost tokens: the commit log must come back entry for entry.
  h.Replay(seq, want);
  ASSERT_TRUE(h.ver->Drain().ok());
  EXPECT_EQ(h.ver->Log(seq)->entries(), log.entries()) << label;
  for (auto& e : h.ver->TakeEvents()) ADD_FAILURE() << "after replay: " << e.ToString();
  EXPECT_EQ(h.ver->RecomputeRoot(seq, h.stream).value(), h.ver->Root(seq).value());
}

}  // namespace fp::testing
