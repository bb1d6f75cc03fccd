// attention_decode_launch.cu — instantiates the decode kernel for every (dtype, head_dim, warps) and launches one.
// Kept apart from the planner so the kernels compile in their own translation unit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "attention/attention_decode_internal.h"
#include "attention/attention_decode_kernel.cuh"
#include "core/cuda_check.h"
#include "core/cuda_pdl.cuh"

namespace fp::decode {
namespace {

template <typename T, int D, int W>
Status LaunchOne(const DecodeArgs& a, int num_items, bool pdl, cudaStream_t stream) {
  constexpr int kSmem = Tiling<D, W>::kSmemBytes;
  // Above 48 KiB of dynamic shared memory needs an opt-in, once per instantiation.
  static const cudaError_t attr = cudaFuncSetAttribute(DecodeKernel<T, D, W>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  FP_CUDA_RETURN_IF_ERROR(attr);
  FP_CUDA_RETURN_IF_ERROR(LaunchKernel(pdl, DecodeKernel<T, D, W>, dim3(num_items), dim3(W * 32), kSmem, stream, a));
  return Status::Ok();
}

template <typename T, int D>
Status LaunchWarps(const DecodeArgs& a, int warps, int num_items, bool pdl, cudaStream_t stream) {
  if (warps == 8) return LaunchOne<T, D, 8>(a, num_items, pdl, stream);
  return LaunchOne<T, D, 4>(a, num_items, pdl, stream);
}

}  // namespace

int DecodeSmemBytes(int head_dim, int warps) {
  if (head_dim == 128) return warps == 8 ? Tiling<128, 8>::kSmemBytes : Tiling<128, 4>::kSmemBytes;
  return warps == 8 ? Tiling<64, 8>::kSmemBytes : Tiling<64, 4>::kSmemBytes;
}

Status LaunchDecode(const DecodeArgs& args, int dtype_is_bf16, int head_dim, int warps, int rows_class,
                    int num_items, bool pdl, cudaStream_t stream) {
  if (num_items == 0) return Status::Ok();
  if (rows_class != kMaxRows) return Internal("decode: no kernel for rows class " + std::to_string(rows_class));
  if (warps != 4 && warps != 8) return Internal("decode: no kernel for " + std::to_string(warps) + " warps");
  if (dtype_is_bf16) {
    if (head_dim == 128) return LaunchWarps<__nv_bfloat16, 128>(args, warps, num_items, pdl, stream);
    if (head_dim == 64) return LaunchWarps<__nv_bfloat16, 64>(args, warps, num_items, pdl, stream);
  } else {
    if (head_dim == 128) return LaunchWarps<__half, 128>(args, warps, num_items, pdl, stream);
    if (head_dim == 64) return LaunchWarps<__half, 64>(args, warps, num_items, pdl, stream);
  }
  return Internal("decode: no kernel for head_dim " + std::to_string(head_dim));
}

}  // namespace fp::decode
