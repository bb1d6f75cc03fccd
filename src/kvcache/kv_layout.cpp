// KvLayout validation: positive dims and byte counts that cannot overflow.
#include "fieldprint/kv_layout.h"

#include <string>

#include "fieldprint/attention.h"

namespace fp {

Status KvLayout::Validate() const {
  if (num_layers <= 0 || num_blocks <= 0 || page_size <= 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return InvalidArgument("KvLayout: every dim must be positive (layers " + std::to_string(num_layers) +
                           ", blocks " + std::to_string(num_blocks) + ", page " + std::to_string(page_size) +
                           ", kv heads " + std::to_string(num_kv_heads) + ", head_dim " + std::to_string(head_dim) +
                           ")");
  }
  if (head_dim > kMaxHeadDim) {
    return InvalidArgument("KvLayout: head_dim " + std::to_string(head_dim) + " > " + std::to_string(kMaxHeadDim));
  }
  // Every product below stays under 2^62 bytes (so int64 offsets and num_blocks * page_size rows are safe).
  const long double total = static_cast<long double>(num_layers) * 2 * num_blocks * page_size * num_kv_heads *
                            head_dim * static_cast<long double>(DTypeSize(dtype));
  if (total > static_cast<long double>(int64_t{1} << 62)) {
    return InvalidArgument("KvLayout: the pools would exceed 2^62 bytes");
  }
  return Status::Ok();
}

}  // namespace fp
