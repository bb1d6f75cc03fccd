// fieldprint/chat_session.h — a multi-turn chat over Generator (`fieldprint generate` without --prompt).
//
// The system message is the pinned anchor. Each turn prefills the conversation after it (every earlier user
// and assistant turn, the new user turn and the assistant header) as the sequence and generates the reply.
// Keeping no sequence between turns costs one prefill of the history per turn (never of the anchor) and in
// return every turn's KV, commitments and verification are exactly those of a one-shot `generate --prompt`
// run on the same conversation, so rollback and transcripts need nothing new. defines: ChatSession
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "fieldprint/generation.h"
#include "fieldprint/status.h"
#include "fieldprint/tokenizer.h"

namespace fp {

class ChatSession {
 public:
  // system_text: the system message the generator's anchor was built from (tok.EncodeChat({system}, false)).
  // generator and tok must outlive the session.
  ChatSession(Generator& generator, const Tokenizer& tok, std::string system_text)
      : gen_(generator), tok_(tok), system_(std::move(system_text)) {}

  // The sequence tokens the next turn prefills for user_text (the conversation after the anchor).
  // FailedPrecondition when the template's system part is not a token prefix of the conversation (anchor ++
  // prompt would then not be the conversation's tokens); InvalidArgument for an empty user turn.
  Result<std::vector<int32_t>> PromptFor(std::string_view user_text) const;

  // One turn: generates the reply (streamed through on_text) and appends the user turn and the reply's text
  // (without control tokens, as streamed) to the history. On error the history is unchanged.
  Result<GenerationStats> Turn(std::string_view user_text, const GenerationOptions& options,
                               const std::function<void(std::string_view)>& on_text);

  const std::vector<ChatMessage>& history() const { return history_; }  // user / assistant turns so far

 private:
  Generator& gen_;
  const Tokenizer& tok_;
  std::string system_;
  std::vector<ChatMessage> history_;
};

}  // namespace fp
