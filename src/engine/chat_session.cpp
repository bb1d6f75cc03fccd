// engine/chat_session.cpp — ChatSession: the conversation as ChatML, one Generate per turn (chat_session.h).
#include "fieldprint/chat_session.h"

#include <algorithm>

namespace fp {

Result<std::vector<int32_t>> ChatSession::PromptFor(std::string_view user_text) const {
  if (user_text.empty()) return InvalidArgument("chat: empty user turn");
  std::vector<ChatMessage> conv{{"system", system_}};
  conv.insert(conv.end(), history_.begin(), history_.end());
  conv.push_back({"user", std::string(user_text)});
  const std::vector<ChatMessage> sys{{"system", system_}};
  const std::vector<int32_t> anchor = tok_.EncodeChat(sys, false);
  const std::vector<int32_t> all = tok_.EncodeChat(conv, true);
  if (all.size() <= anchor.size() || !std::equal(anchor.begin(), anchor.end(), all.begin())) {
    return FailedPrecondition("chat: the template's system part is not a token prefix of the conversation");
  }
  return std::vector<int32_t>(all.begin() + static_cast<std::ptrdiff_t>(anchor.size()), all.end());
}

Result<GenerationStats> ChatSession::Turn(std::string_view user_text, const GenerationOptions& options,
                                          const std::function<void(std::string_view)>& on_text) {
  auto prompt = PromptFor(user_text);
  if (!prompt.ok()) return prompt.status();
  auto stats = gen_.Generate(*prompt, options, on_text);
  if (!stats.ok()) return stats.status();
  // The reply as the user saw it streamed: control tokens (the end of turn, or any a model emits mid-text)
  // are not text, and EncodeChat would re-read their literal text as plain bytes next turn.
  std::vector<int32_t> reply;
  for (int32_t id : stats->tokens) {
    if (!tok_.IsControl(id)) reply.push_back(id);
  }
  auto text = tok_.Decode(reply);
  if (!text.ok()) return text.status();
  history_.push_back({"user", std::string(user_text)});
  history_.push_back({"assistant", std::move(text).value()});
  return stats;
}

}  // namespace fp
