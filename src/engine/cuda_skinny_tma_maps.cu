// engine/cuda_skinny_tma_maps.cu — the tensor maps (TMA descriptors) of the TMA-fed skinny GEMM
// (cuda_skinny_tma.cuh): W segment-tiled, read in 64-byte rows with the 64-byte swizzle its wgmma descriptors
// name; x row-major, read in windows of two segments (128-byte rows, 128-byte swizzle) that the consumers load.
// The encoder is the driver's cuTensorMapEncodeTiled, reached through the runtime's entry-point query (no link
// against libcuda). Encoding is host arithmetic, done per launch (captured by value in graphs).
// defines: EncodeBf16TensorMap, SkinnyTmaMaps (declared in cuda_skinny_tma.cuh)
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "engine/cuda_skinny_tma.cuh"

namespace fp::cuda_engine {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

bool EncodeBf16TensorMap(CUtensorMap* map, const void* base, cuuint32_t rank, const cuuint64_t* dims,
                         const cuuint64_t* strides, const cuuint32_t* box, CUtensorMapSwizzle swizzle) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = Encoder();
  if (encode == nullptr || rank < 1 || rank > 4) return false;
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, const_cast<void*>(base), dims, strides, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

cudaError_t SkinnyTmaMaps(const SkinnyArgs& a, CUtensorMap* tw, CUtensorMap* tx) {
  if (!SkinnyTmaSupported(a) || a.n < 1) return cudaErrorInvalidValue;
  const cuuint64_t nseg = static_cast<cuuint64_t>(a.in / kSegK);
  // W [tiles][nseg][16 rows][32 k]: dims (k, row in tile, segment, tile); a box is one segment of 4 tiles.
  const cuuint64_t w_dims[4] = {kSegK, kWeightTileRows, nseg,
                                static_cast<cuuint64_t>(WeightLayoutRows(a.out) / kWeightTileRows)};
  const cuuint64_t w_strides[3] = {kSegK * 2, kWeightTileRows * kSegK * 2, nseg * kWeightTileRows * kSegK * 2};
  const cuuint32_t w_box[4] = {kSegK, kWeightTileRows, 1, kTmaRows / kWeightTileRows};
  // x [n][in] as overlapping windows: dims (k in two segments, token, first segment s < nseg - 1), s one segment
  // apart; a box is one window of 64 tokens (128-byte rows: the copy engine's cost goes by box rows, so x in
  // 64-byte rows took 2.6x as long; bench_tma_rows, docs/kernel-spec.md).
  const cuuint64_t x_dims[3] = {2 * kSegK, static_cast<cuuint64_t>(a.n), nseg - 1};
  const cuuint64_t x_strides[2] = {static_cast<cuuint64_t>(a.in) * 2, kSegK * 2};
  const cuuint32_t x_box[3] = {2 * kSegK, kTmaTokens, 1};
  if (!EncodeBf16TensorMap(tw, a.w, 4, w_dims, w_strides, w_box, CU_TENSOR_MAP_SWIZZLE_64B) ||
      !EncodeBf16TensorMap(tx, a.x, 3, x_dims, x_strides, x_box, CU_TENSOR_MAP_SWIZZLE_128B)) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace fp::cuda_engine
