// attention_decode_graph_test.cpp — graph mode of the CUDA decode plan (DecodeOptions::max_kv_len + Update()).
//
// A graph-mode plan cuts its work for a capacity and reads the lengths from the device at launch, so one CUDA
// graph captured around Run() serves later steps. Tested here: (1) a capacity plan gives the same bits as a plan
// cut for the exact lengths (empty splits merge with weight 0), over random configs and every tuning knob;
// (2) a captured graph replayed after the lengths grew (crossing split boundaries) gives the same bits as an
// eager exact plan for the new lengths; (3) Update() and Create() refuse batches the plan cannot serve, and a
// bad device length cannot make the kernel read past the block-table row (clamped; the sanitizer subset).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "decode_test_util.h"
#include "fieldprint/attention_cuda.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

using testing::Case;
using testing::CaseSpec;
using testing::DecodeDeviceCase;

uint64_t Seed() {
  if (const char* s = std::getenv("FP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}() * 0x9E3779B97F4A7C15ull + std::random_device{}();
}

struct Out {
  std::vector<uint8_t> o;
  std::vector<float> lse;
};

Out Download(const DecodeDeviceCase& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  return {testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes),
          testing::DownloadBytes<float>(d.lse.get(), d.lse_count)};
}

bool SameBits(const Out& a, const Out& b) {
  return a.o == b.o && a.lse.size() == b.lse.size() && std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4) == 0;
}

// Exact-length eager plan on the device case with host lengths `lens` (the device kv_lens must hold them).
Out RunExact(DecodeDeviceCase& d, const std::vector<int32_t>& lens, DecodeOptions opt) {
  AttentionBatch hb = d.host_batch;
  hb.kv_lens = lens.data();
  opt.max_kv_len = 0;
  d.Poison();
  auto plan = AttentionDecodePlan::Create(d.p, hb, opt);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return {};
  EXPECT_TRUE(plan->Run(d.p).ok());
  return Download(d);
}

std::vector<DecodeOptions> Knobs(int split) {
  std::vector<DecodeOptions> v;
  for (int w : {4, 8}) {
    for (auto an : {AnchorSplit::kRide, AnchorSplit::kOwn}) {
      DecodeOptions o;
      o.split_tokens = split;
      o.warps = w;
      o.anchor_split = an;
      v.push_back(o);
    }
  }
  return v;
}

bool WarpsSupported(const DecodeDeviceCase& d, int warps) {
  DecodeOptions o;
  o.warps = warps;
  return AttentionDecodePlan::Create(d.p, d.host_batch, o).ok();
}

TEST(AttentionDecodeGraph, CapacityPlanMatchesExactPlan) {
  SKIP_WITHOUT_GPU();
  const uint64_t base = Seed();
  std::mt19937_64 rng(base);
  for (int iter = 0; iter < 24; ++iter) {
    CaseSpec s = testing::RandomDecodeSpec(rng);
    s.with_lse = true;
    const Case c = testing::MakeCase(s, rng());
    DecodeDeviceCase d = testing::UploadCase(c);
    const int cap = c.params.batch.max_blocks_per_seq * s.page_size;
    for (DecodeOptions opt : Knobs(iter % 3 == 0 ? 64 : iter % 3 == 1 ? 200 : 0)) {
      if (opt.warps == 8 && !WarpsSupported(d, 8)) continue;
      const Out exact = RunExact(d, c.kv_lens, opt);
      opt.max_kv_len = cap;
      d.Poison();
      auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, opt);
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      ASSERT_TRUE(plan->Update(d.p, d.host_batch).ok());
      ASSERT_TRUE(plan->Run(d.p).ok());
      EXPECT_TRUE(SameBits(exact, Download(d)))
          << "seed " << base << " iter " << iter << " warps " << opt.warps << " split " << opt.split_tokens
          << " anchor own " << (opt.anchor_split == AnchorSplit::kOwn) << " cap " << cap;
    }
  }
}

// Decode-shaped batch (one query per sequence) whose pages already hold `full` tokens; steps use shorter
// prefixes, growing one token at a time across split boundaries, like a decode loop.
TEST(AttentionDecodeGraph, GraphReplayAfterGrowthMatchesEager) {
  SKIP_WITHOUT_GPU();
  const uint64_t base = Seed();
  std::mt19937_64 rng(base);
  for (int iter = 0; iter < 4; ++iter) {
    CaseSpec s;
    s.dtype = iter % 2 ? DType::kF16 : DType::kBF16;
    s.head_dim = iter < 2 ? 128 : 64;
    s.group = iter == 3 ? 3 : 4;
    s.num_kv_heads = 2;
    s.page_size = 1 + static_cast<int>(rng() % 32);
    s.anchor_len = iter == 1 ? 0 : static_cast<int>(rng() % 150);
    s.use_gamma = true;
    s.num_seqs = 3;
    for (int i = 0; i < s.num_seqs; ++i) {
      s.kv_lens.push_back(150 + static_cast<int>(rng() % 200));
      s.q_lens.push_back(1);
    }
    const Case c = testing::MakeCase(s, rng());
    DecodeDeviceCase d = testing::UploadCase(c);
    DecodeOptions opt;
    opt.split_tokens = 64;  // many split boundaries crossed while growing
    opt.anchor_split = iter % 2 ? AnchorSplit::kOwn : AnchorSplit::kRide;
    opt.max_kv_len = c.params.batch.max_blocks_per_seq * s.page_size;
    std::vector<int32_t> lens(c.kv_lens.begin(), c.kv_lens.end());
    for (int32_t& l : lens) l -= 70;
    AttentionBatch hb = d.host_batch;
    hb.kv_lens = lens.data();
    CUDA_CHECK(cudaMemcpy(d.kv_lens.get(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
    auto plan = AttentionDecodePlan::Create(d.p, hb, opt);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    cudaStream_t st = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    const Status run = plan->Run(d.p, st);
    CUDA_CHECK(cudaStreamEndCapture(st, &graph));
    ASSERT_TRUE(run.ok()) << run.ToString();
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int step = 0; step <= 70; step += (step < 60 ? 7 : 1)) {
      std::vector<int32_t> now(lens);
      for (int32_t& l : now) l += step;
      hb.kv_lens = now.data();
      ASSERT_TRUE(plan->Update(d.p, hb).ok()) << "step " << step;
      CUDA_CHECK(cudaMemcpy(d.kv_lens.get(), now.data(), now.size() * 4, cudaMemcpyHostToDevice));
      d.Poison();
      CUDA_CHECK(cudaGraphLaunch(exec, st));
      CUDA_CHECK(cudaStreamSynchronize(st));
      const Out replay = Download(d);
      const Out eager = RunExact(d, now, opt);
      EXPECT_TRUE(SameBits(eager, replay)) << "seed " << base << " iter " << iter << " step " << step;
    }
    // Past the capacity (and the block-table row): Update refuses, so the caller re-plans instead of replaying.
    std::vector<int32_t> over(c.kv_lens.begin(), c.kv_lens.end());
    over[1] = opt.max_kv_len + 1;
    hb.kv_lens = over.data();
    EXPECT_FALSE(plan->Update(d.p, hb).ok());
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaStreamDestroy(st));
  }
}

TEST(AttentionDecodeGraph, BadPlansAndUpdatesAreErrors) {
  SKIP_WITHOUT_GPU();
  CaseSpec s;
  s.dtype = DType::kBF16;
  s.head_dim = 128;
  s.group = 4;
  s.num_kv_heads = 2;
  s.page_size = 16;
  s.anchor_len = 20;
  s.num_seqs = 2;
  s.kv_lens = {100, 40};
  s.q_lens = {1, 1};
  std::mt19937_64 rng(Seed());
  const Case c = testing::MakeCase(s, rng());
  DecodeDeviceCase d = testing::UploadCase(c);
  const int cap = c.params.batch.max_blocks_per_seq * s.page_size;
  DecodeOptions o;
  o.max_kv_len = cap + 1;  // beyond the block-table row
  EXPECT_EQ(AttentionDecodePlan::Create(d.p, d.host_batch, o).status().code(), StatusCode::kInvalidArgument);
  o.max_kv_len = 50;  // below a current length
  EXPECT_EQ(AttentionDecodePlan::Create(d.p, d.host_batch, o).status().code(), StatusCode::kInvalidArgument);
  o.max_kv_len = -1;
  EXPECT_EQ(AttentionDecodePlan::Create(d.p, d.host_batch, o).status().code(), StatusCode::kInvalidArgument);
  o = DecodeOptions{};
  o.warps = 6;
  EXPECT_EQ(AttentionDecodePlan::Create(d.p, d.host_batch, o).status().code(), StatusCode::kInvalidArgument);
  o = DecodeOptions{};
  o.split_tokens = 32;
  EXPECT_EQ(AttentionDecodePlan::Create(d.p, d.host_batch, o).status().code(), StatusCode::kInvalidArgument);

  // An exact plan: Update accepts its own batch and shorter lengths, refuses longer ones and other q offsets.
  auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, DecodeOptions{64});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->Update(d.p, d.host_batch).ok());
  std::vector<int32_t> lens = {101, 40};
  AttentionBatch hb = d.host_batch;
  hb.kv_lens = lens.data();
  EXPECT_EQ(plan->Update(d.p, hb).code(), StatusCode::kInvalidArgument);
  lens = {99, 40};
  EXPECT_TRUE(plan->Update(d.p, hb).ok());
  std::vector<int32_t> indptr = {0, 0, 2};
  hb = d.host_batch;
  hb.q_indptr = indptr.data();
  EXPECT_FALSE(plan->Update(d.p, hb).ok());
  AttentionParams other = d.p;
  other.q.shape[0] = 1;  // another signature
  EXPECT_EQ(plan->Update(other, d.host_batch).code(), StatusCode::kInvalidArgument);
}

// A device length far past the plan (a caller that skipped Update) is clamped in the kernel: no read past the
// block-table row, no write past o. Run under compute-sanitizer memcheck by scripts/gpu-check.
TEST(DecodeSanitizer, DeviceLengthIsClamped) {
  SKIP_WITHOUT_GPU();
  CaseSpec s;
  s.dtype = DType::kBF16;
  s.head_dim = 64;
  s.group = 2;
  s.num_kv_heads = 1;
  s.page_size = 8;
  s.anchor_len = 5;
  s.num_seqs = 2;
  s.kv_lens = {70, 9};
  s.q_lens = {1, 1};
  std::mt19937_64 rng(Seed());
  const Case c = testing::MakeCase(s, rng());
  DecodeDeviceCase d = testing::UploadCase(c);
  DecodeOptions o{64};
  o.max_kv_len = c.params.batch.max_blocks_per_seq * s.page_size;
  auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, o);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::vector<int32_t> huge = {1 << 30, -5};
  CUDA_CHECK(cudaMemcpy(d.kv_lens.get(), huge.data(), 8, cudaMemcpyHostToDevice));
  ASSERT_TRUE(plan->Run(d.p).ok());
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace fp
