// fieldprint/fault_injection.h — flip chosen bits of the KV pool or the anchor, host or GPU, to test that the
// verifier detects and rolls back corruption. Test tooling: not for production paths.
//
// A flip is synchronous (a CUDA pool is read-modified-written with cudaMemcpy after a device sync), so call
// it between steps, after Verifier::Drain(), to keep the injection itself out of any in-flight hash. The
// anchor is sealed, so its bytes are reached through the const views and written anyway: exactly the kind of
// corruption (a stray write, a bad DIMM/HBM bit) the anchor re-check must catch.
// KvFaultSpec names a flip by its place in a SEQUENCE (logical page, byte of that page's committed rows) rather
// than by physical block, as `fieldprint generate --inject-fault` takes it; ResolveKvFault turns it into a
// KvBitFlip once the sequence's block table and committed length are known (the flip must land in committed
// bytes, or no audit could ever see it).
// defines: KvPart, KvBitFlip, AnchorBitFlip, FlipKvBit, FlipAnchorBit, KvFaultTarget, KvFaultSpec,
// ParseKvFaultSpec, KvFaultTargetString, CheckKvFaultTarget, ResolveKvFault
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/kv_storage.h"
#include "fieldprint/status.h"

namespace fp {

enum class KvPart : uint8_t { kK, kV };

// Bit `bit` of byte `byte_offset` inside page `block` of layer `layer`'s K or V pool
// (byte_offset in [0, page_size * Hkv * d * elem)).
struct KvBitFlip {
  int layer = 0;
  KvPart part = KvPart::kK;
  int32_t block = 0;
  size_t byte_offset = 0;
  int bit = 0;
};

// Bit `bit` of byte `byte_offset` of the anchor's layer `layer` K or V ([length * Hkv * d * elem) bytes).
struct AnchorBitFlip {
  int layer = 0;
  KvPart part = KvPart::kK;
  size_t byte_offset = 0;
  int bit = 0;
};

// OutOfRange for any coordinate outside the pool / anchor, InvalidArgument for bit outside [0, 8).
Status FlipKvBit(KvStorage& storage, const KvBitFlip& flip);
Status FlipAnchorBit(AnchorSegment& anchor, const AnchorBitFlip& flip);

// One flip inside a sequence's committed KV. The defaults are an exponent bit of an element of page 0, layer 0, K.
struct KvFaultTarget {
  int layer = 0;
  KvPart part = KvPart::kK;
  int64_t page = 0;        // logical page of the sequence (index into its block table)
  size_t byte_offset = 3;  // byte of that page's committed rows in layer `layer`'s K or V
  int bit = 6;
  bool random = false;  // draw layer, part, page, byte and bit from `seed` over the committed bytes instead
  uint64_t seed = 0;
  bool operator==(const KvFaultTarget&) const = default;
};

struct KvFaultSpec {
  int64_t step = -1;  // flip before this decode step (>= 0)
  KvFaultTarget target;
};

// "STEP[:layer=L][:kv=k|v][:page=P][:byte=B][:bit=b]" or "STEP:random[=SEED]" (random takes no other field).
// Fields in any order, each at most once. InvalidArgument with the offending field otherwise (negative
// numbers, bit outside [0, 8), unknown keys, junk). Bounds that depend on the model: CheckKvFaultTarget.
Result<KvFaultSpec> ParseKvFaultSpec(std::string_view text);
// "layer 1 V page 2 byte 77 bit 3" (random targets: "random (seed 5)").
std::string KvFaultTargetString(const KvFaultTarget& t);
// The checks that need only the layout: layer < num_layers, byte < page_size * Hkv * d * elem. OutOfRange
// naming the limit. (The page and the committed extent are only known when the fault is injected.)
Status CheckKvFaultTarget(const KvFaultTarget& t, const KvLayout& layout);
// The physical flip for target `t` in a sequence with `block_table` whose first `committed_tokens` tokens are
// committed, and the concrete target it came from (random = false). OutOfRange when the page or byte lies
// outside the committed rows (the message says how far they reach), FailedPrecondition when nothing is
// committed; a random target draws uniformly over (layer, K|V, committed page, committed byte, bit) from its
// seed.
struct ResolvedKvFault {
  KvFaultTarget target;
  KvBitFlip flip;
};
Result<ResolvedKvFault> ResolveKvFault(const KvFaultTarget& t, const KvLayout& layout, std::span<const int32_t> block_table,
                                 int32_t committed_tokens);

}  // namespace fp
