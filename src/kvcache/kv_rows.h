// kvcache/kv_rows.h (internal) — validation of the [n, Hkv, d] token-row tensors written into the cache.
#pragma once

#include <cstdint>
#include <string>

#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp::kvcache_detail {

// t must be [n, hkv, d] of `dtype`, each row contiguous (strides [s, d, 1]); s >= hkv * d when n > 1 (rows do
// not overlap, and cudaMemcpy2D accepts the pitch); non-null when n > 0.
inline Status CheckRows(const char* name, const TensorView& t, int64_t n, int64_t hkv, int64_t d, DType dtype) {
  FP_RETURN_IF_ERROR(t.Expect(name, {n, hkv, d}));
  if (t.dtype != dtype) {
    return InvalidArgument(std::string(name) + ": dtype " + DTypeName(t.dtype) + ", the cache holds " +
                           DTypeName(dtype));
  }
  if (n == 0) return Status::Ok();
  if ((hkv > 1 && t.strides[1] != d) || (d > 1 && t.strides[2] != 1)) {
    return InvalidArgument(std::string(name) + ": each token row [Hkv, d] must be contiguous, got " +
                           t.ShapeString());
  }
  if (n > 1 && t.strides[0] < hkv * d) {
    return InvalidArgument(std::string(name) + ": token stride " + std::to_string(t.strides[0]) +
                           " smaller than a row (" + std::to_string(hkv * d) + " elements)");
  }
  return Status::Ok();
}

// Byte stride between token rows of a tensor accepted by CheckRows.
inline int64_t RowStrideBytes(const TensorView& t, int64_t row_elems) {
  const int64_t s = t.shape[0] > 1 ? t.strides[0] : row_elems;
  return s * static_cast<int64_t>(DTypeSize(t.dtype));
}

}  // namespace fp::kvcache_detail
