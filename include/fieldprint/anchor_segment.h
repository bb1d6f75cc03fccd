// fieldprint/anchor_segment.h — the shared anchor: a dense, immutable-once-sealed K/V prefix for every layer.
//
// The anchor is NOT in the block pool: the attention kernel reads it dense ([anchor_len, Hkv, d] per layer) as
// the first segment of every sequence's softmax. It is written once (Write), then Seal()ed; after that every
// write fails with FailedPrecondition, so its digest (the anchor root) stays valid for its whole life.
// Sequences attach it through KvMetadata::AttachAnchor; attached() counts them (forks included, detached when a
// sequence is freed or its KvMetadata dies). Lives on the host or on a CUDA device (cudaMalloc, never managed).
// Not thread-safe: one owner thread mutates it, as for the rest of the cache.
// defines: AnchorSegment
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "fieldprint/dtype.h"
#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp {

class KvMetadata;
namespace kvcache_detail {
class DeviceBuffer;
class AnchorRef;
}  // namespace kvcache_detail

class AnchorSegment {
  struct PrivateTag {
    explicit PrivateTag() = default;
  };

 public:
  explicit AnchorSegment(PrivateTag);  // use Create()
  // length may be 0 (an empty anchor: views with null data). Zero-filled. Unimplemented for kCuda without CUDA.
  static Result<std::shared_ptr<AnchorSegment>> Create(int32_t num_layers, int32_t length, int32_t num_kv_heads,
                                                       int32_t head_dim, DType dtype, Device device);
  ~AnchorSegment();
  AnchorSegment(const AnchorSegment&) = delete;
  AnchorSegment& operator=(const AnchorSegment&) = delete;

  // Writes rows [start, start + n) of layer `layer` from k, v [n, Hkv, d] (same dtype; rows contiguous, any
  // token stride). Host or device sources for a CUDA anchor (async on `stream`, a cudaStream_t); host sources
  // for a host anchor. FailedPrecondition once sealed.
  Status Write(int layer, int32_t start, const TensorView& k, const TensorView& v, void* stream = nullptr);
  // Freezes the contents. Idempotent.
  void Seal() { sealed_ = true; }
  bool sealed() const { return sealed_; }

  int32_t num_layers() const { return num_layers_; }
  int32_t length() const { return length_; }
  int32_t num_kv_heads() const { return num_kv_heads_; }
  int32_t head_dim() const { return head_dim_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t token_bytes() const { return static_cast<size_t>(num_kv_heads_) * head_dim_ * DTypeSize(dtype_); }
  // Sequences currently attached.
  int32_t attached() const { return attached_; }

  // [length, Hkv, d] views for AttentionParams::anchor_k / anchor_v. OutOfRange for a bad layer.
  Result<TensorView> K(int layer) const;
  Result<TensorView> V(int layer) const;
  // The raw bytes of one layer's K / V (device memory for a CUDA anchor), for the anchor root digest.
  Result<std::span<const std::byte>> KBytes(int layer) const;
  Result<std::span<const std::byte>> VBytes(int layer) const;

 private:
  friend class kvcache_detail::AnchorRef;
  Result<TensorView> View(int layer, bool v) const;

  int32_t num_layers_ = 0, length_ = 0, num_kv_heads_ = 0, head_dim_ = 0;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  bool sealed_ = false;
  int32_t attached_ = 0;
  std::vector<kvcache_detail::DeviceBuffer> k_, v_;  // [num_layers] of [length, Hkv, d]
};

namespace kvcache_detail {
// Owning handle of an attachment: copying it attaches once more, destroying it detaches.
class AnchorRef {
 public:
  AnchorRef() = default;
  explicit AnchorRef(std::shared_ptr<AnchorSegment> a) : a_(std::move(a)) { if (a_) ++a_->attached_; }
  AnchorRef(const AnchorRef& o) : AnchorRef(o.a_) {}
  AnchorRef(AnchorRef&& o) noexcept : a_(std::move(o.a_)) {}
  AnchorRef& operator=(AnchorRef o) noexcept {
    std::swap(a_, o.a_);
    return *this;
  }
  ~AnchorRef() {
    if (a_) --a_->attached_;
  }
  const std::shared_ptr<AnchorSegment>& get() const { return a_; }

 private:
  std::shared_ptr<AnchorSegment> a_;
};
}  // namespace kvcache_detail

}  // namespace fp
