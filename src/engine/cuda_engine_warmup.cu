// engine/cuda_engine_warmup.cu — CudaLlama::Warmup (cuda_engine.h): pay the process's and the engine's
// one-time GPU costs (lazy module loading of each kernel on its first launch, cuBLAS's first GEMM calls, the
// first graph capture) on a scratch sequence before anything is timed, then put the engine back exactly as it
// was.
//
// Why a method and not part of FromWeights: a test needs a fresh (never warmed) engine to compare against,
// and the timed callers (generate --device cuda, verify --device cuda) call it explicitly before their clocks
// start. How "as it was" holds: the block pool is a LIFO free list (block_pool.h), so with one page in use at
// a time every allocation below takes the page on top of the free list and every free puts it back there;
// that page's K/V bytes (every layer) are saved to the host first and written back after. Captured decode
// graphs and the eager attention plan are moved aside and restored; the graphs warm-up captured are
// destroyed.
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <map>
#include <optional>
#include <vector>

#include "engine/cuda_engine_impl.h"

namespace fp {

Status CudaLlama::Warmup() {
  Impl& m = *impl_;
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  KvCache& cache = *m.cache;
  const BlockPool& pool = cache.meta().pool();
  const std::vector<int32_t> free_before = pool.free_list();  // [num_free]
  const std::vector<int32_t> refs_before = pool.refcounts();  // [num_blocks]
  if (free_before.empty()) return ResourceExhausted("cuda engine warm-up: no free KV page");
  const int32_t page = free_before.back();  // LIFO: the page every scratch allocation below takes

  // The page's K and V bytes of every layer, [2 * n_layers] of [page_size, Hkv, hd] bf16, to restore
  // afterwards.
  const int L = m.c.n_layers;
  std::vector<std::vector<std::byte>> saved(static_cast<size_t>(2 * L));
  auto page_bytes = [&](int l, bool v) {
    return v ? cache.storage().PageBytesV(l, page) : cache.storage().PageBytesK(l, page);
  };
  for (int l = 0; l < L; ++l) {
    for (int v = 0; v < 2; ++v) {
      auto b = page_bytes(l, v != 0);
      if (!b.ok()) return b.status();
      auto& dst = saved[static_cast<size_t>(2 * l + v)];
      dst.resize(b->size());
      FP_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst.data(), b->data(), b->size(), cudaMemcpyDeviceToHost, m.stream));
    }
  }
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));

  std::map<int32_t, Impl::DecodeGraph> graphs = std::move(m.graphs);
  m.graphs.clear();
  std::optional<AttentionDecodePlan> plan = std::move(m.plan);
  m.plan.reset();
  const int64_t captures = m.graph_captures, replays = m.graph_replays;

  Status st = [&]() -> Status {
    const std::array<int32_t, 1> tok{0};  // any id: the vocabulary is never empty
    auto anchor = BuildAnchor(tok);       // the anchor prefill and its K/V capture
    if (!anchor.ok()) return anchor.status();
    auto seq = NewSequence(*anchor);
    if (!seq.ok()) return seq.status();
    Status run = [&]() -> Status {
      std::vector<int32_t> ids;
      FP_RETURN_IF_ERROR(ForwardGreedy(*seq, tok, 1, &ids));  // prefill path, LM head, checked argmax
      if (m.opt.page_size >= 2) {                             // a second token must stay on the same page
        const std::array<SeqId, 1> seqs{*seq};
        FP_RETURN_IF_ERROR(DecodeGreedy(seqs, tok, &ids));  // the decode step (graph or eager) and its argmax
      }
      return Status::Ok();
    }();
    (void)cudaStreamSynchronize(m.stream);  // nothing may still write the page given back
    if (Status f = FreeSequence(*seq); run.ok()) (void)(run = f);
    return run;
  }();

  const cudaError_t sync = cudaStreamSynchronize(m.stream);
  for (auto& [b, g] : m.graphs) {
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  }
  m.graphs = std::move(graphs);
  m.plan = std::move(plan);
  m.graph_captures = captures;
  m.graph_replays = replays;
  if (st.ok() && sync != cudaSuccess) (void)(st = CudaStatus(sync, "warm-up", __FILE__, __LINE__));
  // The page's bytes back, whatever happened above (the copies are ordered on the compute stream, which the
  // engine's later work uses too).
  for (int l = 0; l < L; ++l) {
    for (int v = 0; v < 2; ++v) {
      auto b = page_bytes(l, v != 0);
      if (!b.ok()) return b.status();
      const auto& src = saved[static_cast<size_t>(2 * l + v)];
      // PageBytes* views the pool read-only (what integrity hashes); the pool itself is ours to write.
      auto* dst = const_cast<std::byte*>(b->data());
      FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src.data(), src.size(), cudaMemcpyHostToDevice, m.stream));
    }
  }
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));  // `saved` dies on return
  FP_RETURN_IF_ERROR(st);
  if (pool.free_list() != free_before || pool.refcounts() != refs_before) {
    return Internal("cuda engine warm-up: the block pool differs from before");
  }
  return Status::Ok();
}

}  // namespace fp
