// KvCache: keeps KvMetadata and KvStorage in step for appends, and binds a layer for attention.
#include "fieldprint/kv_cache.h"

#include <string>

namespace fp {

Result<KvCache> KvCache::Create(const KvLayout& layout, Device device) {
  auto meta = KvMetadata::Create(layout);
  if (!meta.ok()) return meta.status();
  auto storage = KvStorage::Create(layout, device);
  if (!storage.ok()) return storage.status();
  return KvCache(std::move(meta).value(), std::move(storage).value());
}

Result<Reservation> KvCache::Reserve(SeqId seq, int32_t n_new_tokens, void* stream) {
  auto r = meta_.Reserve(seq, n_new_tokens);
  if (!r.ok()) return r.status();
  Status s = storage_.CopyPages(r->copies, stream);
  if (!s.ok()) {
    (void)meta_.Truncate(seq, r->start);  // give the new pages back; the failure is what we report
    return s;
  }
  return r;
}

Status KvCache::WriteLayer(int layer, const Reservation& r, const TensorView& k, const TensorView& v, void* stream) {
  return storage_.Write(layer, r.slots, k, v, stream);
}

Status KvCache::Append(SeqId seq, std::span<const TensorView> k, std::span<const TensorView> v, void* stream) {
  const int32_t L = layout().num_layers;
  if (k.size() != static_cast<size_t>(L) || v.size() != static_cast<size_t>(L)) {
    return InvalidArgument("KvCache::Append: need k and v for each of " + std::to_string(L) + " layers, got " +
                           std::to_string(k.size()) + " and " + std::to_string(v.size()));
  }
  if (!meta_.Contains(seq)) return OutOfRange("KvCache::Append: unknown sequence " + std::to_string(seq));
  const int64_t n = k[0].rank >= 1 ? k[0].shape[0] : -1;
  if (n < 0 || n > 0x7fffffff) return InvalidArgument("KvCache::Append: k[0] must be [n, Hkv, d]");
  for (int32_t l = 0; l < L; ++l) {
    FP_RETURN_IF_ERROR(storage_.ValidateWrite(l, static_cast<size_t>(n), k[static_cast<size_t>(l)],
                                              v[static_cast<size_t>(l)]));
  }
  auto r = Reserve(seq, static_cast<int32_t>(n), stream);
  if (!r.ok()) return r.status();
  for (int32_t l = 0; l < L; ++l) {
    Status s = storage_.Write(l, r->slots, k[static_cast<size_t>(l)], v[static_cast<size_t>(l)], stream);
    if (!s.ok()) {
      (void)meta_.Truncate(seq, r->start);  // only a CUDA failure gets here (inputs were validated)
      return s;
    }
  }
  return Status::Ok();
}

Status KvCache::AttachAnchor(SeqId seq, std::shared_ptr<AnchorSegment> anchor) {
  if (anchor && anchor->device() != device()) {
    return InvalidArgument("KvCache::AttachAnchor: the anchor lives on another device than the cache");
  }
  return meta_.AttachAnchor(seq, std::move(anchor));
}

Status KvCache::BindLayer(int layer, const KvBatch& batch, AttentionParams* p) const {
  if (p == nullptr) return InvalidArgument("KvCache::BindLayer: null params");
  auto k = storage_.LayerK(layer);
  FP_RETURN_IF_ERROR(k.status());
  auto v = storage_.LayerV(layer);
  FP_RETURN_IF_ERROR(v.status());
  TensorView ak, av;
  if (batch.anchor) {
    auto a = batch.anchor->K(layer);
    FP_RETURN_IF_ERROR(a.status());
    auto b = batch.anchor->V(layer);
    FP_RETURN_IF_ERROR(b.status());
    ak = *a;
    av = *b;
  } else {
    // An empty anchor [0, Hkv, d] (data null) of the cache's dtype and device.
    ak = MakeContiguous(nullptr, layout().dtype, {0, layout().num_kv_heads, layout().head_dim}, device());
    av = ak;
  }
  p->k_pool = *k;
  p->v_pool = *v;
  p->anchor_k = ak;
  p->anchor_v = av;
  return Status::Ok();
}

}  // namespace fp
