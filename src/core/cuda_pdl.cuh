// core/cuda_pdl.cuh — programmatic dependent launch (PDL, sm_90+) for the engine's chain of small kernels
// (its own kernels and the decode attention kernel).
//
// Why: a Llama decode step is ~300 kernels back to back; at B = 1 most run for a few microseconds, so the gap
// between one kernel's last CTA and the next kernel's first load is a visible share of the step. With PDL the
// next kernel is launched while the previous one drains: it does its independent prologue (a GEMM streams its
// first weight bytes: weights never depend on the previous kernel) and then waits in PdlWait() until the
// previous grid has completed and its writes are visible. Contract for every kernel launched with pdl = true:
//   - it calls PdlWait() (every CTA, unconditionally) before it reads anything an earlier kernel wrote and before
//     it writes anything: its own completion must imply the previous kernel's, or a later kernel's wait would
//     not cover the one before;
//   - it calls PdlLaunchDependents() once its CTAs are resident (lets the next kernel's CTAs be scheduled), after
//     its wait: triggering before the wait (the launch chain then runs ahead through the norms and RoPE, so the
//     next GEMV streams while the one before drains) was measured slower at B = 1 (H200, Llama-3-8B shape:
//     4635 -> 4740 us a step; docs/kernel-spec.md).
//   - what it reads before its wait must not be written by the previous kernel: weights for a GEMV, the KV rows
//     that predate the step for the decode attention.
// Without PDL (pdl = false, or sm_80) both calls are no-ops and launches are ordinary stream-ordered
// launches. defines: PdlWait, PdlLaunchDependents, LaunchKernelInClusters,
// LaunchKernel
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace fp {

__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) in clusters of `cluster` blocks along x (1: no cluster
// attribute), with the PDL attribute when `pdl` (the caller checks the device supports it: compute capability
// >= 9.0, as clusters need).
template <typename... Params, typename... Args>
cudaError_t LaunchKernelInClusters(bool pdl, unsigned cluster, void (*kernel)(Params...), dim3 grid, dim3 block,
                                   size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster;
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when `pdl`.
template <typename... Params, typename... Args>
cudaError_t LaunchKernel(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, Args&&... args) {
  return LaunchKernelInClusters(pdl, 1, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace fp
