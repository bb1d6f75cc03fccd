// Unicode helpers for the pre-tokenizer: UTF-8 stepping (invalid bytes are single "other" code points, so any
// byte string tokenizes and round-trips) and the \p{L}, \p{N}, \s classes of the regexes tokenizers are
// defined by.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fp::unicode {

struct CategoryRange {
  uint32_t lo, hi;
  uint8_t cls;  // 1 = letter (L*), 2 = number (N*)
};
extern const CategoryRange kCategoryRanges[];
extern const size_t kNumCategoryRanges;

enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// White_Space property (what \s means in Unicode-aware regex engines).
inline bool IsWhiteSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

inline CharClass Classify(uint32_t cp) {
  if (IsWhiteSpace(cp)) return CharClass::kSpace;
  if (cp < 0x80) {  // fast path
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    return CharClass::kOther;
  }
  const CategoryRange* end = kCategoryRanges + kNumCategoryRanges;
  const CategoryRange* it =
      std::upper_bound(kCategoryRanges, end, cp, [](uint32_t c, const CategoryRange& r) { return c < r.lo; });
  if (it == kCategoryRanges) return CharClass::kOther;
  --it;
  return cp <= it->hi ? static_cast<CharClass>(it->cls) : CharClass::kOther;
}

// Decodes the code point at s[i]; returns its byte length (>= 1). Malformed, overlong or surrogate sequences
// decode as one byte with cp = 0xFFFFFFFF (class Other).
inline size_t NextCodePoint(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t c0 = b(0);
  *cp = 0xFFFFFFFFu;
  if (c0 < 0x80) {
    *cp = c0;
    return 1;
  }
  size_t len = 0;
  uint32_t v = 0, min = 0;
  if ((c0 & 0xE0) == 0xC0)
    len = 2, v = c0 & 0x1F, min = 0x80;
  else if ((c0 & 0xF0) == 0xE0)
    len = 3, v = c0 & 0x0F, min = 0x800;
  else if ((c0 & 0xF8) == 0xF0)
    len = 4, v = c0 & 0x07, min = 0x10000;
  else
    return 1;
  if (i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 1;
    v = (v << 6) | (b(k) & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 1;
  *cp = v;
  return len;
}

// Number of bytes at the end of s that form an incomplete (but so far valid) UTF-8 sequence: 0..3.
inline size_t IncompleteUtf8Tail(std::string_view s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const uint8_t c = static_cast<uint8_t>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 0;
    if ((c & 0xE0) == 0xC0)
      need = 2;
    else if ((c & 0xF0) == 0xE0)
      need = 3;
    else if ((c & 0xF8) == 0xF0)
      need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace fp::unicode
