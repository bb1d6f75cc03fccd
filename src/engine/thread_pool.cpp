// Persistent worker pool with dynamically claimed chunks (see thread_pool.h for why).
#include "fieldprint/thread_pool.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FP_CPU_RELAX() _mm_pause()
#else
#define FP_CPU_RELAX() ((void)0)
#endif

namespace fp {

namespace {
constexpr int kChunkBits = 20;
constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;
constexpr uint64_t kGenMask = (uint64_t{1} << (64 - 2 * kChunkBits)) - 1;
// A worker spins ~this many polls before sleeping: covers the gap between two regions of one token.
constexpr int kSpinIterations = 20000;
// Pure spinning (no yield) for about a microsecond or two: the common case on an idle machine.
constexpr int kYieldAfter = 256;

uint64_t Gen(uint64_t w) { return w >> (2 * kChunkBits); }
uint64_t Chunks(uint64_t w) { return (w >> kChunkBits) & kChunkMask; }
uint64_t Next(uint64_t w) { return w & kChunkMask; }
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (num_threads <= 0) num_threads = 1;
  workers_.reserve(static_cast<size_t>(num_threads - 1));
  for (int t = 1; t < num_threads; ++t) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

bool ThreadPool::ClaimAndRun(uint64_t w) {
  bool ran = false;
  for (;;) {
    if (Next(w) >= Chunks(w)) return ran;
    // A successful CAS on generation g means region g is still running (its chunk is not done), so the
    // region's description, published before the word, is g's.
    if (!word_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (Gen(w) == 0) return ran;
      continue;  // w was reloaded: maybe another generation, maybe the next chunk
    }
    const Region& r = region_;
    const auto c = static_cast<int64_t>(Next(w));
    const int64_t units = (r.n + r.grain - 1) / r.grain;
    const int64_t b = units * c / r.chunks * r.grain;
    const int64_t e0 = units * (c + 1) / r.chunks * r.grain;
    const int64_t e = e0 < r.n ? e0 : r.n;
    if (b < e) r.fn(r.ctx, b, e);
    done_.fetch_add(1, std::memory_order_acq_rel);
    ran = true;
    w = word_.load(std::memory_order_acquire);
  }
}

void ThreadPool::RunRegion(const Region& r) {
  if (size() == 1 || r.chunks == 1) {
    r.fn(r.ctx, 0, r.n);
    return;
  }
  region_ = r;
  done_.store(0, std::memory_order_relaxed);
  generation_ = (generation_ % kGenMask) + 1;  // never 0
  const uint64_t w = (generation_ << (2 * kChunkBits)) | (static_cast<uint64_t>(r.chunks) << kChunkBits);
  {
    // The lock orders the publish against a worker that is about to sleep (no lost wake-up).
    std::lock_guard<std::mutex> lock(mu_);
    word_.store(w, std::memory_order_release);
  }
  if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
  ClaimAndRun(w);
  for (int i = 0; done_.load(std::memory_order_acquire) != r.chunks; ++i) {
    if (i < kYieldAfter) {
      FP_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t last_gen = 0;
  for (;;) {
    uint64_t w = word_.load(std::memory_order_acquire);
    for (int i = 0; (Gen(w) == last_gen || Next(w) >= Chunks(w)) && i < kSpinIterations; ++i) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (i < kYieldAfter) {
        FP_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
      w = word_.load(std::memory_order_acquire);
    }
    if (Gen(w) == last_gen || Next(w) >= Chunks(w)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1, std::memory_order_acq_rel);
      cv_.wait(lock, [&] {
        const uint64_t x = word_.load(std::memory_order_acquire);
        return stop_.load(std::memory_order_acquire) || (Gen(x) != last_gen && Next(x) < Chunks(x));
      });
      sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      if (stop_.load(std::memory_order_acquire)) return;
      w = word_.load(std::memory_order_acquire);
    }
    last_gen = Gen(w);
    ClaimAndRun(w);
  }
}

}  // namespace fp
