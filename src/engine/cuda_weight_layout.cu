// engine/cuda_weight_layout.cu — moves a weight matrix between the row-major and the segment-tiled layout
// (WeightLayout, cuda_engine_kernels.h): the engine's deterministic mode keeps its GEMM weights segment-tiled, and
// switching modes on a loaded engine relayouts them. One thread per 8-byte piece (4 k, the unit of the k grouping)
// of the tiled layout, so the tiled side is written or read contiguously.
// defines: LaunchWeightRelayout
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"

namespace fp::cuda_engine {
namespace {

constexpr int kPieceK = 4;  // k of an 8-byte piece
constexpr int kPieces = kWeightSegK / kPieceK;

// The k piece stored as piece sp (the inverse of WeightStoredK on pieces).
__host__ __device__ constexpr int StoredPieceSource(int sp) {
  return sp < kPieces / 2 ? 2 * sp : 2 * (sp - kPieces / 2) + 1;
}
constexpr bool InvertsWeightStoredK() {
  for (int sp = 0; sp < kPieces; ++sp) {
    if (WeightStoredK(kPieceK * StoredPieceSource(sp)) != kPieceK * sp) return false;
  }
  return true;
}
static_assert(InvertsWeightStoredK(), "weight relayout: the stored piece order must invert WeightStoredK");

// Piece p of the tiled buffer [tiles][nseg][16 rows][8 stored pieces of 4 k] <-> W[row][s * 32 + 4 * kp], where
// stored piece sp holds k piece kp = StoredPieceSource(sp); rows past `out` are zero in the tiled buffer and
// absent from the row-major one.
__global__ void RelayoutKernel(const uint2* __restrict__ src, int out, int in, bool to_tiled, uint2* __restrict__ dst) {
  const int64_t nseg = in / kWeightSegK;
  const int64_t pieces = WeightLayoutRows(out) * in / kPieceK;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < pieces; p += int64_t{gridDim.x} * blockDim.x) {
    const int sp = static_cast<int>(p % kPieces);
    const int kp = StoredPieceSource(sp);
    const int64_t rest = p / kPieces;
    const int rr = static_cast<int>(rest % kWeightTileRows);
    const int64_t s = (rest / kWeightTileRows) % nseg, tile = rest / kWeightTileRows / nseg;
    const int64_t row = tile * kWeightTileRows + rr;
    const int64_t rm = (row * in + s * kWeightSegK) / kPieceK + kp;  // the same piece in the row-major buffer
    if (to_tiled) {
      dst[p] = row < out ? src[rm] : make_uint2(0, 0);
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
  const int64_t pieces = WeightLayoutRows(out) * in / kPieceK;
  const int blocks = static_cast<int>(std::min<int64_t>((pieces + 255) / 256, 65535));
  RelayoutKernel<<<blocks, 256, 0, stream>>>(reinterpret_cast<const uint2*>(src), out, in,
                                             to == WeightLayout::kSegmentTiled, reinterpret_cast<uint2*>(dst));
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::cuda_engine
