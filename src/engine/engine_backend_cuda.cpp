// EngineBackend over the CUDA engine (CudaLlama's public API only; see engine_backend.h).
//
// Prefill goes through CudaLlama::Forward (prefill kernels, synchronous, last logits row to the host). Decode
// enqueues CudaLlama::DecodeStep and returns, so the loop can record the verifier's event on the compute
// stream before anything waits; TakeLogits then copies the [vocab] row into pinned host memory and waits for
// the compute stream only. In a build without CUDA this compiles against the CudaLlama stub and is never
// reached (no CudaLlama can be created).
#include "fieldprint/engine_backend.h"

#if defined(FIELDPRINT_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include <array>
#include <string>
#include <vector>

#include "fieldprint/cuda_engine.h"

namespace fp {

namespace {

#if defined(FIELDPRINT_HAVE_CUDA)
Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Internal(std::string("cuda backend: ") + what + ": " + cudaGetErrorName(e) + " (" +
                  cudaGetErrorString(e) + ")");
}

struct PinnedFree {
  void operator()(float* p) const { cudaFreeHost(p); }
};
#endif

class CudaBackend final : public EngineBackend {
 public:
  explicit CudaBackend(CudaLlama& e) : e_(e) {}

  Device device() const override { return Device::kCuda; }
  const ModelConfig& config() const override { return e_.config(); }
  KvCache& cache() override { return e_.cache(); }
  void* stream() const override { return e_.stream(); }
  // cuBLAS and the attention kernels differ between prefill and decode shapes: replay in the original shape,
  // unless the engine runs batch-invariant (cuda_engine.h: any shape gives the same KV bits, which is also what
  // lets a CUDA transcript replay in one prefill).
  bool replay_any_shape() const override { return e_.options().batch_invariant; }

  Result<std::shared_ptr<AnchorSegment>> BuildAnchor(std::span<const int32_t> tokens) override {
    return e_.BuildAnchor(tokens);
  }
  Result<SeqId> NewSequence(const std::shared_ptr<AnchorSegment>& anchor) override {
    return e_.NewSequence(anchor);
  }
  Status FreeSequence(SeqId seq) override {
    FP_RETURN_IF_ERROR(Sync());  // no enqueued step may still write the pages given back
    return e_.FreeSequence(seq);
  }
  Status Truncate(SeqId seq, int32_t new_len) override {
    FP_RETURN_IF_ERROR(Sync());
    return e_.Truncate(seq, new_len);
  }
  Result<int32_t> Length(SeqId seq) const override { return e_.Length(seq); }

  Status Prefill(SeqId seq, std::span<const int32_t> tokens) override {
    if (tokens.empty()) return InvalidArgument("prefill: no tokens");
    pending_ = Pending::kNone;
    FP_RETURN_IF_ERROR(e_.Forward(seq, tokens, 1, &host_));
    pending_ = Pending::kHost;
    return Status::Ok();
  }
  Status Decode(SeqId seq, int32_t token) override {
    const std::array<SeqId, 1> seqs{seq};
    const std::array<int32_t, 1> toks{token};
    pending_ = Pending::kNone;
    FP_RETURN_IF_ERROR(e_.DecodeStep(seqs, toks));
    pending_ = Pending::kDevice;
    return Status::Ok();
  }
  Result<std::span<const float>> TakeLogits() override {
    const auto vocab = static_cast<size_t>(e_.config().vocab_size);
    switch (pending_) {
      case Pending::kNone:
        return FailedPrecondition("no step has produced logits");
      case Pending::kHost:
        return std::span<const float>(host_.data(), vocab);
      case Pending::kPinned:
#if defined(FIELDPRINT_HAVE_CUDA)
        return std::span<const float>(pinned_.get(), vocab);
#endif
      case Pending::kDevice:
        break;
    }
#if defined(FIELDPRINT_HAVE_CUDA)
    float* dst = nullptr;
    if (!pinned_ && !pinned_failed_) {
      float* p = nullptr;
      if (cudaMallocHost(reinterpret_cast<void**>(&p), vocab * sizeof(float)) == cudaSuccess) {
        pinned_.reset(p);
      } else {
        (void)cudaGetLastError();  // pageable fallback below; clear the (non-sticky) error
        pinned_failed_ = true;
      }
    }
    if (pinned_) {
      dst = pinned_.get();
    } else {
      host_.resize(vocab);
      dst = host_.data();
    }
    // Row 0 of device_logits() is the B = 1 decode step's.
    FP_RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(dst, e_.device_logits(), vocab * sizeof(float), cudaMemcpyDeviceToHost, e_.stream()),
        "logits to host"));
    FP_RETURN_IF_ERROR(Sync());
    if (pinned_) {
      pending_ = Pending::kPinned;
      return std::span<const float>(pinned_.get(), vocab);
    }
    pending_ = Pending::kHost;
    return std::span<const float>(host_.data(), vocab);
#else
    return Unimplemented("this build has no CUDA");
#endif
  }

 private:
  Status Sync() {
#if defined(FIELDPRINT_HAVE_CUDA)
    return Cuda(cudaStreamSynchronize(e_.stream()), "synchronize");
#else
    return Status::Ok();
#endif
  }

  enum class Pending : uint8_t { kNone, kHost, kDevice, kPinned };
  CudaLlama& e_;
  std::vector<float> host_;  // [vocab] (prefill's last row; pageable fallback for decode)
#if defined(FIELDPRINT_HAVE_CUDA)
  std::unique_ptr<float, PinnedFree> pinned_;  // [vocab] decode logits, page-locked for a direct DMA
  bool pinned_failed_ = false;
#endif
  Pending pending_ = Pending::kNone;
};

}  // namespace

std::unique_ptr<EngineBackend> MakeCudaBackend(CudaLlama& engine) {
  return std::make_unique<CudaBackend>(engine);
}

}  // namespace fp
