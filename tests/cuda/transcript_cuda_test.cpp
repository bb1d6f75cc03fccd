// CUDA transcripts (issue #7): a seeded generation on the batch-invariant CUDA engine with the CUDA verifier
// (async, commits every 5 tokens and at full pages) is recorded with fingerprints and signed; it must verify
// bit for bit on the GPU (one prefill replays prefill + decode: every commit root, every token), tolerantly on the
// CPU (fingerprints), and not exactly on the CPU. A tampered root or generated token is rejected on the GPU. Timings
// of generate vs verify are printed. A greedy transcript is checked through device argmax ids (ForwardGreedy).
// Opt-in (FP_CROSS_CARD_DIR): a transcript from one card verified on another. Every test skips without a CUDA
// device.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "engine_test_util.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/engine_backend.h"
#include "fieldprint/generation.h"
#include "fieldprint/transcript.h"

namespace fp {
namespace {

namespace fs = std::filesystem;

ModelConfig Config() {  // batch_invariant needs d_model, q_dim, d_ff multiples of 32; head_dim 64
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.d_ff = 512;
  c.vocab_size = 259;
  c.context_length = 1024;
  c.tied_embeddings = false;
  return c;
}

struct CudaRun {
  fs::path dir;
  std::string model;
  Transcript t;
  double generate_s = 0;
};

using Gemm = CudaEngineOptions::InvariantGemm;

// What generate --device cuda --transcript uses (batch_invariant on), with `gemm`.
CudaEngineOptions TranscriptEngineOptions(Gemm gemm) {
  CudaEngineOptions co;
  co.kv_capacity = 512;
  co.max_batch = 1;
  co.gamma = 0.25f;
  co.batch_invariant = true;
  co.batch_invariant_gemm = gemm;
  return co;
}

// gemm: generate --device cuda --transcript picks the skinny GEMM where the shapes allow (Config's do).
CudaRun GenerateOnCuda(int32_t max_tokens, SamplerConfig sampler = SamplerConfig{0.9f, 40, 0.95f, 777},
                       Gemm gemm = Gemm::kSkinny) {
  CudaRun r;
  r.dir = fs::temp_directory_path() / ("fp_transcript_cuda_" + std::to_string(::getpid()));
  fs::create_directories(r.dir);
  auto w = LlamaWeights::Random(Config(), 21, WeightType::kQ8_0);
  EXPECT_TRUE(w.ok());
  const std::vector<uint8_t> bytes = testing::WriteGguf(*w);
  r.model = (r.dir / "model.gguf").string();
  std::ofstream(r.model, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  auto lw = LlamaWeights::Load(r.model, WeightStorage::kQuantized);
  EXPECT_TRUE(lw.ok()) << lw.status().ToString();
  auto e = CudaLlama::FromWeights(*lw, TranscriptEngineOptions(gemm));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (!e.ok()) return r;
  const Status warm = (*e)->Warmup();  // as generate --device cuda does before its clocks
  EXPECT_TRUE(warm.ok()) << warm.ToString();
  auto backend = MakeCudaBackend(**e);
  EXPECT_TRUE(backend->replay_any_shape());
  auto tok = testing::MakeByteTokenizer();
  const auto anchor_tokens = tok->Encode("<|im_start|>system\nbe brief and kind<|im_end|>\n");
  auto anchor = backend->BuildAnchor(anchor_tokens);
  EXPECT_TRUE(anchor.ok()) << anchor.status().ToString();
  const auto prompt = tok->Encode("<|im_start|>user\nwrite me a short poem<|im_end|>\n<|im_start|>assistant\n");
  GenerationOptions o;
  o.max_tokens = max_tokens;
  o.sampler = sampler;
  o.verify = VerifyMode::kAsync;
  o.commit_every = 5;
  o.stop_at_end_of_turn = false;
  Generator g(*backend, *tok, *anchor);
  const auto t0 = std::chrono::steady_clock::now();
  auto stats = g.Generate(prompt, o, nullptr);
  r.generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  if (!stats.ok()) return r;
  EXPECT_EQ(stats->rollbacks, 0);
  auto t = TranscriptFromRun(**e, r.model, o, anchor_tokens, prompt, *stats);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return r;
  r.t = std::move(t).value();
  const Status st = RecordFingerprints(r.t, **e, *anchor);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return r;
}

Result<ReplayReport> VerifyOnCuda(const Transcript& t, const std::string& model) {
  ReplayOptions on_cuda;
  on_cuda.device = "cuda";
  return VerifyTranscript(t, model, on_cuda);
}

// The replay's phases, printed (timings are not asserted).
void PrintReplay(const char* what, const CudaRun& r, const ReplayReport& rep) {
  std::printf("[transcript-cuda] %s: %zu prompt + %zu generated, %zu commits: generate %.3f s, replay %.4f s "
              "(anchor %.4f + forward %.4f + hash %.4f + check %.4f)\n",
              what, r.t.prompt.size(), r.t.generated.size(), r.t.commits.size(), r.generate_s, rep.replay_seconds,
              rep.anchor_seconds, rep.forward_seconds, rep.hash_seconds, rep.check_seconds);
}

// t with generated token i changed, replayed on the GPU: rejected; the last token was never fed, so only its
// re-check can catch it (the earlier ones may fail a root first). The report, for the caller's further checks.
ReplayReport ExpectChangedTokenRejected(const Transcript& t, const std::string& model, size_t i) {
  Transcript bad = t;
  bad.generated[i] = (bad.generated[i] + 1) % 259;
  auto rt = VerifyOnCuda(bad, model);
  EXPECT_TRUE(rt.ok()) << rt.status().ToString();
  if (!rt.ok()) return {};
  EXPECT_FALSE(rt->ok) << "token " << i;
  if (i + 1 == t.generated.size()) {
    EXPECT_NE(rt->failure.find("generated token " + std::to_string(i)), std::string::npos) << rt->failure;
  }
  return *rt;
}

TEST(TranscriptCudaTest, VerifiesExactlyOnCudaTolerantlyOnCpuRejectsTampering) {
  SKIP_WITHOUT_GPU();
  CudaRun r = GenerateOnCuda(150);  // prompt ~50 + 150: several pages, full and provisional commits
  ASSERT_FALSE(r.t.commits.empty());
  EXPECT_EQ(r.t.device, "cuda");
  EXPECT_EQ(r.t.gemm, "skinny");
  EXPECT_EQ(r.t.weights, "bf16");
  EXPECT_EQ(r.t.kv_dtype, "bf16");
  ASSERT_TRUE(r.t.fingerprints.has_value());
  auto back = Transcript::Parse(r.t.ToJson());  // through JSON, as verify reads it
  ASSERT_TRUE(back.ok()) << back.status().ToString();

  const auto t0 = std::chrono::steady_clock::now();
  auto exact = VerifyOnCuda(*back, r.model);
  const double verify_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_TRUE(exact->ok) << exact->failure;
  EXPECT_EQ(exact->commits_checked, static_cast<int32_t>(r.t.commits.size()));
  EXPECT_EQ(exact->tokens_resampled, static_cast<int32_t>(r.t.generated.size()));
  EXPECT_FALSE(exact->device_argmax);  // a top-k / top-p sampler: logits re-sampled on the host
  EXPECT_FALSE(exact->device_sample_bounds);
  std::printf("[transcript-cuda] %zu prompt + %zu generated, %zu commits: generate %.3f s, verify --device cuda "
              "%.3f s (replay %.3f s: anchor %.4f + forward %.4f + hash %.4f + check %.4f)\n",
              r.t.prompt.size(), r.t.generated.size(), r.t.commits.size(), r.generate_s, verify_s,
              exact->replay_seconds, exact->anchor_seconds, exact->forward_seconds, exact->hash_seconds,
              exact->check_seconds);

  ReplayOptions tol;  // CPU, fingerprints
  tol.tolerant = true;
  auto tr = VerifyTranscript(*back, r.model, tol);
  ASSERT_TRUE(tr.ok()) << tr.status().ToString();
  EXPECT_TRUE(tr->ok) << tr->failure;
  std::printf("[transcript-cuda] tolerant CPU check: %d blocks, min overlap %.3f, worst mean err %.4f, worst err "
              "%.4f, %d near-tie token flips\n",
              tr->blocks_checked, tr->min_overlap, tr->worst_mean_err, tr->worst_err, tr->tokens_flipped);
  EXPECT_EQ(VerifyTranscript(*back, r.model, {}).status().code(), StatusCode::kUnimplemented);  // exact on CPU

  // Tampering: a middle commit's root, a generated token (not the last), the anchor root.
  Transcript bad_root = *back;
  const size_t mid = bad_root.commits.size() / 2;
  bad_root.commits[mid].root.bytes[7] ^= 1;
  auto rr = VerifyOnCuda(bad_root, r.model);
  ASSERT_TRUE(rr.ok()) << rr.status().ToString();
  EXPECT_FALSE(rr->ok);
  EXPECT_GE(rr->first_bad_commit, 0);  // a consistency proof (at mid or mid + 1) or the replayed root catches it
  EXPECT_LE(rr->first_bad_commit, static_cast<int64_t>(mid) + 1) << rr->failure;
  Transcript bad_tok = *back;
  bad_tok.generated[bad_tok.generated.size() / 2] = (bad_tok.generated[bad_tok.generated.size() / 2] + 1) % 259;
  auto rt = VerifyOnCuda(bad_tok, r.model);
  ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  EXPECT_FALSE(rt->ok);
  auto rtt = VerifyTranscript(bad_tok, r.model, tol);
  ASSERT_TRUE(rtt.ok());
  EXPECT_FALSE(rtt->ok);
  // The other batch-invariant GEMM gives other bits: the replay must not match.
  Transcript bad_gemm = *back;
  bad_gemm.gemm = "cublas-padded";
  auto rg = VerifyOnCuda(bad_gemm, r.model);
  ASSERT_TRUE(rg.ok()) << rg.status().ToString();
  EXPECT_FALSE(rg->ok) << "a skinny-GEMM run replayed with cuBLAS blocks matched";
  Transcript bad_anchor = *back;
  bad_anchor.anchor_root.bytes[0] ^= 0x80;
  auto ra = VerifyOnCuda(bad_anchor, r.model);
  ASSERT_TRUE(ra.ok());
  EXPECT_FALSE(ra->ok);
  EXPECT_NE(ra->failure.find("anchor"), std::string::npos) << ra->failure;
  std::error_code ec;
  fs::remove_all(r.dir, ec);
}

// A temperature-only sampling transcript is confirmed against device sample bounds (no logits to the host); a
// changed token (middle, last) falls back to the host re-sampling, which reports it.
TEST(TranscriptCudaTest, SampledTranscriptVerifiesThroughDeviceSampleBounds) {
  SKIP_WITHOUT_GPU();
  CudaRun r = GenerateOnCuda(120, SamplerConfig{0.8f, 0, 1.f, 9});
  ASSERT_FALSE(r.t.commits.empty());
  auto back = Transcript::Parse(r.t.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  auto exact = VerifyOnCuda(*back, r.model);
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_TRUE(exact->ok) << exact->failure;
  EXPECT_TRUE(exact->device_sample_bounds);
  EXPECT_FALSE(exact->device_argmax);
  EXPECT_EQ(exact->tokens_resampled, static_cast<int32_t>(r.t.generated.size()));
  PrintReplay("sampled, device sample bounds", r, *exact);
  const size_t n = back->generated.size();
  for (size_t i : {n / 2, n - 1}) {
    const ReplayReport rt = ExpectChangedTokenRejected(*back, r.model, i);
    EXPECT_FALSE(rt.device_sample_bounds) << "a wrong token must go down the host path";
  }
  std::error_code ec;
  fs::remove_all(r.dir, ec);
}

// A greedy transcript is checked through device argmax ids (no logits to the host): it verifies, a changed
// generated token (first, middle, last) is caught as a token mismatch, a changed root still as a commit.
TEST(TranscriptCudaTest, GreedyTranscriptVerifiesThroughDeviceArgmax) {
  SKIP_WITHOUT_GPU();
  CudaRun r = GenerateOnCuda(120, SamplerConfig{0.f, 0, 1.f, 5});
  ASSERT_FALSE(r.t.commits.empty());
  ASSERT_TRUE(r.t.sampler.greedy());
  auto back = Transcript::Parse(r.t.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  auto exact = VerifyOnCuda(*back, r.model);
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_TRUE(exact->ok) << exact->failure;
  EXPECT_TRUE(exact->device_argmax);
  EXPECT_EQ(exact->commits_checked, static_cast<int32_t>(r.t.commits.size()));
  EXPECT_EQ(exact->tokens_resampled, static_cast<int32_t>(r.t.generated.size()));
  EXPECT_GT(exact->forward_seconds, 0.0);
  EXPECT_GT(exact->hash_seconds, 0.0);
  EXPECT_LE(exact->anchor_seconds + exact->forward_seconds + exact->hash_seconds + exact->check_seconds,
            exact->replay_seconds * 1.0001);
  PrintReplay("greedy, device argmax", r, *exact);
  const size_t n = back->generated.size();
  for (size_t i : {size_t{0}, n / 2, n - 1}) {
    const ReplayReport rt = ExpectChangedTokenRejected(*back, r.model, i);
    EXPECT_TRUE(rt.device_argmax || rt.first_bad_commit >= 0) << rt.failure;
  }
  Transcript bad_root = *back;
  bad_root.commits.back().root.bytes[3] ^= 1;
  auto rr = VerifyOnCuda(bad_root, r.model);
  ASSERT_TRUE(rr.ok()) << rr.status().ToString();
  EXPECT_FALSE(rr->ok);
  EXPECT_GE(rr->first_bad_commit, 0) << rr->failure;
  std::error_code ec;
  fs::remove_all(r.dir, ec);
}

// Transcripts recorded with cuBLAS on 64-row blocks (all of them before the skinny default, "gemm" absent) still
// verify: the replay builds the engine with the transcript's GEMM.
TEST(TranscriptCudaTest, CublasPaddedTranscriptStillVerifies) {
  SKIP_WITHOUT_GPU();
  CudaRun r = GenerateOnCuda(40, SamplerConfig{0.9f, 40, 0.95f, 777}, Gemm::kCublasPadded);
  ASSERT_FALSE(r.t.commits.empty());
  EXPECT_EQ(r.t.gemm, "cublas-padded");
  const std::string json = r.t.ToJson();
  EXPECT_EQ(json.find("\"gemm\""), std::string::npos);
  auto back = Transcript::Parse(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  auto exact = VerifyOnCuda(*back, r.model);
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_TRUE(exact->ok) << exact->failure;
  // An engine on the other GEMM is refused up front, not replayed into a mismatch.
  auto lw = LlamaWeights::Load(r.model, WeightStorage::kQuantized);
  ASSERT_TRUE(lw.ok());
  auto e = CudaLlama::FromWeights(*lw, TranscriptEngineOptions(Gemm::kSkinny));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  const auto wrong = ReplayTranscriptCuda(*back, **e, {});
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument) << wrong.status().ToString();
  std::error_code ec;
  fs::remove_all(r.dir, ec);
}

// Across cards (opt-in: FP_CROSS_CARD_DIR names a directory; skips without it). The seeded generation above runs on
// this GPU. With no transcript in the directory it is written there with this card's name; with one (from another
// card), that transcript must verify bit for bit on this GPU, and this card's own run must have produced the same
// tokens and commit roots. Run once per card, carrying the directory from one machine to the next.
TEST(TranscriptCudaTest, CrossCardReplayIfAsked) {
  SKIP_WITHOUT_GPU();
  const char* dir = std::getenv("FP_CROSS_CARD_DIR");
  if (dir == nullptr) GTEST_SKIP() << "FP_CROSS_CARD_DIR not set";
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaSuccess, cudaGetDeviceProperties(&prop, 0));
  CudaRun r = GenerateOnCuda(150);  // the model file is the same bytes on every machine (seeded)
  ASSERT_FALSE(r.t.commits.empty());
  const fs::path path = fs::path(dir) / "transcript.json", card = fs::path(dir) / "card.txt";
  if (!fs::exists(path)) {
    fs::create_directories(dir);
    std::ofstream(path) << r.t.ToJson();
    std::ofstream(card) << prop.name << "\n";
    std::printf("[transcript-cuda] cross-card: wrote %s (%s)\n", path.c_str(), prop.name);
    return;
  }
  std::string other;
  std::getline(std::ifstream(card), other);
  auto theirs = Transcript::Load(path.string());
  ASSERT_TRUE(theirs.ok()) << theirs.status().ToString();
  auto rep = VerifyOnCuda(*theirs, r.model);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->ok) << other << " transcript on " << prop.name << ": " << rep->failure;
  EXPECT_EQ(theirs->generated, r.t.generated) << other << " vs " << prop.name;
  EXPECT_EQ(theirs->commits, r.t.commits) << other << " vs " << prop.name;
  std::printf("[transcript-cuda] cross-card: %s transcript (%zu tokens, %zu commits) verified on %s: %s\n",
              other.c_str(), theirs->generated.size(), theirs->commits.size(), prop.name,
              rep->ok ? "ok" : rep->failure.c_str());
}

TEST(TranscriptCudaTest, NeedsBatchInvariantMode) {
  SKIP_WITHOUT_GPU();
  auto w = LlamaWeights::Random(Config(), 3, WeightType::kQ8_0);
  ASSERT_TRUE(w.ok());
  CudaEngineOptions co;  // batch_invariant off
  co.kv_capacity = 128;
  auto e = CudaLlama::FromWeights(*w, co);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_FALSE(MakeCudaBackend(**e)->replay_any_shape());
  GenerationOptions o;
  o.verify = VerifyMode::kSync;
  GenerationStats s;
  const std::vector<int32_t> p{5, 6};
  EXPECT_EQ(TranscriptFromRun(**e, "x", o, {}, p, s).status().code(), StatusCode::kFailedPrecondition);
  Transcript t;
  t.device = "cuda";
  EXPECT_EQ(ReplayTranscriptCuda(t, **e, {}).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp
