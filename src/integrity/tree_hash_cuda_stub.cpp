// tree_hash_cuda_stub.cpp — the GPU hashing API in a build without CUDA: every call is Unimplemented, so code
// that offers GPU hashing compiles everywhere and reports clearly when it cannot serve.
#ifndef FIELDPRINT_HAVE_CUDA

#include "fieldprint/tree_hash_cuda.h"

namespace fp {

struct GpuTreeHasher::Impl {};

GpuTreeHasher::GpuTreeHasher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTreeHasher::~GpuTreeHasher() = default;
size_t GpuTreeHasher::chunk_bytes() const { return 0; }
size_t GpuTreeHasher::num_items() const { return 0; }
size_t GpuTreeHasher::num_leaves() const { return 0; }

Result<std::unique_ptr<GpuTreeHasher>> GpuTreeHasher::Create(size_t, int) {
  return Unimplemented("GpuTreeHasher: this build has no CUDA");
}
Status GpuTreeHasher::Plan(std::span<const GpuHashItem>) { return Unimplemented("GpuTreeHasher: no CUDA"); }
Status GpuTreeHasher::Run(CUstream_st*, Digest*) { return Unimplemented("GpuTreeHasher: no CUDA"); }

Status Sha256ChunksGpu(const void*, size_t, size_t, Digest*, CUstream_st*) {
  return Unimplemented("Sha256ChunksGpu: this build has no CUDA");
}
Result<std::vector<Digest>> TreeHashGpuSync(std::span<const GpuHashItem>, size_t) {
  return Unimplemented("TreeHashGpuSync: this build has no CUDA");
}

}  // namespace fp

#endif  // FIELDPRINT_HAVE_CUDA
