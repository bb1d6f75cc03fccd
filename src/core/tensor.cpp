// TensorView helpers: sizes, contiguity, shape checks with readable messages.
#include "fieldprint/tensor.h"

namespace fp {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expect = 1;
  for (int i = rank - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::string TensorView::ShapeString() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "] ";
  s += DTypeName(dtype);
  s += device == Device::kCpu ? " cpu" : " cuda";
  return s;
}

Status TensorView::Expect(const char* name, std::initializer_list<int64_t> dims) const {
  if (static_cast<int>(dims.size()) != rank) {
    return InvalidArgument(std::string(name) + ": expected rank " + std::to_string(dims.size()) + ", got " +
                           ShapeString());
  }
  int i = 0;
  for (int64_t d : dims) {
    if (d >= 0 && shape[i] != d) {
      return InvalidArgument(std::string(name) + ": dim " + std::to_string(i) + " should be " +
                             std::to_string(d) + ", got " + ShapeString());
    }
    if (shape[i] < 0) return InvalidArgument(std::string(name) + ": negative dim in " + ShapeString());
    ++i;
  }
  if (numel() > 0 && data == nullptr) return InvalidArgument(std::string(name) + ": null data for " + ShapeString());
  return Status::Ok();
}

TensorView MakeContiguous(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) t.shape[i++] = d;
  int64_t s = 1;
  for (int j = t.rank - 1; j >= 0; --j) {
    t.strides[j] = s;
    s *= t.shape[j];
  }
  return t;
}

}  // namespace fp
