// bench_e2e.cu — end-to-end decode tokens/s of CudaLlama on a Llama-3-8B-shaped model (random bf16 weights drawn on
// the device), context 4096, batch B in {1, 16, 64}, under the four verification modes:
//   off        no integrity work
//   sync-full  the paper's naive design: after every step copy the WHOLE KV of the batch to pinned host memory and
//              re-hash all of it (SHA-256 over 1 MiB pieces on every host core; copy and hash double-buffered)
//   sync       synchronous incremental: after a step, pages that just filled (every layer's K and V rows) are
//              copied to the host and tree-hashed there (TreeHashCpu, pages spread over the cores); the step waits
//   async      the integrity layer's Verifier (CUDA backend: GpuTreeHasher on a side stream behind an event, host
//              thread folds the digests into the trees); the step never waits for it
// The context is NOT prefilled through the model for the decode rows: every sequence reserves `ctx` tokens and the
// whole paged pool is filled with random bf16 (a prefill of 64 x 4096 tokens would spend the device budget). One
// real prefill of `ctx` tokens at B=1 through the prefill kernel is timed as its own row.
// Step time: CUDA events recorded on the compute stream before the step's host work and after its verification
// work (the stream is idle between steps, so event time == wall time of the step); mean and median over the timed
// steps after warm-up. The mean is the headline (commits are periodic: one page per sequence every 16 steps).
// Floor: (weight matrices + KV rows read per step) / d2d copy bandwidth measured in this run.
// Decode steps use the engine's defaults: a CUDA graph per batch size, the GEMV at B = 1 and cuBLAS above, PDL
// between kernels, the attention split chosen per step (split_tokens = -1). --variants adds "off/<tuning>" rows,
// each changing choices on the same engine; tuning = '+'-joined tokens:
//   eager (no graph), nogemv (cuBLAS at B = 1 too), skinny (the skinny tensor-core GEMM + fused SwiGLU for
//   2 <= B <= 64), fixed (the kernel's fixed default split), nopdl (no programmatic dependent launch),
//   noattnpdl (the attention kernel without it), sepmerge (the split-KV merge as its own kernel), nofuse (at B = 1
//   RMSNorm and RoPE + KV write as their own kernels instead of inside the q|k|v GEMV; fuse: inside it, whatever
//   the model's size),
//   det (batch_invariant mode: cuBLAS on 64-row blocks for every GEMM, attention split fixed at 512: the cost of
//   determinism, issue #7; det+skinny: the skinny GEMM instead); s128 .. s8192: that fixed attention split.
// --model FILE.gguf runs the same rows on a real model's weights (SmolLM2-135M-Instruct: its Q4_1 file dequantised
// to bf16 on upload) instead of the random Llama-3-8B.
// Usage: bench_e2e [--batches 1,16,64] [--ctx 4096] [--steps 64] [--full-steps 3] [--layers 32] [--variants]
//                  [--modes off,sync-full,sync,async] [--model FILE.gguf] [--json PATH] [--md PATH] [--commit SHA]
//                  [--warmup N] [--no-prefill] (the last two: few kernels for a profiler, e.g. ncu over one step)
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/cuda_engine_kernels.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/sha256.h"
#include "fieldprint/thread_pool.h"
#include "fieldprint/tree_hash.h"
#include "fieldprint/verifier.h"

#include "bench_util.h"

namespace {

using fp::SeqId;


std::vector<int> ParseList(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoi(item));
  return v;
}
std::vector<std::string> ParseNames(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(item);
  return v;
}

// d2d copy bandwidth: (read + write bytes) / time of a 2 GiB cudaMemcpyAsync, median of 10.
// bf16 GEMM rate, 8192^3, cuBLAS (fp32 accumulate).
double GemmTflops(cudaStream_t st) {
  const int n = 8192;
  void *a, *b, *c;
  CK(cudaMalloc(&a, size_t{2} * n * n));
  CK(cudaMalloc(&b, size_t{2} * n * n));
  CK(cudaMalloc(&c, size_t{2} * n * n));
  CK(cudaMemsetAsync(a, 0, size_t{2} * n * n, st));
  CK(cudaMemsetAsync(b, 0, size_t{2} * n * n, st));
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetStream(h, st);
  const float one = 1.f, zero = 0.f;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < 8; ++i) {
    CK(cudaEventRecord(e0, st));
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                 CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (i >= 2) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  cublasDestroy(h);
  CK(cudaFree(a));
  CK(cudaFree(b));
  CK(cudaFree(c));
  return 2.0 * n * double(n) * n / (t[t.size() / 2] * 1e-3) / 1e12;
}

struct Seg {
  const std::byte* p;
  size_t n;
};

// The naive scheme's per-step work: copy every segment to pinned host memory and SHA-256 it all, in 1 MiB pieces
// on every core, double-buffered so the copy of buffer i+1 overlaps the hashing of buffer i.
class FullRehash {
 public:
  FullRehash(cudaStream_t st, fp::ThreadPool* pool) : st_(st), pool_(pool) {
    for (int i = 0; i < 2; ++i) {
      CK(cudaMallocHost(&buf_[i], kCap));
      CK(cudaEventCreate(&ev_[i]));
    }
  }
  ~FullRehash() {
    for (int i = 0; i < 2; ++i) {
      cudaFreeHost(buf_[i]);
      cudaEventDestroy(ev_[i]);
    }
  }
  void Run(const std::vector<Seg>& segs) {
    int cur = 0;
    size_t fill = 0;
    size_t pending = 0;  // bytes in the other buffer awaiting hashing (0: none)
    auto flush = [&]() {
      CK(cudaEventRecord(ev_[cur], st_));
      if (pending > 0) Hash(1 - cur, pending);
      pending = fill;
      fill = 0;
      cur = 1 - cur;
    };
    for (const Seg& s : segs) {
      size_t off = 0;
      while (off < s.n) {
        const size_t take = std::min(s.n - off, kCap - fill);
        CK(cudaMemcpyAsync(buf_[cur] + fill, s.p + off, take, cudaMemcpyDeviceToHost, st_));
        fill += take;
        off += take;
        if (fill == kCap) flush();
      }
    }
    if (fill > 0) flush();
    if (pending > 0) Hash(1 - cur, pending);
  }
  uint64_t checksum() const { return checksum_; }

 private:
  static constexpr size_t kCap = size_t{256} << 20;
  static constexpr size_t kPiece = size_t{1} << 20;
  void Hash(int i, size_t bytes) {
    CK(cudaEventSynchronize(ev_[i]));
    const size_t pieces = (bytes + kPiece - 1) / kPiece;
    std::vector<uint8_t> first(pieces);
    pool_->ParallelFor(static_cast<int64_t>(pieces), 1, [&](int64_t b, int64_t e) {
      for (size_t k = static_cast<size_t>(b); k < static_cast<size_t>(e); ++k) {
        const fp::Digest d = fp::Sha256(buf_[i] + k * kPiece, std::min(kPiece, bytes - k * kPiece));
        first[k] = d.bytes[0];
      }
    });
    for (uint8_t b : first) checksum_ += b;  // keeps the hashing observable
  }
  cudaStream_t st_;
  fp::ThreadPool* pool_;
  std::byte* buf_[2] = {nullptr, nullptr};
  cudaEvent_t ev_[2] = {};
  uint64_t checksum_ = 0;
};

// Contiguous runs of the sequences' pages in every layer's K and V pools (block ids in table order).
std::vector<Seg> WholeKv(fp::KvCache& cache, const std::vector<SeqId>& seqs) {
  std::vector<Seg> out;
  const fp::KvLayout& L = cache.layout();
  const size_t pb = L.page_bytes();
  for (int l = 0; l < L.num_layers; ++l) {
    for (int v = 0; v < 2; ++v) {
      auto pool = v ? cache.storage().LayerV(l) : cache.storage().LayerK(l);
      const auto* base = static_cast<const std::byte*>(pool->data);
      for (SeqId s : seqs) {
        auto tab = cache.meta().BlockTable(s);
        auto len = cache.meta().Length(s);
        const auto& t = tab.value();
        for (size_t i = 0; i < t.size();) {
          size_t j = i + 1;
          while (j < t.size() && t[j] == t[j - 1] + 1) ++j;
          // the last page only up to the sequence's fill
          const int64_t tokens = std::min<int64_t>(int64_t(j) * L.page_size, *len) - int64_t(i) * L.page_size;
          out.push_back({base + size_t(t[i]) * pb, size_t(tokens) * L.token_bytes()});
          i = j;
        }
      }
    }
  }
  return out;
}

// Synchronous incremental hashing on the host: the pages that filled in this step, every layer's K and V rows,
// copied to pinned memory, then one TreeHashCpu per page spread over the cores. Returns pages hashed.
class IncrementalHost {
 public:
  IncrementalHost(cudaStream_t st, fp::ThreadPool* pool, size_t max_pages, const fp::KvLayout& L)
      : st_(st), pool_(pool), page_all_(L.page_bytes() * 2 * size_t(L.num_layers)) {
    CK(cudaMallocHost(&buf_, max_pages * page_all_));
  }
  ~IncrementalHost() { cudaFreeHost(buf_); }
  int Run(fp::KvCache& cache, const std::vector<SeqId>& seqs) {
    const fp::KvLayout& L = cache.layout();
    std::vector<int32_t> pages;
    for (SeqId s : seqs) {
      const int32_t len = *cache.meta().Length(s);
      if (len % L.page_size == 0) pages.push_back((*cache.meta().BlockTable(s))[size_t(len / L.page_size - 1)]);
    }
    if (pages.empty()) return 0;
    size_t off = 0;
    for (int32_t pg : pages) {
      for (int l = 0; l < L.num_layers; ++l) {
        for (int v = 0; v < 2; ++v) {
          auto b = v ? cache.storage().PageBytesV(l, pg) : cache.storage().PageBytesK(l, pg);
          CK(cudaMemcpyAsync(buf_ + off, b->data(), b->size(), cudaMemcpyDeviceToHost, st_));
          off += b->size();
        }
      }
    }
    CK(cudaStreamSynchronize(st_));
    std::vector<fp::Digest> roots(pages.size());
    pool_->ParallelFor(static_cast<int64_t>(pages.size()), 1, [&](int64_t b, int64_t e) {
      for (size_t k = size_t(b); k < size_t(e); ++k) {
        const fp::ByteSegment seg{buf_ + k * page_all_, page_all_};
        roots[k] = fp::TreeHashCpu(std::span(&seg, 1)).value();
      }
    });
    for (const auto& r : roots) checksum_ += r.bytes[0];
    return static_cast<int>(pages.size());
  }
  uint64_t checksum() const { return checksum_; }

 private:
  cudaStream_t st_;
  fp::ThreadPool* pool_;
  size_t page_all_;
  std::byte* buf_ = nullptr;
  uint64_t checksum_ = 0;
};

struct Stats {
  double mean_us, median_us, p90_us;
};
Stats Summarise(std::vector<double> t) {
  double sum = 0;
  for (double x : t) sum += x;
  std::sort(t.begin(), t.end());
  return {sum / double(t.size()), t[t.size() / 2], t[std::min(t.size() - 1, t.size() * 9 / 10)]};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches{1, 16, 64};
  std::vector<std::string> modes{"off", "sync-full", "sync", "async"};
  int ctx = 4096, steps = 64, full_steps = 3, warmup = 4, layers = -1;
  bool prefill_row = true;
  std::string json_path, md_path, commit = "unknown", model_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--batches") batches = ParseList(next());
    else if (a == "--modes") modes = ParseNames(next());
    else if (a == "--ctx") ctx = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--no-prefill") prefill_row = false;
    else if (a == "--full-steps") full_steps = std::stoi(next());
    else if (a == "--layers") layers = std::stoi(next());
    else if (a == "--model") model_path = next();
    else if (a == "--variants") {
      for (const char* v : {"off/nopdl", "off/sepmerge+noattnpdl", "off/nofuse", "off/fuse", "off/nogemv", "off/skinny", "off/det", "off/det+skinny"}) {
        modes.emplace_back(v);
      }
    } else if (a == "--json") json_path = next();
    else if (a == "--md") md_path = next();
    else if (a == "--commit") commit = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::optional<fp::LlamaWeights> weights;
  if (!model_path.empty()) {
    auto w = fp::LlamaWeights::Load(model_path, fp::WeightStorage::kQuantized);
    OK(w.status());
    weights.emplace(std::move(w).value());
  }
  fp::ModelConfig cfg = weights ? weights->config() : fp::ModelConfig::Llama3_8B();
  if (layers > 0 && !weights) cfg.n_layers = layers;
  const int bmax = *std::max_element(batches.begin(), batches.end());
  fp::CudaEngineOptions opt;
  opt.max_batch = bmax;
  opt.max_chunk = 1024;
  opt.page_size = 16;
  opt.split_tokens = -1;  // per step (the engine's default)
  opt.kv_capacity = bmax * (ctx + steps + warmup + 64) + ctx;
  auto eng = weights ? fp::CudaLlama::FromWeights(*weights, opt) : fp::CudaLlama::Random(cfg, 1234, opt);
  OK(eng.status());
  fp::CudaLlama& e = **eng;
  cudaStream_t st = e.stream();
  fp::KvCache& cache = e.cache();
  const fp::KvLayout& L = cache.layout();
  const double copy_tbps = fp::bench::CopyTbps(st);
  const double gemm_tflops = GemmTflops(st);
  std::printf("device: %s, %d SMs | d2d copy %.2f TB/s | bf16 GEMM %.0f TFLOP/s | host threads %u\n", prop.name,
              prop.multiProcessorCount, copy_tbps, gemm_tflops, std::thread::hardware_concurrency());
  std::printf("model: %s | weights %.2f GB | KV %.0f KiB/token | pool %d pages x %d\n", cfg.Summary().c_str(),
              e.weight_bytes() / 1e9, L.token_bytes() * 2.0 * L.num_layers / 1024, L.num_blocks, L.page_size);
  // Random KV everywhere (see the header comment).
  for (int l = 0; l < L.num_layers; ++l) {
    for (int v = 0; v < 2; ++v) {
      auto t = v ? cache.storage().LayerV(l) : cache.storage().LayerK(l);
      OK(fp::cuda_engine::LaunchRandomBf16(static_cast<__nv_bfloat16*>(t->data), size_t(t->numel()),
                                           77 + 2 * l + v, 1.f, st));
    }
  }
  CK(cudaStreamSynchronize(st));

  const std::string model_desc =
      weights ? cfg.name + " (" + model_path + ", real weights dequantised to bf16, " + std::to_string(cfg.n_layers) +
                    " layers)"
              : "Llama-3-8B shapes (" + std::to_string(cfg.n_layers) + " layers), random bf16 weights";
  nlohmann::json rows = nlohmann::json::array();
  const double token_kv_bytes = double(L.token_bytes()) * 2 * L.num_layers;

  if (prefill_row) {  // one real prefill of ctx tokens at B=1 (random token ids), prefill kernel
    auto s = e.NewSequence(nullptr);
    std::vector<int32_t> toks(static_cast<size_t>(ctx));
    for (int i = 0; i < ctx; ++i) toks[size_t(i)] = (i * 7919 + 13) % cfg.vocab_size;
    std::vector<float> logits;
    OK(e.Forward(*s, std::span(toks).first(64), 1, &logits));  // warm-up
    OK(e.Truncate(*s, 0));
    const auto t0 = std::chrono::steady_clock::now();
    OK(e.Forward(*s, toks, 1, &logits));
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    const double flops = 2.0 * double(e.weight_bytes() / 2) * ctx;  // matrix FLOPs (attention not counted)
    std::printf("prefill %d tokens B=1: %.1f ms, %.0f tok/s, %.0f TFLOP/s (matrices only)\n", ctx, us / 1e3,
                ctx / (us * 1e-6), flops / (us * 1e-6) / 1e12);
    rows.push_back({{"name", "prefill"}, {"params", {{"B", 1}, {"tokens", ctx}, {"chunk", opt.max_chunk}}},
                    {"time_us", us}, {"rate", ctx / (us * 1e-6)}, {"unit", "tok/s"},
                    {"ratio_to_floor", flops / (gemm_tflops * 1e12) / (us * 1e-6)}, {"peers", nlohmann::json::object()}});
    OK(e.FreeSequence(*s));
  }

  fp::ThreadPool pool(0);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::printf("%-10s %4s %10s %10s %10s %10s %8s %s\n", "verify", "B", "mean_us", "median_us", "tok/s", "steps/s",
              "ratio", "notes");
  for (int B : batches) {
    for (const std::string& mode_spec : modes) {
      // "mode/tuning" (see the header comment); no tuning = the engine's defaults.
      const size_t slash = mode_spec.find('/');
      const std::string mode = mode_spec.substr(0, slash);
      const std::string tuning = slash == std::string::npos ? "" : "+" + mode_spec.substr(slash + 1) + "+";
      auto has = [&](const char* t) { return tuning.find("+" + std::string(t) + "+") != std::string::npos; };
      fp::CudaLlama::DecodeTuning tu;
      tu.decode_graphs = !has("eager");
      tu.gemv_max_batch = has("nogemv") ? 0 : 1;
      tu.skinny_max_batch = has("skinny") ? 64 : 0;
      tu.split_tokens = has("fixed") ? 0 : -1;
      for (int sp : {128, 256, 512, 1024, 2048, 4096, 8192}) {
        if (has(("s" + std::to_string(sp)).c_str())) tu.split_tokens = sp;
      }
      tu.pdl = !has("nopdl");
      tu.attention_pdl = !has("noattnpdl");
      tu.fused_merge = !has("sepmerge");
      if (has("nofuse")) tu.fused_qkv = fp::CudaEngineOptions::FusedQkv::kOff;
      if (has("fuse")) tu.fused_qkv = fp::CudaEngineOptions::FusedQkv::kOn;
      tu.batch_invariant = has("det");
      if (has("det") && has("skinny")) tu.batch_invariant_gemm = fp::CudaEngineOptions::InvariantGemm::kSkinny;
      OK(e.SetDecodeTuning(tu));
      const bool graphs = tu.decode_graphs;
      const int gemv = tu.gemv_max_batch, split = tu.split_tokens;
      const auto stats0 = e.decode_stats();
      std::vector<SeqId> seqs;
      for (int b = 0; b < B; ++b) {
        auto s = e.NewSequence(nullptr);
        OK(s.status());
        OK(cache.Reserve(*s, ctx, st).status());  // the context: random KV already in the pool
        seqs.push_back(*s);
      }
      std::unique_ptr<fp::Verifier> ver;
      std::unique_ptr<FullRehash> full;
      std::unique_ptr<IncrementalHost> inc;
      if (mode == "async") {
        fp::VerifierConfig vc;
        auto v = fp::Verifier::Create(&cache, nullptr, vc, fp::VerifierBackendKind::kCuda);
        OK(v.status());
        ver = std::move(v).value();
        for (SeqId s : seqs) OK(ver->Track(s));
      } else if (mode == "sync-full") {
        full = std::make_unique<FullRehash>(st, &pool);
      } else if (mode == "sync") {
        inc = std::make_unique<IncrementalHost>(st, &pool, size_t(B), L);
      } else if (mode != "off") {
        std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 2;
      }
      std::vector<int32_t> toks(static_cast<size_t>(B), 1), next(static_cast<size_t>(B));
      int32_t* d_next = nullptr;
      CK(cudaMalloc(&d_next, sizeof(int32_t) * size_t(B)));
      const int timed = mode == "sync-full" ? full_steps : steps;
      std::vector<double> times, host_times;  // host_times: wall time inside DecodeStep (prep + graph launch)
      int pages_sync = 0;
      double kv_read = 0;
      for (int k = 0; k < warmup + timed; ++k) {
        const int32_t len0 = *e.Length(seqs[0]);
        CK(cudaEventRecord(e0, st));
        const auto h0 = std::chrono::steady_clock::now();
        OK(e.DecodeStep(seqs, toks));
        const double host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - h0).count();
        if (ver) OK(ver->OnStepWritten(seqs, st));
        OK(fp::cuda_engine::LaunchArgmax(e.device_logits(), B, cfg.vocab_size, d_next, st));
        CK(cudaMemcpyAsync(next.data(), d_next, sizeof(int32_t) * size_t(B), cudaMemcpyDeviceToHost, st));
        CK(cudaStreamSynchronize(st));
        if (full) full->Run(WholeKv(cache, seqs));
        if (inc) pages_sync += k >= warmup ? inc->Run(cache, seqs) : (inc->Run(cache, seqs), 0);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        if (ver && k == 0) OK(ver->Drain());  // the first step commits the whole context: not a steady state
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (k >= warmup) {
          times.push_back(ms * 1e3);
          host_times.push_back(host_us);
          kv_read += double(B) * (len0 + 1) * token_kv_bytes;
        }
        toks = next;
      }
      std::string notes;
      if (ver) {
        OK(ver->Drain());
        const auto vs = ver->stats();
        notes = "verifier: " + std::to_string(vs.pages_hashed) + " pages hashed, " +
                std::to_string(vs.deferred_batches) + " deferred batches";
        for (SeqId s : seqs) OK(ver->Forget(s));
      }
      if (inc) {
        notes = std::to_string(pages_sync) + " pages hashed on host in timed steps (checksum " +
                std::to_string(inc->checksum()) + ")";
      }
      if (full) {
        notes = "whole KV copied + re-hashed per step on " + std::to_string(pool.size()) + " threads (checksum " +
                std::to_string(full->checksum()) + ")";
      }
      {
        const auto stats1 = e.decode_stats();
        notes += (notes.empty() ? "" : "; ") + std::string(graphs ? "graph" : "eager") +
                 (tu.batch_invariant ? std::string("+batch-invariant(") +
                                           (has("skinny") ? "skinny GEMM" : "cuBLAS on 64-row blocks") + ", split " +
                                           std::to_string(split > 0 ? split : 512) + ")"
                                     : std::string(gemv ? "+gemv<=1" : "") +
                                           (tu.skinny_max_batch ? "+skinny<=64" : "") + "+cublas") +
                 (tu.pdl ? (tu.attention_pdl ? "+pdl" : "+pdl(not attention)") : "") +
                 (tu.fused_merge ? "+fused-merge" : "+merge-kernel") +
                 (B == 1 && gemv && !tu.batch_invariant
                      ? std::string(tu.fused_qkv == fp::CudaEngineOptions::FusedQkv::kOn    ? "+fused-qkv"
                                    : tu.fused_qkv == fp::CudaEngineOptions::FusedQkv::kOff ? "+separate-norm-rope"
                                                                                            : "+fused-qkv-auto")
                      : "") +
                 (split == 0 ? "+fixed-split" : split > 0 ? "+split-" + std::to_string(split) : "+split-per-step") +
                 ", " +
                 std::to_string(stats1.graph_captures - stats0.graph_captures) + " captures";
      }
      const Stats sm = Summarise(times);
      const double host_median_us = fp::bench::Median(host_times);
      notes += "; host " + std::to_string(static_cast<int>(host_median_us)) + " us in DecodeStep";
      const double bytes = double(e.weight_bytes()) + kv_read / double(timed);
      const double floor_us = bytes / (copy_tbps * 1e12) * 1e6;
      const double tok_s = B / (sm.mean_us * 1e-6);
      std::printf("%-18s %4d %10.0f %10.0f %10.1f %10.2f %8.3f %s\n", mode_spec.c_str(), B, sm.mean_us, sm.median_us, tok_s,
                  1e6 / sm.mean_us, floor_us / sm.mean_us, notes.c_str());
      std::fflush(stdout);
      rows.push_back({{"name", "decode-" + mode_spec},
                      {"params",
                       {{"B", B}, {"ctx", ctx}, {"verify", mode}, {"steps", timed}, {"warmup", warmup},
                        {"median_us", sm.median_us}, {"p90_us", sm.p90_us}, {"floor_us", floor_us},
                        {"host_decode_step_median_us", host_median_us},
                        {"bytes_per_step", bytes}, {"kv", "random bf16 (not prefilled)"}, {"graphs", graphs},
                        {"gemv_max_batch", gemv}, {"skinny_max_batch", tu.skinny_max_batch}, {"pdl", tu.pdl},
                        {"batch_invariant", tu.batch_invariant},
                        {"split_rule", split == 0 ? "fixed default" : "per step"},
                        {"notes", notes}}},
                      {"time_us", sm.mean_us},
                      {"rate", tok_s},
                      {"unit", "tok/s"},
                      {"ratio_to_floor", floor_us / sm.mean_us},
                      {"peers", nlohmann::json::object()}});
      ver.reset();
      CK(cudaFree(d_next));
      for (SeqId s : seqs) OK(e.FreeSequence(s));
      OK(e.SetDecodeTuning(fp::CudaLlama::DecodeTuning{}));
    }
  }
  const std::string date = fp::bench::TodayUtc();
  nlohmann::json j = {{"device", prop.name},
                      {"date", date},
                      {"commit", commit},
                      {"floors", {{"copy_tbps", copy_tbps}, {"gemm_tflops", gemm_tflops}}},
                      {"notes",
                       "bench/cuda/bench_e2e.cu; " + model_desc + "; decode floor = (weight matrices + KV read) / d2d copy "
                           "rate; prefill floor = matrix FLOPs / bf16 GEMM rate; time_us is the MEAN step time"},
                      {"rows", rows}};
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  if (!md_path.empty()) {
    std::ofstream md(md_path);
    md << "# End-to-end decode, " << prop.name << " (" << date << ")\n\n"
       << model_desc << ", context " << ctx
       << " (random KV, not prefilled), page 16. d2d copy " << copy_tbps << " TB/s, bf16 GEMM " << gemm_tflops
       << " TFLOP/s. Produced by `bench/cuda/bench_e2e.cu`.\n\n"
       << "| row | B | verify | mean step (us) | median (us) | tok/s | steps/s | floor (us) | ratio to floor |\n"
       << "|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows) {
      const auto& p = r["params"];
      if (r["name"] == "prefill") {
        md << "| prefill " << p["tokens"].get<int>() << " tok | 1 | - | " << r["time_us"].get<double>() << " | - | "
           << r["rate"].get<double>() << " | - | - | " << r["ratio_to_floor"].get<double>() << " (of GEMM rate) |\n";
        continue;
      }
      md << "| " << r["name"].get<std::string>() << " | " << p["B"].get<int>() << " | " << p["verify"].get<std::string>()
         << " | " << r["time_us"].get<double>() << " | " << p["median_us"].get<double>() << " | "
         << r["rate"].get<double>() << " | " << 1e6 / r["time_us"].get<double>() << " | "
         << p["floor_us"].get<double>() << " | " << r["ratio_to_floor"].get<double>() << " |\n";
    }
  }
  return 0;
}
