// EngineBackend over the CPU engine: the adapter's steps give the same logits bits as LlamaEngine::Forward,
// the Generator over the interface gives the tokens of the Generator over the engine, bad calls are errors;
// and --device resolution (auto / cpu / cuda / bad names) on whatever machine runs the tests.
#include "fieldprint/engine_backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "engine_test_util.h"
#include "fieldprint/engine.h"
#include "fieldprint/generation.h"

namespace fp {
namespace {

std::unique_ptr<LlamaEngine> TinyEngine() {
  ModelConfig c = testing::TinyByteModelConfig();
  c.context_length = 256;
  return testing::MakeRandomEngine(c, 5, WeightType::kQ8_0, 256);
}

TEST(EngineBackendTest, CpuAdapterStepsMatchForwardBits) {
  auto e = TinyEngine();
  ASSERT_NE(e, nullptr);
  auto be = MakeCpuBackend(*e);
  EXPECT_EQ(be->device(), Device::kCpu);
  EXPECT_EQ(be->verifier_kind(), VerifierBackendKind::kCpu);
  EXPECT_EQ(be->stream(), nullptr);
  EXPECT_EQ(be->TakeLogits().status().code(), StatusCode::kFailedPrecondition);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> u(0, 258);
  std::vector<int32_t> toks(13);
  for (auto& t : toks) t = u(rng);
  auto anchor = be->BuildAnchor(std::vector<int32_t>{1, 40, 41});
  ASSERT_TRUE(anchor.ok());

  // Oracle: the engine itself, one Forward over all tokens, every row's logits.
  auto ref_seq = e->NewSequence(*anchor);
  ASSERT_TRUE(ref_seq.ok());
  std::vector<float> ref;
  ASSERT_TRUE(e->Forward(*ref_seq, toks, static_cast<int32_t>(toks.size()), &ref).ok());
  ASSERT_TRUE(e->FreeSequence(*ref_seq).ok());

  auto seq = be->NewSequence(*anchor);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(be->Prefill(*seq, {}).code(), StatusCode::kInvalidArgument);
  const size_t vocab = 259;
  const std::span<const int32_t> all(toks);
  ASSERT_TRUE(be->Prefill(*seq, all.first(9)).ok());
  for (size_t i = 9; i <= toks.size(); ++i) {
    auto l = be->TakeLogits();
    ASSERT_TRUE(l.ok());
    ASSERT_EQ(l->size(), vocab);
    EXPECT_EQ(std::memcmp(l->data(), ref.data() + (i - 1) * vocab, vocab * sizeof(float)), 0)
        << "row " << i - 1;
    if (i < toks.size()) {
      ASSERT_TRUE(be->Decode(*seq, toks[i]).ok());
    }
  }
  EXPECT_EQ(*be->Length(*seq), static_cast<int32_t>(toks.size()));
  ASSERT_TRUE(be->Truncate(*seq, 4).ok());
  EXPECT_EQ(*be->Length(*seq), 4);
  EXPECT_FALSE(be->Decode(*seq, 100000).ok()) << "token id outside the vocabulary";
  EXPECT_EQ(*be->Length(*seq), 4) << "a failed step leaves the sequence as it was";
  EXPECT_FALSE(be->Decode(*seq + 1000, 5).ok()) << "unknown sequence";
  ASSERT_TRUE(be->FreeSequence(*seq).ok());
  EXPECT_FALSE(be->Length(*seq).ok());
}

TEST(EngineBackendTest, GeneratorOverInterfaceEqualsGeneratorOverEngine) {
  auto e = TinyEngine();
  ASSERT_NE(e, nullptr);
  auto tok = testing::MakeByteTokenizer();
  ASSERT_NE(tok, nullptr);
  auto anchor = e->BuildAnchor(tok->Encode("<|im_start|>system\nhi<|im_end|>\n"));
  ASSERT_TRUE(anchor.ok());
  const auto prompt = tok->Encode("<|im_start|>user\nwhat now?<|im_end|>\n<|im_start|>assistant\n");
  GenerationOptions o;
  o.max_tokens = 12;
  o.stop_at_end_of_turn = false;
  o.sampler = SamplerConfig{0.8f, 40, 0.9f, 3};
  o.verify = VerifyMode::kAsync;
  o.commit_every = 4;
  Generator direct(*e, *tok, *anchor);
  auto a = direct.Generate(prompt, o, nullptr);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto be = MakeCpuBackend(*e);
  Generator via(*be, *tok, *anchor);
  auto b = via.Generate(prompt, o, nullptr);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->tokens.size(), 12u);
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(b->verified_watermark, b->kv_length);
}

TEST(EngineBackendTest, DeviceResolution) {
  EXPECT_EQ(*ResolveDevice("cpu"), Device::kCpu);
  EXPECT_EQ(ResolveDevice("gpu").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveDevice("").status().code(), StatusCode::kInvalidArgument);
  const bool gpu = CudaDeviceAvailable();
  EXPECT_EQ(*ResolveDevice("auto"), gpu ? Device::kCuda : Device::kCpu);
  auto cuda = ResolveDevice("cuda");
  if (gpu) {
    EXPECT_EQ(*cuda, Device::kCuda);
  } else {
    ASSERT_FALSE(cuda.ok());
    EXPECT_TRUE(cuda.status().code() == StatusCode::kFailedPrecondition ||
                cuda.status().code() == StatusCode::kUnimplemented)
        << cuda.status().ToString();
    EXPECT_NE(cuda.status().message().find("--device cuda"), std::string::npos);
  }
}

}  // namespace
}  // namespace fp
