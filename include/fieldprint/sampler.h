// fieldprint/sampler.h — next-token selection: greedy, or temperature + top-k + top-p with a seeded RNG.
//
// Sampling is reproducible: the RNG is a fixed splitmix64 stream (not a std:: distribution, whose output
// differs between standard libraries), one draw per sampled token, so (seed, logits sequence) fixes the
// tokens. Order of the filters, as in llama.cpp / HF: top-k on the logits, softmax at temperature, then top-p
// keeps the smallest prefix (by probability, ties by token id) whose mass reaches p.
// A replay re-samples many rows at once (transcript_replay.cpp): it takes the draws in stream order first
// (NextUniform), then picks the rows in parallel (Pick, const) — the same tokens as calling Sample row by row.
// defines: SamplerConfig, SamplerScratch, Sampler
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
  // True when neither top-k nor top-p removes a token of an n-token vocabulary (the common sampling case): a
  // non-greedy pick is then the plain softmax walk in id order (what a device check can bound, SampleBounds).
  bool Unfiltered(size_t n) const;
  // Finite temperature, top_k >= 0, top_p in (0, 1].
  Status Validate() const;
};

// Working memory of one Pick at a time (one per thread when rows are picked in parallel).
struct SamplerScratch {
  std::vector<int32_t> ids;   // [kept] candidate ids (top-k / top-p only)
  std::vector<double> probs;  // [kept] their probabilities; [vocab] unnormalised weights without top-k / top-p
};

class Sampler {
 public:
  static Result<Sampler> Create(const SamplerConfig& config);

  const SamplerConfig& config() const { return config_; }
  // The next token. InvalidArgument for empty logits, NaN or +inf, or all -inf.
  Result<int32_t> Sample(std::span<const float> logits);
  // Sample in two steps. A non-greedy Sample takes exactly one draw (NextUniform), and only once the logits pass
  // its checks; greedy takes none. So for rows that all pass, row i of a sequence gets the i-th draw, and
  // Pick(row i, draw i) == what the i-th Sample call returns, bit for bit (same arithmetic in the same order;
  // tests/sampler_parallel_test.cpp against the original sequential code). Pick touches only `scratch` (no
  // draw, no member state): rows may be picked concurrently, each thread with its own scratch. u is ignored
  // when greedy. Same errors as Sample.
  double NextUniform();  // [0, 1)
  Result<int32_t> Pick(std::span<const float> logits, double u, SamplerScratch* scratch) const;
  // The distribution Sample draws from (probs[i] for every token, 0 outside the kept set; greedy: one-hot).
  Status Distribution(std::span<const float> logits, std::vector<float>* probs) const;
  // Restarts the RNG stream.
  void Reseed(uint64_t seed) { state_ = seed; }

 private:
  explicit Sampler(const SamplerConfig& c) : config_(c), state_(c.seed) {}
  // Kept token ids and their normalised probabilities. Logits already checked.
  void Candidates(std::span<const float> logits, std::vector<int32_t>* ids, std::vector<double>* probs) const;
  // Pick on checked logits, non-greedy.
  int32_t PickChecked(std::span<const float> logits, double u, SamplerScratch* scratch) const;

  SamplerConfig config_;
  uint64_t state_ = 0;
  mutable SamplerScratch scratch_;  // Sample's and Distribution's
};

}  // namespace fp
