// Tolerant fingerprints across devices: a random bf16-exact model's fingerprints from the CPU engine are checked
// against the CUDA engine's (CudaLlama::ForwardHidden) and the reverse with the default FingerprintTolerance; a
// model of another seed is rejected. The printed overlap / errors are the GPU numbers the tolerance needs.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "engine_test_util.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/engine.h"
#include "fieldprint/fingerprint.h"

namespace fp {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 128;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 64;  // the CUDA attention kernels serve 64 and 128
  c.d_ff = 256;
  c.vocab_size = 259;
  c.context_length = 512;
  c.tied_embeddings = false;
  return c;
}

Fingerprints CpuPrint(uint64_t seed, std::span<const int32_t> fed) {
  auto w = LlamaWeights::Random(Config(), seed, WeightType::kQ8_0);
  EXPECT_TRUE(w.ok());
  EngineOptions eo;
  eo.num_threads = 2;
  eo.kv_capacity = 512;
  auto e = LlamaEngine::Create(std::move(w).value(), eo);
  EXPECT_TRUE(e.ok());
  auto seq = (*e)->NewSequence(nullptr);
  EXPECT_TRUE(seq.ok());
  std::vector<int32_t> rows(fed.size());  // every row: a block's fingerprint covers all of them
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<float> hidden;  // [fed, d]
  EXPECT_TRUE((*e)->Forward(*seq, fed, 0, nullptr, rows, &hidden).ok());
  auto f = MakeFingerprints(hidden, Config().d_model, static_cast<int32_t>(fed.size()), kFingerprintBlock,
                            kFingerprintTopK);
  EXPECT_TRUE(f.ok());
  return f.ok() ? *f : Fingerprints{};
}

Fingerprints CudaPrint(uint64_t seed, std::span<const int32_t> fed) {
  auto w = LlamaWeights::Random(Config(), seed, WeightType::kQ8_0);
  EXPECT_TRUE(w.ok());
  CudaEngineOptions co;
  co.kv_capacity = 512;
  co.max_chunk = 64;  // several chunks
  auto e = CudaLlama::FromWeights(*w, co);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (!e.ok()) return {};
  auto seq = (*e)->NewSequence(nullptr);
  EXPECT_TRUE(seq.ok());
  std::vector<int32_t> rows(fed.size());  // every row: a block's fingerprint covers all of them
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<float> hidden;  // [fed, d]
  const Status st = (*e)->ForwardHidden(*seq, fed, rows, &hidden);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(*(*e)->Length(*seq), static_cast<int32_t>(fed.size()));
  auto f = MakeFingerprints(hidden, Config().d_model, static_cast<int32_t>(fed.size()), kFingerprintBlock,
                            kFingerprintTopK);
  EXPECT_TRUE(f.ok());
  return f.ok() ? *f : Fingerprints{};
}

TEST(FingerprintCudaTest, CpuAndCudaFingerprintsMatchEachOtherNotAnotherSeed) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<int32_t> fed(40 + rng() % 150);
    for (auto& t : fed) t = static_cast<int32_t>(rng() % 259);
    const uint64_t seed = 50 + static_cast<uint64_t>(trial);
    const Fingerprints cpu = CpuPrint(seed, fed);
    const Fingerprints gpu = CudaPrint(seed, fed);
    const FingerprintMatch a = MatchFingerprints(cpu, gpu);
    const FingerprintMatch b = MatchFingerprints(gpu, cpu);
    std::printf("[fingerprint-cuda] %zu tokens: cpu->gpu overlap %.3f mean %.4f max %.4f; gpu->cpu %.3f %.4f %.4f\n",
                fed.size(), a.min_overlap, a.worst_mean_err, a.worst_err, b.min_overlap, b.worst_mean_err,
                b.worst_err);
    EXPECT_TRUE(a.ok) << a.failure;
    EXPECT_TRUE(b.ok) << b.failure;
    EXPECT_FALSE(MatchFingerprints(cpu, CudaPrint(seed + 999, fed)).ok);
    EXPECT_FALSE(MatchFingerprints(gpu, CpuPrint(seed + 999, fed)).ok);
  }
}

TEST(FingerprintCudaTest, BadRowsAreErrors) {
  SKIP_WITHOUT_GPU();
  auto w = LlamaWeights::Random(Config(), 1, WeightType::kQ8_0);
  ASSERT_TRUE(w.ok());
  auto e = CudaLlama::FromWeights(*w, CudaEngineOptions{});
  ASSERT_TRUE(e.ok());
  auto seq = (*e)->NewSequence(nullptr);
  ASSERT_TRUE(seq.ok());
  const std::vector<int32_t> toks{5, 6, 7}, dec{2, 1}, out{3};
  std::vector<float> h;
  EXPECT_EQ((*e)->ForwardHidden(*seq, toks, dec, &h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->ForwardHidden(*seq, toks, out, &h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*(*e)->Length(*seq), 0);
}

}  // namespace
}  // namespace fp
