// Byte-level BPE: vocabulary/merges loading, the GPT-2 / SmolLM pre-tokenizer (the regex, matched by hand
// over code point classes) and the rank-ordered merge loop (a heap over adjacent pairs: O(n log n) per
// pre-token, so a long run of one character cannot go quadratic).
#include "fieldprint/tokenizer.h"

#include <algorithm>
#include <queue>

#include "model/unicode_tables.h"

namespace fp {

namespace {

using unicode::CharClass;

void AppendUtf8(std::string* s, uint32_t cp) {
  if (cp < 0x80) {
    s->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte
// order.
struct ByteMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      byte_to_cp[b] = printable ? b : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& Bytes() {
  static const ByteMap m;
  return m;
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Cp {
  uint32_t cp;
  uint32_t offset;  // byte offset in the text
  CharClass cls;
};

// Length (in code points) of the GPT-2 regex match starting at i within cps[i, e):
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t MatchGpt2(const std::vector<Cp>& c, size_t i, size_t e) {
  if (c[i].cp == '\'' && i + 1 < e) {
    const uint32_t a = c[i + 1].cp, b = i + 2 < e ? c[i + 2].cp : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  size_t j = i;
  if (c[i].cp == ' ' && i + 1 < e && c[i + 1].cls != CharClass::kSpace)
    j = i + 1;  // the optional leading space
  const CharClass k = c[j].cls;
  if (k != CharClass::kSpace) {
    size_t end = j + 1;
    while (end < e && c[end].cls == k) ++end;
    return end - i;
  }
  size_t end = i + 1;
  while (end < e && c[end].cls == CharClass::kSpace) ++end;
  const size_t run = end - i;
  if (end == e || run == 1) return run;  // at the end (lookahead holds) or \s+ on a single char
  return run - 1;                        // leave the last space to prefix the next word
}

}  // namespace

Result<Tokenizer> Tokenizer::Build(std::vector<std::string> tokens, std::vector<int32_t> types,
                                   const std::vector<std::string>& merges, std::string_view pre,
                                   SpecialIds ids, std::string_view chat_template) {
  Tokenizer t;
  if (tokens.empty() || tokens.size() > (1u << 30)) return InvalidArgument("tokenizer: bad vocabulary size");
  if (!types.empty() && types.size() != tokens.size()) {
    return InvalidArgument("tokenizer: token_type has " + std::to_string(types.size()) + " entries for " +
                           std::to_string(tokens.size()) + " tokens");
  }
  if (pre == "smollm")
    t.split_digits_ = true;
  else if (pre != "gpt2" && pre != "default")
    return Unimplemented("tokenizer: pre-tokenizer '" + std::string(pre) +
                         "' is not implemented (gpt2, smollm)");
  t.pre_ = std::string(pre);
  const int32_t n = static_cast<int32_t>(tokens.size());
  for (int32_t* id : {&ids.bos, &ids.eos, &ids.pad, &ids.unk}) {
    if (*id >= n)
      return InvalidArgument("tokenizer: special token id " + std::to_string(*id) + " out of range");
  }
  t.special_ = ids;
  t.token_type_.resize(tokens.size(), TokenType::kNormal);
  t.token_bytes_.resize(tokens.size());
  const ByteMap& bm = Bytes();
  for (int32_t id = 0; id < n; ++id) {
    if (!types.empty()) {
      if (types[id] < 0 || types[id] > 6)
        return InvalidArgument("tokenizer: bad token type for id " + std::to_string(id));
      t.token_type_[id] = static_cast<TokenType>(types[id]);
    }
    const std::string& s = tokens[id];
    const TokenType ty = t.token_type_[id];
    if (ty == TokenType::kControl || ty == TokenType::kUserDefined) {
      t.token_bytes_[id] = s;  // literal text
      if (!s.empty()) t.specials_.push_back(id);
    } else {
      // Each code point maps back to one byte; a code point outside the table is kept as its UTF-8.
      std::string bytes;
      for (size_t i = 0; i < s.size();) {
        uint32_t cp;
        const size_t len = unicode::NextCodePoint(s, i, &cp);
        auto it = bm.cp_to_byte.find(cp);
        if (it != bm.cp_to_byte.end())
          bytes.push_back(static_cast<char>(it->second));
        else
          bytes.append(s, i, len);
        i += len;
      }
      t.token_bytes_[id] = std::move(bytes);
    }
    t.text_to_id_.emplace(s, id);  // first wins on duplicates
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(&s, bm.byte_to_cp[b]);
    auto it = t.text_to_id_.find(s);
    t.byte_token_[b] = it == t.text_to_id_.end() ? -1 : it->second;
  }
  t.merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ', 1);  // the left part is never empty; byte-mapped tokens hold no ' '
    if (sp == std::string::npos)
      return InvalidArgument("tokenizer: merge " + std::to_string(r) + " has no space");
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    auto l = t.text_to_id_.find(left), rr = t.text_to_id_.find(right), mm = t.text_to_id_.find(left + right);
    if (l == t.text_to_id_.end() || rr == t.text_to_id_.end() || mm == t.text_to_id_.end()) {
      return InvalidArgument("tokenizer: merge " + std::to_string(r) + " ('" + m +
                             "') names a token not in the vocabulary");
    }
    t.merges_.emplace(PairKey(l->second, rr->second), std::make_pair(static_cast<int32_t>(r), mm->second));
  }
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [&](int32_t a, int32_t b) { return tokens[a].size() > tokens[b].size(); });
  t.token_text_ = std::move(tokens);
  if (auto id = t.TokenId("<|im_end|>")) t.im_end_ = *id;
  if (auto id = t.TokenId("<|im_start|>")) t.im_start_ = *id;
  t.chat_.source = std::string(chat_template);
  // The default system prompt is the literal after "<|im_start|>system\n" in the template (SmolLM2's has
  // one).
  const std::string marker = "<|im_start|>system\n";
  if (size_t p = t.chat_.source.find(marker); p != std::string::npos) {
    const size_t b = p + marker.size();
    const size_t e = t.chat_.source.find("<|im_end|>", b);
    if (e != std::string::npos) t.chat_.default_system = t.chat_.source.substr(b, e - b);
  }
  return t;
}

Result<Tokenizer> Tokenizer::FromGguf(const GgufFile& f) {
  auto model = f.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  if (*model != "gpt2") {
    return Unimplemented("tokenizer: model '" + std::string(*model) +
                         "' is not implemented (byte-level BPE 'gpt2' only)");
  }
  std::string_view pre = "default";
  if (auto p = f.GetString("tokenizer.ggml.pre"); p.ok()) pre = *p;
  auto toks = f.GetStringArray("tokenizer.ggml.tokens");
  if (!toks.ok()) return toks.status();
  auto merges = f.GetStringArray("tokenizer.ggml.merges");
  if (!merges.ok()) return merges.status();
  std::vector<int32_t> types;
  if (f.Has("tokenizer.ggml.token_type")) {
    auto ty = f.GetIntArray("tokenizer.ggml.token_type");
    if (!ty.ok()) return ty.status();
    for (int64_t v : *ty) types.push_back(v < 0 || v > 6 ? -1 : static_cast<int32_t>(v));
  }
  SpecialIds ids;
  const std::pair<const char*, int32_t*> keys[] = {{"tokenizer.ggml.bos_token_id", &ids.bos},
                                                   {"tokenizer.ggml.eos_token_id", &ids.eos},
                                                   {"tokenizer.ggml.padding_token_id", &ids.pad},
                                                   {"tokenizer.ggml.unknown_token_id", &ids.unk}};
  for (const auto& [key, dst] : keys) {
    if (!f.Has(key)) continue;
    auto v = f.GetUint(key);
    if (!v.ok()) return v.status();
    if (*v >= toks->size()) return InvalidArgument(std::string("tokenizer: ") + key + " is out of range");
    *dst = static_cast<int32_t>(*v);
  }
  std::string_view tmpl;
  if (auto c = f.GetString("tokenizer.chat_template"); c.ok()) tmpl = *c;
  std::vector<std::string> tokens(toks->begin(), toks->end());
  std::vector<std::string> merge_strs(merges->begin(), merges->end());
  return Build(std::move(tokens), std::move(types), merge_strs, pre, ids, tmpl);
}

TokenType Tokenizer::type(int32_t id) const {
  return id >= 0 && id < vocab_size() ? token_type_[id] : TokenType::kUndefined;
}

bool Tokenizer::IsEndOfTurn(int32_t id) const { return id >= 0 && (id == special_.eos || id == im_end_); }

std::optional<int32_t> Tokenizer::TokenId(std::string_view text) const {
  auto it = text_to_id_.find(std::string(text));
  if (it == text_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  return id >= 0 && id < vocab_size() ? std::string_view(token_bytes_[id]) : std::string_view();
}

void Tokenizer::EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const {
  // Symbols in a doubly linked list; candidate merges in a min-heap of (rank, left position), validated on
  // pop.
  struct Sym {
    int32_t id;
    int32_t prev, next;
  };
  std::vector<Sym> s;  // [bytes that have a token]
  s.reserve(bytes.size());
  for (char c : bytes) {
    const int32_t id = byte_token_[static_cast<uint8_t>(c)];
    if (id >= 0) s.push_back({id, 0, 0});  // bytes without a token are dropped, as HF BPE does with no unk
  }
  const int32_t n = static_cast<int32_t>(s.size());
  if (n == 0) return;
  if (n == 1) {
    out->push_back(s[0].id);
    return;
  }
  for (int32_t i = 0; i < n; ++i) s[i].prev = i - 1, s[i].next = i + 1 < n ? i + 1 : -1;
  struct Cand {
    int32_t rank, left, left_id, right_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t left) {
    if (left < 0 || s[left].next < 0) return;
    const int32_t right = s[left].next;
    auto it = merges_.find(PairKey(s[left].id, s[right].id));
    if (it != merges_.end()) heap.push({it->second.first, left, s[left].id, s[right].id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = s[c.left];
    if (l.id != c.left_id || l.next < 0 || s[l.next].id != c.right_id) continue;  // stale
    const int32_t right = l.next;
    l.id = merges_.at(PairKey(c.left_id, c.right_id)).second;
    l.next = s[right].next;
    if (l.next >= 0) s[l.next].prev = c.left;
    s[right].id = -1;  // dead: its stale candidates fail the id check
    push(l.prev);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = s[i].next) out->push_back(s[i].id);
}

void Tokenizer::EncodePlain(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<Cp> cps;  // [code points of text]
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    const size_t len = unicode::NextCodePoint(text, i, &cp);
    cps.push_back({cp, static_cast<uint32_t>(i), unicode::Classify(cp)});
    i += len;
  }
  auto offset = [&](size_t k) { return k < cps.size() ? cps[k].offset : static_cast<uint32_t>(text.size()); };
  auto run_regex = [&](size_t b, size_t e) {
    for (size_t i = b; i < e;) {
      const size_t len = MatchGpt2(cps, i, e);
      EncodeWord(text.substr(offset(i), offset(i + len) - offset(i)), out);
      i += len;
    }
  };
  if (!split_digits_) {
    run_regex(0, cps.size());
    return;
  }
  size_t start = 0;
  for (size_t k = 0; k < cps.size(); ++k) {
    if (cps[k].cls != CharClass::kNumber) continue;
    run_regex(start, k);
    EncodeWord(text.substr(offset(k), offset(k + 1) - offset(k)), out);
    start = k + 1;
  }
  run_regex(start, cps.size());
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  if (!parse_special || specials_.empty()) {
    EncodePlain(text, &out);
    return out;
  }
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t hit = -1;
    for (int32_t id : specials_) {  // longest first
      const std::string& s = token_text_[id];
      if (text.compare(i, s.size(), s) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    EncodePlain(text.substr(plain_start, i - plain_start), &out);
    out.push_back(hit);
    i += token_text_[hit].size();
    plain_start = i;
  }
  EncodePlain(text.substr(plain_start), &out);
  return out;
}

Result<std::string> Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return OutOfRange("tokenizer: token id " + std::to_string(id) + " outside the vocabulary [0, " +
                        std::to_string(vocab_size()) + ")");
    }
    out += token_bytes_[id];
  }
  return out;
}

std::string StreamDecoder::Push(int32_t id) {
  pending_ += tok_->TokenBytes(id);
  const size_t hold = unicode::IncompleteUtf8Tail(pending_);
  std::string ready = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return ready;
}

std::string StreamDecoder::Flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

// ---- ChatML ----

std::string Tokenizer::FormatChat(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
  std::string s;
  if (!chat_.default_system.empty() && (messages.empty() || messages[0].role != "system")) {
    s += "<|im_start|>system\n" + chat_.default_system + "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) s += "<|im_start|>assistant\n";
  return s;
}

std::vector<int32_t> Tokenizer::EncodeChat(std::span<const ChatMessage> messages,
                                           bool add_generation_prompt) const {
  std::vector<int32_t> out;
  // Control tokens are appended by id; the text between them is one plain segment, as whole-string encoding
  // would split it.
  auto control = [&](int32_t id, const char* text) {
    if (id >= 0)
      out.push_back(id);
    else
      EncodePlain(text, &out);
  };
  auto turn = [&](const std::string& role, const std::string& content) {
    control(im_start_, "<|im_start|>");
    EncodePlain(role + "\n" + content, &out);
    control(im_end_, "<|im_end|>");
    EncodePlain("\n", &out);
  };
  if (!chat_.default_system.empty() && (messages.empty() || messages[0].role != "system")) {
    turn("system", chat_.default_system);
  }
  for (const ChatMessage& m : messages) turn(m.role, m.content);
  if (add_generation_prompt) {
    control(im_start_, "<|im_start|>");
    EncodePlain("assistant\n", &out);
  }
  return out;
}

}  // namespace fp
