// fieldprint/engine_backend.h — what the generation loop needs from a forward engine, over the CPU engine
// (LlamaEngine) and the CUDA engine (CudaLlama), and the choice between them (--device).
//
// A step is split in two so verification stays off the critical path: Prefill()/Decode() append tokens to a
// sequence and ENQUEUE the work (CUDA: on stream(); the CPU runs it at once), the loop then reports the step
// to the Verifier (OnStepWritten(seqs, stream())), and only then TakeLogits() brings the last token's logits
// to the host (CUDA: waits for the compute stream, never for the verifier's side stream).
//
// Replay after a rollback: the CPU forward is batch invariant (engine.h), so one prefill over the whole redo
// range reproduces the original KV bits. The CUDA forward is not (cuBLAS picks kernels per shape; prefill and
// decode use different attention kernels), so it replays in the original shape: the prompt part through the
// prefill, generated tokens one decode step each (replay_any_shape() says which).
// defines: EngineBackend, MakeCpuBackend, MakeCudaBackend, CudaDeviceAvailable, ResolveDevice
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "fieldprint/anchor_segment.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/model_config.h"
#include "fieldprint/status.h"
#include "fieldprint/tensor.h"
#include "fieldprint/verifier.h"

namespace fp {

class LlamaEngine;
class CudaLlama;

class EngineBackend {
 public:
  virtual ~EngineBackend() = default;

  virtual Device device() const = 0;
  virtual const ModelConfig& config() const = 0;
  // The paged KV cache the Verifier watches (host memory for the CPU, device memory for CUDA).
  virtual KvCache& cache() = 0;
  VerifierBackendKind verifier_kind() const {
    return device() == Device::kCuda ? VerifierBackendKind::kCuda : VerifierBackendKind::kCpu;
  }
  // The compute stream (a cudaStream_t) for Verifier calls; null on the CPU.
  virtual void* stream() const = 0;
  // True when one prefill over any range reproduces the KV bits of the original prefill + decode steps.
  virtual bool replay_any_shape() const = 0;

  // Prefills `tokens` at anchor positions 0 .. A-1 and returns the sealed anchor (on this backend's device).
  virtual Result<std::shared_ptr<AnchorSegment>> BuildAnchor(std::span<const int32_t> tokens) = 0;
  virtual Result<SeqId> NewSequence(const std::shared_ptr<AnchorSegment>& anchor) = 0;
  virtual Status FreeSequence(SeqId seq) = 0;
  // Shrinks seq's KV to new_len (waits for in-flight work first). Verified sequences roll back through
  // Verifier::Rollback / Truncate instead, which keep the commitments in step.
  virtual Status Truncate(SeqId seq, int32_t new_len) = 0;
  virtual Result<int32_t> Length(SeqId seq) const = 0;

  // Appends tokens (non-empty) to seq through the prefill path; the last one's logits become pending.
  virtual Status Prefill(SeqId seq, std::span<const int32_t> tokens) = 0;
  // Appends one token through the decode path (CUDA: enqueued, returns before the GPU finishes).
  virtual Status Decode(SeqId seq, int32_t token) = 0;
  // The pending logits [vocab] on the host, valid until the next step. FailedPrecondition before any step.
  virtual Result<std::span<const float>> TakeLogits() = 0;
};

// Adapters over engines that must outlive them.
std::unique_ptr<EngineBackend> MakeCpuBackend(LlamaEngine& engine);
std::unique_ptr<EngineBackend> MakeCudaBackend(CudaLlama& engine);

// Whether this build has CUDA and the machine a CUDA device.
bool CudaDeviceAvailable();
// --device: "cpu", "cuda" or "auto" (cuda when CudaDeviceAvailable(), else cpu). InvalidArgument for another
// name; "cuda" without a device: FailedPrecondition (Unimplemented when the build has no CUDA).
Result<Device> ResolveDevice(std::string_view flag);

}  // namespace fp
