// AnchorSegment: per-layer dense K/V buffers written before Seal() and read-only after.
#include "fieldprint/anchor_segment.h"

#include <cstring>
#include <string>

#include "kvcache/device_buffer.h"
#include "kvcache/kv_rows.h"

namespace fp {

using kvcache_detail::DeviceBuffer;

AnchorSegment::AnchorSegment(PrivateTag) {}
AnchorSegment::~AnchorSegment() = default;

Result<std::shared_ptr<AnchorSegment>> AnchorSegment::Create(int32_t num_layers, int32_t length,
                                                             int32_t num_kv_heads, int32_t head_dim, DType dtype,
                                                             Device device) {
  if (num_layers <= 0 || length < 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return InvalidArgument("AnchorSegment: layers, kv heads and head_dim must be positive, length >= 0");
  }
  const long double bytes = static_cast<long double>(length) * num_kv_heads * head_dim * DTypeSize(dtype);
  if (bytes * num_layers * 2 > static_cast<long double>(int64_t{1} << 62)) {
    return InvalidArgument("AnchorSegment: too large");
  }
  auto a = std::make_shared<AnchorSegment>(PrivateTag{});
  a->num_layers_ = num_layers;
  a->length_ = length;
  a->num_kv_heads_ = num_kv_heads;
  a->head_dim_ = head_dim;
  a->dtype_ = dtype;
  a->device_ = device;
  for (int32_t l = 0; l < num_layers; ++l) {
    for (auto* vec : {&a->k_, &a->v_}) {
      auto buf = DeviceBuffer::Allocate(static_cast<size_t>(length) * a->token_bytes(), device);
      if (!buf.ok()) return buf.status();
      vec->push_back(std::move(buf).value());
    }
  }
  return a;
}

Status AnchorSegment::Write(int layer, int32_t start, const TensorView& k, const TensorView& v, void* stream) {
  if (sealed_) return FailedPrecondition("AnchorSegment: sealed, cannot be written");
  if (layer < 0 || layer >= num_layers_) {
    return OutOfRange("AnchorSegment::Write: layer " + std::to_string(layer) + " of " + std::to_string(num_layers_));
  }
  const int64_t n = k.rank >= 1 ? k.shape[0] : -1;
  if (n < 0 || start < 0 || static_cast<int64_t>(start) + n > length_) {
    return OutOfRange("AnchorSegment::Write: rows [" + std::to_string(start) + ", " + std::to_string(start + n) +
                      ") outside [0, " + std::to_string(length_) + ")");
  }
  FP_RETURN_IF_ERROR(kvcache_detail::CheckRows("k", k, n, num_kv_heads_, head_dim_, dtype_));
  FP_RETURN_IF_ERROR(kvcache_detail::CheckRows("v", v, n, num_kv_heads_, head_dim_, dtype_));
  if (device_ == Device::kCpu && (k.device != Device::kCpu || v.device != Device::kCpu)) {
    return InvalidArgument("AnchorSegment::Write: a host anchor takes host tensors");
  }
  if (n == 0) return Status::Ok();
  const size_t row = token_bytes();
  const int64_t row_elems = static_cast<int64_t>(num_kv_heads_) * head_dim_;
  std::byte* dk = k_[static_cast<size_t>(layer)].data() + static_cast<size_t>(start) * row;
  std::byte* dv = v_[static_cast<size_t>(layer)].data() + static_cast<size_t>(start) * row;
  const auto ks = static_cast<size_t>(kvcache_detail::RowStrideBytes(k, row_elems));
  const auto vs = static_cast<size_t>(kvcache_detail::RowStrideBytes(v, row_elems));
  if (device_ == Device::kCuda) {
    FP_RETURN_IF_ERROR(kvcuda::Copy2D(dk, row, k.data, ks, row, static_cast<size_t>(n), stream));
    return kvcuda::Copy2D(dv, row, v.data, vs, row, static_cast<size_t>(n), stream);
  }
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dk + static_cast<size_t>(i) * row, static_cast<const std::byte*>(k.data) + static_cast<size_t>(i) * ks, row);
    std::memcpy(dv + static_cast<size_t>(i) * row, static_cast<const std::byte*>(v.data) + static_cast<size_t>(i) * vs, row);
  }
  return Status::Ok();
}

Result<TensorView> AnchorSegment::View(int layer, bool v) const {
  if (layer < 0 || layer >= num_layers_) {
    return OutOfRange("AnchorSegment: layer " + std::to_string(layer) + " of " + std::to_string(num_layers_));
  }
  const DeviceBuffer& b = (v ? v_ : k_)[static_cast<size_t>(layer)];
  return MakeContiguous(b.data(), dtype_, {length_, num_kv_heads_, head_dim_}, device_);
}

Result<TensorView> AnchorSegment::K(int layer) const { return View(layer, false); }
Result<TensorView> AnchorSegment::V(int layer) const { return View(layer, true); }

Result<std::span<const std::byte>> AnchorSegment::KBytes(int layer) const {
  auto t = View(layer, false);
  if (!t.ok()) return t.status();
  return std::span<const std::byte>(static_cast<const std::byte*>(t->data), t->nbytes());
}

Result<std::span<const std::byte>> AnchorSegment::VBytes(int layer) const {
  auto t = View(layer, true);
  if (!t.ok()) return t.status();
  return std::span<const std::byte>(static_cast<const std::byte*>(t->data), t->nbytes());
}

}  // namespace fp
