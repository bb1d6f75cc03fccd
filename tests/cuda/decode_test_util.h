// decode_test_util.h — helpers of the CUDA decode tests: device copies of a testing::Case, a random decode-shaped
// CaseSpec, and the "straightforward low-precision" baseline whose error bounds the kernel's (flash-attention's
// bar: logits, probabilities and output each rounded to the dtype, fp32 sums).
// defines: HaveGpu, DecodeDeviceCase, UploadCase, RandomDecodeSpec, NaiveLowPrecisionError, DownloadBytes
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "attention_oracle.h"
#include "core/cuda_check.h"
#include "fieldprint/attention.h"
#include "cuda_test_util.h"

namespace fp::testing {

inline DeviceBuffer UploadBytes(const void* src, size_t bytes) {
  auto r = DeviceBuffer::Allocate(std::max<size_t>(bytes, 16));
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    std::abort();
  }
  DeviceBuffer b = std::move(r).value();
  if (bytes) CUDA_CHECK(cudaMemcpy(b.get(), src, bytes, cudaMemcpyHostToDevice));
  return b;
}

template <typename T>
std::vector<T> DownloadBytes(const void* src, size_t count) {
  std::vector<T> out(count);
  if (count) CUDA_CHECK(cudaMemcpy(out.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

inline TensorView OnDevice(TensorView t, void* data) {
  t.data = data;
  t.device = Device::kCuda;
  return t;
}

// Device copies of a Case; `p` points at them, `host_batch` at the Case's host arrays. o is poisoned with 0xFF
// bytes (NaN in bf16/f16) and lse with NaN, so an unwritten element fails the comparison.
struct DecodeDeviceCase {
  DeviceBuffer q, k, v, ak, av, o, lse, gamma, indptr, kv_lens, table;
  AttentionParams p;
  AttentionBatch host_batch;
  size_t o_bytes = 0, lse_count = 0;

  void Poison() {
    CUDA_CHECK(cudaMemset(o.get(), 0xFF, o_bytes));
    CUDA_CHECK(cudaMemset(lse.get(), 0xFF, lse_count * 4));
  }
};

inline DecodeDeviceCase UploadCase(const Case& c) {
  DecodeDeviceCase d;
  const AttentionParams& h = c.params;
  d.q = UploadBytes(c.q.data(), c.q.size());
  d.k = UploadBytes(c.k_pool.data(), c.k_pool.size());
  d.v = UploadBytes(c.v_pool.data(), c.v_pool.size());
  d.ak = UploadBytes(c.anchor_k.data(), c.anchor_k.size());
  d.av = UploadBytes(c.anchor_v.data(), c.anchor_v.size());
  d.o_bytes = c.o.size();
  d.lse_count = c.lse.size();
  d.o = std::move(DeviceBuffer::Allocate(std::max<size_t>(d.o_bytes, 16)).value());
  d.lse = std::move(DeviceBuffer::Allocate(std::max<size_t>(d.lse_count * 4, 16)).value());
  d.gamma = UploadBytes(c.gamma.data(), c.gamma.size() * 4);
  d.indptr = UploadBytes(c.q_indptr.data(), c.q_indptr.size() * 4);
  d.kv_lens = UploadBytes(c.kv_lens.data(), c.kv_lens.size() * 4);
  d.table = UploadBytes(c.block_table.data(), c.block_table.size() * 4);
  d.p = h;
  d.p.q = OnDevice(h.q, d.q.get());
  d.p.k_pool = OnDevice(h.k_pool, d.k.get());
  d.p.v_pool = OnDevice(h.v_pool, d.v.get());
  d.p.anchor_k = OnDevice(h.anchor_k, d.ak.get());
  d.p.anchor_v = OnDevice(h.anchor_v, d.av.get());
  d.p.o = OnDevice(h.o, d.o.get());
  d.p.lse = h.lse ? static_cast<float*>(d.lse.get()) : nullptr;
  d.p.gamma = h.gamma ? static_cast<const float*>(d.gamma.get()) : nullptr;
  d.p.batch.q_indptr = static_cast<const int32_t*>(d.indptr.get());
  d.p.batch.kv_lens = static_cast<const int32_t*>(d.kv_lens.get());
  d.p.batch.block_table = static_cast<const int32_t*>(d.table.get());
  d.host_batch = h.batch;
  d.Poison();
  return d;
}

// A random decode / small multi-query problem: odd lengths, lengths 0 and 1, page sizes 1..256, anchors 0/1/odd,
// gamma on/off, groups 1/2/3/4/8, 1..8 queries per sequence, d 64/128, bf16/f16.
inline CaseSpec RandomDecodeSpec(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  CaseSpec s;
  s.dtype = pick(0, 1) ? DType::kBF16 : DType::kF16;
  s.head_dim = pick(0, 1) ? 64 : 128;
  const int groups[] = {1, 2, 3, 4, 8, 3, 4};
  s.group = groups[pick(0, 6)];
  s.num_kv_heads = pick(1, 3);
  s.num_seqs = pick(1, 4);
  const int r = pick(0, 9);
  s.page_size = r < 3 ? pick(1, 4) : r < 7 ? pick(5, 64) : pick(65, 256);
  const int a = pick(0, 5);
  s.anchor_len = a == 0 ? 0 : a == 1 ? 1 : a == 2 ? 2 * pick(0, 40) + 1 : pick(2, 300);
  s.causal = pick(0, 4) != 0;
  s.use_gamma = pick(0, 1) != 0;
  s.with_lse = pick(0, 5) != 0;
  for (int i = 0; i < s.num_seqs; ++i) {
    const int k = pick(0, 9);
    int len = k == 0 ? 0 : k == 1 ? 1 : k < 7 ? pick(2, 200) : pick(201, 1300);
    int nq = pick(1, 8);
    if (s.causal) nq = std::min(nq, len);
    s.kv_lens.push_back(len);
    s.q_lens.push_back(nq);
  }
  s.spare_blocks = pick(0, 4);
  return s;
}

inline float RoundTo(DType t, float x) {
  uint8_t buf[4];
  StoreFromFloat(buf, t, 0, x);
  return LoadAsFloat(buf, t, 0);
}

// Relative L2 error (vs the oracle) of the straightforward low-precision computation of the same attention.
inline double NaiveLowPrecisionError(const Case& c, const OracleOut& ref) {
  const AttentionParams& p = c.params;
  const DType t = p.q.dtype;
  const int64_t Hq = p.num_q_heads(), d = p.head_dim(), Hkv = p.num_kv_heads(), G = Hq / Hkv;
  const int64_t P = p.page_size(), A = p.anchor_len();
  std::vector<uint8_t> out(static_cast<size_t>(p.num_tokens() * Hq * d) * DTypeSize(t), 0);
  std::vector<float> s, acc(static_cast<size_t>(d));
  std::vector<std::pair<const void*, size_t>> vrows;
  const auto& b = p.batch;
  for (int32_t q_seq = 0; q_seq < b.num_seqs; ++q_seq) {
    const int32_t q0 = b.q_indptr[q_seq], nq = b.q_indptr[q_seq + 1] - q0, L = b.kv_lens[q_seq];
    for (int32_t j = 0; j < nq; ++j) {
      const int64_t tok = q0 + j, last = p.causal ? int64_t{L} - nq + j : int64_t{L} - 1;
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t hk = h / G;
        s.clear();
        vrows.clear();
        auto logit = [&](const void* base, size_t off) {
          float x = 0.f;
          for (int64_t e = 0; e < d; ++e) {
            x += LoadAsFloat(p.q.data, t, static_cast<size_t>((tok * Hq + h) * d + e)) *
                 LoadAsFloat(base, t, off + static_cast<size_t>(e));
          }
          return RoundTo(t, x * p.scale);
        };
        for (int64_t a = 0; a < A; ++a) {
          const size_t off = static_cast<size_t>((a * Hkv + hk) * d);
          s.push_back(RoundTo(t, logit(p.anchor_k.data, off) + (p.gamma ? p.gamma[h] : 0.f)));
          vrows.emplace_back(p.anchor_v.data, off);
        }
        for (int64_t pos = 0; pos <= last; ++pos) {
          const int64_t blk = b.block_table[int64_t{q_seq} * b.max_blocks_per_seq + pos / P];
          const size_t off = static_cast<size_t>(((blk * P + pos % P) * Hkv + hk) * d);
          s.push_back(logit(p.k_pool.data, off));
          vrows.emplace_back(p.v_pool.data, off);
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        if (!s.empty()) {
          const float m = *std::max_element(s.begin(), s.end());
          float sum = 0.f;
          for (float& x : s) sum += (x = std::exp(x - m));
          for (size_t i = 0; i < s.size(); ++i) {
            const float w = RoundTo(t, s[i] / sum);
            for (int64_t e = 0; e < d; ++e) {
              acc[static_cast<size_t>(e)] += w * LoadAsFloat(vrows[i].first, t, vrows[i].second + static_cast<size_t>(e));
            }
          }
        }
        for (int64_t e = 0; e < d; ++e) {
          StoreFromFloat(out.data(), t, static_cast<size_t>((tok * Hq + h) * d + e), acc[static_cast<size_t>(e)]);
        }
      }
    }
  }
  return RelativeError(out.data(), t, ref.o);
}

}  // namespace fp::testing
