// KvStorage: per-layer K/V pools; host writes are row memcpys, CUDA writes go through kvcuda (kv_storage_cuda.cu)
// with the slot list uploaded from pinned staging (pinned_staging.h).
// Every entry point validates all of its input before the first byte moves.
#include "fieldprint/kv_storage.h"

#include <cstring>
#include <string>

#include "kvcache/device_buffer.h"
#include "kvcache/kv_rows.h"
#include "kvcache/pinned_staging.h"

namespace fp {

using kvcache_detail::DeviceBuffer;

KvStorage::KvStorage() = default;
uint64_t KvStorage::staging_waits() const { return staging_ ? staging_->waits() : 0; }
KvStorage::KvStorage(KvStorage&&) noexcept = default;
KvStorage& KvStorage::operator=(KvStorage&&) noexcept = default;
KvStorage::~KvStorage() = default;

Result<KvStorage> KvStorage::Create(const KvLayout& layout, Device device) {
  FP_RETURN_IF_ERROR(layout.Validate());
  KvStorage s;
  s.layout_ = layout;
  s.device_ = device;
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (auto* vec : {&s.k_, &s.v_}) {
      auto buf = DeviceBuffer::Allocate(layout.pool_bytes(), device);
      if (!buf.ok()) return buf.status();
      vec->push_back(std::move(buf).value());
    }
  }
  return s;
}

Status KvStorage::ValidateWrite(int layer, size_t num_slots, const TensorView& k, const TensorView& v) const {
  if (layer < 0 || layer >= layout_.num_layers) {
    return OutOfRange("KvStorage::Write: layer " + std::to_string(layer) + " of " + std::to_string(layout_.num_layers));
  }
  const auto n = static_cast<int64_t>(num_slots);
  FP_RETURN_IF_ERROR(kvcache_detail::CheckRows("k", k, n, layout_.num_kv_heads, layout_.head_dim, layout_.dtype));
  FP_RETURN_IF_ERROR(kvcache_detail::CheckRows("v", v, n, layout_.num_kv_heads, layout_.head_dim, layout_.dtype));
  if (n > 0 && (k.device != device_ || v.device != device_)) {
    return InvalidArgument(std::string("KvStorage::Write: k/v must live on the storage's device (") +
                           (device_ == Device::kCuda ? "cuda" : "cpu") + ")");
  }
  return Status::Ok();
}

Status KvStorage::Write(int layer, std::span<const KvSlot> slots, const TensorView& k, const TensorView& v,
                        void* stream) {
  FP_RETURN_IF_ERROR(ValidateWrite(layer, slots.size(), k, v));
  for (const KvSlot& s : slots) {
    if (s.block < 0 || s.block >= layout_.num_blocks || s.offset < 0 || s.offset >= layout_.page_size) {
      return OutOfRange("KvStorage::Write: slot (" + std::to_string(s.block) + ", " + std::to_string(s.offset) +
                        ") outside [0, " + std::to_string(layout_.num_blocks) + ") x [0, " +
                        std::to_string(layout_.page_size) + ")");
    }
  }
  if (slots.empty()) return Status::Ok();
  const size_t row = layout_.token_bytes();
  const int64_t row_elems = static_cast<int64_t>(layout_.num_kv_heads) * layout_.head_dim;
  const int64_t ks = kvcache_detail::RowStrideBytes(k, row_elems);
  const int64_t vs = kvcache_detail::RowStrideBytes(v, row_elems);
  std::byte* kp = k_[static_cast<size_t>(layer)].data();
  std::byte* vp = v_[static_cast<size_t>(layer)].data();
  if (device_ == Device::kCuda) {
    std::vector<int64_t> rows(slots.size());  // [n] pool row of each token
    for (size_t i = 0; i < slots.size(); ++i) {
      rows[i] = static_cast<int64_t>(slots[i].block) * layout_.page_size + slots[i].offset;
    }
    // Upload the rows only when they differ from the last write's (the other layers of the same step).
    if (scratch_.empty() || rows != scratch_rows_) {
      if (scratch_.empty() || scratch_[0].size() < rows.size() * sizeof(int64_t)) {
        auto buf = DeviceBuffer::Allocate(rows.size() * 2 * sizeof(int64_t), Device::kCuda);
        if (!buf.ok()) return buf.status();
        scratch_.clear();  // cudaFree waits for earlier kernels that read it
        scratch_.push_back(std::move(buf).value());
      }
      scratch_rows_.clear();  // if the upload fails the cache is invalid, not stale
      // Through pinned staging: from pageable memory the copy would be synchronous with the host.
      if (!staging_) staging_ = std::make_unique<kvcache_detail::PinnedStaging>();
      const size_t bytes = rows.size() * sizeof(int64_t);
      auto pinned = staging_->Acquire(bytes);  // waits only if this ring slot's last copy is still in flight
      if (!pinned.ok()) return pinned.status();
      std::memcpy(*pinned, rows.data(), bytes);
      const Status copied = kvcuda::Copy2D(scratch_[0].data(), bytes, *pinned, bytes, bytes, 1, stream);
      FP_RETURN_IF_ERROR(staging_->Release(stream));  // the slot is busy until the copy is done
      FP_RETURN_IF_ERROR(copied);
      ++slot_uploads_;
      scratch_rows_ = std::move(rows);
    }
    return kvcuda::ScatterRows(kp, vp, reinterpret_cast<const int64_t*>(scratch_[0].data()),
                               static_cast<int64_t>(slots.size()), static_cast<const std::byte*>(k.data),
                               static_cast<const std::byte*>(v.data), ks, vs, static_cast<int64_t>(row), stream);
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    const size_t dst = (static_cast<size_t>(slots[i].block) * static_cast<size_t>(layout_.page_size) +
                        static_cast<size_t>(slots[i].offset)) * row;
    std::memcpy(kp + dst, static_cast<const std::byte*>(k.data) + static_cast<int64_t>(i) * ks, row);
    std::memcpy(vp + dst, static_cast<const std::byte*>(v.data) + static_cast<int64_t>(i) * vs, row);
  }
  return Status::Ok();
}

Status KvStorage::CopyPage(int32_t src, int32_t dst, void* stream) {
  const PageCopy c{src, dst};
  return CopyPages(std::span<const PageCopy>(&c, 1), stream);
}

Status KvStorage::CopyPages(std::span<const PageCopy> copies, void* stream) {
  for (const PageCopy& c : copies) {
    if (c.src < 0 || c.src >= layout_.num_blocks || c.dst < 0 || c.dst >= layout_.num_blocks || c.src == c.dst) {
      return OutOfRange("KvStorage::CopyPage: bad copy " + std::to_string(c.src) + " -> " + std::to_string(c.dst) +
                        " (pages [0, " + std::to_string(layout_.num_blocks) + "), src != dst)");
    }
  }
  const size_t pb = layout_.page_bytes();
  for (const PageCopy& c : copies) {
    for (int32_t l = 0; l < layout_.num_layers; ++l) {
      for (auto* vec : {&k_, &v_}) {
        std::byte* base = (*vec)[static_cast<size_t>(l)].data();
        std::byte* d = base + static_cast<size_t>(c.dst) * pb;
        const std::byte* s = base + static_cast<size_t>(c.src) * pb;
        if (device_ == Device::kCuda) {
          FP_RETURN_IF_ERROR(kvcuda::Copy2D(d, pb, s, pb, pb, 1, stream));
        } else {
          std::memcpy(d, s, pb);
        }
      }
    }
  }
  return Status::Ok();
}

Result<TensorView> KvStorage::Layer(int layer, bool v) const {
  if (layer < 0 || layer >= layout_.num_layers) {
    return OutOfRange("KvStorage: layer " + std::to_string(layer) + " of " + std::to_string(layout_.num_layers));
  }
  const DeviceBuffer& b = (v ? v_ : k_)[static_cast<size_t>(layer)];
  return MakeContiguous(b.data(), layout_.dtype,
                        {layout_.num_blocks, layout_.page_size, layout_.num_kv_heads, layout_.head_dim}, device_);
}

Result<TensorView> KvStorage::LayerK(int layer) const { return Layer(layer, false); }
Result<TensorView> KvStorage::LayerV(int layer) const { return Layer(layer, true); }

Result<std::span<const std::byte>> KvStorage::PageBytes(int layer, int32_t page, int32_t tokens, bool v) const {
  if (layer < 0 || layer >= layout_.num_layers) {
    return OutOfRange("KvStorage: layer " + std::to_string(layer) + " of " + std::to_string(layout_.num_layers));
  }
  if (page < 0 || page >= layout_.num_blocks) {
    return OutOfRange("KvStorage: page " + std::to_string(page) + " of " + std::to_string(layout_.num_blocks));
  }
  if (tokens == -1) tokens = layout_.page_size;
  if (tokens < 0 || tokens > layout_.page_size) {
    return OutOfRange("KvStorage: " + std::to_string(tokens) + " tokens of a page of " +
                      std::to_string(layout_.page_size));
  }
  const std::byte* base = (v ? v_ : k_)[static_cast<size_t>(layer)].data() + static_cast<size_t>(page) * layout_.page_bytes();
  return std::span<const std::byte>(base, static_cast<size_t>(tokens) * layout_.token_bytes());
}

Result<std::span<const std::byte>> KvStorage::PageBytesK(int layer, int32_t page, int32_t tokens) const {
  return PageBytes(layer, page, tokens, false);
}
Result<std::span<const std::byte>> KvStorage::PageBytesV(int layer, int32_t page, int32_t tokens) const {
  return PageBytes(layer, page, tokens, true);
}

}  // namespace fp
