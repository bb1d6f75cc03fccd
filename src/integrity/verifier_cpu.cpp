// verifier_cpu.cpp — the CPU verifier backend: one worker thread hashes queued batches from the host pool.
// The worker reads only committed rows [0, fill), which decode never rewrites, so the engine thread may keep
// appending to the same pages meanwhile; the queue's mutex orders the step's writes before the worker's
// reads.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "fieldprint/page_digest.h"
#include "integrity/verifier_backend.h"

namespace fp::integrity_detail {

void HashBatch::Merge(HashBatch&& other) {
  const size_t base = jobs.size();
  for (auto& j : other.jobs) jobs.push_back(std::move(j));
  for (auto c : other.commits) {
    c.first_job += base;
    commits.push_back(c);
  }
  step = other.step;
}

namespace {

Result<std::vector<Digest>> HashJobsCpu(std::span<const HashJob> jobs, size_t chunk, size_t num_layers) {
  std::vector<Digest> out;  // [jobs * num_layers]
  out.reserve(jobs.size() * num_layers);
  for (const HashJob& j : jobs) {
    auto d = LayerDigestsOfSegmentsCpu(j.segments, chunk);
    FP_RETURN_IF_ERROR(d.status());
    if (d->size() != num_layers) return Internal("verifier job has the wrong number of layers");
    out.insert(out.end(), d->begin(), d->end());
  }
  return out;
}

class CpuBackend final : public VerifierBackend {
 public:
  CpuBackend(int num_layers, size_t chunk, Sink sink)
      : layers_(static_cast<size_t>(num_layers)), chunk_(chunk), sink_(std::move(sink)) {
    worker_ = std::thread([this] { Loop(); });
  }
  ~CpuBackend() override {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  Status Submit(HashBatch&& batch, void*) override {
    {
      std::lock_guard<std::mutex> g(m_);
      q_.push_back(std::move(batch));
    }
    cv_.notify_all();
    return background_status();
  }

  Status Drain() override {
    std::unique_lock<std::mutex> g(m_);
    idle_cv_.wait(g, [this] { return q_.empty() && !busy_; });
    return status_;
  }

  Result<std::vector<Digest>> HashNow(std::span<const HashJob> jobs, void*) override {
    return HashJobsCpu(jobs, chunk_, layers_);
  }

  Status background_status() override {
    std::lock_guard<std::mutex> g(m_);
    return status_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [this] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;  // stop requested and nothing left
      HashBatch b = std::move(q_.front());
      q_.pop_front();
      busy_ = true;
      g.unlock();
      auto d = HashJobsCpu(b.jobs, chunk_, layers_);
      if (d.ok()) sink_(b, *d);
      g.lock();
      if (!d.ok() && status_.ok()) status_ = d.status();
      busy_ = false;
      idle_cv_.notify_all();
    }
  }

  size_t layers_, chunk_;
  Sink sink_;
  std::mutex m_;
  std::condition_variable cv_, idle_cv_;
  std::deque<HashBatch> q_;
  bool busy_ = false, stop_ = false;
  Status status_;
  std::thread worker_;  // last: starts after every member above exists
};

}  // namespace

std::unique_ptr<VerifierBackend> MakeCpuVerifierBackend(int num_layers, size_t chunk_bytes,
                                                        VerifierBackend::Sink sink) {
  return std::make_unique<CpuBackend>(num_layers, chunk_bytes, std::move(sink));
}

#ifndef FIELDPRINT_HAVE_CUDA
Result<std::unique_ptr<VerifierBackend>> MakeCudaVerifierBackend(int, size_t, int, VerifierBackend::Sink) {
  return Unimplemented("the CUDA verifier backend needs a CUDA build");
}
#endif

}  // namespace fp::integrity_detail
