// `fieldprint demo`: an end-to-end smoke run of the attention layer on this machine. Builds a random paged KV
// cache (pages handed out from a shuffled pool, odd per-sequence lengths, unused pool pages and table slots
// filled with garbage) plus a dense anchor, runs AttentionCpu, checks o and lse against AttentionOracleF64 (the
// one fp64 definition of the semantics, shared with the tests) and prints error, time and effective bandwidth.
// The tolerance is about the dtype's output rounding (inputs are identical for both sides), so a wrong page,
// mask or bias fails loudly.
#include "demo_command.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fieldprint/attention.h"
#include "fieldprint/attention_oracle.h"
#include "fieldprint/dtype.h"

namespace fp::cli {
namespace {

struct DemoOptions {
  int seqs = 8;
  int ctx = 2001;  // paged tokens of the longest sequence; others are shorter by odd amounts
  int queries = 1; // query rows per sequence (1 = decode; more = chunked prefill, causal)
  int anchor = 129;
  int page = 16;
  int hq = 9;  // SmolLM2-135M's attention shape by default
  int hkv = 3;
  int dim = 64;
  uint64_t seed = 1;
  int threads = 0;
  std::string dtype = "bf16";
  float gamma = 0.5f;
};

struct DemoBuffers {
  std::vector<uint8_t> q, k_pool, v_pool, anchor_k, anchor_v, o;  // raw storage in the chosen dtype
  std::vector<float> lse, gamma;
  std::vector<int32_t> q_indptr, kv_lens, block_table;
};

void FillNormal(std::vector<uint8_t>& buf, DType t, int64_t n, std::mt19937_64& rng) {
  buf.assign(static_cast<size_t>(n) * DTypeSize(t), 0);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t i = 0; i < n; ++i) StoreFromFloat(buf.data(), t, static_cast<size_t>(i), nd(rng));
}

Result<DType> ParseDType(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "f16") return DType::kF16;
  if (s == "bf16") return DType::kBF16;
  return InvalidArgument("--dtype must be f32, f16 or bf16, got '" + s + "'");
}

// Relative L2 error of o (dtype t) against the oracle and max |lse - oracle| / (1 + |oracle|); -inf rows must
// match exactly (else the lse error is reported as +inf).
void Errors(const AttentionParams& p, const AttentionOracleOut& want, double* o_err, double* lse_err) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.o.size(); ++i) {
    const double g = LoadAsFloat(p.o.data, p.o.dtype, i);
    num += (g - want.o[i]) * (g - want.o[i]);
    den += want.o[i] * want.o[i];
  }
  *o_err = std::isfinite(num) ? (den > 0 ? std::sqrt(num / den) : std::sqrt(num)) : INFINITY;
  *lse_err = 0;
  for (size_t r = 0; r < want.lse.size(); ++r) {
    const double w = want.lse[r], g = p.lse[r];
    const double e = std::isinf(w) ? (g == w ? 0.0 : INFINITY) : std::fabs(g - w) / (1 + std::fabs(w));
    *lse_err = std::max(*lse_err, std::isnan(e) ? INFINITY : e);
  }
}

int RunDemo(const DemoOptions& opt) {
  auto dt_or = ParseDType(opt.dtype);
  if (!dt_or.ok()) {
    std::fprintf(stderr, "fieldprint demo: %s\n", dt_or.status().ToString().c_str());
    return 2;
  }
  const DType dt = *dt_or;
  if (opt.seqs < 1 || opt.ctx < 0 || opt.anchor < 0 || opt.page < 1 || opt.hkv < 1 || opt.hq < 1 || opt.dim < 1 ||
      opt.queries < 0 || opt.queries > opt.ctx) {
    std::fprintf(stderr, "fieldprint demo: need seqs >= 1, ctx >= queries >= 0, anchor >= 0, page/hq/hkv/dim >= 1\n");
    return 2;
  }
  std::mt19937_64 rng(opt.seed);
  const int S = opt.seqs, P = opt.page, Hq = opt.hq, Hkv = opt.hkv, d = opt.dim, A = opt.anchor;
  DemoBuffers b;
  // Odd, staggered lengths so most sequences end mid-page; never below the query count (causal).
  int64_t max_pages = 1, used_pages = 0, T = 0, kv_total = 0;
  b.q_indptr.push_back(0);
  for (int s = 0; s < S; ++s) {
    int kv = std::max(opt.queries, opt.ctx - 37 * s);
    if (kv > opt.queries && kv % 2 == 0) --kv;
    b.kv_lens.push_back(kv);
    kv_total += kv;
    const int64_t pages = (kv + P - 1) / P;
    max_pages = std::max(max_pages, pages);
    used_pages += pages;
    T += opt.queries;
    b.q_indptr.push_back(static_cast<int32_t>(T));
  }
  const int64_t num_blocks = used_pages + 7;  // spare pages hold garbage nobody should read
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
  for (int64_t i = 0; i < num_blocks; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::shuffle(ids.begin(), ids.end(), rng);
  b.block_table.assign(static_cast<size_t>(S * max_pages), -1);  // unused slots: invalid ids on purpose
  size_t next = 0;
  for (int s = 0; s < S; ++s) {
    for (int64_t i = 0; i < (b.kv_lens[static_cast<size_t>(s)] + P - 1) / P; ++i) {
      b.block_table[static_cast<size_t>(s * max_pages + i)] = ids[next++];
    }
  }
  FillNormal(b.q, dt, T * Hq * d, rng);
  FillNormal(b.k_pool, dt, num_blocks * P * Hkv * d, rng);
  FillNormal(b.v_pool, dt, num_blocks * P * Hkv * d, rng);
  FillNormal(b.anchor_k, dt, int64_t{A} * Hkv * d, rng);
  FillNormal(b.anchor_v, dt, int64_t{A} * Hkv * d, rng);
  b.o.assign(static_cast<size_t>(T * Hq * d) * DTypeSize(dt), 0xFF);  // NaN poison
  b.lse.assign(static_cast<size_t>(T * Hq), std::numeric_limits<float>::quiet_NaN());
  for (int h = 0; h < Hq; ++h) b.gamma.push_back(opt.gamma * static_cast<float>(h % 3 - 1));

  AttentionParams p;
  p.q = MakeContiguous(b.q.data(), dt, {T, Hq, d});                                    // [T, Hq, d]
  p.k_pool = MakeContiguous(b.k_pool.data(), dt, {num_blocks, P, Hkv, d});              // [NB, P, Hkv, d]
  p.v_pool = MakeContiguous(b.v_pool.data(), dt, {num_blocks, P, Hkv, d});              // [NB, P, Hkv, d]
  p.anchor_k = MakeContiguous(b.anchor_k.data(), dt, {A, Hkv, d});                      // [A, Hkv, d]
  p.anchor_v = MakeContiguous(b.anchor_v.data(), dt, {A, Hkv, d});                      // [A, Hkv, d]
  p.o = MakeContiguous(b.o.data(), dt, {T, Hq, d});                                     // [T, Hq, d]
  p.lse = b.lse.data();                                                                 // [T, Hq]
  p.gamma = b.gamma.data();                                                             // [Hq]
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  p.causal = true;
  p.batch = {S, b.q_indptr.data(), b.kv_lens.data(), b.block_table.data(), static_cast<int32_t>(max_pages)};

  const Status st = AttentionCpu(p, opt.threads);
  if (!st.ok()) {
    std::fprintf(stderr, "fieldprint demo: AttentionCpu failed: %s\n", st.ToString().c_str());
    return 1;
  }
  auto want = AttentionOracleF64(p);
  if (!want.ok()) {
    std::fprintf(stderr, "fieldprint demo: oracle failed: %s\n", want.status().ToString().c_str());
    return 1;
  }
  double o_err = 0, lse_err = 0;
  Errors(p, *want, &o_err, &lse_err);

  // Timing: repeat until ~0.3 s or 50 runs, report the median.
  std::vector<double> ms;
  double total = 0;
  while (ms.size() < 50 && (ms.size() < 3 || total < 300.0)) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!AttentionCpu(p, opt.threads).ok()) return 1;
    const double e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ms.push_back(e);
    total += e;
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  // Bytes touched once per sequence: its paged K/V and the anchor K/V (each sequence reads the anchor), q and o.
  const double es = static_cast<double>(DTypeSize(dt));
  const double bytes = es * (2.0 * static_cast<double>(kv_total + int64_t{A} * S) * Hkv * d + 2.0 * T * Hq * d);

  const double o_tol = dt == DType::kF32 ? 1e-5 : (dt == DType::kF16 ? 1e-3 : 8e-3);
  const double lse_tol = 2e-5;
  const bool pass = o_err <= o_tol && lse_err <= lse_tol;
  const unsigned hw = std::thread::hardware_concurrency();
  std::printf("fieldprint demo: PagedFieldprintAttention CPU reference vs fp64 oracle\n");
  std::printf("  seqs %d x %d query rows, kv lens %d..%d (page %d, %lld of %lld pool pages used, shuffled)\n", S,
              opt.queries, b.kv_lens.back(), b.kv_lens.front(), P, static_cast<long long>(used_pages),
              static_cast<long long>(num_blocks));
  std::printf("  anchor %d (gamma +-%.2f), Hq %d, Hkv %d, d %d, %s, causal, threads %d\n", A, opt.gamma, Hq, Hkv, d,
              DTypeName(dt), opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, hw)));
  std::printf("  %-22s %-12s %s\n", "metric", "value", "note");
  std::printf("  %-22s %-12.3e tolerance %.0e\n", "o rel L2 error", o_err, o_tol);
  std::printf("  %-22s %-12.3e tolerance %.0e\n", "lse rel error (max)", lse_err, lse_tol);
  std::printf("  %-22s %-12.3f median of %zu runs (best %.3f)\n", "time (ms)", med, ms.size(), ms.front());
  std::printf("  %-22s %-12.2f %.1f MB of q, K, V, anchor, o per run\n", "effective GB/s", bytes / (med * 1e6),
              bytes / 1e6);
  std::printf("  %-22s %s\n", "result", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace

void RegisterDemoCommand(CLI::App& app) {
  auto opt = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand("demo", "run the CPU attention reference on a random paged cache + anchor and "
                                             "check it against the fp64 oracle");
  cmd->add_option("--seqs", opt->seqs, "number of sequences")->capture_default_str();
  cmd->add_option("--ctx", opt->ctx, "paged tokens of the longest sequence")->capture_default_str();
  cmd->add_option("--queries", opt->queries, "query rows per sequence (causal)")->capture_default_str();
  cmd->add_option("--anchor", opt->anchor, "anchor length (shared by every sequence)")->capture_default_str();
  cmd->add_option("--page", opt->page, "tokens per page")->capture_default_str();
  cmd->add_option("--hq", opt->hq, "query heads")->capture_default_str();
  cmd->add_option("--hkv", opt->hkv, "kv heads")->capture_default_str();
  cmd->add_option("--dim", opt->dim, "head dim")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "random seed")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "worker threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--dtype", opt->dtype, "f32 | f16 | bf16")->capture_default_str();
  cmd->add_option("--gamma", opt->gamma, "anchor log-bias magnitude")->capture_default_str();
  cmd->callback([opt] {
    const int rc = RunDemo(*opt);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace fp::cli
