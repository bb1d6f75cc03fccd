// fault_injection.cpp — bounds-checked single-bit flips in host memory; device bytes go through
// FlipDeviceByteBit (fault_injection_cuda.cu, or an Unimplemented stub in CPU builds).
#include "fieldprint/fault_injection.h"

#include <string>

namespace fp {
namespace integrity_detail {
Status FlipDeviceByteBit(void* device_byte, int bit);
}  // namespace integrity_detail

namespace {

Status FlipAt(std::span<const std::byte> bytes, Device device, size_t offset, int bit) {
  if (bit < 0 || bit >= 8)
    return InvalidArgument("fault injection: bit " + std::to_string(bit) + " not in [0, 8)");
  if (offset >= bytes.size()) {
    return OutOfRange("fault injection: byte " + std::to_string(offset) +
                      " >= " + std::to_string(bytes.size()));
  }
  // The storage hands out const views; the memory itself is mutable (we own the allocation's bytes).
  auto* p = const_cast<std::byte*>(bytes.data() + offset);
  if (device == Device::kCuda) return integrity_detail::FlipDeviceByteBit(p, bit);
  *p ^= static_cast<std::byte>(1u << bit);
  return Status::Ok();
}

}  // namespace

Status FlipKvBit(KvStorage& storage, const KvBitFlip& f) {
  auto bytes =
      f.part == KvPart::kK ? storage.PageBytesK(f.layer, f.block) : storage.PageBytesV(f.layer, f.block);
  FP_RETURN_IF_ERROR(bytes.status());
  return FlipAt(*bytes, storage.device(), f.byte_offset, f.bit);
}

Status FlipAnchorBit(AnchorSegment& anchor, const AnchorBitFlip& f) {
  auto bytes = f.part == KvPart::kK ? anchor.KBytes(f.layer) : anchor.VBytes(f.layer);
  FP_RETURN_IF_ERROR(bytes.status());
  return FlipAt(*bytes, anchor.device(), f.byte_offset, f.bit);
}

#ifndef FIELDPRINT_HAVE_CUDA
namespace integrity_detail {
Status FlipDeviceByteBit(void*, int) { return Unimplemented("fault injection on device memory needs CUDA"); }
}  // namespace integrity_detail
#endif

}  // namespace fp
