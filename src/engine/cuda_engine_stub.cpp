// engine/cuda_engine_stub.cpp — CudaLlama in a build without CUDA: every factory returns Unimplemented, so
// CPU-only callers (the CLI's --device flag) link and report a clear error instead of failing to build.
#if !defined(FIELDPRINT_HAVE_CUDA)
#include <cstdlib>

#include "fieldprint/cuda_engine.h"

namespace fp {

struct CudaLlama::Impl {};

CudaLlama::CudaLlama(std::unique_ptr<Impl> impl, PrivateTag) : impl_(std::move(impl)) {}
CudaLlama::~CudaLlama() = default;

Result<std::unique_ptr<CudaLlama>> CudaLlama::FromWeights(const LlamaWeights&, const CudaEngineOptions&,
                                                          const LoadProgress&) {
  return Unimplemented("this build has no CUDA: rebuild with -DFIELDPRINT_CUDA=ON for --device cuda");
}
Result<std::unique_ptr<CudaLlama>> CudaLlama::Random(const ModelConfig&, uint64_t, const CudaEngineOptions&) {
  return Unimplemented("this build has no CUDA: rebuild with -DFIELDPRINT_CUDA=ON for --device cuda");
}

namespace {
Status NoCuda() { return Unimplemented("this build has no CUDA"); }
}  // namespace
const ModelConfig& CudaLlama::config() const {
  static const ModelConfig kNone;
  return kNone;
}
const CudaEngineOptions& CudaLlama::options() const {
  static const CudaEngineOptions kNone;
  return kNone;
}
KvCache& CudaLlama::cache() { std::abort(); }  // unreachable: no CudaLlama exists without CUDA
CUstream_st* CudaLlama::stream() const { return nullptr; }
size_t CudaLlama::weight_bytes() const { return 0; }
Result<std::shared_ptr<AnchorSegment>> CudaLlama::BuildAnchor(std::span<const int32_t>) { return NoCuda(); }
Result<SeqId> CudaLlama::NewSequence(const std::shared_ptr<AnchorSegment>&) { return NoCuda(); }
Status CudaLlama::FreeSequence(SeqId) { return NoCuda(); }
Status CudaLlama::Truncate(SeqId, int32_t) { return NoCuda(); }
Result<int32_t> CudaLlama::Length(SeqId) const { return NoCuda(); }
Status CudaLlama::Forward(SeqId, std::span<const int32_t>, int32_t, std::vector<float>*) { return NoCuda(); }
Status CudaLlama::ForwardGreedy(SeqId, std::span<const int32_t>, int32_t, std::vector<int32_t>*) { return NoCuda(); }
Status CudaLlama::ForwardInto(SeqId, std::span<const int32_t>, int32_t, std::span<float>) { return NoCuda(); }
Status CudaLlama::ForwardSampleBounds(SeqId, std::span<const int32_t>, std::span<const int32_t>, double,
                                      std::vector<SampleBounds>*) {
  return NoCuda();
}
Status CudaLlama::Warmup() { return NoCuda(); }
Status CudaLlama::DecodeStep(std::span<const SeqId>, std::span<const int32_t>) { return NoCuda(); }
const float* CudaLlama::device_logits() const { return nullptr; }
Status CudaLlama::SetDecodeTuning(const DecodeTuning&) { return NoCuda(); }
CudaLlama::DecodeStats CudaLlama::decode_stats() const { return {}; }
Status CudaLlama::DecodeLogits(std::span<const SeqId>, std::span<const int32_t>, std::vector<float>*) {
  return NoCuda();
}
Status CudaLlama::DecodeGreedy(std::span<const SeqId>, std::span<const int32_t>, std::vector<int32_t>*) {
  return NoCuda();
}

}  // namespace fp
#endif
