// fieldprint/tensor.h — a non-owning view of a strided tensor on the host or a CUDA device.
// defines: Device, TensorView, MakeContiguous
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "fieldprint/dtype.h"
#include "fieldprint/status.h"

namespace fp {

enum class Device : uint8_t { kCpu, kCuda };

inline constexpr int kMaxRank = 5;

// Element strides (not bytes). A view never owns its memory.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};

  int64_t numel() const;
  int64_t size(int dim) const { return shape[dim]; }
  bool empty() const { return numel() == 0; }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // "[4, 32, 128] bf16 cuda"
  std::string ShapeString() const;
  // Checks rank, exact dims (-1 = any), non-negative dims and non-null data; the message names the tensor.
  // Dtype is the caller's to check (tensors of one call must usually agree with each other).
  Status Expect(const char* name, std::initializer_list<int64_t> dims) const;
};

// A contiguous (row-major) view over data.
TensorView MakeContiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                          Device device = Device::kCpu);

}  // namespace fp
