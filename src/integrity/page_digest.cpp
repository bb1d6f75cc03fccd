// page_digest.cpp — the host reference of page digests and the anchor root (definition in page_digest.h).
#include "fieldprint/page_digest.h"

#include <string>

namespace fp {

Result<std::vector<ByteSegment>> PageLayerSegments(const KvStorage& storage, int32_t block, int32_t fill) {
  const KvLayout& L = storage.layout();
  if (fill < 1 || fill > L.page_size) {
    return OutOfRange("page fill " + std::to_string(fill) + " not in [1, " + std::to_string(L.page_size) +
                      "]");
  }
  std::vector<ByteSegment> segs;  // [2 * num_layers]
  segs.reserve(2 * static_cast<size_t>(L.num_layers));
  for (int l = 0; l < L.num_layers; ++l) {
    auto k = storage.PageBytesK(l, block, fill);
    FP_RETURN_IF_ERROR(k.status());
    auto v = storage.PageBytesV(l, block, fill);
    FP_RETURN_IF_ERROR(v.status());
    segs.push_back({k->data(), k->size()});
    segs.push_back({v->data(), v->size()});
  }
  return segs;
}

Result<std::vector<ByteSegment>> AnchorLayerSegments(const AnchorSegment& anchor) {
  if (anchor.length() == 0 || anchor.num_layers() == 0)
    return InvalidArgument("anchor root of an empty anchor");
  std::vector<ByteSegment> segs;  // [2 * num_layers]
  for (int l = 0; l < anchor.num_layers(); ++l) {
    auto k = anchor.KBytes(l);
    FP_RETURN_IF_ERROR(k.status());
    auto v = anchor.VBytes(l);
    FP_RETURN_IF_ERROR(v.status());
    segs.push_back({k->data(), k->size()});
    segs.push_back({v->data(), v->size()});
  }
  return segs;
}

Result<std::vector<Digest>> LayerDigestsOfSegmentsCpu(std::span<const ByteSegment> segments,
                                                      size_t chunk_bytes) {
  if (segments.size() % 2 != 0) return InvalidArgument("layer segments come in K, V pairs");
  std::vector<Digest> out;  // [num_layers]
  out.reserve(segments.size() / 2);
  for (size_t i = 0; i < segments.size(); i += 2) {
    auto d = TreeHashCpu(segments.subspan(i, 2), chunk_bytes, 1);
    FP_RETURN_IF_ERROR(d.status());
    out.push_back(*d);
  }
  return out;
}

Result<std::vector<Digest>> PageLayerDigestsCpu(const KvStorage& storage, int32_t block, int32_t fill,
                                                size_t chunk_bytes) {
  if (storage.device() != Device::kCpu) return FailedPrecondition("PageLayerDigestsCpu on device storage");
  auto segs = PageLayerSegments(storage, block, fill);
  FP_RETURN_IF_ERROR(segs.status());
  return LayerDigestsOfSegmentsCpu(*segs, chunk_bytes);
}

Result<std::vector<Digest>> AnchorLayerDigestsCpu(const AnchorSegment& anchor, size_t chunk_bytes) {
  if (anchor.device() != Device::kCpu) return FailedPrecondition("AnchorLayerDigestsCpu on a device anchor");
  auto segs = AnchorLayerSegments(anchor);
  FP_RETURN_IF_ERROR(segs.status());
  return LayerDigestsOfSegmentsCpu(*segs, chunk_bytes);
}

Digest CombineLayerDigests(std::span<const Digest> layer_digests) {
  return MerkleRootOfLeaves(layer_digests);
}

}  // namespace fp
