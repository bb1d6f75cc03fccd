// fieldprint/tokenizer.h — byte-level BPE (GPT-2 style) built from GGUF metadata, plus the ChatML template.
// defines: TokenType, SpecialIds, ChatMessage, ChatTemplate, Tokenizer, StreamDecoder
//
// Encode: special tokens (CONTROL / USER_DEFINED) are matched first, longest first; the text between them is
// split by the pre-tokenizer named in tokenizer.ggml.pre ("gpt2": the GPT-2 regex; "smollm": every \p{N} char
// on its own, then the GPT-2 regex), each piece is mapped byte -> printable unicode (GPT-2's table) and
// merged by BPE rank (lowest rank first, leftmost on ties). Decode inverts the byte map. Text round-trips
// except for bytes the vocabulary has no token for (SmolLM2 lacks 21: some C0 controls and bytes invalid in
// UTF-8 such as 0xC0, 0xF5), which are dropped, as Hugging Face's BPE (no unk token) and llama.cpp do.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fieldprint/gguf.h"
#include "fieldprint/status.h"

namespace fp {

// tokenizer.ggml.token_type values (llama.cpp numbering).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct SpecialIds {
  int32_t bos = -1, eos = -1, pad = -1, unk = -1;  // -1: absent
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// The chat format: ChatML is the only one implemented; default_system is injected before a conversation whose
// first message is not a system message (SmolLM2's template does this).
struct ChatTemplate {
  std::string default_system;
  std::string source;  // tokenizer.chat_template as found (may be empty)
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, pre, tokens, token_type, merges, *_token_id} and tokenizer.chat_template.
  static Result<Tokenizer> FromGguf(const GgufFile& file);
  // The same from parts (tokens in GPT-2 byte-mapped form, merges as "left right").
  static Result<Tokenizer> Build(std::vector<std::string> tokens, std::vector<int32_t> types,
                                 const std::vector<std::string>& merges, std::string_view pre, SpecialIds ids,
                                 std::string_view chat_template);

  // Token ids of text. parse_special: whether "<|im_end|>" in the text becomes the control token (else it is
  // tokenized as plain text — use false for untrusted content).
  std::vector<int32_t> Encode(std::string_view text, bool parse_special = true) const;
  // Concatenated bytes of the tokens (control tokens as their text). Error on an id outside the vocabulary.
  Result<std::string> Decode(std::span<const int32_t> ids) const;
  // The bytes one token stands for (empty for an out-of-range id).
  std::string_view TokenBytes(int32_t id) const;
  // Id of a vocabulary entry by its stored text (e.g. "<|im_end|>"), if present.
  std::optional<int32_t> TokenId(std::string_view token_text) const;

  int32_t vocab_size() const { return static_cast<int32_t>(token_text_.size()); }
  const SpecialIds& special() const { return special_; }
  TokenType type(int32_t id) const;
  bool IsControl(int32_t id) const { return type(id) == TokenType::kControl; }
  // True for the ids that end a generation turn: eos and <|im_end|> (when present).
  bool IsEndOfTurn(int32_t id) const;
  const std::string& pre() const { return pre_; }

  // ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n".
  const ChatTemplate& chat_template() const { return chat_; }
  std::string FormatChat(std::span<const ChatMessage> messages, bool add_generation_prompt) const;
  // Tokens of FormatChat's text, with message contents encoded with parse_special = false (no injection of
  // control tokens through content); equal to Encode(FormatChat(...)) when contents hold no special-token
  // text.
  std::vector<int32_t> EncodeChat(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

 private:
  Tokenizer() = default;
  void EncodePlain(std::string_view text, std::vector<int32_t>* out) const;  // no special tokens
  void EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const;  // one pre-token through BPE

  std::vector<std::string> token_text_;   // [vocab] as stored (byte-mapped unicode)
  std::vector<std::string> token_bytes_;  // [vocab] decoded bytes
  std::vector<TokenType> token_type_;     // [vocab]
  std::unordered_map<std::string, int32_t> text_to_id_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>>
      merges_;                     // (left id, right id) -> (rank, merged id)
  int32_t byte_token_[256] = {};   // token id of each single byte, -1 when the vocabulary lacks it
  std::vector<int32_t> specials_;  // control/user-defined ids, longest text first
  bool split_digits_ = false;      // smollm: each \p{N} char is its own pre-token
  std::string pre_;
  SpecialIds special_;
  int32_t im_end_ = -1;
  int32_t im_start_ = -1;
  ChatTemplate chat_;
};

// Streaming detokenizer: returns only complete UTF-8, holding back a partial multi-byte sequence until the
// token that completes it arrives (a BPE token may end mid-character).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(&tok) {}
  std::string Push(int32_t id);
  // Whatever is held back (a truncated character at the end of the stream), returned as-is.
  std::string Flush();

 private:
  const Tokenizer* tok_;
  std::string pending_;
};

}  // namespace fp
