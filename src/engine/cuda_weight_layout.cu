// engine/cuda_weight_layout.cu — moves a weight matrix between the row-major and the segment-tiled layout
// (WeightLayout, cuda_engine_kernels.h): the engine's deterministic mode keeps its GEMM weights segment-tiled, and
// switching modes on a loaded engine relayouts them. One thread per 16-byte piece (8 k) of the tiled layout, so the
// tiled side is written or read contiguously.
// defines: LaunchWeightRelayout
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"

namespace fp::cuda_engine {
namespace {

// Piece p of the tiled buffer [tiles][nseg][16 rows][4 pieces of 8 k] <-> W[row][s * 32 + 8 * piece]; rows past
// `out` are zero in the tiled buffer and absent from the row-major one.
__global__ void RelayoutKernel(const uint4* __restrict__ src, int out, int in, bool to_tiled, uint4* __restrict__ dst) {
  const int64_t nseg = in / kWeightSegK;
  const int64_t pieces = WeightLayoutRows(out) * in / 8;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < pieces; p += int64_t{gridDim.x} * blockDim.x) {
    const int piece = static_cast<int>(p & 3);
    const int64_t rest = p >> 2;
    const int rr = static_cast<int>(rest % kWeightTileRows);
    const int64_t s = (rest / kWeightTileRows) % nseg, tile = rest / kWeightTileRows / nseg;
    const int64_t row = tile * kWeightTileRows + rr;
    const int64_t rm = (row * in + s * kWeightSegK) / 8 + piece;  // the same piece in the row-major buffer
    if (to_tiled) {
      dst[p] = row < out ? src[rm] : make_uint4(0, 0, 0, 0);
    } else if (row < out) {
      dst[rm] = src[p];
    }
  }
}

}  // namespace

Status LaunchWeightRelayout(const __nv_bfloat16* src, int out, int in, WeightLayout to, __nv_bfloat16* dst,
                            cudaStream_t stream) {
  if (src == nullptr || dst == nullptr || src == dst || out <= 0 || in <= 0 || in % kWeightSegK != 0 ||
      (reinterpret_cast<uintptr_t>(src) & 15u) != 0 || (reinterpret_cast<uintptr_t>(dst) & 15u) != 0) {
    return InvalidArgument("weight relayout: needs distinct 16-byte aligned buffers, out > 0 and in a positive "
                           "multiple of 32 (out " + std::to_string(out) + ", in " + std::to_string(in) + ")");
  }
  const int64_t pieces = WeightLayoutRows(out) * in / 8;
  const int blocks = static_cast<int>(std::min<int64_t>((pieces + 255) / 256, 65535));
  RelayoutKernel<<<blocks, 256, 0, stream>>>(reinterpret_cast<const uint4*>(src), out, in,
                                             to == WeightLayout::kSegmentTiled, reinterpret_cast<uint4*>(dst));
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::cuda_engine
