// engine/cuda_block_reduce.cuh — one value per thread reduced over the CTA, for the engine's row kernels (RMSNorm's
// sum of squares, the sample-bounds kernel's max and sums).
// defines: BlockReduce, BlockSum
#pragma once

namespace fp::cuda_engine {

// op over every thread's v (blockDim.x a multiple of 32, <= 1024); every thread gets the result. A butterfly in
// each warp, then the warps' results through smem [32] in a second butterfly: a fixed order, so the same inputs
// give the same bits. A caller reusing smem for a second call must __syncthreads between them (a thread may still
// read the first call's values while another warp writes the second's).
template <typename T, typename Op>
__device__ __forceinline__ T BlockReduce(T v, T* smem, T identity, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int nw = static_cast<int>(blockDim.x) / 32;
  T s = lane < nw ? smem[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) s = op(s, __shfl_xor_sync(0xffffffffu, s, o));
  return s;
}

__device__ __forceinline__ float BlockSum(float v, float* smem /* [32] */) {
  return BlockReduce(v, smem, 0.f, [](float a, float b) { return a + b; });
}

}  // namespace fp::cuda_engine
