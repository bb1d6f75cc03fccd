// attention_oracle.h — the fp64 oracle that DEFINES PagedFieldprintAttention's semantics, and a random case
// generator shared by the CPU and CUDA tests. Test-only: straightforward, slow, obviously right.
//
// Oracle: AttentionOracleF64 (src/attention/attention_oracle_cpu.cpp): for each query row, gather the visible
// keys (anchor first, then paged positions through the block table), every logit in fp64 (anchor logits +
// gamma[h]), subtract the max, exp, sum, weight V. Inputs are widened exactly (LoadAsFloat).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "fieldprint/attention.h"
#include "fieldprint/attention_oracle.h"
#include "fieldprint/dtype.h"

namespace fp::testing {

// The oracle itself lives in the library (fieldprint/attention_oracle.h) so the tests and `fieldprint demo` share
// one definition. A validation failure here is a bug in the test, so it throws (GoogleTest reports it).
using OracleOut = AttentionOracleOut;

// Requires ValidateAttention(p, p.batch) to pass; every pointer host-readable.
inline OracleOut AttentionOracle(const AttentionParams& p) {
  Result<AttentionOracleOut> r = AttentionOracleF64(p);
  if (!r.ok()) throw std::runtime_error("AttentionOracle: " + r.status().ToString());
  return std::move(r).value();
}

// A random, valid problem with owned host buffers. Pages are assigned from a shuffled pool so block tables are
// non-contiguous; unused pool pages hold random data too (a kernel that reads the wrong page gets caught).
struct CaseSpec {
  int num_seqs = 1;
  int page_size = 16;
  int num_kv_heads = 1;
  int group = 1;  // Hq = group * Hkv
  int head_dim = 64;
  int anchor_len = 0;
  bool causal = true;
  bool use_gamma = false;
  bool with_lse = true;
  DType dtype = DType::kF32;
  std::vector<int> kv_lens;  // [num_seqs]
  std::vector<int> q_lens;   // [num_seqs]; under causal q_lens[s] <= kv_lens[s]
  int spare_blocks = 3;      // extra pool pages not referenced by any table
};

struct Case {
  CaseSpec spec;
  std::vector<uint8_t> q, k_pool, v_pool, anchor_k, anchor_v, o;  // raw storage in spec.dtype
  std::vector<float> lse, gamma;
  std::vector<int32_t> q_indptr, kv_lens, block_table;
  AttentionParams params;  // views into the buffers above (host)
};

inline void FillRandom(std::vector<uint8_t>& buf, DType t, int64_t n, std::mt19937_64& rng, float amp) {
  buf.assign(static_cast<size_t>(n) * DTypeSize(t), 0);
  std::normal_distribution<float> nd(0.f, amp);
  for (int64_t i = 0; i < n; ++i) StoreFromFloat(buf.data(), t, static_cast<size_t>(i), nd(rng));
}

inline Case MakeCase(const CaseSpec& spec, uint64_t seed) {
  Case c;
  c.spec = spec;
  std::mt19937_64 rng(seed);
  const int S = spec.num_seqs, P = spec.page_size, Hkv = spec.num_kv_heads, d = spec.head_dim;
  const int Hq = Hkv * spec.group;
  int max_blocks = 1, total_blocks = spec.spare_blocks, T = 0;
  c.q_indptr.push_back(0);
  for (int s = 0; s < S; ++s) {
    const int nb = (spec.kv_lens[s] + P - 1) / P;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
    T += spec.q_lens[s];
    c.q_indptr.push_back(T);
    c.kv_lens.push_back(spec.kv_lens[s]);
  }
  total_blocks = std::max(total_blocks, 1);
  std::vector<int32_t> ids(static_cast<size_t>(total_blocks));
  for (int i = 0; i < total_blocks; ++i) ids[static_cast<size_t>(i)] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  // Unused table slots hold a poison id: a kernel that reads past ceil(kv_len / P) pages fails validation-free.
  c.block_table.assign(static_cast<size_t>(S * max_blocks), -7);
  size_t next = 0;
  for (int s = 0; s < S; ++s) {
    const int nb = (spec.kv_lens[s] + P - 1) / P;
    for (int i = 0; i < nb; ++i) c.block_table[static_cast<size_t>(s * max_blocks + i)] = ids[next++];
  }
  FillRandom(c.q, spec.dtype, int64_t{T} * Hq * d, rng, 1.0f);
  FillRandom(c.k_pool, spec.dtype, int64_t{total_blocks} * P * Hkv * d, rng, 1.0f);
  FillRandom(c.v_pool, spec.dtype, int64_t{total_blocks} * P * Hkv * d, rng, 1.0f);
  FillRandom(c.anchor_k, spec.dtype, int64_t{spec.anchor_len} * Hkv * d, rng, 1.0f);
  FillRandom(c.anchor_v, spec.dtype, int64_t{spec.anchor_len} * Hkv * d, rng, 1.0f);
  c.o.assign(static_cast<size_t>(T) * Hq * d * DTypeSize(spec.dtype), 0xFF);  // NaN in every dtype
  c.lse.assign(static_cast<size_t>(T) * Hq, std::numeric_limits<float>::quiet_NaN());
  if (spec.use_gamma) {
    std::uniform_real_distribution<float> gd(-2.f, 2.f);
    for (int h = 0; h < Hq; ++h) c.gamma.push_back(gd(rng));
  }
  auto& p = c.params;
  p.q = MakeContiguous(c.q.data(), spec.dtype, {T, Hq, d});
  p.k_pool = MakeContiguous(c.k_pool.data(), spec.dtype, {total_blocks, P, Hkv, d});
  p.v_pool = MakeContiguous(c.v_pool.data(), spec.dtype, {total_blocks, P, Hkv, d});
  p.anchor_k = MakeContiguous(c.anchor_k.data(), spec.dtype, {spec.anchor_len, Hkv, d});
  p.anchor_v = MakeContiguous(c.anchor_v.data(), spec.dtype, {spec.anchor_len, Hkv, d});
  p.o = MakeContiguous(c.o.data(), spec.dtype, {T, Hq, d});
  p.lse = spec.with_lse ? c.lse.data() : nullptr;
  p.gamma = spec.use_gamma ? c.gamma.data() : nullptr;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  p.causal = spec.causal;
  p.batch.num_seqs = S;
  p.batch.q_indptr = c.q_indptr.data();
  p.batch.kv_lens = c.kv_lens.data();
  p.batch.block_table = c.block_table.data();
  p.batch.max_blocks_per_seq = max_blocks;
  return c;
}

// Relative L2 error of `got` (in dtype t) against the oracle, over all elements; NaN anywhere returns +inf.
inline double RelativeError(const void* got, DType t, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = LoadAsFloat(got, t, i);
    if (std::isnan(g)) return std::numeric_limits<double>::infinity();
    num += (g - want[i]) * (g - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace fp::testing
