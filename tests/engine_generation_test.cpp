// Generator on a tiny random model with a byte-level tokenizer: seeded sampling reproduces; verification
// modes leave the tokens unchanged; an injected KV bit flip is detected, rolled back and regenerated so the
// output equals the fault-free run (greedy), with the watermark covering the KV at the end; bad options are
// errors.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "fieldprint/engine.h"
#include "fieldprint/fault_injection.h"
#include "fieldprint/generation.h"
#include "fieldprint/tokenizer.h"
#include "engine_test_util.h"

namespace fp {
namespace {

struct Fixture {
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaEngine> engine;
  std::shared_ptr<AnchorSegment> anchor;
  std::vector<int32_t> prompt;
};

Fixture Make() {
  Fixture f;
  f.tok = testing::MakeByteTokenizer();
  f.engine = testing::MakeRandomEngine(testing::TinyByteModelConfig(), 77, WeightType::kQ4_1, 512);
  if (!f.engine) return f;
  auto a = f.engine->BuildAnchor(f.tok->Encode("<|im_start|>system\nbe brief<|im_end|>\n"));
  EXPECT_TRUE(a.ok());
  f.anchor = *a;
  f.prompt = f.tok->Encode("<|im_start|>user\nhello there, how are you?<|im_end|>\n<|im_start|>assistant\n");
  return f;
}

GenerationStats RunGen(Fixture& f, GenerationOptions o, std::string* text = nullptr) {
  o.stop_at_end_of_turn = false;  // random weights: run the full length
  Generator g(*f.engine, *f.tok, f.anchor);
  auto s = g.Generate(f.prompt, o, [&](std::string_view piece) {
    if (text) *text += piece;
  });
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : GenerationStats{};
}

TEST(EngineGenerationTest, SeededSamplingReproducesAndStreamsAllText) {
  Fixture f = Make();
  GenerationOptions o;
  o.max_tokens = 20;
  o.sampler = SamplerConfig{0.9f, 20, 0.95f, 1234};
  std::string t1, t2;
  const auto a = RunGen(f, o, &t1);
  const auto b = RunGen(f, o, &t2);
  EXPECT_EQ(a.tokens.size(), 20u);
  EXPECT_EQ(a.tokens, b.tokens);
  std::vector<int32_t> text_ids;  // control tokens are not streamed as text
  for (int32_t id : a.tokens) {
    if (!f.tok->IsControl(id)) text_ids.push_back(id);
  }
  EXPECT_EQ(t1, *f.tok->Decode(text_ids));
  EXPECT_EQ(f.engine->cache().meta().num_sequences(), 0) << "the sequence is freed";
  o.sampler.seed = 99;
  EXPECT_NE(RunGen(f, o).tokens, a.tokens);
}

TEST(EngineGenerationTest, VerificationModesDoNotChangeTokens) {
  Fixture f = Make();
  GenerationOptions o;
  o.max_tokens = 24;
  const auto base = RunGen(f, o);
  for (VerifyMode m : {VerifyMode::kSyncFull, VerifyMode::kSync, VerifyMode::kAsync}) {
    o.verify = m;
    o.commit_every = 5;
    const auto s = RunGen(f, o);
    EXPECT_EQ(s.tokens, base.tokens) << VerifyModeName(m);
    EXPECT_EQ(s.rollbacks, 0);
    EXPECT_EQ(s.verified_watermark, s.kv_length) << VerifyModeName(m);
  }
}

TEST(EngineGenerationTest, InjectedFaultIsRolledBackAndOutputMatchesCleanRun) {
  Fixture f = Make();
  GenerationOptions o;
  o.max_tokens = 30;
  const auto clean = RunGen(f, o);
  EXPECT_GT(std::set<int32_t>(clean.tokens.begin(), clean.tokens.end()).size(), 3u)
      << "a degenerate model "
         "would hide a bad rollback";
  for (VerifyMode m : {VerifyMode::kSync, VerifyMode::kAsync, VerifyMode::kSyncFull}) {
    for (bool verified_only : {true, false}) {
      o.verify = m;
      o.inject_fault_step = 6;
      o.verified_only = verified_only;
      o.audit_bytes_per_step = 1 << 20;
      std::string text;
      const auto s = RunGen(f, o, &text);
      EXPECT_EQ(s.faults_injected, 1);
      EXPECT_GE(s.rollbacks, 1) << VerifyModeName(m) << " never detected the flipped bit";
      EXPECT_GT(s.recomputed_tokens, 0);
      EXPECT_EQ(s.verified_watermark, s.kv_length);
      if (verified_only) {
        // Tokens past the rollback point were dropped and sampled again from clean KV.
        EXPECT_EQ(s.tokens, clean.tokens) << VerifyModeName(m);
        std::vector<int32_t> text_ids;
        for (int32_t id : s.tokens) {
          if (!f.tok->IsControl(id)) text_ids.push_back(id);
        }
        EXPECT_EQ(text, *f.tok->Decode(text_ids));
      }
    }
  }
}

// Faults anywhere: different layers, K/V, pages (one only committed several steps after the requested step),
// bytes (first, last of a page) and seeded random targets; each is detected, rolled back, and the verified
// output equals the clean run.
TEST(EngineGenerationTest, FaultsAtChosenTargetsAreDetectedAndRolledBack) {
  Fixture f = Make();
  GenerationOptions o;
  o.max_tokens = 30;
  const auto clean = RunGen(f, o);
  const size_t page_bytes = f.engine->cache().layout().page_bytes();  // 8 tokens x 2 heads x 16 x 4 B
  const std::string last_byte = std::to_string(page_bytes - 1);
  const std::string specs[] = {"2:layer=1:kv=v:page=0:byte=777:bit=2", "4:layer=0:kv=k:page=4:byte=" + last_byte,
                               "1:layer=1:kv=k:page=6:byte=0:bit=7",  // page 6 fills ~12 tokens later
                               "3:layer=1:kv=v:page=5:byte=130:bit=0", "5:random=1", "2:random=77"};
  for (int32_t commit_every : {0, 5}) {
    for (const std::string& text : specs) {
      auto spec = ParseKvFaultSpec(text);
      ASSERT_TRUE(spec.ok()) << spec.status().ToString();
      o.verify = VerifyMode::kSync;
      o.commit_every = commit_every;
      o.verified_only = true;
      o.inject_fault_step = spec->step;
      o.inject_fault_target = spec->target;
      const auto s = RunGen(f, o);
      EXPECT_EQ(s.faults_injected, 1) << text;
      EXPECT_FALSE(s.fault_target.empty());
      EXPECT_GE(s.rollbacks, 1) << text << " (" << s.fault_target << ") was never detected";
      EXPECT_GT(s.recomputed_tokens, 0) << text;
      EXPECT_EQ(s.verified_watermark, s.kv_length) << text;
      EXPECT_EQ(s.tokens, clean.tokens) << text << " (" << s.fault_target << ")";
    }
  }
  // Async verification finds a fault deep in the sequence too.
  auto spec = ParseKvFaultSpec("3:layer=1:kv=v:page=5:byte=1000:bit=4");
  ASSERT_TRUE(spec.ok());
  o.verify = VerifyMode::kAsync;
  o.commit_every = 0;
  o.inject_fault_step = spec->step;
  o.inject_fault_target = spec->target;
  const auto s = RunGen(f, o);
  EXPECT_EQ(s.faults_injected, 1);
  EXPECT_GE(s.rollbacks, 1);
  EXPECT_EQ(s.tokens, clean.tokens);
  EXPECT_EQ(s.fault_target, "layer 1 V page 5 byte 1000 bit 4");
}

TEST(EngineGenerationTest, FaultTargetsOutsideTheModelOrNeverCommittedAreErrors) {
  Fixture f = Make();
  Generator g(*f.engine, *f.tok, f.anchor);
  GenerationOptions o;
  o.max_tokens = 10;
  o.stop_at_end_of_turn = false;
  o.verify = VerifyMode::kSync;
  o.inject_fault_step = 2;
  for (const char* bad : {"2:layer=2", "2:byte=1024"}) {  // 2 layers; 1024-byte pages
    o.inject_fault_target = ParseKvFaultSpec(bad)->target;
    EXPECT_EQ(g.Generate(f.prompt, o, nullptr).status().code(), StatusCode::kOutOfRange) << bad;
  }
  // Page 30 is never committed in a 10-token run: an error that says so, not "0 faults injected".
  o.inject_fault_target = ParseKvFaultSpec("2:page=30")->target;
  auto r = g.Generate(f.prompt, o, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("never injected"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(f.engine->cache().meta().num_sequences(), 0);
}

TEST(EngineGenerationTest, RejectsBadOptions) {
  Fixture f = Make();
  Generator g(*f.engine, *f.tok, f.anchor);
  GenerationOptions o;
  EXPECT_EQ(g.Generate({}, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o.inject_fault_step = 3;
  EXPECT_EQ(g.Generate(f.prompt, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o = GenerationOptions{};
  o.verified_only = true;
  EXPECT_EQ(g.Generate(f.prompt, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o = GenerationOptions{};
  o.max_tokens = -1;
  EXPECT_EQ(g.Generate(f.prompt, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o = GenerationOptions{};
  o.sampler.top_p = 0.f;
  EXPECT_EQ(g.Generate(f.prompt, o, nullptr).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.engine->cache().meta().num_sequences(), 0);
  EXPECT_TRUE(ParseVerifyMode("async").ok());
  EXPECT_FALSE(ParseVerifyMode("maybe").ok());
}

}  // namespace
}  // namespace fp
