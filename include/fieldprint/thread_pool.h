// fieldprint/thread_pool.h — a persistent pool of worker threads for the CPU engine's parallel loops.
//
// Decode issues ~10 parallel regions per layer (a few hundred per token) of a few microseconds each, so a
// region must start and end in well under a microsecond: workers spin on the region word for a short while
// before sleeping on a condition variable. Work is handed out in chunks CLAIMED dynamically (a CAS on one
// 64-bit word holding generation | chunk count | next chunk), and the caller claims chunks too: on a machine
// shared with other processes a descheduled worker simply claims nothing, instead of stalling the region for
// a whole time slice (measured: a static split made decode 4x slower than one thread under load). defines:
// ThreadPool
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace fp {

class ThreadPool {
 public:
  // num_threads counts the caller: 1 = no workers; <= 0 = hardware concurrency.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); chunk bounds are multiples of `grain` (the
  // last may be short). Returns when every chunk is done. Not re-entrant: fn must not call into the same
  // pool.
  template <typename Fn>
  void ParallelFor(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    Region r;
    r.n = n;
    r.grain = grain;
    const int64_t units = (n + grain - 1) / grain;
    // A few chunks per thread for balance, never more than the mask allows.
    const int64_t want = size() == 1 ? 1 : static_cast<int64_t>(size()) * 4;
    r.chunks = static_cast<int64_t>(units < want ? units : want);
    r.fn = [](void* ctx, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<Fn>*>(ctx))(b, e); };
    r.ctx = static_cast<void*>(&fn);
    RunRegion(r);
  }

 private:
  struct Region {
    int64_t n = 0, grain = 1, chunks = 1;
    void (*fn)(void*, int64_t, int64_t) = nullptr;
    void* ctx = nullptr;
  };
  void RunRegion(const Region& r);
  // Claims and runs chunks of the region published under `word`'s generation; false when none was left.
  bool ClaimAndRun(uint64_t word);
  void WorkerLoop();

  std::vector<std::thread> workers_;
  // [generation:24 | chunks:20 | next:20]; generation 0 = idle.
  std::atomic<uint64_t> word_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<bool> stop_{false};
  Region region_;
  uint64_t generation_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace fp
