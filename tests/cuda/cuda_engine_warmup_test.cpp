// CudaLlama::Warmup and the device greedy pick of a transcript replay (issue #7).
//   - A warmed engine gives bit-identical logits and KV to a fresh one with the same weights (batch_invariant
//   with
//     both GEMM choices, and the default mode), through anchor, prefill and graph decode steps.
//   - Warmup leaves a used engine as it was: every KV byte of the pool, the block pool's free list and
//   refcounts,
//     the sequences, the decode counters, and its captured graph (the next decode step replays it, no
//     capture).
//   - With no free page it fails cleanly (ResourceExhausted), changing nothing.
//   - LaunchArgmaxChecked agrees with Sampler::Sample's greedy rule on crafted rows (ties, signed zeros,
//   -FLT_MAX,
//     NaN, +inf, all -inf -> -1), and ForwardGreedy with the host sampler on the engine's own logits.
// Every test skips without a CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "cuda_test_util.h"
#include "engine/cuda_engine_kernels.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/sampler.h"

namespace fp {
namespace {

ModelConfig WarmConfig() {  // batch_invariant's skinny GEMM needs multiples of 32; GQA group 2
  ModelConfig c;
  c.name = "warm-tiny";
  c.n_layers = 2;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.d_ff = 512;
  c.vocab_size = 300;
  c.context_length = 1024;
  return c;
}

using Gemm = CudaEngineOptions::InvariantGemm;

std::unique_ptr<CudaLlama> MakeEngine(bool batch_invariant, Gemm gemm, int32_t kv_capacity = 512,
                                      uint64_t seed = 17) {
  CudaEngineOptions o;
  o.kv_capacity = kv_capacity;
  o.max_batch = 2;
  o.gamma = 0.2f;
  o.batch_invariant = batch_invariant;
  o.batch_invariant_gemm = gemm;
  auto e = CudaLlama::Random(WarmConfig(), seed, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<int32_t> Tokens(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int32_t> d(0, WarmConfig().vocab_size - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// Appends the device bytes b names to out; false (and a test failure) when b is an error.
template <typename Span>
bool AppendDeviceBytes(const Result<Span>& b, std::vector<std::byte>* out) {
  EXPECT_TRUE(b.ok());
  if (!b.ok()) return false;
  const size_t at = out->size();
  out->resize(at + b->size());
  EXPECT_EQ(cudaMemcpy(out->data() + at, b->data(), b->size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return true;
}

// Every byte of the K and V pools, [layers][K|V][num_blocks * page bytes], on the host.
std::vector<std::byte> PoolBytes(CudaLlama& e) {
  std::vector<std::byte> out;
  const KvLayout& lay = e.cache().layout();
  for (int l = 0; l < lay.num_layers; ++l) {
    for (int32_t p = 0; p < lay.num_blocks; ++p) {
      for (bool v : {false, true}) {
        if (!AppendDeviceBytes(v ? e.cache().storage().PageBytesV(l, p) : e.cache().storage().PageBytesK(l, p),
                               &out)) {
          return out;
        }
      }
    }
  }
  return out;
}

// The filled rows of seq's pages (every layer, K and V), on the host.
std::vector<std::byte> SeqKvBytes(CudaLlama& e, SeqId seq) {
  std::vector<std::byte> out;
  auto len = e.Length(seq);
  auto table = e.cache().meta().BlockTable(seq);
  EXPECT_TRUE(len.ok() && table.ok());
  if (!len.ok() || !table.ok()) return out;
  const int32_t P = e.cache().layout().page_size;
  for (int l = 0; l < e.cache().layout().num_layers; ++l) {
    for (size_t i = 0; i < table->size(); ++i) {
      const int32_t fill = std::min<int32_t>(P, *len - static_cast<int32_t>(i) * P);
      for (bool v : {false, true}) {
        if (!AppendDeviceBytes(v ? e.cache().storage().PageBytesV(l, (*table)[i], fill)
                                 : e.cache().storage().PageBytesK(l, (*table)[i], fill),
                               &out)) {
          return out;
        }
      }
    }
  }
  return out;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Anchor, prefill of `prompt` (every row's logits), then decode steps of `next`: logits of everything and the
// KV.
struct RunOut {
  std::vector<float> logits;  // [prompt + next, vocab]
  std::vector<std::byte> kv;
};
RunOut RunEngine(CudaLlama& e, std::span<const int32_t> anchor_toks, std::span<const int32_t> prompt,
                 std::span<const int32_t> next) {
  RunOut r;
  auto anchor = e.BuildAnchor(anchor_toks);
  EXPECT_TRUE(anchor.ok()) << anchor.status().ToString();
  if (!anchor.ok()) return r;
  auto seq = e.NewSequence(*anchor);
  EXPECT_TRUE(seq.ok());
  if (!seq.ok()) return r;
  const Status st = e.Forward(*seq, prompt, static_cast<int32_t>(prompt.size()), &r.logits);
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (int32_t t : next) {
    std::vector<float> l;
    const SeqId s = *seq;
    const Status d = e.DecodeLogits(std::span(&s, 1), std::span(&t, 1), &l);
    EXPECT_TRUE(d.ok()) << d.ToString();
    r.logits.insert(r.logits.end(), l.begin(), l.end());
  }
  r.kv = SeqKvBytes(e, *seq);
  EXPECT_TRUE(e.FreeSequence(*seq).ok());
  return r;
}

TEST(CudaWarmup, WarmedEngineMatchesFreshBitForBit) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const auto anchor = Tokens(rng, 21);
  const auto prompt = Tokens(rng, 37);  // ends mid-page
  const auto next = Tokens(rng, 4);
  struct Mode {
    bool invariant;
    Gemm gemm;
  };
  for (const Mode m :
       {Mode{true, Gemm::kCublasPadded}, Mode{true, Gemm::kSkinny}, Mode{false, Gemm::kCublasPadded}}) {
    SCOPED_TRACE(m.invariant ? (m.gemm == Gemm::kSkinny ? "batch_invariant skinny" : "batch_invariant cublas")
                             : "default mode");
    auto fresh = MakeEngine(m.invariant, m.gemm);
    auto warm = MakeEngine(m.invariant, m.gemm);
    ASSERT_TRUE(fresh && warm);
    const Status w = warm->Warmup();
    ASSERT_TRUE(w.ok()) << w.ToString();
    const RunOut a = RunEngine(*fresh, anchor, prompt, next);
    const RunOut b = RunEngine(*warm, anchor, prompt, next);
    ASSERT_EQ(a.logits.size(), (prompt.size() + next.size()) * static_cast<size_t>(WarmConfig().vocab_size));
    EXPECT_TRUE(SameBits(a.logits, b.logits)) << "logits differ after Warmup";
    ASSERT_FALSE(a.kv.empty());
    EXPECT_TRUE(a.kv == b.kv) << "KV bytes differ after Warmup";
    EXPECT_EQ(fresh->decode_stats().graph_captures, warm->decode_stats().graph_captures);
    EXPECT_EQ(fresh->decode_stats().graph_replays, warm->decode_stats().graph_replays);
  }
}

TEST(CudaWarmup, LeavesAUsedEngineAsItWas) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  auto e = MakeEngine(true, Gemm::kCublasPadded, 256);
  auto twin = MakeEngine(true, Gemm::kCublasPadded, 256);  // the same work without Warmup
  ASSERT_TRUE(e && twin);
  const auto anchor_toks = Tokens(rng, 9);
  const auto prompt = Tokens(rng, 20);
  const auto next = Tokens(rng, 3);
  SeqId seqs[2] = {};
  CudaLlama* engines[2] = {e.get(), twin.get()};
  std::shared_ptr<AnchorSegment> anchors[2];
  for (int i = 0; i < 2; ++i) {
    auto a = engines[i]->BuildAnchor(anchor_toks);
    ASSERT_TRUE(a.ok());
    anchors[i] = *a;
    auto s = engines[i]->NewSequence(anchors[i]);
    ASSERT_TRUE(s.ok());
    seqs[i] = *s;
    std::vector<float> l;
    ASSERT_TRUE(engines[i]->Forward(seqs[i], prompt, 1, &l).ok());
    for (int k = 0; k < 2; ++k)
      ASSERT_TRUE(engines[i]->DecodeLogits(std::span(&seqs[i], 1), std::span(&next[k], 1), &l).ok());
  }
  ASSERT_EQ(e->decode_stats().graph_captures, 1);  // the graph decode path is in use
  const std::vector<std::byte> pool_before = PoolBytes(*e);
  const std::vector<int32_t> free_before = e->cache().meta().pool().free_list();
  const std::vector<int32_t> refs_before = e->cache().meta().pool().refcounts();
  const auto stats_before = e->decode_stats();
  const auto ids_before = e->cache().meta().SequenceIds();

  const Status w = e->Warmup();
  ASSERT_TRUE(w.ok()) << w.ToString();
  EXPECT_TRUE(PoolBytes(*e) == pool_before) << "Warmup changed KV pool bytes";
  EXPECT_EQ(e->cache().meta().pool().free_list(), free_before);
  EXPECT_EQ(e->cache().meta().pool().refcounts(), refs_before);
  EXPECT_EQ(e->cache().meta().SequenceIds(), ids_before);
  EXPECT_EQ(e->decode_stats().graph_captures, stats_before.graph_captures);
  EXPECT_EQ(e->decode_stats().graph_replays, stats_before.graph_replays);
  EXPECT_TRUE(e->cache().meta().CheckInvariants().ok());

  // The sequence goes on exactly as on the twin, through the restored graph (a replay, not a new capture).
  std::vector<float> la, lb;
  ASSERT_TRUE(e->DecodeLogits(std::span(&seqs[0], 1), std::span(&next[2], 1), &la).ok());
  ASSERT_TRUE(twin->DecodeLogits(std::span(&seqs[1], 1), std::span(&next[2], 1), &lb).ok());
  EXPECT_TRUE(SameBits(la, lb));
  EXPECT_EQ(e->decode_stats().graph_captures, stats_before.graph_captures);
  EXPECT_EQ(e->decode_stats().graph_replays, stats_before.graph_replays + 1);
  EXPECT_TRUE(SeqKvBytes(*e, seqs[0]) == SeqKvBytes(*twin, seqs[1]));
}

TEST(CudaWarmup, NoFreePageIsAnErrorThatChangesNothing) {
  SKIP_WITHOUT_GPU();
  auto e = MakeEngine(true, Gemm::kCublasPadded, 16);  // one page
  ASSERT_TRUE(e);
  std::mt19937 rng(4);
  auto seq = e->NewSequence(nullptr);
  ASSERT_TRUE(seq.ok());
  std::vector<float> l;
  ASSERT_TRUE(e->Forward(*seq, Tokens(rng, 16), 1, &l).ok());
  ASSERT_EQ(e->cache().meta().num_free_blocks(), 0);
  const std::vector<std::byte> before = PoolBytes(*e);
  EXPECT_EQ(e->Warmup().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(PoolBytes(*e) == before);
  EXPECT_EQ(*e->Length(*seq), 16);
}

// Sampler::Sample's greedy answer as LaunchArgmaxChecked encodes it: the id, or -1 where Sample refuses.
int32_t HostGreedy(std::span<const float> row) {
  auto s = Sampler::Create(SamplerConfig{});
  EXPECT_TRUE(s.ok());
  auto id = s->Sample(row);
  return id.ok() ? *id : -1;
}

TEST(CudaArgmaxChecked, AgreesWithTheHostSamplerOnCraftedRows) {
  SKIP_WITHOUT_GPU();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  for (int vocab : {1, 7, 1000, 5003}) {  // below, at and past one 1024-thread block's stride
    std::vector<std::vector<float>> rows;
    auto random_row = [&] {
      std::vector<float> r(static_cast<size_t>(vocab));
      for (auto& x : r) x = u(rng);
      return r;
    };
    for (int k = 0; k < 4; ++k) rows.push_back(random_row());
    for (int k = 0; k < 4; ++k) {  // ties at the maximum at random places: the lowest id must win
      auto r = random_row();
      const size_t a = rng() % r.size(), b = rng() % r.size();
      r[a] = r[b] = 9.f;
      rows.push_back(r);
    }
    {
      auto r = random_row();  // signed zeros tie
      for (auto& x : r) x = -1.f;
      r[r.size() - 1] = 0.f;
      r[r.size() / 2] = -0.f;
      rows.push_back(r);
    }
    rows.push_back(std::vector<float>(static_cast<size_t>(vocab), -FLT_MAX));  // all equal and finite: id 0
    {
      std::vector<float> r(static_cast<size_t>(vocab), -inf);  // one finite logit among -inf
      r[r.size() / 3] = -FLT_MAX;
      rows.push_back(r);
    }
    rows.push_back(std::vector<float>(static_cast<size_t>(vocab), -inf));  // all -inf: refused
    for (float bad : {nan, inf}) {
      auto r = random_row();
      r[rng() % r.size()] = bad;  // refused wherever it sits
      rows.push_back(r);
    }
    const size_t n = rows.size(), v = static_cast<size_t>(vocab);
    std::vector<float> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    float* d_logits = nullptr;
    int32_t* d_out = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_logits), flat.size() * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), n * sizeof(int32_t)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_logits, flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out, 0x7f, n * sizeof(int32_t)), cudaSuccess);  // poisoned
    ASSERT_TRUE(cuda_engine::LaunchArgmaxChecked(d_logits, static_cast<int>(n), vocab, d_out, nullptr).ok());
    std::vector<int32_t> got(n);
    ASSERT_EQ(cudaMemcpy(got.data(), d_out, n * sizeof(int32_t), cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d_logits);
    cudaFree(d_out);
    int refused = 0;
    for (size_t i = 0; i < n; ++i) {
      const int32_t want = HostGreedy(std::span<const float>(flat).subspan(i * v, v));
      refused += want < 0;
      EXPECT_EQ(got[i], want) << "vocab " << vocab << ", row " << i;
    }
    EXPECT_EQ(refused, 3);  // the oracle really refuses the bad rows
  }
}

TEST(CudaArgmaxChecked, ForwardGreedyMatchesTheHostSamplerOnEngineLogits) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (bool invariant : {true, false}) {
    auto e = MakeEngine(invariant, Gemm::kCublasPadded, 1024);  // two sequences of 300
    ASSERT_TRUE(e);
    const auto toks = Tokens(rng, 300);  // past max_chunk (256): ids from two chunks
    auto a = e->NewSequence(nullptr);
    auto b = e->NewSequence(nullptr);
    ASSERT_TRUE(a.ok() && b.ok());
    const int32_t n_out = 290;
    std::vector<float> logits;
    ASSERT_TRUE(e->Forward(*a, toks, n_out, &logits).ok());
    std::vector<int32_t> ids;
    const Status st = e->ForwardGreedy(*b, toks, n_out, &ids);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_EQ(ids.size(), static_cast<size_t>(n_out));
    const auto v = static_cast<size_t>(WarmConfig().vocab_size);
    for (int32_t i = 0; i < n_out; ++i) {
      EXPECT_EQ(ids[static_cast<size_t>(i)],
                HostGreedy(std::span<const float>(logits).subspan(static_cast<size_t>(i) * v, v)))
          << "row " << i;
    }
    EXPECT_EQ(*e->Length(*b), 300);
    // Bad input: the sequence keeps its length.
    EXPECT_EQ(e->ForwardGreedy(*b, toks, 301, &ids).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e->ForwardGreedy(*b, toks, 1, nullptr).code(), StatusCode::kInvalidArgument);
    const std::vector<int32_t> bad{1, WarmConfig().vocab_size};
    EXPECT_FALSE(e->ForwardGreedy(*b, bad, 1, &ids).ok());
    EXPECT_EQ(*e->Length(*b), 300);
  }
}

// LaunchSampleBounds against the host sampler: for a random draw u, the token Sampler::Pick returns has device
// bounds with lo <= u < hi (up to the error argument's 1e-10), both within 1e-10 of the host's own running sums;
// refused rows (NaN, +inf, all -inf) and out-of-range ids are flagged.
TEST(CudaSampleBounds, BracketTheHostSamplersPick) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> ul(-6.f, 6.f);
  std::uniform_real_distribution<double> uu(0.0, 1.0);
  for (int vocab : {1, 300, 5003, 49152}) {
    for (float temp : {0.3f, 0.8f, 1.7f}) {
      auto sampler = Sampler::Create(SamplerConfig{temp, 0, 1.f, 1});
      ASSERT_TRUE(sampler.ok());
      const int n = 24;
      const size_t v = static_cast<size_t>(vocab);
      std::vector<float> flat(n * v);
      for (auto& x : flat) x = ul(rng);
      for (size_t k = 0; k < v && vocab > 10; k += 7) flat[3 * v + k] = 5.f;  // a row of many ties
      std::vector<double> draws(n);
      std::vector<int32_t> picked(n);
      SamplerScratch scratch;
      for (int i = 0; i < n; ++i) {
        draws[i] = i == 5 ? 0.0 : uu(rng);
        auto p = sampler->Pick(std::span<const float>(flat).subspan(i * v, v), draws[i], &scratch);
        ASSERT_TRUE(p.ok());
        picked[i] = *p;
      }
      picked[n - 1] = vocab;  // out of range: refused
      float* d_logits = nullptr;
      int32_t* d_picked = nullptr;
      SampleBounds* d_out = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_logits), flat.size() * 4), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_picked), n * 4), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), n * sizeof(SampleBounds)), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_logits, flat.data(), flat.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_picked, picked.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_TRUE(cuda_engine::LaunchSampleBounds(d_logits, n, vocab, d_picked, 1.0 / static_cast<double>(temp),
                                                  d_out, nullptr)
                      .ok());
      std::vector<SampleBounds> b(n);
      ASSERT_EQ(cudaMemcpy(b.data(), d_out, n * sizeof(SampleBounds), cudaMemcpyDeviceToHost), cudaSuccess);
      cudaFree(d_logits);
      cudaFree(d_picked);
      cudaFree(d_out);
      for (int i = 0; i < n - 1; ++i) {
        // The host's running sums up to the pick, in its own order.
        const float* row = flat.data() + i * v;
        double mx = -INFINITY;
        for (size_t k = 0; k < v; ++k) mx = std::max(mx, static_cast<double>(row[k]));
        double sum = 0.0;
        std::vector<double> w(v);
        for (size_t k = 0; k < v; ++k) sum += (w[k] = std::exp((row[k] - mx) * (1.0 / static_cast<double>(temp))));
        double cum = 0.0;
        for (int k = 0; k < picked[i]; ++k) cum += w[static_cast<size_t>(k)] / sum;
        const double hi = cum + w[static_cast<size_t>(picked[i])] / sum;
        EXPECT_EQ(b[i].refused, 0) << "vocab " << vocab << " row " << i;
        EXPECT_NEAR(b[i].lo, cum, 1e-10) << "vocab " << vocab << " row " << i;
        EXPECT_NEAR(b[i].hi, hi, 1e-10) << "vocab " << vocab << " row " << i;
        EXPECT_LE(b[i].lo, draws[i] + 1e-10);
        if (picked[i] != vocab - 1) {
          EXPECT_LT(draws[i], b[i].hi + 1e-10);
        }
      }
      EXPECT_EQ(b[n - 1].refused, 1);
    }
  }
  // Refused rows.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> rows = {1.f, nan, 2.f, 1.f, inf, 2.f, -inf, -inf, -inf};
  std::vector<int32_t> picked = {0, 0, 1};
  float* d_logits = nullptr;
  int32_t* d_picked = nullptr;
  SampleBounds* d_out = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_logits), rows.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_picked), 12), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), 3 * sizeof(SampleBounds)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_logits, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_picked, picked.data(), 12, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(cuda_engine::LaunchSampleBounds(d_logits, 3, 3, d_picked, 1.0, d_out, nullptr).ok());
  std::vector<SampleBounds> b(3);
  ASSERT_EQ(cudaMemcpy(b.data(), d_out, 3 * sizeof(SampleBounds), cudaMemcpyDeviceToHost), cudaSuccess);
  for (const SampleBounds& x : b) EXPECT_EQ(x.refused, 1);
  EXPECT_FALSE(cuda_engine::LaunchSampleBounds(d_logits, 3, 3, d_picked, 0.0, d_out, nullptr).ok());
  cudaFree(d_logits);
  cudaFree(d_picked);
  cudaFree(d_out);
}

// ForwardInto (the sampled replay's pinned destination) gives Forward's bits and rejects a short destination.
TEST(CudaArgmaxChecked, ForwardIntoMatchesForward) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  auto e = MakeEngine(true, Gemm::kCublasPadded, 1024);
  ASSERT_TRUE(e);
  const auto toks = Tokens(rng, 300);
  auto a = e->NewSequence(nullptr);
  auto b = e->NewSequence(nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  const int32_t n_out = 260;
  const auto v = static_cast<size_t>(WarmConfig().vocab_size);
  std::vector<float> want;
  ASSERT_TRUE(e->Forward(*a, toks, n_out, &want).ok());
  std::vector<float> got(static_cast<size_t>(n_out) * v, std::nanf(""));
  const Status st = e->ForwardInto(*b, toks, n_out, got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(want.size(), got.size());
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float)));
  auto c = e->NewSequence(nullptr);
  ASSERT_TRUE(c.ok());
  std::vector<float> small(v);
  EXPECT_FALSE(e->ForwardInto(*c, toks, n_out, small).ok());
}

}  // namespace
}  // namespace fp
