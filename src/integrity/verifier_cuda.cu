// verifier_cuda.cu — the CUDA verifier backend: hashing on a low-priority side stream, results via pinned
// memory.
//
// Per batch (one engine step): record `written` on the compute stream, make the side stream wait on it, plan
// and run a GpuTreeHasher over one item per (page, layer) into a pinned digest buffer, record `done` on the
// side stream. A completion thread waits on `done` (blocking-sync event: it sleeps, no spinning) and feeds
// the digests to the sink. A ring of slots, each with its own hasher, lets several steps be in flight; when
// the next slot is still busy the batch is merged into a deferred one and launched by a later step, so the
// engine thread never waits on the GPU. The compute stream never waits on the side stream.
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "fieldprint/tree_hash_cuda.h"
#include "integrity/verifier_backend.h"

namespace fp::integrity_detail {
namespace {

#define FP_CUDA_RETURN(expr)                                                                  \
  do {                                                                                        \
    cudaError_t e_ = (expr);                                                                  \
    if (e_ != cudaSuccess) return Internal(std::string(#expr) + ": " + cudaGetErrorName(e_)); \
  } while (0)

struct Slot {
  std::unique_ptr<GpuTreeHasher> hasher;
  Digest* pinned = nullptr;  // [capacity] digests, host-pinned
  size_t capacity = 0;
  cudaEvent_t written = nullptr, done = nullptr;
  HashBatch batch;
  std::vector<GpuHashItem> items;  // [jobs * layers], spans into batch.jobs[*].segments
  bool busy = false;               // guarded by CudaBackend::m_
};

class CudaBackend final : public VerifierBackend {
 public:
  CudaBackend(int num_layers, size_t chunk, Sink sink)
      : layers_(num_layers), chunk_(chunk), sink_(std::move(sink)) {}

  Status Init(int num_slots) {
    int lo = 0, hi = 0;
    FP_CUDA_RETURN(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    // `lo` is the numerically greatest = lowest priority: decode kernels win any contention for SMs.
    FP_CUDA_RETURN(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, lo));
    slots_.resize(static_cast<size_t>(num_slots));
    for (Slot& s : slots_) {
      auto h = GpuTreeHasher::Create(chunk_);
      FP_RETURN_IF_ERROR(h.status());
      s.hasher = std::move(*h);
      FP_CUDA_RETURN(cudaEventCreateWithFlags(&s.written, cudaEventDisableTiming));
      FP_CUDA_RETURN(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming | cudaEventBlockingSync));
    }
    completer_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  ~CudaBackend() override {
    (void)Drain();
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    if (completer_.joinable()) completer_.join();
    for (Slot& s : slots_) {
      if (s.pinned) cudaFreeHost(s.pinned);
      if (s.written) cudaEventDestroy(s.written);
      if (s.done) cudaEventDestroy(s.done);
    }
    if (side_) cudaStreamDestroy(side_);
  }

  Status Submit(HashBatch&& batch, void* compute_stream) override {
    FP_RETURN_IF_ERROR(background_status());
    last_stream_ = static_cast<cudaStream_t>(compute_stream);
    if (deferred_) {
      deferred_->Merge(std::move(batch));
    } else {
      deferred_ = std::move(batch);
    }
    Slot& s = slots_[next_];
    {
      std::lock_guard<std::mutex> g(m_);
      if (s.busy) {  // still hashing an older step: keep the work for a later call, never wait
        ++deferred_count_;
        return Status::Ok();
      }
    }
    return Launch(last_stream_);
  }

  Status Drain() override {
    while (deferred_) {
      {
        std::unique_lock<std::mutex> g(m_);
        idle_cv_.wait(g, [this] { return !slots_[next_].busy || !status_.ok(); });
        if (!status_.ok()) return status_;
      }
      FP_RETURN_IF_ERROR(Launch(last_stream_));
    }
    std::unique_lock<std::mutex> g(m_);
    idle_cv_.wait(g, [this] { return queue_.empty() && in_sink_ == 0; });
    return status_;
  }

  Result<std::vector<Digest>> HashNow(std::span<const HashJob> jobs, void* compute_stream) override {
    FP_CUDA_RETURN(cudaStreamSynchronize(static_cast<cudaStream_t>(compute_stream)));
    std::vector<GpuHashItem> items;  // [jobs * layers]
    for (const HashJob& j : jobs) {
      for (int l = 0; l < layers_; ++l)
        items.push_back({std::span<const ByteSegment>(j.segments).subspan(2 * l, 2)});
    }
    if (items.empty()) return std::vector<Digest>{};
    return TreeHashGpuSync(items, chunk_);
  }

  Status background_status() override {
    std::lock_guard<std::mutex> g(m_);
    return status_;
  }
  uint64_t deferred_batches() const override { return deferred_count_; }

 private:
  // Launches deferred_ on slot next_ (known idle).
  Status Launch(cudaStream_t compute) {
    Slot& s = slots_[next_];
    s.batch = std::move(*deferred_);
    deferred_.reset();
    s.items.clear();
    for (const HashJob& j : s.batch.jobs) {
      for (int l = 0; l < layers_; ++l) {
        s.items.push_back({std::span<const ByteSegment>(j.segments).subspan(2 * static_cast<size_t>(l), 2)});
      }
    }
    if (s.items.size() > s.capacity) {
      if (s.pinned) FP_CUDA_RETURN(cudaFreeHost(s.pinned));
      s.pinned = nullptr;
      s.capacity = 0;
      void* p = nullptr;
      const size_t cap = std::max<size_t>(s.items.size() * 2, 256);
      FP_CUDA_RETURN(cudaHostAlloc(&p, cap * sizeof(Digest), cudaHostAllocDefault));
      s.pinned = static_cast<Digest*>(p);
      s.capacity = cap;
    }
    FP_CUDA_RETURN(cudaEventRecord(s.written, compute));
    FP_CUDA_RETURN(cudaStreamWaitEvent(side_, s.written, 0));
    FP_RETURN_IF_ERROR(s.hasher->Plan(s.items));
    FP_RETURN_IF_ERROR(s.hasher->Run(side_, s.pinned));
    FP_CUDA_RETURN(cudaEventRecord(s.done, side_));
    {
      std::lock_guard<std::mutex> g(m_);
      s.busy = true;
      queue_.push_back(next_);
    }
    cv_.notify_all();
    next_ = (next_ + 1) % slots_.size();
    return Status::Ok();
  }

  void Loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      const size_t i = queue_.front();
      queue_.pop_front();
      ++in_sink_;
      g.unlock();
      Slot& s = slots_[i];
      const cudaError_t e = cudaEventSynchronize(s.done);
      if (e == cudaSuccess) sink_(s.batch, std::span<const Digest>(s.pinned, s.items.size()));
      g.lock();
      if (e != cudaSuccess && status_.ok()) {
        (void)(status_ = Internal(std::string("verifier side stream: ") + cudaGetErrorName(e)));
      }
      s.busy = false;
      --in_sink_;
      idle_cv_.notify_all();
    }
  }

  int layers_;
  size_t chunk_;
  Sink sink_;
  cudaStream_t side_ = nullptr;
  std::vector<Slot> slots_;
  size_t next_ = 0;                     // engine thread: the slot the next launch uses (FIFO ring)
  std::optional<HashBatch> deferred_;   // engine thread
  cudaStream_t last_stream_ = nullptr;  // engine thread
  std::atomic<uint64_t> deferred_count_{0};
  std::mutex m_;
  std::condition_variable cv_, idle_cv_;
  std::deque<size_t> queue_;  // slots launched, in order
  int in_sink_ = 0;
  bool stop_ = false;
  Status status_;
  std::thread completer_;
};

}  // namespace

Result<std::unique_ptr<VerifierBackend>> MakeCudaVerifierBackend(int num_layers, size_t chunk_bytes,
                                                                 int slots, VerifierBackend::Sink sink) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    return Unimplemented("CUDA verifier backend: no CUDA device");
  }
  auto be = std::make_unique<CudaBackend>(num_layers, chunk_bytes, std::move(sink));
  FP_RETURN_IF_ERROR(be->Init(slots));
  return std::unique_ptr<VerifierBackend>(std::move(be));
}

}  // namespace fp::integrity_detail
