// attention_decode_test.cpp — the CUDA decode path (AttentionDecodePlan) against the fp64 oracle.
//
// Every case is fresh random data (seed printed on failure; FP_TEST_SEED=<n> replays a run), copied to the
// device with o poisoned (0xFF bytes = NaN) and lse NaN. Accuracy bar: relative L2 error at most twice the error
// of the straightforward low-precision computation (decode_test_util.h) plus 1e-5; lse within 1e-4 (1 + |lse|).
// Also: bit-identical reruns, batch invariance (a sequence alone == the same sequence inside a batch, bit for
// bit, splits included), and bad inputs (each an error, with the poisoned output left untouched: no launch).
// The sanitizer subset is DecodeSanitizer.* (scripts/gpu-check runs it under memcheck and racecheck).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "decode_test_util.h"
#include "fieldprint/attention_cuda.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

using testing::Case;
using testing::CaseSpec;
using testing::DecodeDeviceCase;
using testing::OracleOut;

uint64_t BaseSeed() {
  if (const char* s = std::getenv("FP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}() * 0x9E3779B97F4A7C15ull + std::random_device{}();
}

std::string Describe(const CaseSpec& s, int split) {
  std::string r = std::string(DTypeName(s.dtype)) + " d=" + std::to_string(s.head_dim) + " Hkv=" +
                  std::to_string(s.num_kv_heads) + " G=" + std::to_string(s.group) + " P=" +
                  std::to_string(s.page_size) + " A=" + std::to_string(s.anchor_len) + " causal=" +
                  std::to_string(s.causal) + " gamma=" + std::to_string(s.use_gamma) + " split=" +
                  std::to_string(split) + " (kv,nq):";
  for (int i = 0; i < s.num_seqs; ++i) r += " (" + std::to_string(s.kv_lens[i]) + "," + std::to_string(s.q_lens[i]) + ")";
  return r;
}

struct Checked {
  double err = 0, naive = 0, lse_err = 0;
};

// Runs the decode path on a device copy of c and compares with the oracle; returns the errors.
Checked RunAndCompare(const Case& c, const OracleOut& ref, double naive, const DecodeOptions& opt) {
  DecodeDeviceCase d = testing::UploadCase(c);
  auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, opt);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return {1e9, naive, 1e9};
  const Status st = plan->Run(d.p);
  EXPECT_TRUE(st.ok()) << st.ToString();
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes);
  Checked r;
  r.naive = naive;
  r.err = testing::RelativeError(o.data(), c.params.q.dtype, ref.o);
  if (c.params.lse != nullptr) {
    const auto lse = testing::DownloadBytes<float>(d.lse.get(), d.lse_count);
    for (size_t i = 0; i < lse.size(); ++i) {
      const double want = ref.lse[i];
      if (std::isinf(want)) {
        if (!(std::isinf(lse[i]) && lse[i] < 0)) r.lse_err = 1e9;
      } else {
        const double e = std::abs(lse[i] - want) / (1.0 + std::abs(want));
        r.lse_err = std::isnan(lse[i]) ? 1e9 : std::max(r.lse_err, e);
      }
    }
  }
  return r;
}

struct Prepared {
  Case c;
  OracleOut ref;
  double naive = 0;
  int split = 4096;
};

Prepared Prepare(uint64_t seed) {
  std::mt19937_64 rng(seed);
  Prepared pr;
  const CaseSpec spec = testing::RandomDecodeSpec(rng);
  const int splits[] = {64, 128, 200, 4096};  // small split sizes put most longer sequences through the merge
  pr.split = splits[rng() % 4];
  pr.c = testing::MakeCase(spec, rng());
  pr.ref = testing::AttentionOracle(pr.c.params);
  pr.naive = testing::NaiveLowPrecisionError(pr.c, pr.ref);
  return pr;
}

void CheckRandomCases(int count, uint64_t base) {
  const unsigned workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  double worst_ratio = 0;
  for (int first = 0; first < count; first += static_cast<int>(workers)) {
    std::vector<std::future<Prepared>> futs;  // oracle + baseline on the host threads, kernel on the GPU
    for (int i = first; i < std::min(count, first + static_cast<int>(workers)); ++i) {
      futs.push_back(std::async(std::launch::async, Prepare, base + static_cast<uint64_t>(i)));
    }
    for (size_t i = 0; i < futs.size(); ++i) {
      const Prepared pr = futs[i].get();
      SCOPED_TRACE("seed " + std::to_string(base + first + i) + ": " + Describe(pr.c.spec, pr.split));
      DecodeOptions opt{pr.split};
      opt.fused_merge = (i % 2) == 0;  // both merge paths against the oracle
      const Checked r = RunAndCompare(pr.c, pr.ref, pr.naive, opt);
      EXPECT_LE(r.err, 2 * r.naive + 1e-5) << "kernel error " << r.err << " vs naive " << r.naive;
      EXPECT_LE(r.lse_err, 1e-4);
      if (r.naive > 0) worst_ratio = std::max(worst_ratio, r.err / r.naive);
    }
    if (::testing::Test::HasFailure()) break;  // one failing batch is enough output
  }
  std::printf("[decode] %d random cases, worst kernel/naive error ratio %.3f\n", count, worst_ratio);
}

TEST(AttentionDecodeCuda, RandomConfigsMatchOracle) {
  SKIP_WITHOUT_GPU();
  CheckRandomCases(520, BaseSeed());
}

// Fixed-shape edge cases: all lengths 0 (anchor only / nothing), length 1, page size 1 and 256, one sequence
// longer than several default splits.
TEST(AttentionDecodeCuda, EdgeShapes) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = BaseSeed();
  struct E {
    int P, A, G, d;
    bool causal;
    std::vector<int> lens, nq;
    int split;
  };
  const std::vector<E> cases = {
      {16, 0, 4, 128, false, {0, 0}, {1, 3}, 4096},        // nothing visible: o = 0, lse = -inf
      {16, 5, 4, 128, false, {0, 0}, {2, 1}, 4096},        // anchor only
      {1, 1, 3, 64, true, {1, 1, 2}, {1, 1, 2}, 64},        // lengths 1, page 1
      {256, 33, 8, 128, true, {257, 3}, {8, 3}, 64},       // page 256, 8x8 rows (two row blocks)
      {16, 3000, 4, 128, true, {9000}, {1}, 4096},         // anchor > split/2: a split of its own; 3 paged splits
      {7, 1024, 1, 64, true, {4097, 5}, {2, 5}, 4096},     // anchor rides in split 0; odd page size
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const E& e = cases[i];
    CaseSpec s;
    s.dtype = i % 2 ? DType::kF16 : DType::kBF16;
    s.page_size = e.P;
    s.anchor_len = e.A;
    s.group = e.G;
    s.num_kv_heads = 2;
    s.head_dim = e.d;
    s.causal = e.causal;
    s.use_gamma = true;
    s.num_seqs = static_cast<int>(e.lens.size());
    s.kv_lens = e.lens;
    s.q_lens = e.nq;
    const Case c = testing::MakeCase(s, seed + i);
    const OracleOut ref = testing::AttentionOracle(c.params);
    SCOPED_TRACE("edge case " + std::to_string(i) + ": " + Describe(s, e.split));
    const Checked r = RunAndCompare(c, ref, testing::NaiveLowPrecisionError(c, ref), DecodeOptions{e.split});
    EXPECT_LE(r.err, 2 * r.naive + 1e-5) << "kernel error " << r.err << " vs naive " << r.naive;
    EXPECT_LE(r.lse_err, 1e-4);
  }
}

TEST(AttentionDecodeCuda, RerunIsBitIdentical) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(BaseSeed());
  for (int iter = 0; iter < 6; ++iter) {
    CaseSpec s = testing::RandomDecodeSpec(rng);
    s.with_lse = true;
    const Case c = testing::MakeCase(s, rng());
    DecodeDeviceCase d = testing::UploadCase(c);
    std::vector<uint8_t> o[2];
    std::vector<float> lse[2];
    for (int run = 0; run < 2; ++run) {
      d.Poison();
      auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, DecodeOptions{64});  // splits + merge
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      ASSERT_TRUE(plan->Run(d.p).ok());
      CUDA_CHECK(cudaDeviceSynchronize());
      o[run] = testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes);
      lse[run] = testing::DownloadBytes<float>(d.lse.get(), d.lse_count);
    }
    EXPECT_EQ(o[0], o[1]) << Describe(s, 64);
    EXPECT_EQ(0, std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * 4)) << Describe(s, 64);
  }
}

// The fused merge (default; the last split's CTA merges) gives the bits of the merge kernel, run after run on one
// plan (its arrival counters reset themselves), and with programmatic dependent launch where the GPU has it.
TEST(AttentionDecodeCuda, FusedMergeMatchesMergeKernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(BaseSeed());
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  int merged_cases = 0;
  for (int iter = 0; iter < 12; ++iter) {
    CaseSpec s = testing::RandomDecodeSpec(rng);
    s.with_lse = true;
    const Case c = testing::MakeCase(s, rng());
    DecodeDeviceCase d = testing::UploadCase(c);
    auto run = [&](const DecodeOptions& opt, int times, std::vector<uint8_t>* o, std::vector<float>* lse) {
      auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, opt);
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      if (plan->max_splits() > 1) ++merged_cases;
      for (int t = 0; t < times; ++t) {
        d.Poison();
        ASSERT_TRUE(plan->Run(d.p).ok());
        CUDA_CHECK(cudaDeviceSynchronize());
        const auto ot = testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes);
        const auto lt = testing::DownloadBytes<float>(d.lse.get(), d.lse_count);
        if (t == 0) {
          *o = ot;
          *lse = lt;
        } else {
          EXPECT_EQ(ot, *o) << "run " << t << ": " << Describe(s, opt.split_tokens);
          EXPECT_EQ(0, std::memcmp(lt.data(), lse->data(), lt.size() * 4));
        }
      }
    };
    DecodeOptions kernel_merge{64};  // small splits: most sequences have several
    kernel_merge.fused_merge = false;
    std::vector<uint8_t> o_ref, o_fused;
    std::vector<float> lse_ref, lse_fused;
    run(kernel_merge, 1, &o_ref, &lse_ref);
    run(DecodeOptions{64}, 3, &o_fused, &lse_fused);
    EXPECT_EQ(o_fused, o_ref) << Describe(s, 64);
    EXPECT_EQ(0, std::memcmp(lse_fused.data(), lse_ref.data(), lse_ref.size() * 4)) << Describe(s, 64);
    if (major >= 9) {
      DecodeOptions pdl{64};
      pdl.pdl = true;
      run(pdl, 2, &o_fused, &lse_fused);
      EXPECT_EQ(o_fused, o_ref) << "pdl: " << Describe(s, 64);
    }
  }
  EXPECT_GT(merged_cases, 0) << "no case had several splits: the test checked nothing";
}

// A sequence computed alone gives the same bits as the same sequence inside a mixed batch (other lengths, other
// query counts, other split counts), because work is cut per sequence with a fixed split size.
TEST(AttentionDecodeCuda, BatchInvariant) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(BaseSeed());
  for (int iter = 0; iter < 4; ++iter) {
    CaseSpec s;
    s.dtype = iter % 2 ? DType::kF16 : DType::kBF16;
    s.head_dim = iter < 2 ? 128 : 64;
    s.group = iter == 3 ? 3 : 4;
    s.num_kv_heads = 2;
    s.page_size = 1 + static_cast<int>(rng() % 40);
    s.anchor_len = static_cast<int>(rng() % 100);
    s.use_gamma = true;
    s.num_seqs = 6;
    for (int i = 0; i < s.num_seqs; ++i) {
      const int len = 1 + static_cast<int>(rng() % 700);
      s.kv_lens.push_back(len);
      s.q_lens.push_back(std::min(len, 1 + static_cast<int>(rng() % 8)));
    }
    const Case c = testing::MakeCase(s, rng());
    DecodeDeviceCase d = testing::UploadCase(c);
    const DecodeOptions opt{128};
    auto plan = AttentionDecodePlan::Create(d.p, d.host_batch, opt);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ASSERT_TRUE(plan->Run(d.p).ok());
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto o_batch = testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes);
    const auto lse_batch = testing::DownloadBytes<float>(d.lse.get(), d.lse_count);
    const int64_t Hq = c.params.num_q_heads(), hd = c.params.head_dim();
    const size_t row_bytes = static_cast<size_t>(Hq * hd) * 2;
    for (int q_seq = 0; q_seq < s.num_seqs; ++q_seq) {
      const int32_t q0 = c.q_indptr[static_cast<size_t>(q_seq)], nq = c.q_indptr[static_cast<size_t>(q_seq) + 1] - q0;
      // The single-sequence problem shares the pool and anchor; q and o are views of this sequence's rows.
      std::vector<int32_t> indptr = {0, nq}, lens = {c.kv_lens[static_cast<size_t>(q_seq)]};
      std::vector<int32_t> row(c.block_table.begin() + q_seq * c.params.batch.max_blocks_per_seq,
                               c.block_table.begin() + (q_seq + 1) * c.params.batch.max_blocks_per_seq);
      DeviceBuffer di = testing::UploadBytes(indptr.data(), 8), dl = testing::UploadBytes(lens.data(), 4);
      DeviceBuffer dt = testing::UploadBytes(row.data(), row.size() * 4);
      DeviceBuffer o1 = std::move(DeviceBuffer::Allocate(row_bytes * static_cast<size_t>(nq)).value());
      DeviceBuffer l1 = std::move(DeviceBuffer::Allocate(static_cast<size_t>(Hq * nq) * 4 + 16).value());
      AttentionParams p1 = d.p;
      p1.q.data = static_cast<uint8_t*>(d.q.get()) + row_bytes * static_cast<size_t>(q0);
      p1.q.shape[0] = nq;
      p1.o.data = o1.get();
      p1.o.shape[0] = nq;
      p1.lse = static_cast<float*>(l1.get());
      p1.batch = {1, static_cast<const int32_t*>(di.get()), static_cast<const int32_t*>(dl.get()),
                  static_cast<const int32_t*>(dt.get()), c.params.batch.max_blocks_per_seq};
      const AttentionBatch hb1 = {1, indptr.data(), lens.data(), row.data(), c.params.batch.max_blocks_per_seq};
      const Status st = AttentionDecodeCuda(p1, hb1, nullptr, opt);
      ASSERT_TRUE(st.ok()) << st.ToString();
      const auto o_one = testing::DownloadBytes<uint8_t>(o1.get(), row_bytes * static_cast<size_t>(nq));
      const auto lse_one = testing::DownloadBytes<float>(l1.get(), static_cast<size_t>(Hq * nq));
      EXPECT_EQ(0, std::memcmp(o_one.data(), o_batch.data() + row_bytes * static_cast<size_t>(q0), o_one.size()))
          << "sequence " << q_seq << " of " << Describe(s, opt.split_tokens);
      EXPECT_EQ(0, std::memcmp(lse_one.data(), lse_batch.data() + Hq * q0, lse_one.size() * 4)) << "lse, seq " << q_seq;
    }
  }
}

// Each malformed request returns an error from Create (or Run) and launches nothing: o stays poisoned.
TEST(AttentionDecodeCuda, BadInputsReturnErrorsWithoutLaunch) {
  SKIP_WITHOUT_GPU();
  CaseSpec s;
  s.dtype = DType::kBF16;
  s.head_dim = 128;
  s.group = 4;
  s.num_kv_heads = 2;
  s.page_size = 16;
  s.anchor_len = 7;
  s.num_seqs = 2;
  s.kv_lens = {40, 3};
  s.q_lens = {2, 1};
  Case c = testing::MakeCase(s, BaseSeed());
  DecodeDeviceCase d = testing::UploadCase(c);
  auto untouched = [&] {
    const auto o = testing::DownloadBytes<uint8_t>(d.o.get(), d.o_bytes);
    for (uint8_t b : o) {
      if (b != 0xFF) return false;
    }
    return true;
  };
  struct Bad {
    const char* what;
    std::function<void(AttentionParams&, AttentionBatch&, std::vector<int32_t>&, DecodeOptions&)> mutate;
  };
  std::vector<int32_t> indptr = c.q_indptr, lens = c.kv_lens;
  const std::vector<Bad> bad = {
      {"block id out of range", [](auto&, auto&, auto& t, auto&) { t[1] = 1 << 20; }},
      {"negative block id", [](auto&, auto&, auto& t, auto&) { t[0] = -1; }},
      {"kv_len beyond table", [&](auto&, auto& hb, auto&, auto&) { lens[0] = 10000; hb.kv_lens = lens.data(); }},
      {"q_indptr not monotone", [&](auto&, auto& hb, auto&, auto&) { indptr[1] = 3; indptr[2] = 2; hb.q_indptr = indptr.data(); }},
      {"causal n_q > kv_len", [&](auto&, auto& hb, auto&, auto&) { lens[1] = 0; hb.kv_lens = lens.data(); }},
      {"scale 0", [](auto& p, auto&, auto&, auto&) { p.scale = 0.f; }},
      {"scale NaN", [](auto& p, auto&, auto&, auto&) { p.scale = std::nanf(""); }},
      {"dtype mismatch", [](auto& p, auto&, auto&, auto&) { p.k_pool.dtype = DType::kF16; }},
      {"f32 unsupported", [](auto& p, auto&, auto&, auto&) {
         for (TensorView* t : {&p.q, &p.k_pool, &p.v_pool, &p.anchor_k, &p.anchor_v, &p.o}) t->dtype = DType::kF32;
       }},
      {"host tensors", [](auto& p, auto&, auto&, auto&) { p.q.device = Device::kCpu; p.o.device = Device::kCpu; }},
      {"misaligned q", [](auto& p, auto&, auto&, auto&) { p.q.data = static_cast<uint8_t*>(p.q.data) + 2; }},
      {"Hq not divisible", [](auto& p, auto&, auto&, auto&) { p.k_pool.shape[2] = 3; p.v_pool.shape[2] = 3; }},
      {"null device block table", [](auto& p, auto&, auto&, auto&) { p.batch.block_table = nullptr; }},
      {"num_seqs mismatch", [](auto&, auto& hb, auto&, auto&) { hb.num_seqs = 1; }},
      {"split size < 64", [](auto&, auto&, auto&, auto& o) { o.split_tokens = 63; }},  // 0 = the default
  };
  for (const Bad& b : bad) {
    AttentionParams p = d.p;
    AttentionBatch hb = d.host_batch;
    std::vector<int32_t> t = c.block_table;
    indptr = c.q_indptr;
    lens = c.kv_lens;
    hb.block_table = t.data();
    DecodeOptions opt;
    b.mutate(p, hb, t, opt);
    auto plan = AttentionDecodePlan::Create(p, hb, opt);
    EXPECT_FALSE(plan.ok()) << b.what;
    const Status st = AttentionDecodeCuda(p, hb, nullptr, opt);
    EXPECT_FALSE(st.ok()) << b.what;
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(untouched()) << b.what << ": output was written";
  }
  {  // a valid contract the kernel does not serve: head_dim 96 is Unimplemented, not a crash
    CaseSpec s96 = s;
    s96.head_dim = 96;
    const Case c96 = testing::MakeCase(s96, 7);
    DecodeDeviceCase d96 = testing::UploadCase(c96);
    auto plan = AttentionDecodePlan::Create(d96.p, d96.host_batch);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), StatusCode::kUnimplemented) << plan.status().ToString();
  }
  // Run() with tensors that differ from the planned ones.
  auto plan = AttentionDecodePlan::Create(d.p, d.host_batch);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  AttentionParams other = d.p;
  other.q.shape[0] -= 1;
  other.o.shape[0] -= 1;
  EXPECT_FALSE(plan->Run(other).ok());
  other = d.p;
  other.causal = !other.causal;
  EXPECT_FALSE(plan->Run(other).ok());
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(untouched());
}

// Small, varied cases for compute-sanitizer (memcheck: every access in bounds; racecheck: the shared-memory
// ring and the cross-group reduction).
TEST(DecodeSanitizer, SmallCases) {
  SKIP_WITHOUT_GPU();
  CheckRandomCases(12, BaseSeed());
}

}  // namespace
}  // namespace fp
