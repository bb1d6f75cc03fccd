// The tolerant fingerprint (fingerprint.h): top-k of the signed sum of a block's final hidden states, and the
// tolerant block-by-block comparison. Pure host code over float vectors; the engines supply the hidden states.
#include "fieldprint/fingerprint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <unordered_map>

#include "fieldprint/dtype.h"

namespace fp {

namespace {

float RoundBf16(float v) { return Bf16ToFloat(FloatToBf16(v)); }

}  // namespace

std::vector<int32_t> FingerprintRows(int32_t n, int32_t block) {
  std::vector<int32_t> rows;
  if (n <= 0 || block <= 0) return rows;
  for (int64_t end = block; ; end += block) {
    rows.push_back(static_cast<int32_t>(std::min<int64_t>(end, n) - 1));
    if (end >= n) break;
  }
  return rows;
}

float FingerprintSign(int32_t row) {
  uint64_t z = static_cast<uint64_t>(static_cast<uint32_t>(row)) + 0x9E3779B97F4A7C15ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return ((z ^ (z >> 31)) & 1) != 0 ? -1.f : 1.f;
}

std::vector<float> SignedBlockSum(std::span<const float> hidden, int32_t d_model, int32_t first_row) {
  const auto d = static_cast<size_t>(std::max(d_model, 0));
  std::vector<double> acc(d, 0.0);  // [d_model]
  const size_t rows = d == 0 ? 0 : hidden.size() / d;
  for (size_t r = 0; r < rows; ++r) {
    const double s = FingerprintSign(first_row + static_cast<int32_t>(r));
    for (size_t j = 0; j < d; ++j) acc[j] += s * static_cast<double>(hidden[r * d + j]);
  }
  std::vector<float> out(d);  // [d_model]
  for (size_t j = 0; j < d; ++j) out[j] = static_cast<float>(acc[j]);
  return out;
}

Result<BlockFingerprint> FingerprintOfRow(std::span<const float> h, int32_t top_k, int32_t row) {
  if (top_k < 1 || static_cast<size_t>(top_k) > h.size())
    return InvalidArgument("fingerprint: top_k " + std::to_string(top_k) + " outside [1, d_model]");
  for (float v : h) {
    if (!std::isfinite(v)) return InvalidArgument("fingerprint: non-finite hidden state");
  }
  std::vector<int32_t> idx(h.size());  // [d_model]
  std::iota(idx.begin(), idx.end(), 0);
  // Rank by |value| of the unrounded state; ties (rare in f32) by index so the order is a function of h.
  std::partial_sort(idx.begin(), idx.begin() + top_k, idx.end(), [&](int32_t a, int32_t b) {
    const float fa = std::fabs(h[static_cast<size_t>(a)]), fb = std::fabs(h[static_cast<size_t>(b)]);
    return fa != fb ? fa > fb : a < b;
  });
  BlockFingerprint f;
  f.row = row;
  f.indices.assign(idx.begin(), idx.begin() + top_k);
  for (int32_t i : f.indices) {
    const float v = RoundBf16(h[static_cast<size_t>(i)]);
    if (!std::isfinite(v)) return InvalidArgument("fingerprint: hidden value overflows bf16");
    f.values.push_back(v);
  }
  return f;
}

Result<Fingerprints> MakeFingerprints(std::span<const float> hidden, int32_t d_model, int32_t n, int32_t block,
                                      int32_t top_k) {
  if (d_model < 1 || n < 1 || block < 1) return InvalidArgument("fingerprint: d_model, n and block must be >= 1");
  const auto d = static_cast<size_t>(d_model);
  if (hidden.size() != static_cast<size_t>(n) * d)
    return InvalidArgument("fingerprint: hidden holds " + std::to_string(hidden.size()) + " values, want " +
                           std::to_string(n) + " x " + std::to_string(d_model));
  for (float v : hidden) {  // checked here: a NaN in any row would vanish from nothing but poison the sum
    if (!std::isfinite(v)) return InvalidArgument("fingerprint: non-finite hidden state");
  }
  const std::vector<int32_t> rows = FingerprintRows(n, block);  // each block's last row
  Fingerprints out;
  out.block = block;
  out.top_k = top_k;
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto first = static_cast<int32_t>(b) * block;
    const std::vector<float> sum = SignedBlockSum(
        hidden.subspan(static_cast<size_t>(first) * d, static_cast<size_t>(rows[b] - first + 1) * d), d_model,
        first);  // [d_model]
    auto f = FingerprintOfRow(sum, top_k, rows[b]);
    if (!f.ok()) return f.status();
    out.blocks.push_back(std::move(f).value());
  }
  return out;
}

Status Fingerprints::Validate(int32_t n, int32_t d_model) const {
  if (block < 1 || top_k < 1 || top_k > d_model)
    return InvalidArgument("fingerprints: block must be >= 1 and top_k in [1, d_model]");
  const std::vector<int32_t> rows = FingerprintRows(n, block);
  if (blocks.size() != rows.size())
    return InvalidArgument("fingerprints: " + std::to_string(blocks.size()) + " blocks, the tokens give " +
                           std::to_string(rows.size()));
  for (size_t b = 0; b < blocks.size(); ++b) {
    const BlockFingerprint& f = blocks[b];
    const std::string where = "fingerprints: block " + std::to_string(b);
    if (f.row != rows[b]) return InvalidArgument(where + ": row " + std::to_string(f.row) + " != " +
                                                 std::to_string(rows[b]));
    if (f.indices.size() != static_cast<size_t>(top_k) || f.values.size() != static_cast<size_t>(top_k))
      return InvalidArgument(where + ": not top_k entries");
    std::vector<int32_t> sorted = f.indices;
    std::sort(sorted.begin(), sorted.end());
    if (sorted.front() < 0 || sorted.back() >= d_model || std::adjacent_find(sorted.begin(), sorted.end()) !=
                                                               sorted.end())
      return InvalidArgument(where + ": indices out of range or repeated");
    for (float v : f.values) {
      if (!std::isfinite(v) || RoundBf16(v) != v) return InvalidArgument(where + ": a value is not a finite bf16");
    }
  }
  return Status::Ok();
}

FingerprintMatch MatchFingerprints(const Fingerprints& rec, const Fingerprints& rep, const FingerprintTolerance& tol) {
  FingerprintMatch m;
  auto fail = [&](size_t b, std::string why) {
    m.ok = false;
    m.first_bad_block = static_cast<int64_t>(b);
    m.failure = std::move(why);
    return m;
  };
  if (rec.block != rep.block || rec.top_k != rep.top_k || rec.blocks.size() != rep.blocks.size())
    return fail(0, "fingerprint shapes differ (block, top_k or block count)");
  for (size_t b = 0; b < rec.blocks.size(); ++b) {
    const BlockFingerprint& a = rec.blocks[b];
    const BlockFingerprint& r = rep.blocks[b];
    const std::string where = "block " + std::to_string(b) + " (row " + std::to_string(a.row) + ")";
    if (a.row != r.row || a.indices.size() != r.indices.size() || a.values.size() != a.indices.size() ||
        r.values.size() != r.indices.size() || a.indices.empty())
      return fail(b, where + ": malformed");
    ++m.blocks_checked;
    std::unordered_map<int32_t, float> replayed;  // index -> value
    for (size_t i = 0; i < r.indices.size(); ++i) replayed[r.indices[i]] = r.values[i];
    float scale = 0.f;
    for (float v : a.values) scale = std::max(scale, std::fabs(v));
    scale = std::max(scale, 1e-6f);  // an all-zero state: compare absolutely
    int32_t matched = 0;
    double sum = 0.0, worst = 0.0;
    for (size_t i = 0; i < a.indices.size(); ++i) {
      auto it = replayed.find(a.indices[i]);
      if (it == replayed.end()) continue;
      ++matched;
      const double e = std::fabs(static_cast<double>(a.values[i]) - it->second) / scale;
      sum += e;
      worst = std::max(worst, e);
    }
    const double overlap = static_cast<double>(matched) / static_cast<double>(a.indices.size());
    const double mean = matched > 0 ? sum / matched : 0.0;
    m.min_overlap = std::min(m.min_overlap, overlap);
    m.worst_mean_err = std::max(m.worst_mean_err, mean);
    m.worst_err = std::max(m.worst_err, worst);
    char buf[160];
    if (overlap < tol.min_overlap) {
      std::snprintf(buf, sizeof(buf), ": top-%zu indices overlap %d (< %.2f required)", a.indices.size(), matched,
                    tol.min_overlap);
      return fail(b, where + buf);
    }
    if (mean > tol.max_mean_err || worst > tol.max_err) {
      std::snprintf(buf, sizeof(buf), ": value error mean %.4f max %.4f (limits %.4f, %.4f, scaled by %.4g)", mean,
                    worst, tol.max_mean_err, tol.max_err, static_cast<double>(scale));
      return fail(b, where + buf);
    }
  }
  m.ok = true;
  return m;
}

}  // namespace fp
