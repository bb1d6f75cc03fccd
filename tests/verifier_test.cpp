// The CPU verifier pipeline: page digest definition, commits vs the policy, flips detected within one audit
// cycle and rolled back to the exact pre-fault state, anchor re-checks, a long clean run,
// fork/truncate/errors.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "fieldprint/commit_policy.h"
#include "fieldprint/page_digest.h"
#include "verifier_harness.h"

namespace fp {
namespace {

using testing::VerifierHarness;

KvLayout SmallLayout(int layers = 3, int page = 4) {
  KvLayout l;
  l.num_layers = layers;
  l.num_blocks = 512;
  l.page_size = page;
  l.num_kv_heads = 2;
  l.head_dim = 8;
  l.dtype = DType::kBF16;
  return l;
}

VerifierConfig SmallConfig(const KvLayout& l) {
  VerifierConfig c;
  c.chunk_bytes = 64;  // several chunks per layer even at this tiny shape
  c.policy.every_n_tokens = 6;
  c.audit_bytes_per_step = 2 * 2 * l.page_bytes() * l.num_layers;  // two full pages per step
  c.anchor_every_steps = 8;
  return c;
}

// Digest of page rows rebuilt by hand from the pool views: [L][K rows 0..fill, V rows 0..fill].
TEST(PageDigest, MatchesManualRowsAndIgnoresStaleBytes) {
  VerifierHarness h;
  KvLayout l = SmallLayout();
  ASSERT_TRUE(h.Init(l, Device::kCpu, 0, SmallConfig(l)).ok());
  SeqId s = h.NewSeq().value();
  ASSERT_TRUE(h.Write(s, 7).ok());  // page 0 full, page 1 with 3 rows
  const int32_t block1 = h.cache->meta().BlockTable(s).value()[1];
  for (int32_t fill = 1; fill <= 3; ++fill) {
    std::vector<Digest> want;
    for (int layer = 0; layer < l.num_layers; ++layer) {
      std::vector<std::vector<uint8_t>> parts;
      for (auto view : {h.cache->storage().LayerK(layer).value(), h.cache->storage().LayerV(layer).value()}) {
        const auto* base = static_cast<const uint8_t*>(view.data) + block1 * l.page_bytes();
        parts.emplace_back(base, base + fill * l.token_bytes());
      }
      ByteSegment segs[2] = {{parts[0].data(), parts[0].size()}, {parts[1].data(), parts[1].size()}};
      want.push_back(TreeHashCpu(segs, 64).value());
    }
    auto got = PageLayerDigestsCpu(h.cache->storage(), block1, fill, 64);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, want);
  }
  // Bytes past the fill (stale rows) do not enter the digest; a byte inside does.
  auto d3 = PageLayerDigestsCpu(h.cache->storage(), block1, 3, 64).value();
  ASSERT_TRUE(FlipKvBit(h.cache->storage(), {1, KvPart::kV, block1, 3 * l.token_bytes() + 5, 2}).ok());
  EXPECT_EQ(PageLayerDigestsCpu(h.cache->storage(), block1, 3, 64).value(), d3);
  ASSERT_TRUE(FlipKvBit(h.cache->storage(), {1, KvPart::kV, block1, 2 * l.token_bytes() + 5, 2}).ok());
  auto d3b = PageLayerDigestsCpu(h.cache->storage(), block1, 3, 64).value();
  EXPECT_EQ(d3b[0], d3[0]);
  EXPECT_NE(d3b[1], d3[1]);
  EXPECT_FALSE(PageLayerDigestsCpu(h.cache->storage(), block1, 0, 64).ok());
  EXPECT_FALSE(PageLayerDigestsCpu(h.cache->storage(), block1, 5, 64).ok());
  EXPECT_FALSE(PageLayerDigestsCpu(h.cache->storage(), 9999, 1, 64).ok());
}

// With a power-of-two chunk count per layer the two-level page digest IS the flat chunk tree of the page.
TEST(PageDigest, EqualsFlatTreeWhenLayerChunksArePowerOfTwo) {
  VerifierHarness h;
  KvLayout l = SmallLayout(4, 4);  // layer bytes = 2 * 4 rows * 32 B = 256 = 4 chunks of 64
  ASSERT_TRUE(h.Init(l, Device::kCpu, 0, SmallConfig(l)).ok());
  SeqId s = h.NewSeq().value();
  ASSERT_TRUE(h.Write(s, 4).ok());
  const int32_t b = h.cache->meta().BlockTable(s).value()[0];
  auto segs = PageLayerSegments(h.cache->storage(), b, 4).value();
  auto layers = PageLayerDigestsCpu(h.cache->storage(), b, 4, 64).value();
  EXPECT_EQ(CombineLayerDigests(layers), TreeHashCpu(segs, 64).value());
}

// Commits land where the policy says, roots reproduce from scratch, proofs between full commits verify.
TEST(Verifier, CommitsFollowPolicyAndRootsReproduce) {
  VerifierHarness h;
  KvLayout l = SmallLayout();
  VerifierConfig cfg = SmallConfig(l);
  ASSERT_TRUE(h.Init(l, Device::kCpu, 5, cfg).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(h.NewSeq().ok());
  h.Grow(45, 5);
  ASSERT_TRUE(h.ver->MarkTurnEnd(h.live[0]).ok());
  ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
  // Audit-only steps (the first commits may still have been in flight while the sequences grew).
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(h.ver->Drain().ok());
    ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
  }
  ASSERT_TRUE(h.ver->Drain().ok());
  auto policy = CommitPolicy::Create(cfg.policy, l.page_size).value();
  for (SeqId s : h.live) {
    // The reference commit positions from the recorded steps.
    std::vector<int32_t> want;
    int32_t len = 0, last = 0;
    for (int32_t n : h.rec[s].steps) {
      len += n;
      auto d = policy.Decide(last, len, {}).value();
      if (d.reason != CommitReason::kNone) want.push_back(last = d.position);
    }
    if (s == h.live[0] && last != len) want.push_back(len);  // the turn end
    const CommitLog log = h.ver->Log(s).value();
    std::vector<int32_t> got;
    for (auto& e : log.entries()) got.push_back(e.position);
    EXPECT_EQ(got, want);
    const MerkleTree tree = h.ver->Tree(s).value();
    EXPECT_TRUE(log.CheckAgainst(tree).ok());
    EXPECT_EQ(h.ver->RecomputeRoot(s).value(), h.ver->Root(s).value());
    EXPECT_EQ(h.ver->VerifiedWatermark(s).value(), log.last_position());
    // Consistency between every pair of full-page commits (provisional roots are superseded by design).
    for (auto& a : log.entries()) {
      for (auto& b : log.entries()) {
        if (a.position % l.page_size || b.position % l.page_size || a.position > b.position) continue;
        auto p = tree.ConsistencyProof(a.tree_size, b.tree_size).value();
        EXPECT_TRUE(MerkleTree::VerifyConsistency(a.tree_size, b.tree_size, a.root, b.root, p));
      }
    }
  }
  EXPECT_TRUE(h.ver->TakeEvents().empty());
  EXPECT_GT(h.ver->stats().pages_audited, 0u);
  EXPECT_GT(h.ver->stats().anchor_checks, 0u);
}

TEST(Verifier, EveryInjectedFlipIsDetectedAndRolledBackExactly) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 80; ++trial) {
    VerifierHarness h;
    KvLayout l = SmallLayout(1 + static_cast<int>(rng() % 4), 2 + static_cast<int>(rng() % 4));
    VerifierConfig cfg = SmallConfig(l);
    cfg.audit_bytes_per_step = (1 + rng() % 3) * l.page_bytes() * 2 * l.num_layers;
    ASSERT_TRUE(h.Init(l, Device::kCpu, 0, cfg).ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(h.NewSeq().ok());
    h.Grow(10 + static_cast<int32_t>(rng() % 30), 4);
    testing::FlipDetectRollbackReplay(h, "trial " + std::to_string(trial));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(Verifier, AnchorFlipIsDetectedOnSchedule) {
  VerifierHarness h;
  KvLayout l = SmallLayout();
  VerifierConfig cfg = SmallConfig(l);
  ASSERT_TRUE(h.Init(l, Device::kCpu, 6, cfg).ok());
  const Digest root = h.ver->AnchorRoot();
  EXPECT_EQ(root, CombineLayerDigests(AnchorLayerDigestsCpu(*h.anchor, cfg.chunk_bytes).value()));
  ASSERT_TRUE(h.NewSeq().ok());
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 10; ++trial) {
    AnchorBitFlip f{static_cast<int>(rng() % l.num_layers), rng() % 2 ? KvPart::kV : KvPart::kK,
                    rng() % (6 * l.token_bytes()), static_cast<int>(rng() % 8)};
    ASSERT_TRUE(FlipAnchorBit(*h.anchor, f).ok());
    std::vector<CorruptionEvent> ev;
    for (int s = 0; s < cfg.anchor_every_steps && ev.empty(); ++s) {
      ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
      ASSERT_TRUE(h.ver->Drain().ok());
      ev = h.ver->TakeEvents();
    }
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].kind, CorruptionEvent::Kind::kAnchor);
    EXPECT_EQ(ev[0].layer_begin, f.layer);
    EXPECT_EQ(ev[0].layer_end, f.layer + 1);
    ASSERT_TRUE(FlipAnchorBit(*h.anchor, f).ok());  // repair
    for (int s = 0; s < cfg.anchor_every_steps; ++s) ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
    ASSERT_TRUE(h.ver->Drain().ok());
    EXPECT_TRUE(h.ver->TakeEvents().empty());
  }
  EXPECT_FALSE(FlipAnchorBit(*h.anchor, {0, KvPart::kK, 6 * l.token_bytes(), 0}).ok());
  EXPECT_FALSE(FlipAnchorBit(*h.anchor, {9, KvPart::kK, 0, 0}).ok());
  EXPECT_FALSE(FlipAnchorBit(*h.anchor, {0, KvPart::kK, 0, 8}).ok());
}

// 1e5 single-token decode steps over 4 sequences (recycled), audits and anchor checks on: no alarm.
TEST(Verifier, LongCleanRunRaisesNoFalseAlarm) {
  VerifierHarness h;
  KvLayout l;
  l.num_layers = 2;
  l.num_blocks = 1024;
  l.page_size = 4;
  l.num_kv_heads = 1;
  l.head_dim = 4;
  VerifierConfig cfg;
  cfg.chunk_bytes = 64;
  cfg.policy.every_n_tokens = 10;
  cfg.audit_bytes_per_step = 2 * l.page_bytes() * 2 * l.num_layers;
  cfg.anchor_every_steps = 64;
  ASSERT_TRUE(h.Init(l, Device::kCpu, 3, cfg).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(h.NewSeq().ok());
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int kSteps = 100000;
  for (int step = 0; step < kSteps; ++step) {
    for (SeqId s : h.live) {
      Status w = h.Write(s, 1);
      ASSERT_TRUE(w.ok()) << w.ToString();
    }
    ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
    if (step % 100 == 99) {
      ASSERT_TRUE(h.ver->TakeEvents().empty()) << "false alarm by step " << step;
      // Recycle the longest sequence (a finished request).
      SeqId old = h.live.front();
      ASSERT_TRUE(h.ver->Forget(old).ok());
      ASSERT_TRUE(h.cache->meta().FreeSequence(old).ok());
      h.rec.erase(old);
      h.live.erase(h.live.begin());
      ASSERT_TRUE(h.NewSeq().ok());
    }
  }
  ASSERT_TRUE(h.ver->Drain().ok());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(h.ver->TakeEvents().empty());
  for (SeqId s : h.live) EXPECT_EQ(h.ver->RecomputeRoot(s).value(), h.ver->Root(s).value());
  const VerifierStats st = h.ver->stats();
  EXPECT_EQ(st.steps, static_cast<uint64_t>(kSteps));
  EXPECT_GT(st.audit_cycles, 100u);  // ~1 per 100 steps; how many depends on the worker's lag
  EXPECT_GT(st.pages_audited, static_cast<uint64_t>(kSteps));
  EXPECT_GT(st.anchor_checks, 1000u);
  std::printf("clean run: %d steps in %.2f s, %llu commits, %llu pages audited, %llu audit cycles\n", kSteps,
              secs, static_cast<unsigned long long>(st.commits),
              static_cast<unsigned long long>(st.pages_audited),
              static_cast<unsigned long long>(st.audit_cycles));
}

TEST(Verifier, ForkTruncateForgetAndErrors) {
  VerifierHarness h;
  KvLayout l = SmallLayout();
  ASSERT_TRUE(h.Init(l, Device::kCpu, 0, SmallConfig(l)).ok());
  SeqId a = h.NewSeq().value();
  h.Grow(19, 3);
  ASSERT_TRUE(h.ver->Drain().ok());
  // Fork: the child starts from the parent's commitments and diverges.
  SeqId b = h.cache->meta().Fork(a).value();
  ASSERT_TRUE(h.ver->TrackFork(a, b).ok());
  EXPECT_EQ(h.ver->Root(b).value(), h.ver->Root(a).value());
  h.rec[b] = h.rec[a];
  h.live.push_back(b);
  h.Grow(40, 3);
  ASSERT_TRUE(h.ver->Drain().ok());
  for (SeqId s : {a, b}) EXPECT_EQ(h.ver->RecomputeRoot(s).value(), h.ver->Root(s).value());
  EXPECT_NE(h.ver->Root(a).value(), h.ver->Root(b).value());
  // Engine-initiated truncate to a non-commit position: commitments fall back to the last commit before it.
  const CommitLog log = h.ver->Log(a).value();
  ASSERT_GE(log.size(), 3u);
  // A position strictly between two commits.
  size_t k = 1;
  while (k + 1 < log.size() && log.entries()[k + 1].position == log.entries()[k].position + 1) ++k;
  ASSERT_LT(k + 1, log.size());
  const int32_t mid = log.entries()[k].position + 1;
  ASSERT_TRUE(h.ver->Truncate(a, mid).ok());
  EXPECT_EQ(h.cache->meta().Length(a).value(), mid);
  EXPECT_EQ(h.ver->Log(a)->last_position(), log.entries()[k].position);
  EXPECT_EQ(h.ver->Root(a).value(), log.entries()[k].root);
  ASSERT_TRUE(h.ver->RequestCommit(a).ok());
  std::vector<SeqId> one{a};
  ASSERT_TRUE(h.ver->OnStepWritten(one).ok());
  ASSERT_TRUE(h.ver->Drain().ok());
  EXPECT_EQ(h.ver->Log(a)->last_position(), mid);
  EXPECT_EQ(h.ver->RecomputeRoot(a).value(), h.ver->Root(a).value());
  EXPECT_FALSE(h.ver->Truncate(a, mid + 1).ok());
  EXPECT_FALSE(h.ver->Truncate(a, -1).ok());
  // Errors: untracked / unknown sequences, double tracking, shrinking behind the verifier's back.
  std::vector<SeqId> bogus{12345};
  EXPECT_FALSE(h.ver->OnStepWritten(bogus).ok());
  EXPECT_FALSE(h.ver->Track(12345).ok());
  EXPECT_EQ(h.ver->Track(a).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(h.ver->Rollback(12345).ok());
  EXPECT_FALSE(h.ver->VerifiedWatermark(12345).ok());
  ASSERT_TRUE(h.cache->meta().Truncate(b, 1).ok());
  std::vector<SeqId> bb{b};
  EXPECT_EQ(h.ver->OnStepWritten(bb).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(h.ver->Forget(b).ok());
  EXPECT_FALSE(h.ver->Root(b).ok());
  // Bad configs and a backend that does not match the cache's device.
  VerifierConfig bad = SmallConfig(l);
  bad.chunk_bytes = 3;
  EXPECT_FALSE(Verifier::Create(h.cache.get(), nullptr, bad, VerifierBackendKind::kCpu).ok());
  bad = SmallConfig(l);
  bad.policy.every_n_tokens = -2;
  EXPECT_FALSE(Verifier::Create(h.cache.get(), nullptr, bad, VerifierBackendKind::kCpu).ok());
  EXPECT_FALSE(Verifier::Create(nullptr, nullptr, SmallConfig(l), VerifierBackendKind::kCpu).ok());
  EXPECT_FALSE(Verifier::Create(h.cache.get(), nullptr, SmallConfig(l), VerifierBackendKind::kCuda).ok());
  // Fault injection coordinates are checked.
  EXPECT_FALSE(FlipKvBit(h.cache->storage(), {l.num_layers, KvPart::kK, 0, 0, 0}).ok());
  EXPECT_FALSE(FlipKvBit(h.cache->storage(), {0, KvPart::kK, l.num_blocks, 0, 0}).ok());
  EXPECT_FALSE(FlipKvBit(h.cache->storage(), {0, KvPart::kK, 0, l.page_bytes(), 0}).ok());
  EXPECT_FALSE(FlipKvBit(h.cache->storage(), {0, KvPart::kK, 0, 0, -1}).ok());
}

}  // namespace
}  // namespace fp
