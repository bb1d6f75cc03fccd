// Sampler: greedy argmax or seeded temperature / top-k / top-p sampling over a logits vector.
#include "fieldprint/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace fp {

Status SamplerConfig::Validate() const {
  if (!std::isfinite(temperature)) return InvalidArgument("temperature must be finite");
  if (top_k < 0) return InvalidArgument("top_k must be >= 0, got " + std::to_string(top_k));
  if (!(top_p > 0.f && top_p <= 1.f))
    return InvalidArgument("top_p must be in (0, 1], got " + std::to_string(top_p));
  return Status::Ok();
}

Result<Sampler> Sampler::Create(const SamplerConfig& config) {
  FP_RETURN_IF_ERROR(config.Validate());
  return Sampler(config);
}

namespace {

Status CheckLogits(std::span<const float> logits) {
  if (logits.empty()) return InvalidArgument("sampler: empty logits");
  bool any = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == INFINITY)
      return InvalidArgument("sampler: logit " + std::to_string(i) + " is not finite");
    any |= v != -INFINITY;
  }
  if (!any) return InvalidArgument("sampler: every logit is -inf");
  return Status::Ok();
}

int32_t Argmax(std::span<const float> logits) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace

bool SamplerConfig::Unfiltered(size_t n) const {
  const bool cut_k = top_k > 0 && static_cast<size_t>(top_k) < n;
  return !cut_k && !(top_p < 1.f);
}

void Sampler::Candidates(std::span<const float> logits, std::vector<int32_t>* ids,
                         std::vector<double>* probs) const {
  const auto n = static_cast<int32_t>(logits.size());
  ids->resize(static_cast<size_t>(n));
  std::iota(ids->begin(), ids->end(), 0);
  // Higher logit first; the lower id wins a tie so the order (and the draw) is fully determined.
  auto before = [&](int32_t a, int32_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  const double inv_t = 1.0 / static_cast<double>(config_.temperature);
  double max_logit = -INFINITY;
  for (float v : logits) max_logit = std::max(max_logit, static_cast<double>(v));
  int32_t keep = n;
  double denom = 0.0;  // the mass top-p is measured against; 0 = the kept candidates' own sum
  if (config_.top_k > 0 && config_.top_k < n) {
    keep = config_.top_k;
    std::partial_sort(ids->begin(), ids->begin() + keep, ids->end(), before);
  } else if (config_.top_p < 1.f) {
    // Sorting the whole vocabulary every token costs milliseconds: sort a growing prefix until it holds the
    // top-p mass of the full distribution.
    double total = 0.0;
    for (float v : logits) total += std::exp((static_cast<double>(v) - max_logit) * inv_t);
    for (int32_t m = 64;; m *= 4) {
      keep = std::min(m, n);
      std::partial_sort(ids->begin(), ids->begin() + keep, ids->end(), before);
      double mass = 0.0;
      for (int32_t i = 0; i < keep; ++i) {
        mass += std::exp((logits[static_cast<size_t>((*ids)[static_cast<size_t>(i)])] - max_logit) * inv_t);
      }
      if (mass >= static_cast<double>(config_.top_p) * total || keep == n) break;
    }
    denom = total;
  }
  // Without top-k / top-p the candidates stay in id order: no sort needed, -inf tokens get probability 0.
  if (config_.top_k > 0 && config_.top_k < n) {
    while (keep > 0 && logits[static_cast<size_t>((*ids)[static_cast<size_t>(keep - 1)])] == -INFINITY)
      --keep;
  }
  ids->resize(static_cast<size_t>(keep));
  probs->resize(static_cast<size_t>(keep));
  double sum = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    const double p =
        std::exp((logits[static_cast<size_t>((*ids)[static_cast<size_t>(i)])] - max_logit) * inv_t);
    (*probs)[static_cast<size_t>(i)] = p;
    sum += p;
  }
  const double norm = denom > 0.0 ? denom : sum;
  for (auto& p : *probs) p /= norm;
  if (config_.top_p < 1.f) {
    double cum = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      cum += (*probs)[static_cast<size_t>(i)];
      if (cum >= static_cast<double>(config_.top_p)) {
        cut = i + 1;
        break;
      }
    }
    ids->resize(static_cast<size_t>(cut));
    probs->resize(static_cast<size_t>(cut));
    const double kept = std::accumulate(probs->begin(), probs->end(), 0.0);
    for (auto& p : *probs) p /= kept;
  }
}

double Sampler::NextUniform() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::PickChecked(std::span<const float> logits, double u, SamplerScratch* scratch) const {
  if (config_.Unfiltered(logits.size())) {
    // Candidates + the walk below for the unfiltered case, fused: every id in order, weight exp((l - max) / T),
    // normalised by their sum and accumulated in id order. The same double operations in the same order (each
    // weight divided by the sum, then added to the running total), so the same token; minus the id vector, the
    // separate normalising pass, and the walk stops at the pick. The exps are the cost (~0.5 ms per 49152-token
    // row); they are what a replay parallelises over rows.
    const size_t n = logits.size();
    const double inv_t = 1.0 / static_cast<double>(config_.temperature);
    double max_logit = -INFINITY;
    for (float v : logits) max_logit = std::max(max_logit, static_cast<double>(v));
    std::vector<double>& w = scratch->probs;  // [n]
    w.resize(n);
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      const double p = std::exp((logits[i] - max_logit) * inv_t);
      w[i] = p;
      sum += p;
    }
    double cum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      cum += w[i] / sum;
      if (u < cum) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(n - 1);  // u within rounding of 1
  }
  Candidates(logits, &scratch->ids, &scratch->probs);
  double cum = 0.0;
  for (size_t i = 0; i < scratch->ids.size(); ++i) {
    cum += scratch->probs[i];
    if (u < cum) return scratch->ids[i];
  }
  return scratch->ids.back();  // u within rounding of 1
}

Result<int32_t> Sampler::Sample(std::span<const float> logits) {
  FP_RETURN_IF_ERROR(CheckLogits(logits));
  if (config_.greedy()) return Argmax(logits);
  const double u = NextUniform();  // only after the checks: Pick's contract (sampler.h)
  return PickChecked(logits, u, &scratch_);
}

Result<int32_t> Sampler::Pick(std::span<const float> logits, double u, SamplerScratch* scratch) const {
  if (scratch == nullptr) return InvalidArgument("sampler: null scratch");
  FP_RETURN_IF_ERROR(CheckLogits(logits));
  if (config_.greedy()) return Argmax(logits);
  if (!(u >= 0.0 && u < 1.0)) return InvalidArgument("sampler: draw outside [0, 1)");
  return PickChecked(logits, u, scratch);
}

Status Sampler::Distribution(std::span<const float> logits, std::vector<float>* probs) const {
  FP_RETURN_IF_ERROR(CheckLogits(logits));
  if (probs == nullptr) return InvalidArgument("sampler: null output");
  probs->assign(logits.size(), 0.f);
  if (config_.greedy()) {
    (*probs)[static_cast<size_t>(Argmax(logits))] = 1.f;
    return Status::Ok();
  }
  Candidates(logits, &scratch_.ids, &scratch_.probs);
  for (size_t i = 0; i < scratch_.ids.size(); ++i)
    (*probs)[static_cast<size_t>(scratch_.ids[i])] = static_cast<float>(scratch_.probs[i]);
  return Status::Ok();
}

}  // namespace fp
