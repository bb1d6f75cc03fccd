// Transcripts with tolerant fingerprints, end to end on the CPU: a seeded run on a tiny random GGUF, its
// fingerprints recorded (RecordFingerprints), the transcript signed, written as JSON, parsed back, and checked both
// exactly and tolerantly (VerifyTranscript -> ReplayTranscriptTolerant, here through another linear path and KV
// dtype). Rejections: a fingerprint value changed (signature fails; unsigned: the tolerant match fails at that
// block), a generated token changed; each malformed "fingerprints" object is an InvalidArgument naming it. Also the
// device routing: an exact replay on the wrong device is Unimplemented, a CUDA transcript on the CPU only tolerant.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "transcript_test_util.h"
#include "fieldprint/engine.h"
#include "fieldprint/generation.h"
#include "fieldprint/transcript.h"

namespace fp {
namespace {

namespace fs = std::filesystem;

fs::path TempDir() { return testing::TranscriptTempDir(); }
std::string WriteKey(const fs::path& dir) { return testing::WriteEd25519Key(dir); }

struct FpRun {
  fs::path dir;
  std::string model;
  Transcript t;
};

// 70 prompt+generated tokens: 3 fingerprint blocks, the last one partial.
FpRun Generate(uint64_t seed) {
  FpRun r;
  r.dir = TempDir();
  r.model = testing::WriteRandomModel(r.dir, seed, WeightType::kQ8_0, "model.gguf");
  testing::TranscriptEngine te = testing::LoadTranscriptEngine(r.model);
  const auto prompt = te.tok->Encode("<|im_start|>user\nsay something long<|im_end|>\n<|im_start|>assistant\n");
  GenerationOptions o;
  o.max_tokens = 70 - static_cast<int32_t>(prompt.size());
  o.sampler = SamplerConfig{0.8f, 30, 0.95f, 99};
  o.verify = VerifyMode::kSync;
  o.commit_every = 7;
  o.stop_at_end_of_turn = false;
  Generator g(*te.engine, *te.tok, te.anchor);
  auto stats = g.Generate(prompt, o, nullptr);
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  auto t = TranscriptFromRun(*te.engine, r.model, "quantized", o, te.anchor_tokens, prompt, *stats);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  r.t = std::move(t).value();
  const Status st = RecordFingerprints(r.t, *te.engine, te.anchor);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return r;
}

TEST(TranscriptFingerprintTest, RecordSignSaveLoadVerifyExactlyAndTolerantly) {
  FpRun r = Generate(31);
  ASSERT_TRUE(r.t.fingerprints.has_value());
  const size_t fed = TranscriptFedTokens(r.t).size();
  ASSERT_EQ(fed, 69u);
  EXPECT_EQ(r.t.fingerprints->blocks.size(), 3u);
  EXPECT_EQ(r.t.fingerprints->top_k, kFingerprintTopK);
  ASSERT_TRUE(SignTranscript(r.t, WriteKey(r.dir)).ok());
  const std::string path = (r.dir / "t.json").string();
  ASSERT_TRUE(r.t.Save(path).ok());
  auto back = Transcript::Load(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->fingerprints, r.t.fingerprints);  // bf16 values survive JSON exactly
  EXPECT_TRUE(CheckTranscriptSignature(*back).ok());
  // Exact replay: the fingerprints ride along (signed), the roots are what is checked.
  auto exact = VerifyTranscript(*back, r.model, {});
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_TRUE(exact->ok) << exact->failure;
  // Tolerant replay through another linear path and KV dtype: the fingerprints match within tolerance.
  ReplayOptions tol;
  tol.tolerant = true;
  tol.weights = "f32";
  tol.kv_dtype = "bf16";
  auto rep = VerifyTranscript(*back, r.model, tol);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->ok) << rep->failure;
  EXPECT_EQ(rep->blocks_checked, 3);
  EXPECT_EQ(rep->tokens_resampled, static_cast<int32_t>(r.t.generated.size()));
  EXPECT_GT(rep->proofs_checked, 0);
  EXPECT_LT(rep->worst_mean_err, tol.tolerance.max_mean_err);
  // The same path on the unaltered settings gives an exact fingerprint match.
  tol.weights.clear();
  tol.kv_dtype.clear();
  auto same = VerifyTranscript(*back, r.model, tol);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->ok) << same->failure;
  EXPECT_EQ(same->worst_err, 0.0);
  EXPECT_EQ(same->min_overlap, 1.0);
}

TEST(TranscriptFingerprintTest, ChangedFingerprintOrTokenIsRejected) {
  FpRun r = Generate(32);
  ASSERT_TRUE(r.t.fingerprints.has_value());
  ReplayOptions tol;
  tol.tolerant = true;
  // Signed: any edit to a fingerprint breaks the signature.
  Transcript s = r.t;
  ASSERT_TRUE(SignTranscript(s, WriteKey(r.dir)).ok());
  s.fingerprints->blocks[1].values[0] = Bf16ToFloat(FloatToBf16(s.fingerprints->blocks[1].values[0] * 0.5f));
  auto rs = VerifyTranscript(s, r.model, tol);
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  EXPECT_FALSE(rs->ok);
  EXPECT_NE(rs->failure.find("signature"), std::string::npos) << rs->failure;
  // Unsigned: the replay's fingerprint of that block differs.
  Transcript u = r.t;
  for (auto& v : u.fingerprints->blocks[1].values) v = Bf16ToFloat(FloatToBf16(v * 0.8f));
  auto ru = VerifyTranscript(u, r.model, tol);
  ASSERT_TRUE(ru.ok());
  EXPECT_FALSE(ru->ok);
  EXPECT_EQ(ru->first_bad_block, 1) << ru->failure;
  // A generated token changed mid-block (not a block's last row): the fingerprint of its block catches it
  // before the token re-sampling does.
  Transcript g = r.t;
  const size_t at = 40 - g.prompt.size();  // fed row 40: block 1
  ASSERT_LT(at + 1, g.generated.size());
  g.generated[at] = (g.generated[at] + 1) % 259;
  auto rg = VerifyTranscript(g, r.model, tol);
  ASSERT_TRUE(rg.ok());
  EXPECT_FALSE(rg->ok);
  EXPECT_EQ(rg->first_bad_block, 1) << rg->failure;
  // No fingerprints: the tolerant check cannot run.
  Transcript none = r.t;
  none.fingerprints.reset();
  EXPECT_EQ(VerifyTranscript(none, r.model, tol).status().code(), StatusCode::kFailedPrecondition);
}

TEST(TranscriptFingerprintTest, MalformedFingerprintsJsonIsAnError) {
  FpRun r = Generate(33);
  const std::string good = r.t.ToJson();
  ASSERT_TRUE(Transcript::Parse(good).ok());
  auto edit = [&](const std::string& from, const std::string& to) { return testing::ParseEdited(good, from, to); };
  auto expect_error = [](const Result<Transcript>& t, const std::string& word, const std::string& what) {
    EXPECT_FALSE(t.ok()) << what;
    if (t.ok()) return;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << what;
    EXPECT_NE(t.status().message().find(word), std::string::npos) << what << ": " << t.status().message();
  };
  // Text edits (types, tags, missing fields): (from, to, a word the error must name).
  const std::vector<std::tuple<std::string, std::string, std::string>> text = {
      {"\"hidden\": \"final_rmsnorm_signed_block_sum\"", "\"hidden\": \"final_rmsnorm\"", "fingerprints.hidden"},
      {"\"value_dtype\": \"bf16\"", "\"value_dtype\": \"f32\"", "value_dtype"},
      {"\"block\": 32", "\"block\": 0", "fingerprints.block"},
      {"\"top_k\": 16", "\"top_k\": \"16\"", "fingerprints.top_k"},
      {"\"top_k\": 16,", "", "fingerprints.top_k"},  // missing
      {"\"blocks\": [", "\"blocks\": 7, \"x\": [", "fingerprints.blocks"},
      {"\"row\": 31", "\"row\": -1", "row"},
      {"\"values\": [", "\"values\": [\"x\", ", "values"},
      {"\"indices\": [", "\"indices\": [1.5, ", "indices"},
  };
  for (const auto& [from, to, word] : text) expect_error(edit(from, to), word, from + " -> " + to);
  // Shape edits through the struct (ToJson writes what it holds; Parse validates): (mutation, word).
  auto mutated = [&](auto mutate) {
    Transcript t = r.t;
    mutate(*t.fingerprints);
    return Transcript::Parse(t.ToJson());
  };
  expect_error(mutated([](Fingerprints& f) { f.block = 16; }), "blocks", "block 16: 5 blocks due, 3 given");
  expect_error(mutated([](Fingerprints& f) { f.top_k = 100; }), "top_k", "top_k > d_model");
  expect_error(mutated([](Fingerprints& f) { f.blocks[1].row = 62; }), "row", "row not the block's last");
  expect_error(mutated([](Fingerprints& f) { f.blocks[0].indices[3] = 64; }), "indices", "index >= d_model");
  expect_error(mutated([](Fingerprints& f) { f.blocks[2].indices[1] = f.blocks[2].indices[0]; }), "indices",
               "repeated index");
  expect_error(mutated([](Fingerprints& f) { f.blocks[0].values[2] = 0.1f; }), "bf16", "value not bf16");
  expect_error(mutated([](Fingerprints& f) { f.blocks[0].values.pop_back(); }), "top_k", "short values");
  expect_error(mutated([](Fingerprints& f) { f.blocks.pop_back(); }), "blocks", "a block missing");
}

TEST(TranscriptFingerprintTest, DeviceRouting) {
  FpRun r = Generate(34);
  ReplayOptions on_cuda;
  on_cuda.device = "cuda";
  // A CPU transcript replays exactly only on the CPU.
  EXPECT_EQ(VerifyTranscript(r.t, r.model, on_cuda).status().code(), StatusCode::kUnimplemented);
  ReplayOptions bad;
  bad.device = "tpu";
  EXPECT_EQ(VerifyTranscript(r.t, r.model, bad).status().code(), StatusCode::kInvalidArgument);
  ReplayOptions tol_cuda = on_cuda;
  tol_cuda.tolerant = true;
  EXPECT_EQ(VerifyTranscript(r.t, r.model, tol_cuda).status().code(), StatusCode::kInvalidArgument);
  // A transcript claiming CUDA: not exactly on the CPU; its "bf16" weights parse only with device cuda.
  Transcript c = r.t;
  c.device = "cuda";
  c.weights = "bf16";
  c.fingerprints.reset();
  EXPECT_EQ(VerifyTranscript(c, r.model, {}).status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Transcript::Parse(c.ToJson()).ok());
  c.device = "cpu";
  EXPECT_EQ(Transcript::Parse(c.ToJson()).status().code(), StatusCode::kInvalidArgument);
  c.device = "gpu";
  EXPECT_EQ(Transcript::Parse(c.ToJson()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp
