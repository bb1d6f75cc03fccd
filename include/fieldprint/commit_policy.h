// fieldprint/commit_policy.h — WHEN a sequence commits: the boundaries of docs/integrity.md.
//
// Boundaries, checked each time a step has written KV (last = position of the last commit, len = length now):
//   turn end / on demand (flags)                    -> commit at len (a partial last page is provisional)
//   every_n_tokens > 0 and a multiple of N crossed  -> commit at len
//   a page filled (floor(len/P) > floor(last/P))    -> commit at floor(len/P) * P (full pages only)
// The first that applies wins, in that order. A commit never moves backwards; len == last commits nothing.
// defines: CommitReason, CommitFlags, CommitDecision, CommitPolicyConfig, CommitPolicy
#pragma once

#include <cstdint>

#include "fieldprint/status.h"

namespace fp {

enum class CommitReason : uint8_t { kNone, kPageFull, kEveryN, kTurnEnd, kOnDemand };
const char* CommitReasonName(CommitReason r);

struct CommitFlags {
  bool turn_end = false;
  bool on_demand = false;
};

struct CommitDecision {
  int32_t position = 0;  // commit covers tokens [0, position); 0 with kNone
  CommitReason reason = CommitReason::kNone;
};

struct CommitPolicyConfig {
  int32_t every_n_tokens = 0;  // 0 = off
  bool page_full = true;       // commit each page as it fills (off only for experiments)
};

class CommitPolicy {
 public:
  // InvalidArgument for page_size <= 0 or every_n_tokens < 0.
  static Result<CommitPolicy> Create(const CommitPolicyConfig& config, int32_t page_size);
  const CommitPolicyConfig& config() const { return config_; }
  int32_t page_size() const { return page_size_; }

  // InvalidArgument when last < 0 or len < last (a sequence shrank without telling the verifier).
  Result<CommitDecision> Decide(int32_t last, int32_t len, CommitFlags flags) const;

 private:
  CommitPolicy(const CommitPolicyConfig& c, int32_t p) : config_(c), page_size_(p) {}
  CommitPolicyConfig config_;
  int32_t page_size_;
};

}  // namespace fp
