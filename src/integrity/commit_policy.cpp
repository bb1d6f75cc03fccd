// commit_policy.cpp — commit boundaries (see commit_policy.h for the rule order).
#include "fieldprint/commit_policy.h"

#include <string>

namespace fp {

const char* CommitReasonName(CommitReason r) {
  switch (r) {
    case CommitReason::kNone:
      return "none";
    case CommitReason::kPageFull:
      return "page-full";
    case CommitReason::kEveryN:
      return "every-n";
    case CommitReason::kTurnEnd:
      return "turn-end";
    case CommitReason::kOnDemand:
      return "on-demand";
  }
  return "?";
}

Result<CommitPolicy> CommitPolicy::Create(const CommitPolicyConfig& config, int32_t page_size) {
  if (page_size <= 0) return InvalidArgument("commit policy: page_size must be positive");
  if (config.every_n_tokens < 0) return InvalidArgument("commit policy: every_n_tokens must be >= 0");
  return CommitPolicy(config, page_size);
}

Result<CommitDecision> CommitPolicy::Decide(int32_t last, int32_t len, CommitFlags flags) const {
  if (last < 0 || len < last) {
    return InvalidArgument("commit policy: length " + std::to_string(len) + " below last commit " +
                           std::to_string(last) + " (truncate through the verifier)");
  }
  if (len == last) return CommitDecision{};
  if (flags.turn_end) return CommitDecision{len, CommitReason::kTurnEnd};
  if (flags.on_demand) return CommitDecision{len, CommitReason::kOnDemand};
  const int32_t n = config_.every_n_tokens;
  if (n > 0 && len / n > last / n) return CommitDecision{len, CommitReason::kEveryN};
  const int32_t p = page_size_;
  if (config_.page_full && len / p > last / p) return CommitDecision{len / p * p, CommitReason::kPageFull};
  return CommitDecision{};
}

}  // namespace fp
