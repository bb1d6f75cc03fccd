// fault_injection_cuda.cu — one bit of one device byte, flipped by a synchronous read-modify-write.
#include <cuda_runtime.h>

#include <string>

#include "fieldprint/status.h"

namespace fp::integrity_detail {

Status FlipDeviceByteBit(void* device_byte, int bit) {
  unsigned char b = 0;
  cudaError_t e = cudaDeviceSynchronize();  // no kernel may be mid-write or mid-read of this byte
  if (e == cudaSuccess) e = cudaMemcpy(&b, device_byte, 1, cudaMemcpyDeviceToHost);
  b ^= static_cast<unsigned char>(1u << bit);
  if (e == cudaSuccess) e = cudaMemcpy(device_byte, &b, 1, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) return Internal(std::string("fault injection: ") + cudaGetErrorName(e));
  return Status::Ok();
}

}  // namespace fp::integrity_detail
