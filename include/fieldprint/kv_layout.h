// fieldprint/kv_layout.h — the geometry of the paged KV cache, shared by its metadata and its storage.
//
// Per layer, a K pool and a V pool, each [num_blocks, page_size, num_kv_heads, head_dim] contiguous (the layout
// of AttentionParams::k_pool / v_pool). A block id names the same page in every layer's K and V pools, so one
// block table serves all layers. A slot is one token row inside a page.
// defines: KvLayout, KvSlot, PageCopy
#pragma once

#include <cstddef>
#include <cstdint>

#include "fieldprint/dtype.h"
#include "fieldprint/status.h"

namespace fp {

struct KvLayout {
  int32_t num_layers = 0;
  int32_t num_blocks = 0;
  int32_t page_size = 0;  // tokens per page
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::kBF16;

  // All dims positive, head_dim <= kMaxHeadDim, and every byte count below fits in int64.
  Status Validate() const;
  // Valid only after Validate() succeeded.
  size_t token_bytes() const { return static_cast<size_t>(num_kv_heads) * head_dim * DTypeSize(dtype); }
  size_t page_bytes() const { return token_bytes() * static_cast<size_t>(page_size); }
  size_t pool_bytes() const { return page_bytes() * static_cast<size_t>(num_blocks); }  // one layer, K or V
  // Pages needed to hold `tokens` tokens.
  int64_t PagesFor(int64_t tokens) const { return (tokens + page_size - 1) / page_size; }
};

// Where one token's K/V row lives: pool row block * page_size + offset.
struct KvSlot {
  int32_t block = 0;
  int32_t offset = 0;
  bool operator==(const KvSlot&) const = default;
};

// Copy-on-write order: copy page `src` onto page `dst` in every layer's K and V pools.
struct PageCopy {
  int32_t src = 0;
  int32_t dst = 0;
  bool operator==(const PageCopy&) const = default;
};

}  // namespace fp
