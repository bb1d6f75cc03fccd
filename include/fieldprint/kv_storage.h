// fieldprint/kv_storage.h — the bytes of the paged KV cache: per-layer K and V pools on the host or a GPU.
//
// Each pool is [num_blocks, page_size, num_kv_heads, head_dim] contiguous (KvLayout), zero-filled at creation.
// The storage knows nothing of sequences: it writes token rows to the slots KvMetadata handed out and performs
// its copy-on-write orders. The CUDA twin (kv_storage_cuda.cu) uses cudaMalloc'd pools (never managed memory),
// a small scatter kernel for writes and cudaMemcpyAsync for page copies, all asynchronous on the caller's
// stream (`void* stream` is a cudaStream_t; null = the legacy default stream). Host storage ignores `stream`.
// Errors leave the bytes untouched: everything is validated before the first byte moves.
// CUDA: Write stages its slot list in one device scratch buffer reused by the next Write, so Writes issued on
// different streams must be ordered by the caller (one stream per cache is the intended use). The list goes up
// from a ring of pinned host buffers owned by the storage (truly asynchronous; a ring slot is reused only once
// the copy out of it completed), so the caller's slots may change as soon as Write returns.
// defines: KvStorage
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fieldprint/kv_layout.h"
#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp {

namespace kvcache_detail {
class DeviceBuffer;
class PinnedStaging;
}  // namespace kvcache_detail

class KvStorage {
 public:
  // InvalidArgument for a bad layout, Unimplemented for kCuda in a build without CUDA, ResourceExhausted /
  // Internal when the allocation fails.
  static Result<KvStorage> Create(const KvLayout& layout, Device device);
  KvStorage(KvStorage&&) noexcept;
  KvStorage& operator=(KvStorage&&) noexcept;
  ~KvStorage();

  const KvLayout& layout() const { return layout_; }
  Device device() const { return device_; }

  // Checks a Write without doing it: layer in range, k and v [num_slots, Hkv, d] of the pool's dtype and
  // device, each token row contiguous (strides [s, d, 1], any s >= 0), non-null.
  Status ValidateWrite(int layer, size_t num_slots, const TensorView& k, const TensorView& v) const;
  // Writes row i of k and v into slots[i] of layer `layer` (slots distinct, each in range).
  Status Write(int layer, std::span<const KvSlot> slots, const TensorView& k, const TensorView& v,
               void* stream = nullptr);
  // Copies page src onto page dst in every layer's K and V pools (copy-on-write). src != dst.
  Status CopyPage(int32_t src, int32_t dst, void* stream = nullptr);
  // All of `copies`, in order; validated as a whole first.
  Status CopyPages(std::span<const PageCopy> copies, void* stream = nullptr);

  // [num_blocks, page_size, Hkv, d] views for AttentionParams::k_pool / v_pool. OutOfRange for a bad layer.
  Result<TensorView> LayerK(int layer) const;
  Result<TensorView> LayerV(int layer) const;
  // The first `tokens` rows of page `page` of layer `layer` (tokens = -1: the whole page), contiguous
  // (device memory for CUDA storage): what integrity hashes. Hashing only the filled rows keeps a partial
  // page's digest independent of stale bytes left by an earlier owner.
  Result<std::span<const std::byte>> PageBytesK(int layer, int32_t page, int32_t tokens = -1) const;
  Result<std::span<const std::byte>> PageBytesV(int layer, int32_t page, int32_t tokens = -1) const;

  // CUDA: slot-list uploads so far, and how many of them found their pinned staging slot still being copied
  // from and waited (diagnostics; tests check the ring waits instead of overwriting).
  uint64_t slot_uploads() const { return slot_uploads_; }
  uint64_t staging_waits() const;

 private:
  KvStorage();
  Result<std::span<const std::byte>> PageBytes(int layer, int32_t page, int32_t tokens, bool v) const;
  Result<TensorView> Layer(int layer, bool v) const;

  KvLayout layout_;
  Device device_ = Device::kCpu;
  std::vector<kvcache_detail::DeviceBuffer> k_, v_;  // [num_layers] of [num_blocks, page_size, Hkv, d]
  // CUDA only: the slot rows of the last Write, on the device and on the host, so the L per-layer writes of
  // one step upload them once.
  std::vector<kvcache_detail::DeviceBuffer> scratch_;  // [0 or 1] of int64 [capacity]
  std::vector<int64_t> scratch_rows_;                  // [rows in scratch_]
  std::unique_ptr<kvcache_detail::PinnedStaging> staging_;  // pinned upload ring, created on the first upload
  uint64_t slot_uploads_ = 0;
};

}  // namespace fp
