// fieldprint/kv_cache.h — the paged KV cache: metadata (KvMetadata) and bytes (KvStorage) kept in step.
//
// One decode/prefill step of one sequence is Reserve (slots + copy-on-write copies done on the storage) then
// WriteLayer for every layer as the forward pass produces K and V; Append does the whole step for ready
// per-layer tensors. A batched step may instead Reserve every sequence, concatenate the slots, and write each
// layer once through storage().Write. The anchor and the attention binding come from here too.
// defines: KvCache
#pragma once

#include <memory>
#include <span>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/attention.h"
#include "fieldprint/kv_layout.h"
#include "fieldprint/kv_metadata.h"
#include "fieldprint/kv_storage.h"
#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp {

class KvCache {
 public:
  static Result<KvCache> Create(const KvLayout& layout, Device device);

  KvMetadata& meta() { return meta_; }
  const KvMetadata& meta() const { return meta_; }
  KvStorage& storage() { return storage_; }
  const KvStorage& storage() const { return storage_; }
  const KvLayout& layout() const { return meta_.layout(); }
  Device device() const { return storage_.device(); }

  // Metadata Reserve, then the copy-on-write page copies on the storage (on `stream`). If a copy fails
  // (a CUDA error: Internal) the sequence is truncated back to its old length.
  Result<Reservation> Reserve(SeqId seq, int32_t n_new_tokens, void* stream = nullptr);
  // Writes one layer's k, v [n, Hkv, d] into the reservation's slots.
  Status WriteLayer(int layer, const Reservation& r, const TensorView& k, const TensorView& v,
                    void* stream = nullptr);
  // A whole step: k[l], v[l] [n, Hkv, d] for every layer l. All tensors are validated before anything changes;
  // then Reserve + per-layer writes.
  Status Append(SeqId seq, std::span<const TensorView> k, std::span<const TensorView> v, void* stream = nullptr);

  // Attaches a sealed anchor on the storage's device (see KvMetadata::AttachAnchor).
  Status AttachAnchor(SeqId seq, std::shared_ptr<AnchorSegment> anchor);
  // Sets p->k_pool, v_pool, anchor_k, anchor_v for layer `layer` of `batch` (empty anchor views when the
  // batch has none). p->batch is left to the caller (host arrays for CPU, uploaded copies for CUDA).
  Status BindLayer(int layer, const KvBatch& batch, AttentionParams* p) const;

 private:
  KvCache(KvMetadata meta, KvStorage storage) : meta_(std::move(meta)), storage_(std::move(storage)) {}
  KvMetadata meta_;
  KvStorage storage_;
};

}  // namespace fp
