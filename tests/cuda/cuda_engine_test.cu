// cuda_engine_test.cu — the CUDA Llama forward (CudaLlama) against the CPU engine (LlamaEngine) as oracle.
//
// Same random weights on both sides (LlamaWeights::Random, f32 on the CPU with an f32 KV cache; rounded to bf16
// on the GPU), teacher-forced: the logits of every position must agree to NMSE < 1e-3, through the prefill
// kernel (Forward), the decode kernel (DecodeLogits, batched with sequences of different lengths), with an
// anchor and a non-zero gamma. SmolLM2 (Q4_1 GGUF) is compared too when its file is present. Every test skips
// without a CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "fieldprint/cuda_engine.h"
#include "fieldprint/engine.h"
#include "fieldprint/llama_weights.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.name = "tiny";
  c.n_layers = 2;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;  // the CUDA attention kernels serve 64 and 128
  c.d_ff = 512;
  c.vocab_size = 384;
  c.context_length = 512;
  c.rope_base = 10000.f;
  return c;
}

double Nmse(std::span<const float> got, std::span<const float> want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? num / den : num;
}

std::vector<int32_t> RandomTokens(std::mt19937& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> u(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = u(rng);
  return t;
}

struct Pair {
  std::unique_ptr<LlamaEngine> cpu;
  std::unique_ptr<CudaLlama> gpu;
};

Pair MakePair(const ModelConfig& c, uint64_t seed, float gamma, int max_batch = 4,
              const std::vector<float>& gamma_per_head = {}) {
  Pair p;
  auto w1 = LlamaWeights::Random(c, seed, WeightType::kF32);
  auto w2 = LlamaWeights::Random(c, seed, WeightType::kF32);
  EXPECT_TRUE(w1.ok() && w2.ok());
  EngineOptions eo;
  eo.kv_dtype = DType::kF32;
  eo.kv_capacity = 2048;
  eo.gamma = gamma;
  eo.gamma_per_head = gamma_per_head;
  eo.num_threads = 2;
  auto cpu = LlamaEngine::Create(std::move(w1).value(), eo);
  EXPECT_TRUE(cpu.ok()) << cpu.status().ToString();
  CudaEngineOptions go;
  go.kv_capacity = 2048;
  go.max_batch = max_batch;
  go.max_chunk = 32;  // several chunks per prompt
  go.gamma = gamma;
  go.gamma_per_head = gamma_per_head;
  go.split_tokens = 64;  // several KV splits per sequence: exercises the merge
  auto gpu = CudaLlama::FromWeights(w2.value(), go);
  EXPECT_TRUE(gpu.ok()) << gpu.status().ToString();
  if (cpu.ok()) p.cpu = std::move(cpu).value();
  if (gpu.ok()) p.gpu = std::move(gpu).value();
  return p;
}

TEST(CudaEngine, PrefillLogitsMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  const ModelConfig c = TinyConfig();
  Pair p = MakePair(c, 7, 0.f);
  ASSERT_TRUE(p.cpu && p.gpu);
  const auto prompt = RandomTokens(rng, 83, c.vocab_size);
  auto sc = p.cpu->NewSequence(nullptr);
  auto sg = p.gpu->NewSequence(nullptr);
  ASSERT_TRUE(sc.ok() && sg.ok());
  std::vector<float> want, got(7, std::nanf(""));  // poisoned: Forward must overwrite every entry
  const auto n = static_cast<int32_t>(prompt.size());
  ASSERT_TRUE(p.cpu->Forward(*sc, prompt, n, &want).ok());
  Status st = p.gpu->Forward(*sg, prompt, n, &got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(got.size(), want.size());
  const double e = Nmse(got, want);
  std::printf("prefill NMSE over %d positions: %.3g\n", n, e);
  EXPECT_LT(e, 1e-3);
  // Row by row too: a single wrong position must not hide in the average.
  for (int32_t t = 0; t < n; ++t) {
    const size_t v = static_cast<size_t>(c.vocab_size);
    EXPECT_LT(Nmse(std::span(got).subspan(t * v, v), std::span(want).subspan(t * v, v)), 1e-2) << "row " << t;
  }
  EXPECT_EQ(*p.gpu->Length(*sg), n);
}

// Anchor + gamma (one value, or one per head), prefill then teacher-forced decode, against the CPU engine.
void CheckAnchorAndGamma(float gamma, const std::vector<float>& per_head) {
  std::mt19937 rng(12);
  const ModelConfig c = TinyConfig();
  Pair p = MakePair(c, 9, gamma, 4, per_head);
  ASSERT_TRUE(p.cpu && p.gpu);
  const auto anchor_toks = RandomTokens(rng, 45, c.vocab_size);
  auto ac = p.cpu->BuildAnchor(anchor_toks);
  auto ag = p.gpu->BuildAnchor(anchor_toks);
  ASSERT_TRUE(ac.ok()) << ac.status().ToString();
  ASSERT_TRUE(ag.ok()) << ag.status().ToString();
  const auto toks = RandomTokens(rng, 70, c.vocab_size);
  const int32_t prompt = 21;
  auto sc = p.cpu->NewSequence(*ac);
  auto sg = p.gpu->NewSequence(*ag);
  ASSERT_TRUE(sc.ok() && sg.ok());
  std::vector<float> want;
  ASSERT_TRUE(p.cpu->Forward(*sc, toks, static_cast<int32_t>(toks.size()), &want).ok());
  std::vector<float> got, step;
  ASSERT_TRUE(p.gpu->Forward(*sg, std::span(toks).first(prompt), prompt, &got).ok());
  for (size_t i = prompt; i < toks.size(); ++i) {  // teacher-forced decode, one token per step
    const SeqId s = *sg;
    Status st = p.gpu->DecodeLogits(std::span(&s, 1), std::span(&toks[i], 1), &step);
    ASSERT_TRUE(st.ok()) << st.ToString();
    got.insert(got.end(), step.begin(), step.end());
  }
  ASSERT_EQ(got.size(), want.size());
  const double e_prefill = Nmse(std::span(got).first(prompt * c.vocab_size), std::span(want).first(prompt * c.vocab_size));
  const double e_decode = Nmse(std::span(got).subspan(prompt * c.vocab_size), std::span(want).subspan(prompt * c.vocab_size));
  std::printf("anchor+gamma NMSE: prefill %.3g, decode %.3g\n", e_prefill, e_decode);
  EXPECT_LT(e_prefill, 1e-3);
  EXPECT_LT(e_decode, 1e-3);
  EXPECT_EQ(*p.gpu->Length(*sg), static_cast<int32_t>(toks.size()));
}

TEST(CudaEngine, DecodeWithAnchorAndGammaMatchesCpu) {
  SKIP_WITHOUT_GPU();
  CheckAnchorAndGamma(0.35f, {});
}

TEST(CudaEngine, DecodeWithAnchorAndPerHeadGammaMatchesCpu) {
  SKIP_WITHOUT_GPU();
  CheckAnchorAndGamma(0.f, {0.6f, -0.4f, 0.f, 1.2f});  // TinyConfig: 4 query heads
}

TEST(CudaEngine, BatchedDecodeMatchesCpuPerSequence) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  const ModelConfig c = TinyConfig();
  Pair p = MakePair(c, 5, 0.f, 4);
  ASSERT_TRUE(p.cpu && p.gpu);
  const int kSeqs = 3, kSteps = 9;
  const int prompt_len[kSeqs] = {5, 31, 64};  // partial page, just under two pages, exactly four pages
  std::vector<std::vector<int32_t>> toks(kSeqs);
  std::vector<std::vector<float>> want(kSeqs);
  std::vector<SeqId> gs;
  for (int s = 0; s < kSeqs; ++s) {
    toks[s] = RandomTokens(rng, prompt_len[s] + kSteps, c.vocab_size);
    auto sc = p.cpu->NewSequence(nullptr);
    ASSERT_TRUE(sc.ok());
    ASSERT_TRUE(p.cpu->Forward(*sc, toks[s], static_cast<int32_t>(toks[s].size()), &want[s]).ok());
    auto sg = p.gpu->NewSequence(nullptr);
    ASSERT_TRUE(sg.ok());
    std::vector<float> unused;
    ASSERT_TRUE(p.gpu->Forward(*sg, std::span(toks[s]).first(prompt_len[s]), 0, &unused).ok());
    gs.push_back(*sg);
  }
  const size_t v = static_cast<size_t>(c.vocab_size);
  double worst = 0;
  std::vector<float> logits;
  std::vector<int32_t> next;
  for (int k = 0; k < kSteps; ++k) {
    std::vector<int32_t> step_toks;
    for (int s = 0; s < kSeqs; ++s) step_toks.push_back(toks[s][static_cast<size_t>(prompt_len[s] + k)]);
    if (k % 2 == 0) {
      Status st = p.gpu->DecodeLogits(gs, step_toks, &logits);
      ASSERT_TRUE(st.ok()) << st.ToString();
      for (int s = 0; s < kSeqs; ++s) {
        const size_t row = static_cast<size_t>(prompt_len[s] + k);
        const double e = Nmse(std::span(logits).subspan(s * v, v), std::span(want[s]).subspan(row * v, v));
        worst = std::max(worst, e);
        EXPECT_LT(e, 1e-3) << "seq " << s << " step " << k;
      }
    } else {  // greedy path: device argmax must equal the host argmax of the same logits
      Status st = p.gpu->DecodeGreedy(gs, step_toks, &next);
      ASSERT_TRUE(st.ok()) << st.ToString();
      std::vector<float> dev(kSeqs * v);
      ASSERT_EQ(cudaMemcpy(dev.data(), p.gpu->device_logits(), dev.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      for (int s = 0; s < kSeqs; ++s) {
        int best = 0;
        for (size_t i = 1; i < v; ++i) best = dev[s * v + i] > dev[s * v + best] ? static_cast<int>(i) : best;
        EXPECT_EQ(next[static_cast<size_t>(s)], best) << "seq " << s << " step " << k;
      }
    }
  }
  std::printf("batched decode worst per-row NMSE: %.3g\n", worst);
}

TEST(CudaEngine, BadInputsAreErrorsAndChangeNothing) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = TinyConfig();
  Pair p = MakePair(c, 3, 0.f, 2);
  ASSERT_TRUE(p.gpu);
  CudaLlama& g = *p.gpu;
  auto s = g.NewSequence(nullptr);
  auto s2 = g.NewSequence(nullptr);
  ASSERT_TRUE(s.ok() && s2.ok());
  std::vector<float> logits;
  const std::vector<int32_t> good{1, 2, 3};
  ASSERT_TRUE(g.Forward(*s, good, 1, &logits).ok());
  const std::vector<int32_t> bad{1, c.vocab_size, 2};
  EXPECT_EQ(g.Forward(*s, bad, 1, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(g.Forward(*s, std::vector<int32_t>{-1}, 1, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(g.Forward(*s, good, 4, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Forward(*s, good, 1, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Forward(12345, good, 1, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*g.Length(*s), 3);
  const std::vector<int32_t> too_long(static_cast<size_t>(c.context_length), 1);
  EXPECT_EQ(g.Forward(*s, too_long, 0, &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*g.Length(*s), 3);
  // Decode: duplicates, size mismatch, too many sequences, bad token, unknown sequence.
  const SeqId dup[2] = {*s, *s};
  const int32_t two[2] = {1, 2};
  EXPECT_EQ(g.DecodeLogits(dup, two, &logits).code(), StatusCode::kInvalidArgument);
  const SeqId one[1] = {*s};
  EXPECT_EQ(g.DecodeLogits(one, two, &logits).code(), StatusCode::kInvalidArgument);
  const SeqId three[3] = {*s, *s2, *s};
  const int32_t three_t[3] = {1, 2, 3};
  EXPECT_EQ(g.DecodeLogits(three, three_t, &logits).code(), StatusCode::kInvalidArgument);
  const int32_t bad_tok[1] = {c.vocab_size + 5};
  EXPECT_EQ(g.DecodeLogits(one, bad_tok, &logits).code(), StatusCode::kOutOfRange);
  const SeqId unknown[1] = {999};
  EXPECT_EQ(g.DecodeLogits(unknown, std::span(two, 1), &logits).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(g.DecodeLogits({}, {}, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*g.Length(*s), 3);
  EXPECT_EQ(*g.Length(*s2), 0);
  // Pool exhaustion: the reservation fails and the sequence keeps its length.
  ModelConfig big = c;
  big.context_length = 4096;
  auto w = LlamaWeights::Random(big, 1, WeightType::kF32);
  ASSERT_TRUE(w.ok());
  CudaEngineOptions o;
  o.kv_capacity = 64;
  o.max_chunk = 32;
  auto small = CudaLlama::FromWeights(w.value(), o);
  ASSERT_TRUE(small.ok());
  auto sq = (*small)->NewSequence(nullptr);
  ASSERT_TRUE(sq.ok());
  const std::vector<int32_t> many(100, 3);
  EXPECT_EQ((*small)->Forward(*sq, many, 1, &logits).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(*(*small)->Length(*sq), 0);
  // Bad options.
  CudaEngineOptions bad_opt;
  bad_opt.max_batch = 0;
  EXPECT_EQ(CudaLlama::FromWeights(w.value(), bad_opt).status().code(), StatusCode::kInvalidArgument);
  ModelConfig odd = c;
  odd.head_dim = 32;
  odd.n_heads = 8;
  odd.n_kv_heads = 4;
  EXPECT_EQ(CudaLlama::Random(odd, 1, {}).status().code(), StatusCode::kUnimplemented);
}

TEST(CudaEngine, DeviceRandomWeightsAreDeterministic) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = TinyConfig();
  CudaEngineOptions o;
  o.max_chunk = 16;
  std::vector<float> out[3];
  for (int i = 0; i < 3; ++i) {
    auto g = CudaLlama::Random(c, i < 2 ? 42 : 43, o);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    auto s = (*g)->NewSequence(nullptr);
    ASSERT_TRUE(s.ok());
    const std::vector<int32_t> toks{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4};
    ASSERT_TRUE((*g)->Forward(*s, toks, 2, &out[i]).ok());
    for (float x : out[i]) ASSERT_TRUE(std::isfinite(x));
  }
  EXPECT_EQ(out[0], out[1]);  // same seed: bit-identical (fixed GEMM configuration, no atomics)
  EXPECT_NE(out[0], out[2]);
  double var = 0;
  for (float x : out[0]) var += static_cast<double>(x) * x;
  var /= static_cast<double>(out[0].size());
  EXPECT_GT(var, 0.05);  // activations stay O(1): not collapsed to zero
  EXPECT_LT(var, 100.0);
}

TEST(CudaEngine, SmolLM2MatchesCpuIfPresent) {
  SKIP_WITHOUT_GPU();
  const std::string path = ResolveModelPath("");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "model file not present: " << path;
  auto wq = LlamaWeights::Load(path, WeightStorage::kF32);  // f32 oracle: no activation quantisation
  auto wg = LlamaWeights::Load(path, WeightStorage::kQuantized);
  ASSERT_TRUE(wq.ok() && wg.ok());
  EngineOptions eo;
  eo.kv_dtype = DType::kF32;
  eo.kv_capacity = 512;
  auto cpu = LlamaEngine::Create(std::move(wq).value(), eo);
  ASSERT_TRUE(cpu.ok());
  CudaEngineOptions go;
  go.kv_capacity = 512;
  go.max_chunk = 64;
  auto gpu = CudaLlama::FromWeights(wg.value(), go);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  std::mt19937 rng(14);
  const auto toks = RandomTokens(rng, 48, (*cpu)->config().vocab_size);
  auto sc = (*cpu)->NewSequence(nullptr);
  auto sg = (*gpu)->NewSequence(nullptr);
  std::vector<float> want, got, step;
  ASSERT_TRUE((*cpu)->Forward(*sc, toks, 48, &want).ok());
  ASSERT_TRUE((*gpu)->Forward(*sg, std::span(toks).first(40), 40, &got).ok());
  for (size_t i = 40; i < toks.size(); ++i) {
    const SeqId s = *sg;
    ASSERT_TRUE((*gpu)->DecodeLogits(std::span(&s, 1), std::span(&toks[i], 1), &step).ok());
    got.insert(got.end(), step.begin(), step.end());
  }
  const double e = Nmse(got, want);
  std::printf("SmolLM2 NMSE (prefill 40 + decode 8): %.3g\n", e);
  EXPECT_LT(e, 1e-3);
}

}  // namespace
}  // namespace fp
