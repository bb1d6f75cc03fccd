// engine/cuda_engine_layout.cu — which memory layout CudaLlama's GEMM weights are in, and moving them between
// layouts when the options change (load time; SetDecodeTuning on a loaded engine).
//
// Why: the skinny deterministic mode reads weights only through the skinny GEMM, which streams them 20-30% faster
// from the segment-tiled layout (WeightLayout, cuda_engine_kernels.h: a warp's segment is 1 KiB contiguous);
// cuBLAS and the GEMV want row-major. Both layouts give the skinny GEMM the same bits, so switching changes no
// result, only speed. Each matrix goes through one scratch buffer of the largest matrix's size (freed after).
// defines: CudaLlama::Impl::WantedWeightLayout, CudaLlama::Impl::GemmWeights, CudaLlama::Impl::SetWeightLayout
#include <algorithm>
#include <vector>

#include "cuda_engine_impl.h"

namespace fp {

ce::WeightLayout CudaLlama::Impl::WantedWeightLayout() const {
  return opt.batch_invariant && opt.batch_invariant_gemm == CudaEngineOptions::InvariantGemm::kSkinny
             ? ce::WeightLayout::kSegmentTiled
             : ce::WeightLayout::kRowMajor;
}

std::vector<CudaLlama::Impl::GemmWeight> CudaLlama::Impl::GemmWeights() {
  const int d = c.d_model, qd = c.q_dim(), kvd = c.kv_dim(), ff = c.d_ff;
  std::vector<GemmWeight> mats;
  for (LayerDev& L : layers) {
    mats.push_back({&L.wqkv, qd + 2 * kvd, d});
    mats.push_back({&L.wo, d, qd});
    mats.push_back({&L.wgu, 2 * ff, d});
    mats.push_back({&L.wdown, d, ff});
  }
  if (!c.tied_embeddings) mats.push_back({&out_w, c.vocab_size, d});
  return mats;
}

Status CudaLlama::Impl::SetWeightLayout(ce::WeightLayout layout) {
  if (layout == w_layout) return Status::Ok();
  const int d = c.d_model, vocab = c.vocab_size;
  // Uploads went through the default stream (cudaMemcpy); the relayout runs on `stream`.
  FP_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  const std::vector<GemmWeight> mats = GemmWeights();
  // A tied LM head shares the row-major embedding table, which the embedding lookup keeps reading: the tiled
  // layout gets its own copy (made from embd below), and going back drops it.
  const bool tied = c.tied_embeddings;
  if (tied && layout == ce::WeightLayout::kSegmentTiled) {
    auto buf = DeviceBuffer::Allocate(static_cast<size_t>(ce::WeightLayoutRows(vocab)) * d * sizeof(bf16));
    if (!buf.ok()) return buf.status();
    tied_out_w = std::move(buf).value();
  }
  size_t most = 0;
  for (const GemmWeight& m : mats) most = std::max(most, static_cast<size_t>(ce::WeightLayoutRows(m.out)) * m.in);
  // Allocations come first: past them only a failed launch can stop the loop, which leaves the weights mixed (the
  // error is returned and the engine should not be used).
  auto scratch = DeviceBuffer::Allocate(most * sizeof(bf16));
  if (!scratch.ok()) return scratch.status();
  auto* tmp = static_cast<bf16*>(scratch->get());
  for (const GemmWeight& m : mats) {
    const size_t bytes = static_cast<size_t>(ce::WeightLayoutRows(m.out)) * m.in * sizeof(bf16);
    FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tmp, *m.w, bytes, cudaMemcpyDeviceToDevice, stream));
    FP_RETURN_IF_ERROR(ce::LaunchWeightRelayout(tmp, m.out, m.in, layout, *m.w, stream));
  }
  if (tied) {
    if (layout == ce::WeightLayout::kSegmentTiled) {
      auto* t = static_cast<bf16*>(tied_out_w.get());
      FP_RETURN_IF_ERROR(ce::LaunchWeightRelayout(embd, vocab, d, layout, t, stream));
      out_w = t;
    } else {
      out_w = embd;
    }
  }
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (tied && layout == ce::WeightLayout::kRowMajor) tied_out_w = DeviceBuffer();
  w_layout = layout;
  return Status::Ok();
}

}  // namespace fp
