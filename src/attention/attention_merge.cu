// attention_merge.cu — the split-KV merge as its own kernel (DecodeOptions::fused_merge = false; the default
// merges inside the decode kernel): combines a sequence's per-split results (each normalised, with its log2
// sum-exp) into o and lse. One warp per (query token, head), 4 heads per CTA, each running MergeSplitsRow
// (attention_decode_kernel.cuh, the same bits as the fused merge). The v2 kernel (one CTA per token, threads
// looping over heads and, one by one, over splits) was latency-bound: a single long sequence (B = 1, 17-33
// splits) merged on ONE CTA.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "attention/attention_decode_internal.h"
#include "attention/attention_decode_kernel.cuh"
#include "core/cuda_check.h"

namespace fp::decode {
namespace {

// Min 4 CTAs/SM: with the bound alone ptxas (CUDA 13.0) kept 32 registers and spilled 12 bytes.
template <typename T>
__global__ void __launch_bounds__(kThreads, 4) MergeKernel(const __grid_constant__ MergeArgs a) {
  const MergeItem it = a.items[blockIdx.x];
  const int h = blockIdx.y * (kThreads / 32) + (threadIdx.x >> 5);
  if (h >= a.Hq) return;  // whole warps leave together
  const int64_t orow = int64_t(it.token) * a.Hq + h;
  MergeSplitsRow<T>(a.partial_o, a.partial_lse, a.Hq, a.d, it.base, it.stride, it.num_splits, h,
                    static_cast<T*>(a.o) + orow * a.d, a.lse != nullptr ? a.lse + orow : nullptr);
}

}  // namespace

Status LaunchDecodeMerge(const MergeArgs& args, int dtype_is_bf16, int num_merge, cudaStream_t stream) {
  if (num_merge == 0) return Status::Ok();
  const int heads_per_cta = kThreads / 32;  // one warp per head
  const dim3 grid(static_cast<unsigned>(num_merge),
                  static_cast<unsigned>((args.Hq + heads_per_cta - 1) / heads_per_cta));
  if (dtype_is_bf16) {
    MergeKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(args);
  } else {
    MergeKernel<__half><<<grid, kThreads, 0, stream>>>(args);
  }
  FP_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace fp::decode
