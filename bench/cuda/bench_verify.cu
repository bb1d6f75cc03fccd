// bench_verify.cu — what integrity costs a decode loop: ms/step under each verification mode.
//
// Simulated decode step (Llama-3-8B KV shape: 32 layers, 8 KV heads, d=128, bf16, page 16, Hq=32): reserve
// one slot per sequence, then per layer write the new token's K/V (KvStorage::Write) and run the real decode
// attention (AttentionDecodePlan, planned once at context `ctx`, so every step reads ctx tokens per sequence;
// if the plan cannot be built the step falls back to a memory-bound kernel reading the same KV bytes, and the
// rows say so). Modes:
//   off          no verification
//   async        Verifier (CUDA backend): commits at page fills hashed on the side stream, no audits
//   async+audit  the same plus audits of 1 committed page (2 MiB) per step (no anchor in this rig)
//   sync-inc     after each step: synchronize, copy the pages that filled this step to pinned host memory and
//                tree-hash them on the host (1 thread), before the next step is enqueued
//   sync-full    the paper's naive design: after each step copy ALL of the batch's KV to the host and
//                tree-hash it (host threads: 1 at B=1, all cores above; timed over few steps: it is slow)
// Each mode runs `steps` steps (sync-full: 2) after a warm-up, timed by the host clock around the whole loop
// with a stream synchronize at the end; the cache is truncated back to ctx between modes.
// Usage: bench_verify [--json PATH] [--md PATH] [--steps N] [--ctx N] [--batches 1,16,64] [--commit SHA]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fieldprint/attention_cuda.h"
#include "fieldprint/kv_cache.h"
#include "fieldprint/page_digest.h"
#include "fieldprint/verifier.h"

#include "bench_util.h"

namespace {

using namespace fp;
using Clock = std::chrono::steady_clock;


// Random bf16 in about [-2, 2] (never zeros, never NaN): hash of the index.
__global__ void FillRandomBf16(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32);
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    p[i] = static_cast<uint16_t>(0x3c00u + (x & 0x7fu) + ((x >> 8) & 1u) * 0x8000u);  // sign, 1..2 range
  }
}

// The fallback step kernel: reads every page of every sequence of one layer once (16-byte loads).
__global__ void ReadPages(const uint4* k, const uint4* v, const int32_t* table, int pages_per_seq,
                          size_t page_vecs, uint4* sink) {
  const int seq = blockIdx.y;
  uint4 acc{0, 0, 0, 0};
  for (int pg = blockIdx.x; pg < pages_per_seq; pg += gridDim.x) {
    const size_t base = static_cast<size_t>(table[seq * pages_per_seq + pg]) * page_vecs;
    for (size_t i = threadIdx.x; i < page_vecs; i += blockDim.x) {
      uint4 a = k[base + i], b = v[base + i];
      acc.x ^= a.x ^ b.x;
      acc.y ^= a.y ^ b.y;
    }
  }
  if (acc.x == 0x12345678u && acc.y == 0x9abcdef0u) sink[0] = acc;  // keeps the loads alive
}

struct Rig {
  KvLayout layout;
  int B = 0, ctx = 0;
  std::unique_ptr<KvCache> cache;
  std::vector<SeqId> seqs;
  cudaStream_t stream = nullptr;
  uint16_t* q = nullptr;   // [B, 32, 128]
  uint16_t* o = nullptr;   // [B, 32, 128]
  uint16_t* kv = nullptr;  // [2, B, 8, 128] the new token's K and V
  int32_t *d_indptr = nullptr, *d_lens = nullptr, *d_table = nullptr;
  KvBatch batch;
  std::unique_ptr<AttentionDecodePlan> plan;
  uint4* sink = nullptr;
  bool real_attention = false;
};

void Step(Rig& r) {
  std::vector<KvSlot> slots;
  for (SeqId s : r.seqs) {
    auto res = r.cache->Reserve(s, 1, r.stream);
    OK(res.status());
    slots.push_back(res->slots[0]);
  }
  const KvLayout& L = r.layout;
  for (int layer = 0; layer < L.num_layers; ++layer) {
    TensorView k = MakeContiguous(r.kv, DType::kBF16, {r.B, L.num_kv_heads, L.head_dim}, Device::kCuda);
    TensorView v = MakeContiguous(r.kv + static_cast<size_t>(r.B) * L.num_kv_heads * L.head_dim, DType::kBF16,
                                  {r.B, L.num_kv_heads, L.head_dim}, Device::kCuda);
    OK(r.cache->storage().Write(layer, slots, k, v, r.stream));
    if (r.real_attention) {
      AttentionParams p;
      p.q = MakeContiguous(r.q, DType::kBF16, {r.B, 32, L.head_dim}, Device::kCuda);
      p.o = MakeContiguous(r.o, DType::kBF16, {r.B, 32, L.head_dim}, Device::kCuda);
      p.scale = 1.f / std::sqrt(static_cast<float>(L.head_dim));
      OK(r.cache->BindLayer(layer, r.batch, &p));
      p.batch = {r.B, r.d_indptr, r.d_lens, r.d_table, r.batch.max_blocks_per_seq};
      OK(r.plan->Run(p, r.stream));
    } else {
      auto kp = r.cache->storage().LayerK(layer).value(), vp = r.cache->storage().LayerV(layer).value();
      ReadPages<<<dim3(64, r.B), 256, 0, r.stream>>>(static_cast<const uint4*>(kp.data),
                                                     static_cast<const uint4*>(vp.data), r.d_table,
                                                     r.batch.max_blocks_per_seq, L.page_bytes() / 16, r.sink);
      CK(cudaGetLastError());
    }
  }
}

// sync-inc: pages that filled this step, copied and hashed on the host before the next step.
void SyncIncremental(Rig& r, uint8_t* pinned) {
  CK(cudaStreamSynchronize(r.stream));
  const KvLayout& L = r.layout;
  for (SeqId s : r.seqs) {
    const int32_t len = r.cache->meta().Length(s).value();
    if (len % L.page_size != 0) continue;
    const int32_t block = r.cache->meta().BlockTable(s).value()[len / L.page_size - 1];
    auto segs = PageLayerSegments(r.cache->storage(), block, L.page_size).value();
    std::vector<ByteSegment> host;
    size_t off = 0;
    for (auto& sg : segs) {
      CK(cudaMemcpyAsync(pinned + off, sg.data, sg.size, cudaMemcpyDeviceToHost, r.stream));
      host.push_back({pinned + off, sg.size});
      off += sg.size;
    }
    CK(cudaStreamSynchronize(r.stream));
    auto d = LayerDigestsOfSegmentsCpu(host, kDefaultChunkBytes);
    OK(d.status());
  }
}

// sync-full: every page of every sequence, every layer, K and V, copied and hashed.
void SyncFull(Rig& r, uint8_t* pinned, size_t pinned_bytes, int threads) {
  CK(cudaStreamSynchronize(r.stream));
  const KvLayout& L = r.layout;
  const size_t page = L.page_bytes();
  for (SeqId s : r.seqs) {
    auto table = r.cache->meta().BlockTable(s).value();
    const int32_t len = r.cache->meta().Length(s).value();
    for (int layer = 0; layer < L.num_layers; ++layer) {
      for (int part = 0; part < 2; ++part) {
        auto pool =
            part ? r.cache->storage().LayerV(layer).value() : r.cache->storage().LayerK(layer).value();
        size_t off = 0;
        std::vector<ByteSegment> host;
        for (size_t pg = 0; pg < table.size(); ++pg) {
          const size_t bytes = std::min<size_t>(page, (len - pg * L.page_size) * L.token_bytes());
          if (off + bytes > pinned_bytes) std::exit(2);
          CK(cudaMemcpyAsync(pinned + off, static_cast<const uint8_t*>(pool.data) + table[pg] * page, bytes,
                             cudaMemcpyDeviceToHost, r.stream));
          host.push_back({pinned + off, bytes});
          off += bytes;
        }
        CK(cudaStreamSynchronize(r.stream));
        auto d = TreeHashCpu(host, kDefaultChunkBytes, threads);
        OK(d.status());
      }
    }
  }
}

double CopyFloorTbps() {
  const size_t n = size_t{1} << 31;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms);
  }
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * n / (best * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path, md_path, commit = "unknown";
  int steps = 64, ctx = 4096;
  std::vector<int> batches{1, 16, 64};
  for (int i = 1; i < argc; ++i) {
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (!std::strcmp(argv[i], "--json"))
      json_path = next();
    else if (!std::strcmp(argv[i], "--md"))
      md_path = next();
    else if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(next().c_str());
    else if (!std::strcmp(argv[i], "--ctx"))
      ctx = std::atoi(next().c_str());
    else if (!std::strcmp(argv[i], "--commit"))
      commit = next();
    else if (!std::strcmp(argv[i], "--batches")) {
      batches.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        batches.push_back(std::atoi(s.c_str() + p));
        p = s.find(',', p);
        p = p == std::string::npos ? s.size() : p + 1;
      }
    }
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const double copy_tbps = CopyFloorTbps();
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::printf("device %s, d2d copy %.2f TB/s, host threads %d, ctx %d, steps %d\n", prop.name, copy_tbps, hw,
              ctx, steps);
  nlohmann::json rows = nlohmann::json::array();
  std::string md =
      "| B | mode | step kind | ms/step | overhead vs off | tok/s | KV-read floor ms "
      "|\n|---|---|---|---|---|---|---|\n";

  for (int B : batches) {
    Rig r;
    r.B = B;
    r.ctx = ctx;
    r.layout = {32, 0, 16, 8, 128, DType::kBF16};
    const int extra_pages = (steps * 4 + 64) / 16 + 2;
    r.layout.num_blocks = B * (ctx / 16 + extra_pages);
    auto c = KvCache::Create(r.layout, Device::kCuda);
    OK(c.status());
    r.cache = std::make_unique<KvCache>(std::move(*c));
    CK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
    for (int l = 0; l < 32; ++l) {
      for (auto t : {r.cache->storage().LayerK(l).value(), r.cache->storage().LayerV(l).value()}) {
        FillRandomBf16<<<1024, 256, 0, r.stream>>>(static_cast<uint16_t*>(t.data), t.numel(), 77u * l + 1);
      }
    }
    for (int b = 0; b < B; ++b) {
      r.seqs.push_back(r.cache->meta().CreateSequence());
      OK(r.cache->Reserve(r.seqs.back(), ctx, r.stream).status());
    }
    const size_t qn = static_cast<size_t>(B) * 32 * 128;
    CK(cudaMalloc(&r.q, qn * 2));
    CK(cudaMalloc(&r.o, qn * 2));
    CK(cudaMalloc(&r.kv, static_cast<size_t>(2) * B * 8 * 128 * 2));
    CK(cudaMalloc(&r.sink, 64));
    FillRandomBf16<<<64, 256, 0, r.stream>>>(r.q, qn, 5);
    FillRandomBf16<<<64, 256, 0, r.stream>>>(r.kv, static_cast<size_t>(2) * B * 8 * 128, 9);
    std::vector<int32_t> qlens(B, 1);
    r.batch = r.cache->meta().BuildBatch(r.seqs, qlens).value();
    CK(cudaMalloc(&r.d_indptr, r.batch.q_indptr.size() * 4));
    CK(cudaMalloc(&r.d_lens, r.batch.kv_lens.size() * 4));
    CK(cudaMalloc(&r.d_table, r.batch.block_table.size() * 4));
    CK(cudaMemcpy(r.d_indptr, r.batch.q_indptr.data(), r.batch.q_indptr.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(r.d_lens, r.batch.kv_lens.data(), r.batch.kv_lens.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(r.d_table, r.batch.block_table.data(), r.batch.block_table.size() * 4,
                  cudaMemcpyHostToDevice));
    {
      AttentionParams p;
      p.q = MakeContiguous(r.q, DType::kBF16, {B, 32, 128}, Device::kCuda);
      p.o = MakeContiguous(r.o, DType::kBF16, {B, 32, 128}, Device::kCuda);
      p.scale = 1.f / std::sqrt(128.f);
      OK(r.cache->BindLayer(0, r.batch, &p));
      p.batch = {B, r.d_indptr, r.d_lens, r.d_table, r.batch.max_blocks_per_seq};
      auto plan = AttentionDecodePlan::Create(p, r.batch.view(), {}, r.stream);
      if (plan.ok()) {
        r.plan = std::make_unique<AttentionDecodePlan>(std::move(*plan));
        r.real_attention = true;
      } else {
        std::printf("decode plan unavailable (%s): memory-bound step kernel\n",
                    plan.status().ToString().c_str());
      }
    }
    CK(cudaStreamSynchronize(r.stream));
    const char* kind = r.real_attention ? "decode-attention" : "membound-read";
    // Pinned staging: sync-full needs one layer-part of the whole batch; sync-inc one page.
    const size_t full_bytes = static_cast<size_t>(B) * (ctx + steps * 4 + 64) * r.layout.token_bytes();
    uint8_t* pinned = nullptr;
    CK(cudaHostAlloc(reinterpret_cast<void**>(&pinned), full_bytes, cudaHostAllocDefault));

    auto reset = [&] {
      CK(cudaStreamSynchronize(r.stream));
      for (SeqId s : r.seqs) OK(r.cache->meta().Truncate(s, ctx));
    };
    auto run_mode = [&](const std::string& mode) -> double {
      std::unique_ptr<Verifier> ver;
      if (mode.rfind("async", 0) == 0) {
        VerifierConfig cfg;
        cfg.audit_bytes_per_step = mode == "async+audit" ? r.layout.page_bytes() * 2 * 32 : 0;  // 2 MiB
        auto v = Verifier::Create(r.cache.get(), nullptr, cfg, VerifierBackendKind::kCuda);
        OK(v.status());
        ver = std::move(*v);
        for (SeqId s : r.seqs) OK(ver->Track(s));
        OK(ver->OnStepWritten(r.seqs, r.stream));  // commits the ctx-token prefix: not timed
        OK(ver->Drain());
      }
      const int n = mode == "sync-full" ? 2 : steps;
      const int threads = B == 1 ? 1 : hw;
      auto one = [&] {
        Step(r);
        if (ver) OK(ver->OnStepWritten(r.seqs, r.stream));
        if (mode == "sync-inc") SyncIncremental(r, pinned);
        if (mode == "sync-full") SyncFull(r, pinned, full_bytes, threads);
      };
      for (int i = 0; i < (mode == "sync-full" ? 1 : 8); ++i) one();  // warm-up
      CK(cudaStreamSynchronize(r.stream));
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) one();
      CK(cudaStreamSynchronize(r.stream));
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / n;
      if (ver) {
        OK(ver->Drain());
        const auto st = ver->stats();
        if (!ver->TakeEvents().empty()) std::printf("UNEXPECTED corruption event\n");
        std::printf("  %s: commits %llu pages %llu audited %llu deferred %llu\n", mode.c_str(),
                    static_cast<unsigned long long>(st.commits),
                    static_cast<unsigned long long>(st.pages_hashed),
                    static_cast<unsigned long long>(st.pages_audited),
                    static_cast<unsigned long long>(st.deferred_batches));
        for (SeqId s : r.seqs) OK(ver->Forget(s));
      }
      reset();
      return ms;
    };
    std::vector<std::pair<std::string, double>> res;
    for (std::string m : {"off", "async", "async+audit", "sync-inc", "off", "async", "sync-full"}) {
      const double ms = run_mode(m);
      std::printf("B=%d ctx=%d %-12s %10.3f ms/step\n", B, ctx, m.c_str(), ms);
      res.push_back({m, ms});
    }
    // Off and async were each run twice (spread = noise); report the medians of the pair (= mean of 2).
    auto avg = [&](const std::string& m) {
      double s = 0;
      int k = 0;
      for (auto& [n, v] : res) {
        if (n == m) s += v, ++k;
      }
      return s / k;
    };
    const double off = avg("off");
    const double kv_bytes = static_cast<double>(B) * ctx * r.layout.token_bytes() * 2 * 32;
    // Floor: the step's KV bytes read once at the d2d copy rate (read + write bytes per second); a read-only
    // stream can beat it slightly, so ratio_to_floor = floor / time may exceed 1.
    const double floor_ms = kv_bytes / (copy_tbps * 1e12) * 1e3;
    for (std::string m : {"off", "async", "async+audit", "sync-inc", "sync-full"}) {
      const double ms = avg(m);
      double off_a = 0, off_b = 0;
      int k = 0;
      for (auto& [n, v] : res) {
        if (n == "off") (k++ ? off_b : off_a) = v;
      }
      rows.push_back({{"name", "decode-step/" + m},
                      {"params",
                       {{"B", B},
                        {"ctx", ctx},
                        {"layers", 32},
                        {"kv_heads", 8},
                        {"head_dim", 128},
                        {"page", 16},
                        {"dtype", "bf16"},
                        {"step_kind", kind},
                        {"mode", m},
                        {"steps_timed", m == "sync-full" ? 2 : steps},
                        {"host_hash_threads", m == "sync-full" ? (B == 1 ? 1 : hw) : 1}}},
                      {"time_us", ms * 1e3},
                      {"rate", B / (ms * 1e-3)},
                      {"unit", "tok/s"},
                      {"ratio_to_floor", floor_ms / ms},
                      {"overhead_vs_off", ms / off - 1.0},
                      {"peers", {{"off", off * 1e3}, {"off_run1", off_a * 1e3}, {"off_run2", off_b * 1e3}}}});
      char line[256];
      std::snprintf(line, sizeof line, "| %d | %s | %s | %.3f | %+.2f%% | %.1f | %.3f |\n", B, m.c_str(),
                    kind, ms, (ms / off - 1.0) * 100, B / (ms * 1e-3), floor_ms);
      md += line;
    }
    CK(cudaFreeHost(pinned));
    cudaFree(r.q);
    cudaFree(r.o);
    cudaFree(r.kv);
    cudaFree(r.sink);
    cudaFree(r.d_indptr);
    cudaFree(r.d_lens);
    cudaFree(r.d_table);
    r.plan.reset();
    r.cache.reset();
    cudaStreamDestroy(r.stream);
  }
  std::printf("\n%s", md.c_str());
  if (!json_path.empty()) {
    nlohmann::json j = {{"device", prop.name},
                        {"date", fp::bench::TodayUtc()},
                        {"commit", commit},
                        {"floors", {{"copy_tbps", copy_tbps}, {"gemm_tflops", nullptr}}},
                        {"rows", rows}};
    if (FILE* f = std::fopen(json_path.c_str(), "w")) {
      std::fputs(j.dump(2).c_str(), f);
      std::fclose(f);
    }
  }
  if (!md_path.empty()) {
    if (FILE* f = std::fopen(md_path.c_str(), "w")) {
      std::fprintf(f, "# verify overhead — %s, %s, ctx %d, d2d copy %.2f TB/s\n\n%s", prop.name,
                   commit.c_str(), ctx, copy_tbps, md.c_str());
      std::fclose(f);
    }
  }
  return 0;
}
