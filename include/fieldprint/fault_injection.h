// fieldprint/fault_injection.h — flip chosen bits of the KV pool or the anchor, host or GPU, to test that the
// verifier detects and rolls back corruption. Test tooling: not for production paths.
//
// A flip is synchronous (a CUDA pool is read-modified-written with cudaMemcpy after a device sync), so call
// it between steps, after Verifier::Drain(), to keep the injection itself out of any in-flight hash. The
// anchor is sealed, so its bytes are reached through the const views and written anyway: exactly the kind of
// corruption (a stray write, a bad DIMM/HBM bit) the anchor re-check must catch. defines: KvPart, KvBitFlip,
// AnchorBitFlip, FlipKvBit, FlipAnchorBit
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace fp
