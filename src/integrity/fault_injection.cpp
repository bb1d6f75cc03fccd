// fault_injection.cpp — bounds-checked single-bit flips in host memory; device bytes go through
// FlipDeviceByteBit (fault_injection_cuda.cu, or an Unimplemented stub in CPU builds); the --inject-fault spec
// (parse, layout checks, resolution against a sequence's committed rows).
#include "fieldprint/fault_injection.h"

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

namespace fp {
namespace integrity_detail {
Status FlipDeviceByteBit(void* device_byte, int bit);
}  // namespace integrity_detail

namespace {

Status FlipAt(std::span<const std::byte> bytes, Device device, size_t offset, int bit) {
  if (bit < 0 || bit >= 8)
    return InvalidArgument("fault injection: bit " + std::to_string(bit) + " not in [0, 8)");
  if (offset >= bytes.size()) {
    return OutOfRange("fault injection: byte " + std::to_string(offset) +
                      " >= " + std::to_string(bytes.size()));
  }
  // The storage hands out const views; the memory itself is mutable (we own the allocation's bytes).
  auto* p = const_cast<std::byte*>(bytes.data() + offset);
  if (device == Device::kCuda) return integrity_detail::FlipDeviceByteBit(p, bit);
  *p ^= static_cast<std::byte>(1u << bit);
  return Status::Ok();
}

}  // namespace

Status FlipKvBit(KvStorage& storage, const KvBitFlip& f) {
  auto bytes =
      f.part == KvPart::kK ? storage.PageBytesK(f.layer, f.block) : storage.PageBytesV(f.layer, f.block);
  FP_RETURN_IF_ERROR(bytes.status());
  return FlipAt(*bytes, storage.device(), f.byte_offset, f.bit);
}

Status FlipAnchorBit(AnchorSegment& anchor, const AnchorBitFlip& f) {
  auto bytes = f.part == KvPart::kK ? anchor.KBytes(f.layer) : anchor.VBytes(f.layer);
  FP_RETURN_IF_ERROR(bytes.status());
  return FlipAt(*bytes, anchor.device(), f.byte_offset, f.bit);
}

namespace {

// A non-negative decimal integer that fits T, the whole of `s`.
template <typename T>
bool ParseCount(std::string_view s, T* out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size() && *out >= 0;
}

// splitmix64: a seeded draw that is the same on every platform (std distributions are not).
uint64_t Mix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

Result<KvFaultSpec> ParseKvFaultSpec(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("inject-fault '" + std::string(text) + "': " + why +
                           " (expected STEP[:layer=L][:kv=k|v][:page=P][:byte=B][:bit=b] or STEP:random[=SEED])");
  };
  KvFaultSpec spec;
  const size_t first = text.find(':');
  if (!ParseCount(text.substr(0, first), &spec.step)) return bad("STEP must be a non-negative integer");
  std::vector<std::string_view> seen;
  bool coordinates = false;
  for (size_t pos = first; pos != std::string_view::npos;) {
    const size_t next = text.find(':', pos + 1);
    const std::string_view field = text.substr(pos + 1, next == std::string_view::npos ? text.npos : next - pos - 1);
    pos = next;
    const size_t eq = field.find('=');
    const std::string_view key = field.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view() : field.substr(eq + 1);
    for (std::string_view k : seen) {
      if (k == key) return bad("'" + std::string(key) + "' given twice");
    }
    seen.push_back(key);
    if (key == "random") {
      spec.target.random = true;
      if (eq != std::string_view::npos && !ParseCount(value, &spec.target.seed)) {
        return bad("random=SEED needs a non-negative integer seed");
      }
      continue;
    }
    if (eq == std::string_view::npos) return bad("field '" + std::string(field) + "' is not key=value");
    coordinates = true;
    if (key == "layer") {
      if (!ParseCount(value, &spec.target.layer)) return bad("layer must be a non-negative integer");
    } else if (key == "page") {
      if (!ParseCount(value, &spec.target.page)) return bad("page must be a non-negative integer");
    } else if (key == "byte") {
      if (!ParseCount(value, &spec.target.byte_offset)) return bad("byte must be a non-negative integer");
    } else if (key == "bit") {
      if (!ParseCount(value, &spec.target.bit) || spec.target.bit >= 8) return bad("bit must be in [0, 8)");
    } else if (key == "kv") {
      if (value == "k" || value == "K") {
        spec.target.part = KvPart::kK;
      } else if (value == "v" || value == "V") {
        spec.target.part = KvPart::kV;
      } else {
        return bad("kv must be k or v");
      }
    } else {
      return bad("unknown field '" + std::string(key) + "'");
    }
  }
  if (spec.target.random && coordinates) return bad("random picks every coordinate itself; give no other field");
  return spec;
}

std::string KvFaultTargetString(const KvFaultTarget& t) {
  if (t.random) return "random (seed " + std::to_string(t.seed) + ")";
  return "layer " + std::to_string(t.layer) + (t.part == KvPart::kK ? " K" : " V") + " page " +
         std::to_string(t.page) + " byte " + std::to_string(t.byte_offset) + " bit " + std::to_string(t.bit);
}

Status CheckKvFaultTarget(const KvFaultTarget& t, const KvLayout& layout) {
  if (t.bit < 0 || t.bit >= 8) return InvalidArgument("inject-fault: bit " + std::to_string(t.bit) + " not in [0, 8)");
  if (t.random) return Status::Ok();
  if (t.layer < 0 || t.layer >= layout.num_layers) {
    return OutOfRange("inject-fault: layer " + std::to_string(t.layer) + " but the model has " +
                      std::to_string(layout.num_layers) + " layers (0 .. " + std::to_string(layout.num_layers - 1) +
                      ")");
  }
  if (t.page < 0) return OutOfRange("inject-fault: page " + std::to_string(t.page) + " is negative");
  if (t.byte_offset >= layout.page_bytes()) {
    return OutOfRange("inject-fault: byte " + std::to_string(t.byte_offset) + " but a page holds " +
                      std::to_string(layout.page_bytes()) + " bytes per layer and K|V (" +
                      std::to_string(layout.page_size) + " tokens x " + std::to_string(layout.token_bytes()) + " B)");
  }
  return Status::Ok();
}

Result<ResolvedKvFault> ResolveKvFault(const KvFaultTarget& t, const KvLayout& layout,
                                       std::span<const int32_t> block_table, int32_t committed_tokens) {
  FP_RETURN_IF_ERROR(CheckKvFaultTarget(t, layout));
  const int64_t page_size = layout.page_size;
  const int64_t committed = std::min<int64_t>(committed_tokens, static_cast<int64_t>(block_table.size()) * page_size);
  if (committed <= 0) return FailedPrecondition("inject-fault: the sequence has no committed KV yet");
  const int64_t pages = (committed + page_size - 1) / page_size;
  const size_t row = layout.token_bytes();
  auto committed_bytes = [&](int64_t page) {  // committed rows of `page` in one layer's K or V
    return static_cast<size_t>(std::min(page_size, committed - page * page_size)) * row;
  };
  ResolvedKvFault r;
  r.target = t;
  if (t.random) {
    uint64_t s = t.seed;
    r.target.random = false;
    r.target.layer = static_cast<int>(Mix(&s) % static_cast<uint64_t>(layout.num_layers));
    r.target.part = Mix(&s) % 2 == 0 ? KvPart::kK : KvPart::kV;
    r.target.page = static_cast<int64_t>(Mix(&s) % static_cast<uint64_t>(pages));
    r.target.byte_offset = static_cast<size_t>(Mix(&s) % committed_bytes(r.target.page));
    r.target.bit = static_cast<int>(Mix(&s) % 8);
  } else if (t.page >= pages) {
    return OutOfRange("inject-fault: page " + std::to_string(t.page) + " is not committed: the sequence's " +
                      std::to_string(committed) + " committed tokens fill pages 0 .. " + std::to_string(pages - 1));
  } else if (t.byte_offset >= committed_bytes(t.page)) {
    return OutOfRange("inject-fault: byte " + std::to_string(t.byte_offset) + " of page " + std::to_string(t.page) +
                      " is past its committed rows (" + std::to_string(committed_bytes(t.page)) + " bytes)");
  }
  r.flip = KvBitFlip{r.target.layer, r.target.part, block_table[static_cast<size_t>(r.target.page)],
                     r.target.byte_offset, r.target.bit};
  return r;
}

#ifndef FIELDPRINT_HAVE_CUDA
namespace integrity_detail {
Status FlipDeviceByteBit(void*, int) { return Unimplemented("fault injection on device memory needs CUDA"); }
}  // namespace integrity_detail
#endif

}  // namespace fp
