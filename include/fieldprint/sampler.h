// fieldprint/sampler.h — next-token selection: greedy, or temperature + top-k + top-p with a seeded RNG.
//
// Sampling is reproducible: the RNG is a fixed splitmix64 stream (not a std:: distribution, whose output
// differs between standard libraries), one draw per sampled token, so (seed, logits sequence) fixes the
// tokens. Order of the filters, as in llama.cpp / HF: top-k on the logits, softmax at temperature, then top-p
// keeps the smallest prefix (by probability, ties by token id) whose mass reaches p. defines: SamplerConfig,
// Sampler
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

struct SamplerConfig {
  float temperature = 0.f;  // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;        // 0: no top-k
  float top_p = 1.f;        // in (0, 1]; 1: no top-p
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.f; }
  // Finite temperature, top_k >= 0, top_p in (0, 1].
  Status Validate() const;
};

class Sampler {
 public:
  static Result<Sampler> Create(const SamplerConfig& config);

  const SamplerConfig& config() const { return config_; }
  // The next token. InvalidArgument for empty logits, NaN or +inf, or all -inf.
  Result<int32_t> Sample(std::span<const float> logits);
  // The distribution Sample draws from (probs[i] for every token, 0 outside the kept set; greedy: one-hot).
  Status Distribution(std::span<const float> logits, std::vector<float>* probs) const;
  // Restarts the RNG stream.
  void Reseed(uint64_t seed) { state_ = seed; }

 private:
  explicit Sampler(const SamplerConfig& c) : config_(c), state_(c.seed) {}
  // Kept token ids and their normalised probabilities.
  Status Candidates(std::span<const float> logits, std::vector<int32_t>* ids,
                    std::vector<double>* probs) const;
  double NextUniform();  // [0, 1)

  SamplerConfig config_;
  uint64_t state_ = 0;
  mutable std::vector<int32_t> ids_;
  mutable std::vector<double> probs_;
};

}  // namespace fp
