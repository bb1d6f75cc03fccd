// EngineBackend over the CPU engine, and the --device choice (see engine_backend.h). The CPU adapter is a
// thin forwarding layer: a step runs LlamaEngine::Forward at once with one logits row, exactly what the
// generation loop did before the interface existed, so CPU behaviour and speed are unchanged.
#include "fieldprint/engine_backend.h"

#if defined(FIELDPRINT_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include <array>
#include <string>
#include <vector>

#include "fieldprint/engine.h"

namespace fp {

namespace {

class CpuBackend final : public EngineBackend {
 public:
  explicit CpuBackend(LlamaEngine& e) : e_(e) {}

  Device device() const override { return Device::kCpu; }
  const ModelConfig& config() const override { return e_.config(); }
  KvCache& cache() override { return e_.cache(); }
  void* stream() const override { return nullptr; }
  bool replay_any_shape() const override { return true; }  // batch-invariant forward (engine.h)

  Result<std::shared_ptr<AnchorSegment>> BuildAnchor(std::span<const int32_t> tokens) override {
    return e_.BuildAnchor(tokens);
  }
  Result<SeqId> NewSequence(const std::shared_ptr<AnchorSegment>& anchor) override {
    return e_.NewSequence(anchor);
  }
  Status FreeSequence(SeqId seq) override { return e_.FreeSequence(seq); }
  Status Truncate(SeqId seq, int32_t new_len) override { return e_.Truncate(seq, new_len); }
  Result<int32_t> Length(SeqId seq) const override { return e_.Length(seq); }

  Status Prefill(SeqId seq, std::span<const int32_t> tokens) override {
    if (tokens.empty()) return InvalidArgument("prefill: no tokens");
    has_logits_ = false;
    FP_RETURN_IF_ERROR(e_.Forward(seq, tokens, 1, &logits_));
    has_logits_ = true;
    return Status::Ok();
  }
  Status Decode(SeqId seq, int32_t token) override {
    const std::array<int32_t, 1> one{token};
    return Prefill(seq, one);  // one path for prefill and decode on the CPU
  }
  Result<std::span<const float>> TakeLogits() override {
    if (!has_logits_) return FailedPrecondition("no step has produced logits");
    return std::span<const float>(logits_);
  }

 private:
  LlamaEngine& e_;
  std::vector<float> logits_;  // [vocab] of the last step's last token
  bool has_logits_ = false;
};

#if defined(FIELDPRINT_HAVE_CUDA)
// cudaGetDeviceCount's answer, asked once (the first call initialises the driver).
cudaError_t DeviceCount(int* n) {
  static int count = 0;
  static const cudaError_t err = cudaGetDeviceCount(&count);
  *n = err == cudaSuccess ? count : 0;
  return err;
}
#endif

}  // namespace

std::unique_ptr<EngineBackend> MakeCpuBackend(LlamaEngine& engine) {
  return std::make_unique<CpuBackend>(engine);
}

bool CudaDeviceAvailable() {
#if defined(FIELDPRINT_HAVE_CUDA)
  int n = 0;
  return DeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

Result<Device> ResolveDevice(std::string_view flag) {
  if (flag == "cpu") return Device::kCpu;
  if (flag == "auto") return CudaDeviceAvailable() ? Device::kCuda : Device::kCpu;
  if (flag != "cuda") {
    return InvalidArgument("--device '" + std::string(flag) + "' is not one of auto, cpu, cuda");
  }
#if defined(FIELDPRINT_HAVE_CUDA)
  int n = 0;
  const cudaError_t err = DeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    return FailedPrecondition(std::string("--device cuda: no CUDA device found (") +
                              (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") +
                              "); use --device cpu or auto");
  }
  return Device::kCuda;
#else
  return Unimplemented("--device cuda: this build has no CUDA (rebuild with -DFIELDPRINT_CUDA=ON)");
#endif
}

}  // namespace fp
