// chat_session_test.cpp — ChatSession: each turn prefills the whole conversation after the anchor, the
// history grows by the user turn and the reply, a turn equals a one-shot generation on the same conversation
// bit for bit, and bad input changes nothing. Tiny random model, byte tokenizer, CPU engine.
#include "fieldprint/chat_session.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "fieldprint/engine.h"
#include "fieldprint/generation.h"
#include "fieldprint/llama_weights.h"

namespace fp {
namespace {

const std::string kSystem = "be brief";

struct ChatFixture {
  std::unique_ptr<Tokenizer> tok = testing::MakeByteTokenizer();
  std::unique_ptr<LlamaEngine> engine;
  std::shared_ptr<AnchorSegment> anchor;
  std::vector<int32_t> anchor_tokens;
  ChatFixture() {
    engine = testing::MakeRandomEngine(testing::TinyByteModelConfig(), 21, WeightType::kQ8_0, 512);
    if (!engine) return;
    const std::vector<ChatMessage> sys{{"system", kSystem}};
    anchor_tokens = tok->EncodeChat(sys, false);
    auto a = engine->BuildAnchor(anchor_tokens);
    EXPECT_TRUE(a.ok());
    anchor = std::move(a).value();
  }
};

GenerationOptions Options() {
  GenerationOptions o;
  o.max_tokens = 12;
  o.sampler = SamplerConfig{0.8f, 20, 0.95f, 7};
  o.verify = VerifyMode::kSync;
  return o;
}

TEST(ChatSession, TurnsCarryTheConversationAndMatchOneShotRuns) {
  ChatFixture s;
  ASSERT_TRUE(s.tok && s.engine && s.anchor);
  Generator gen(*s.engine, *s.tok, s.anchor);
  ChatSession chat(gen, *s.tok, kSystem);
  auto t1 = chat.Turn("hello there", Options(), nullptr);
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  ASSERT_EQ(chat.history().size(), 2u);
  EXPECT_EQ(chat.history()[0].role, "user");
  EXPECT_EQ(chat.history()[0].content, "hello there");
  EXPECT_EQ(chat.history()[1].role, "assistant");

  // The second turn prefills system-less ChatML of turn 1 (with its reply) and turn 2.
  const std::vector<ChatMessage> conv{
      {"system", kSystem}, chat.history()[0], chat.history()[1], {"user", "go on"}};
  const std::vector<int32_t> all = s.tok->EncodeChat(conv, true);
  const std::vector<int32_t> want(all.begin() + static_cast<std::ptrdiff_t>(s.anchor_tokens.size()),
                                  all.end());
  auto prompt = chat.PromptFor("go on");
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, want);
  std::string streamed;
  auto t2 = chat.Turn("go on", Options(), [&](std::string_view piece) { streamed += piece; });
  ASSERT_TRUE(t2.ok()) << t2.status().ToString();
  EXPECT_EQ(t2->prompt_tokens, static_cast<int32_t>(want.size()));
  EXPECT_GT(t2->prompt_tokens, t1->prompt_tokens);
  ASSERT_EQ(chat.history().size(), 4u);

  // A one-shot generation on the same conversation (fresh generator) samples the same tokens.
  Generator fresh(*s.engine, *s.tok, s.anchor);
  auto once = fresh.Generate(want, Options(), nullptr);
  ASSERT_TRUE(once.ok());
  EXPECT_EQ(once->tokens, t2->tokens);
  // The history keeps the reply's text without control tokens: what streamed.
  std::vector<int32_t> reply;
  for (int32_t id : t2->tokens) {
    if (!s.tok->IsControl(id)) reply.push_back(id);
  }
  auto text = s.tok->Decode(reply);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(chat.history()[3].content, *text);
  EXPECT_EQ(streamed, *text);
}

TEST(ChatSession, EmptyTurnIsAnErrorAndChangesNothing) {
  ChatFixture s;
  ASSERT_TRUE(s.tok && s.engine && s.anchor);
  Generator gen(*s.engine, *s.tok, s.anchor);
  ChatSession chat(gen, *s.tok, kSystem);
  auto bad = chat.Turn("", Options(), nullptr);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(chat.history().empty());
  // A generation error (a prompt past the context) leaves the history as it was too.
  GenerationOptions o = Options();
  o.max_tokens = 100000;
  auto too_long = chat.Turn(std::string(600, 'x'), o, nullptr);
  EXPECT_FALSE(too_long.ok());
  EXPECT_TRUE(chat.history().empty());
}

}  // namespace
}  // namespace fp
