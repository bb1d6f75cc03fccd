// Transcripts on a tiny random-weight GGUF written to a temp file: a generated (and signed) transcript
// verifies by replay; each kind of tampering (a generated token, a root, commit order, a signature byte, the
// model file, a prompt token) is rejected; malformed files are errors, never crashes. With the real model
// present, verify time vs generate time is printed (not asserted).
#include "fieldprint/transcript.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "transcript_test_util.h"
#include "fieldprint/engine.h"
#include "fieldprint/generation.h"

namespace fp {
namespace {

namespace fs = std::filesystem;

fs::path TempDir() { return testing::TranscriptTempDir(); }
ModelConfig TinyConfig() { return testing::TinyByteModelConfig(); }
// A random model as a GGUF file.
std::string WriteModel(const fs::path& dir, uint64_t seed) {
  return testing::WriteRandomModel(dir, seed, WeightType::kQ4_1, "model" + std::to_string(seed) + ".gguf");
}
std::string WriteKey(const fs::path& dir) { return testing::WriteEd25519Key(dir); }

struct GenRun {
  fs::path dir;
  std::string model;
  Transcript t;
  double generate_s = 0;
};

// Generates with seeded sampling and verification on (page 8, commit every 5: full and provisional commits).
GenRun Generate(const std::string& text = "hello there, how are you today?", int32_t max_tokens = 27) {
  GenRun r;
  r.dir = TempDir();
  r.model = WriteModel(r.dir, 77);
  testing::TranscriptEngine te = testing::LoadTranscriptEngine(r.model);
  const auto prompt = te.tok->Encode("<|im_start|>user\n" + text + "<|im_end|>\n<|im_start|>assistant\n");
  GenerationOptions o;
  o.max_tokens = max_tokens;
  o.sampler = SamplerConfig{0.9f, 20, 0.95f, 4321};
  o.verify = VerifyMode::kAsync;
  o.commit_every = 5;
  o.stop_at_end_of_turn = false;
  Generator g(*te.engine, *te.tok, te.anchor);
  const auto t0 = std::chrono::steady_clock::now();
  auto stats = g.Generate(prompt, o, nullptr);
  r.generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  auto t = TranscriptFromRun(*te.engine, r.model, "quantized", o, te.anchor_tokens, prompt, *stats);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  r.t = std::move(t).value();
  return r;
}

ReplayReport Verify(const Transcript& t, const std::string& model, ReplayOptions o = {}) {
  o.threads = 2;
  auto r = VerifyTranscript(t, model, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : ReplayReport{};
}

TEST(TranscriptTest, GeneratedTranscriptVerifiesAndRoundTrips) {
  GenRun r = Generate();
  ASSERT_EQ(r.t.generated.size(), 27u);
  ASSERT_GE(r.t.commits.size(), 8u);
  int proofs = 0, provisional = 0;
  for (const auto& c : r.t.commits) {
    proofs += c.has_proof;
    provisional += c.position % r.t.page_size != 0;
  }
  EXPECT_GT(proofs, 0);
  EXPECT_GT(provisional, 0) << "commit_every 5 with page 8 must give partial-page commits";
  const ReplayReport rep = Verify(r.t, r.model);
  EXPECT_TRUE(rep.ok) << rep.failure;
  EXPECT_EQ(rep.commits_checked, static_cast<int32_t>(r.t.commits.size()));
  EXPECT_EQ(rep.proofs_checked, proofs);
  EXPECT_EQ(rep.tokens_resampled, 27);

  const std::string path = (r.dir / "t.json").string();
  ASSERT_TRUE(SignTranscript(r.t, WriteKey(r.dir)).ok());
  ASSERT_TRUE(r.t.Save(path).ok());
  auto back = Transcript::Load(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->commits, r.t.commits);
  EXPECT_EQ(back->generated, r.t.generated);
  EXPECT_EQ(back->ToJson(), r.t.ToJson());
  EXPECT_TRUE(CheckTranscriptSignature(*back).ok());
  EXPECT_TRUE(Verify(*back, r.model).ok);
  ReplayOptions sample;
  sample.sample = 3;
  sample.seed = 9;
  const ReplayReport s = Verify(*back, r.model, sample);
  EXPECT_TRUE(s.ok) << s.failure;
  EXPECT_EQ(s.commits_checked, 3);
}

TEST(TranscriptTest, ChangedGeneratedTokenIsRejected) {
  GenRun r = Generate();
  for (size_t i : {size_t{3}, r.t.generated.size() - 1}) {  // mid-sequence (in the KV) and the last (not fed)
    Transcript t = r.t;
    t.generated[i] = (t.generated[i] + 1) % 259;
    const ReplayReport rep = Verify(t, r.model);
    EXPECT_FALSE(rep.ok) << "token " << i;
    std::printf("[transcript] token %zu changed: %s\n", i, rep.failure.c_str());
    if (i == 3) {
      EXPECT_GE(rep.first_bad_commit, 0) << rep.failure;
    }
  }
}

TEST(TranscriptTest, ChangedRootIsRejected) {
  GenRun r = Generate();
  for (size_t k : {size_t{0}, r.t.commits.size() / 2, r.t.commits.size() - 1}) {
    Transcript t = r.t;
    t.commits[k].root.bytes[5] ^= 0x10;
    const ReplayReport rep = Verify(t, r.model);
    EXPECT_FALSE(rep.ok) << "commit " << k;
    EXPECT_GE(rep.first_bad_commit, 0);
    EXPECT_LE(rep.first_bad_commit, static_cast<int64_t>(k) + 1);
  }
}

TEST(TranscriptTest, ReorderedCommitsAreRejected) {
  GenRun r = Generate();
  Transcript t = r.t;
  std::swap(t.commits[1], t.commits[2]);
  EXPECT_FALSE(Verify(t, r.model).ok);
  Transcript d = r.t;  // a dropped commit
  d.commits.erase(d.commits.begin() + 1);
  EXPECT_FALSE(Verify(d, r.model).ok);
}

TEST(TranscriptTest, ChangedSignatureByteIsRejected) {
  GenRun r = Generate();
  ASSERT_TRUE(SignTranscript(r.t, WriteKey(r.dir)).ok());
  ASSERT_TRUE(CheckTranscriptSignature(r.t).ok());
  Transcript t = r.t;
  t.signature->signature[17] ^= 0x01;
  const ReplayReport rep = Verify(t, r.model);
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.failure.find("signature"), std::string::npos) << rep.failure;
  Transcript b = r.t;  // a body change under an intact signature
  b.sampler.seed += 1;
  EXPECT_EQ(CheckTranscriptSignature(b).code(), StatusCode::kDataLoss);
  // A signature from another key over the same body is a different signature, but it verifies: the key is
  // embedded, so pinning the signer is the caller's policy.
  Transcript other = r.t;
  const fs::path k2 = r.dir / "k2";
  fs::create_directories(k2);
  ASSERT_TRUE(SignTranscript(other, WriteKey(k2)).ok());
  EXPECT_NE(other.signature->public_key, r.t.signature->public_key);
  EXPECT_TRUE(CheckTranscriptSignature(other).ok());
}

TEST(TranscriptTest, DifferentModelFileIsRejected) {
  GenRun r = Generate();
  const std::string other = WriteModel(r.dir, 78);
  ReplayReport rep = Verify(r.t, other);
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.failure.find("digest"), std::string::npos) << rep.failure;
  // Even with the digest forged to match, the replay on other weights diverges.
  Transcript t = r.t;
  auto d = Sha256File(other);
  ASSERT_TRUE(d.ok());
  t.model_sha256 = *d;
  rep = Verify(t, other);
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.failure.find("anchor"), std::string::npos) << rep.failure;
}

TEST(TranscriptTest, ChangedPromptTokenIsRejected) {
  GenRun r = Generate();
  Transcript t = r.t;
  t.prompt[t.prompt.size() / 2] ^= 1;
  const ReplayReport rep = Verify(t, r.model);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_commit, 0) << rep.failure;
}

TEST(TranscriptTest, MalformedFilesAreErrors) {
  GenRun r = Generate("hi", 6);
  const std::string good = r.t.ToJson();
  ASSERT_TRUE(Transcript::Parse(good).ok());
  auto edit = [&](const std::string& from, const std::string& to) { return testing::ParseEdited(good, from, to); };
  const std::string root = r.t.commits[0].root.Hex();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\"format\"", "\"formax\""},                       // missing field
      {"\"page_size\": 8", "\"page_size\": \"8\""},       // wrong type
      {"\"page_size\": 8", "\"page_size\": -8"},          // out of range
      {"\"version\": 1", "\"version\": 2"},               // unsupported version
      {root, root.substr(0, 63) + "g"},                   // bad hex
      {root, root.substr(0, 62)},                         // short hex
      {"\"prompt\": [", "\"prompt\": [-4, "},             // negative token
      {"\"generated\": [", "\"generated\": [1.5, "},      // non-integer token
      {"\"kv_dtype\": \"f32\"", "\"kv_dtype\": \"f8\""},  // unknown dtype
      {"\"commits\": [", "\"commits\": [7, "},            // commit not an object
  };
  for (const auto& [from, to] : cases) {
    auto t = edit(from, to);
    EXPECT_FALSE(t.ok()) << from << " -> " << to;
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    }
  }
  for (const char* text : {"", "{", "[]", "null", "{\"format\": \"fieldprint-transcript\"}"}) {
    EXPECT_FALSE(Transcript::Parse(text).ok()) << text;
  }
  for (size_t cut : {good.size() / 3, good.size() - 3})
    EXPECT_FALSE(Transcript::Parse(good.substr(0, cut)).ok());
  EXPECT_EQ(Transcript::Load((r.dir / "absent.json").string()).status().code(), StatusCode::kIo);
  // Valid JSON but bad content: a CUDA transcript, a token outside the vocabulary, a missing model.
  Transcript cuda = r.t;
  cuda.device = "cuda";
  EXPECT_EQ(VerifyTranscript(cuda, r.model, {}).status().code(), StatusCode::kUnimplemented);
  Transcript big = r.t;
  big.generated[0] = 100000;
  EXPECT_EQ(VerifyTranscript(big, r.model, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyTranscript(r.t, (r.dir / "absent.gguf").string(), {}).status().code(), StatusCode::kIo);
  // A signature that is not hex, and a key file that is not a key.
  EXPECT_FALSE(edit("\"commits\": [",
                    "\"signature\": {\"algorithm\": \"ed25519\", \"public_key\": \"zz\", "
                    "\"value\": \"00\"}, \"commits\": [")
                   .ok());
  const std::string junk = (r.dir / "junk.pem").string();
  std::ofstream(junk) << "not a key";
  EXPECT_EQ(SignTranscript(r.t, junk).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SignTranscript(r.t, (r.dir / "absent.pem").string()).code(), StatusCode::kIo);
}

// engine.gemm names a CUDA transcript's batch-invariant GEMM: "skinny" round-trips and is signed (the canonical
// body changes with it); the older default "cublas-padded" is not written, so transcripts from before the field read
// as what they ran and keep their signatures; any other value, or the field on a CPU transcript, is an error.
TEST(TranscriptTest, GemmFieldRoundTripsAndOlderTranscriptsStillParse) {
  GenRun r = Generate("hi", 6);
  Transcript cuda = r.t;
  cuda.device = "cuda";
  cuda.weights = "bf16";
  cuda.kv_dtype = "bf16";
  const std::string padded_json = cuda.ToJson();
  EXPECT_EQ(padded_json.find("\"gemm\""), std::string::npos);
  auto padded = Transcript::Parse(padded_json);
  ASSERT_TRUE(padded.ok()) << padded.status().ToString();
  EXPECT_EQ(padded->gemm, "cublas-padded");
  Transcript skinny = cuda;
  skinny.gemm = "skinny";
  const std::string skinny_json = skinny.ToJson();
  EXPECT_NE(skinny_json.find("\"gemm\": \"skinny\""), std::string::npos);
  auto back = Transcript::Parse(skinny_json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->gemm, "skinny");
  EXPECT_NE(skinny.CanonicalBody({}), cuda.CanonicalBody({}));
  const std::string with = "\"gemm\": \"skinny\"";
  for (const std::string bad : {"\"gemm\": \"cublas-padded\"", "\"gemm\": \"fast\"", "\"gemm\": 3"}) {
    auto t = testing::ParseEdited(skinny_json, with, bad);
    EXPECT_FALSE(t.ok()) << bad;
  }
  Transcript cpu = r.t;
  cpu.gemm = "skinny";
  EXPECT_FALSE(Transcript::Parse(cpu.ToJson()).ok()) << "engine.gemm on a CPU transcript";
}

TEST(TranscriptTest, NeedsVerificationOn) {
  auto tok = testing::MakeByteTokenizer();
  auto w = LlamaWeights::Random(TinyConfig(), 5, WeightType::kQ4_1);
  ASSERT_TRUE(w.ok());
  auto e = LlamaEngine::Create(std::move(w).value(), EngineOptions{});
  ASSERT_TRUE(e.ok());
  GenerationOptions o;  // verify off
  GenerationStats s;
  const std::vector<int32_t> p{5, 6};
  EXPECT_EQ(TranscriptFromRun(**e, "x", "quantized", o, {}, p, s).status().code(),
            StatusCode::kFailedPrecondition);
}

// Real model (when present): verify time vs generate time, printed only.
TEST(TranscriptTest, RealModelTiming) {
  const std::string path = ResolveModelPath("");
  if (!fs::exists(path)) GTEST_SKIP() << "no model at " << path;
  auto w = LlamaWeights::Load(path, WeightStorage::kQuantized);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto tok = Tokenizer::FromGguf(*w->gguf());
  ASSERT_TRUE(tok.ok());
  EngineOptions eo;
  eo.kv_capacity = 512;
  auto e = LlamaEngine::Create(std::move(w).value(), eo);
  ASSERT_TRUE(e.ok());
  const std::vector<ChatMessage> sys{{"system", tok->chat_template().default_system}};
  const std::vector<ChatMessage> conv{sys[0], {"user", "Name three colours."}};
  const auto anchor_tokens = tok->EncodeChat(sys, false);
  const auto all = tok->EncodeChat(conv, true);
  const std::vector<int32_t> prompt(all.begin() + static_cast<std::ptrdiff_t>(anchor_tokens.size()),
                                    all.end());
  auto anchor = (*e)->BuildAnchor(anchor_tokens);
  ASSERT_TRUE(anchor.ok());
  GenerationOptions o;
  o.max_tokens = 48;
  o.verify = VerifyMode::kAsync;
  o.stop_at_end_of_turn = false;
  Generator g(**e, *tok, *anchor);
  const auto t0 = std::chrono::steady_clock::now();
  auto stats = g.Generate(prompt, o, nullptr);
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  auto t = TranscriptFromRun(**e, path, "quantized", o, anchor_tokens, prompt, *stats);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  const auto t1 = std::chrono::steady_clock::now();
  auto rep = VerifyTranscript(*t, path, {});
  const double ver_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->ok) << rep->failure;
  std::printf(
      "[transcript] real model: %zu prompt + %zu generated tokens, %zu commits: generate %.3f s, "
      "verify %.3f s (model digest + load + replay; replay alone %.3f s)\n",
      prompt.size(), t->generated.size(), t->commits.size(), gen_s, ver_s, rep->replay_seconds);
}

}  // namespace
}  // namespace fp
