// fieldprint/page_digest.h — what a KV page's digest and the anchor root ARE (host reference).
//
// Layer digest of page p at fill f, layer l: TreeHashCpu over the two segments
//   K rows [0, f) of page p in layer l,  V rows [0, f) of page p in layer l   (f * Hkv * d * elem bytes each)
// chunked at chunk_bytes (tree_hash.h: each segment cut separately, last chunk short).
// Page digest: MTH over the num_layers layer digests taken as tree nodes (MerkleRootOfLeaves), i.e. the
// chunk tree of layer 0 .. L-1 in order, K then V per layer. When a layer's chunk count is a power of two
// (a full Llama-3-8B page: 2 x 32 KiB at 4 KiB chunks = 16) this equals the flat tree over all of the page's
// chunks; the two-level form is kept for every shape because it names the corrupted LAYER on a mismatch.
// Only the filled rows are hashed, so stale bytes past the fill never enter a digest.
// Anchor root: the same two levels over the anchor's per-layer K and V bytes (all rows).
// GPU twins go through GpuTreeHasher with one item per (page, layer) and must give the same digests.
// defines: PageLayerSegments, PageLayerDigestsCpu, AnchorLayerSegments, AnchorLayerDigestsCpu,
// CombineLayerDigests
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/kv_storage.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"
#include "fieldprint/tree_hash.h"

namespace fp {

// [2 * num_layers] segments: K then V of each layer, rows [0, fill) of `block` (host or device pointers,
// whatever the storage holds). OutOfRange for a bad block or fill outside [1, page_size].
Result<std::vector<ByteSegment>> PageLayerSegments(const KvStorage& storage, int32_t block, int32_t fill);
// [2 * num_layers] segments over the anchor's K and V bytes of each layer. InvalidArgument for an empty
// anchor.
Result<std::vector<ByteSegment>> AnchorLayerSegments(const AnchorSegment& anchor);

// [num_layers] layer digests of a host storage page / a host anchor. FailedPrecondition for device memory.
Result<std::vector<Digest>> PageLayerDigestsCpu(const KvStorage& storage, int32_t block, int32_t fill,
                                                size_t chunk_bytes = kDefaultChunkBytes);
Result<std::vector<Digest>> AnchorLayerDigestsCpu(const AnchorSegment& anchor,
                                                  size_t chunk_bytes = kDefaultChunkBytes);
// Layer digests of host segments laid out as above ([2 * L] -> [L]).
Result<std::vector<Digest>> LayerDigestsOfSegmentsCpu(std::span<const ByteSegment> segments,
                                                      size_t chunk_bytes);

// The page digest (or anchor root) from its layer digests.
Digest CombineLayerDigests(std::span<const Digest> layer_digests);

}  // namespace fp
