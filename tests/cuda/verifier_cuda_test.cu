// verifier_cuda_test.cu — the GPU verifier pipeline (side stream + pinned digests + host thread) against the
// CPU one: same page digests, same commit logs for the same writes, every flip detected within one audit
// cycle and rolled back to the exact pre-fault roots, anchor flips on the device, and a long clean run. Every
// test skips without a CUDA device. FP_CLEAN_STEPS overrides the clean-run length (default 1e6).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <random>

#include "fieldprint/page_digest.h"
#include "fieldprint/tree_hash_cuda.h"
#include "verifier_harness.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

using testing::VerifierHarness;

// Device staging for the harness: a synchronous copy into one reusable device buffer.
struct DeviceStage {
  void* buf = nullptr;
  size_t cap = 0;
  ~DeviceStage() {
    if (buf) cudaFree(buf);
  }
  void* operator()(const void* host, size_t bytes) {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // earlier async writes may still read the buffer
    if (bytes > cap) {
      if (buf) cudaFree(buf);
      cap = bytes * 2;
      EXPECT_EQ(cudaMalloc(&buf, cap), cudaSuccess);
    }
    EXPECT_EQ(cudaMemcpy(buf, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return buf;
  }
};

KvLayout Layout(int layers, int page) {
  KvLayout l;
  l.num_layers = layers;
  l.num_blocks = 512;
  l.page_size = page;
  l.num_kv_heads = 2;
  l.head_dim = 16;
  l.dtype = DType::kBF16;
  return l;
}

VerifierConfig Config(const KvLayout& l) {
  VerifierConfig c;
  c.chunk_bytes = 128;
  c.policy.every_n_tokens = 7;
  c.audit_bytes_per_step = 2 * 2 * l.page_bytes() * l.num_layers;
  c.anchor_every_steps = 8;
  return c;
}

void InitGpu(VerifierHarness& h, DeviceStage& st, const KvLayout& l, int anchor, const VerifierConfig& c) {
  h.stage = [&st](const void* p, size_t n) { return st(p, n); };
  Status s = h.Init(l, Device::kCuda, anchor, c);
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Same seed, same writes on a host cache and a device cache: identical layer digests, anchor roots and logs.
TEST(VerifierCuda, DigestsAndLogsMatchCpuPipeline) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = std::random_device{}();
  for (int layers : {1, 3, 5}) {
    KvLayout l = Layout(layers, 3 + layers);
    VerifierHarness cpu, gpu;
    DeviceStage st;
    cpu.rng.seed(seed);
    gpu.rng.seed(seed);
    ASSERT_TRUE(cpu.Init(l, Device::kCpu, 5, Config(l)).ok());
    InitGpu(gpu, st, l, 5, Config(l));
    EXPECT_EQ(cpu.ver->AnchorRoot(), gpu.ver->AnchorRoot()) << "seed " << seed;
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(cpu.NewSeq().ok());
      ASSERT_TRUE(gpu.NewSeq().ok());
    }
    cpu.Grow(60, 5);
    gpu.Grow(60, 5);
    ASSERT_TRUE(cpu.ver->Drain().ok());
    ASSERT_TRUE(gpu.ver->Drain().ok());
    for (size_t i = 0; i < cpu.live.size(); ++i) {
      const SeqId a = cpu.live[i], b = gpu.live[i];
      EXPECT_EQ(cpu.ver->Log(a)->entries(), gpu.ver->Log(b)->entries()) << "seed " << seed;
      EXPECT_EQ(gpu.ver->RecomputeRoot(b).value(), gpu.ver->Root(b).value());
      // Page by page, every fill: CPU reference vs the GPU batch hasher.
      auto ta = cpu.cache->meta().BlockTable(a).value();
      auto tb = gpu.cache->meta().BlockTable(b).value();
      std::vector<std::vector<ByteSegment>> segs;
      std::vector<GpuHashItem> items;
      std::vector<Digest> want;
      for (size_t pg = 0; pg + 1 < ta.size(); ++pg) {
        for (int32_t fill = 1; fill <= l.page_size; ++fill) {
          auto w = PageLayerDigestsCpu(cpu.cache->storage(), ta[pg], fill, 128).value();
          want.insert(want.end(), w.begin(), w.end());
          segs.push_back(PageLayerSegments(gpu.cache->storage(), tb[pg], fill).value());
        }
      }
      for (auto& s : segs) {
        for (int layer = 0; layer < layers; ++layer)
          items.push_back({std::span<const ByteSegment>(s).subspan(2 * layer, 2)});
      }
      auto got = TreeHashGpuSync(items, 128);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, want);
    }
    EXPECT_TRUE(gpu.ver->TakeEvents().empty());
    EXPECT_EQ(gpu.ver->backend(), VerifierBackendKind::kCuda);
  }
}

TEST(VerifierCuda, EveryInjectedFlipIsDetectedAndRolledBackExactly) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 40; ++trial) {
    VerifierHarness h;
    DeviceStage st;
    KvLayout l = Layout(1 + static_cast<int>(rng() % 4), 2 + static_cast<int>(rng() % 6));
    VerifierConfig c = Config(l);
    c.audit_bytes_per_step = (1 + rng() % 3) * l.page_bytes() * 2 * l.num_layers;
    c.cuda_slots = 1 + static_cast<int>(rng() % 4);
    InitGpu(h, st, l, 0, c);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(h.NewSeq().ok());
    h.Grow(10 + static_cast<int32_t>(rng() % 40), 4);
    testing::FlipDetectRollbackReplay(h, "gpu trial " + std::to_string(trial));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(VerifierCuda, AnchorFlipOnDeviceIsDetected) {
  SKIP_WITHOUT_GPU();
  VerifierHarness h;
  DeviceStage st;
  KvLayout l = Layout(3, 4);
  VerifierConfig c = Config(l);
  InitGpu(h, st, l, 9, c);
  EXPECT_EQ(h.ver->AnchorRoot(), CombineLayerDigests([&] {
              // The anchor bytes copied back to the host and hashed by the CPU reference.
              std::vector<ByteSegment> segs = AnchorLayerSegments(*h.anchor).value();
              std::vector<std::vector<uint8_t>> host;
              for (auto& s : segs) {
                host.emplace_back(s.size);
                EXPECT_EQ(cudaMemcpy(host.back().data(), s.data, s.size, cudaMemcpyDeviceToHost),
                          cudaSuccess);
              }
              std::vector<ByteSegment> hs;
              for (auto& v : host) hs.push_back({v.data(), v.size()});
              return LayerDigestsOfSegmentsCpu(hs, c.chunk_bytes).value();
            }()));
  ASSERT_TRUE(h.NewSeq().ok());
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 6; ++trial) {
    AnchorBitFlip f{static_cast<int>(rng() % 3), rng() % 2 ? KvPart::kV : KvPart::kK,
                    rng() % (9 * l.token_bytes()), static_cast<int>(rng() % 8)};
    ASSERT_TRUE(FlipAnchorBit(*h.anchor, f).ok());
    std::vector<CorruptionEvent> ev;
    for (int s = 0; s < c.anchor_every_steps && ev.empty(); ++s) {
      ASSERT_TRUE(h.ver->OnStepWritten(h.live).ok());
      ASSERT_TRUE(h.ver->Drain().ok());
      ev = h.ver->TakeEvents();
    }
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].kind, CorruptionEvent::Kind::kAnchor);
    EXPECT_EQ(ev[0].layer_begin, f.layer);
    ASSERT_TRUE(FlipAnchorBit(*h.anchor, f).ok());
  }
}

// Random rows for every step come from one device buffer (no per-step host copies): one Reserve per
// sequence, one scatter per layer, one OnStepWritten. Audits and anchor checks on; no alarm allowed.
TEST(VerifierCuda, LongCleanRunRaisesNoFalseAlarm) {
  SKIP_WITHOUT_GPU();
  int64_t steps = 1000000;
  if (const char* e = std::getenv("FP_CLEAN_STEPS")) steps = std::atoll(e);
  VerifierHarness h;
  DeviceStage st;
  KvLayout l = Layout(2, 16);
  l.num_blocks = 2048;
  l.num_kv_heads = 1;
  l.head_dim = 8;
  VerifierConfig c;
  c.chunk_bytes = 64;
  c.policy.every_n_tokens = 24;
  c.audit_bytes_per_step = l.page_bytes() * 2 * l.num_layers / 4;  // one page audit every ~4 steps
  c.anchor_every_steps = 1024;
  InitGpu(h, st, l, 4, c);
  constexpr int kSeqs = 4, kLife = 1000;  // tokens per sequence before it is recycled
  for (int i = 0; i < kSeqs; ++i) ASSERT_TRUE(h.NewSeq().ok());
  // [4096, L, 2, kSeqs, Hkv*d] random rows on the device; step s reads slice s % 4096.
  const size_t row = l.token_bytes(), slice = static_cast<size_t>(l.num_layers) * 2 * kSeqs * row;
  std::vector<uint8_t> host(4096 * slice);
  std::mt19937_64 rng(std::random_device{}());
  for (auto& b : host) b = static_cast<uint8_t>(rng());
  void* rows = nullptr;
  ASSERT_EQ(cudaMalloc(&rows, host.size()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(rows, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<KvSlot> slots;
    for (SeqId q : h.live) {
      auto r = h.cache->Reserve(q, 1, stream);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      slots.insert(slots.end(), r->slots.begin(), r->slots.end());
    }
    auto* base = static_cast<uint8_t*>(rows) + (s % 4096) * slice;
    for (int layer = 0; layer < l.num_layers; ++layer) {
      TensorView k = MakeContiguous(base + (2 * layer) * kSeqs * row, l.dtype, {kSeqs, 1, 8}, Device::kCuda);
      TensorView v =
          MakeContiguous(base + (2 * layer + 1) * kSeqs * row, l.dtype, {kSeqs, 1, 8}, Device::kCuda);
      ASSERT_TRUE(h.cache->storage().Write(layer, slots, k, v, stream).ok());
    }
    ASSERT_TRUE(h.ver->OnStepWritten(h.live, stream).ok());
    if (s % kLife == kLife - 1) {
      ASSERT_TRUE(h.ver->TakeEvents().empty()) << "false alarm by step " << s;
      SeqId old = h.live.front();
      ASSERT_TRUE(h.ver->Forget(old).ok());
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_TRUE(h.cache->meta().FreeSequence(old).ok());
      h.live.erase(h.live.begin());
      ASSERT_TRUE(h.NewSeq().ok());
    }
  }
  ASSERT_TRUE(h.ver->Drain().ok());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(h.ver->TakeEvents().empty());
  for (SeqId q : h.live) EXPECT_EQ(h.ver->RecomputeRoot(q, stream).value(), h.ver->Root(q).value());
  const VerifierStats vs = h.ver->stats();
  EXPECT_GT(vs.audit_cycles, 0u);
  std::printf(
      "gpu clean run: %lld steps in %.1f s (%.1f us/step), %llu commits, %llu pages audited, "
      "%llu audit cycles, %llu anchor checks, %llu deferred\n",
      static_cast<long long>(steps), secs, secs * 1e6 / static_cast<double>(steps),
      static_cast<unsigned long long>(vs.commits), static_cast<unsigned long long>(vs.pages_audited),
      static_cast<unsigned long long>(vs.audit_cycles), static_cast<unsigned long long>(vs.anchor_checks),
      static_cast<unsigned long long>(vs.deferred_batches));
  cudaStreamDestroy(stream);
  cudaFree(rows);
}

}  // namespace
}  // namespace fp
