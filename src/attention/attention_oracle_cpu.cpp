// The fp64 oracle of PagedFieldprintAttention (see fieldprint/attention_oracle.h). Obviously-right code only:
// dense gather of the visible keys per row, max-subtracted softmax in double, no tiling, no threads.
#include "fieldprint/attention_oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "fieldprint/dtype.h"

namespace fp {

Result<AttentionOracleOut> AttentionOracleF64(const AttentionParams& p) {
  FP_RETURN_IF_ERROR(ValidateAttention(p, p.batch));
  if (p.q.device != Device::kCpu || p.k_pool.device != Device::kCpu) {
    return InvalidArgument("AttentionOracleF64: tensors must be on the host, got q " + p.q.ShapeString());
  }
  const int64_t T = p.num_tokens(), Hq = p.num_q_heads(), d = p.head_dim();
  const int64_t Hkv = p.num_kv_heads(), G = Hq / Hkv, P = p.page_size(), A = p.anchor_len();
  AttentionOracleOut out;
  out.o.assign(static_cast<size_t>(T * Hq * d), 0.0);
  out.lse.assign(static_cast<size_t>(T * Hq), -std::numeric_limits<double>::infinity());
  const AttentionBatch& b = p.batch;
  std::vector<double> logits;                          // [visible keys]
  std::vector<std::pair<const void*, size_t>> vrows;  // (base, element offset) of each visible V row
  for (int32_t s = 0; s < b.num_seqs; ++s) {
    const int32_t q0 = b.q_indptr[s], nq = b.q_indptr[s + 1] - q0, kv_len = b.kv_lens[s];
    for (int32_t j = 0; j < nq; ++j) {
      const int64_t t = q0 + j;
      const int64_t last_visible = p.causal ? int64_t{kv_len} - nq + j : int64_t{kv_len} - 1;
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t hk = h / G;
        logits.clear();
        vrows.clear();
        auto dot = [&](const void* kbase, size_t koff) {
          double acc = 0;
          for (int64_t x = 0; x < d; ++x) {
            acc += static_cast<double>(LoadAsFloat(p.q.data, p.q.dtype, static_cast<size_t>((t * Hq + h) * d + x))) *
                   static_cast<double>(LoadAsFloat(kbase, p.k_pool.dtype, koff + static_cast<size_t>(x)));
          }
          return acc * static_cast<double>(p.scale);
        };
        const double g = p.gamma ? static_cast<double>(p.gamma[h]) : 0.0;
        for (int64_t a = 0; a < A; ++a) {
          const size_t off = static_cast<size_t>((a * Hkv + hk) * d);
          logits.push_back(dot(p.anchor_k.data, off) + g);
          vrows.emplace_back(p.anchor_v.data, off);
        }
        for (int64_t pos = 0; pos <= last_visible; ++pos) {
          const int64_t blk = b.block_table[static_cast<int64_t>(s) * b.max_blocks_per_seq + pos / P];
          const size_t off = static_cast<size_t>(((blk * P + pos % P) * Hkv + hk) * d);
          logits.push_back(dot(p.k_pool.data, off));
          vrows.emplace_back(p.v_pool.data, off);
        }
        if (logits.empty()) continue;
        const double m = *std::max_element(logits.begin(), logits.end());
        double sum = 0;
        for (double& l : logits) sum += (l = std::exp(l - m));
        double* orow = &out.o[static_cast<size_t>((t * Hq + h) * d)];
        for (size_t i = 0; i < logits.size(); ++i) {
          const double w = logits[i] / sum;
          for (int64_t x = 0; x < d; ++x) {
            orow[x] += w * LoadAsFloat(vrows[i].first, p.v_pool.dtype, vrows[i].second + static_cast<size_t>(x));
          }
        }
        out.lse[static_cast<size_t>(t * Hq + h)] = m + std::log(sum);
      }
    }
  }
  return out;
}

}  // namespace fp
