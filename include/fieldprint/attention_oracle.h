// fieldprint/attention_oracle.h — the fp64 oracle that DEFINES PagedFieldprintAttention's semantics.
// defines: AttentionOracleOut, AttentionOracleF64
//
// Straightforward and slow on purpose: for each query row gather the visible keys (anchor first, then the paged
// positions through the block table), compute every logit in fp64 (anchor logits + gamma[h]), subtract the max,
// exp, sum, weight V. Inputs are widened exactly (LoadAsFloat). Shared by the tests and `fieldprint demo`, so
// there is one definition of the semantics.
#pragma once

#include <vector>

#include "fieldprint/attention.h"

namespace fp {

struct AttentionOracleOut {
  std::vector<double> o;    // [num_tokens, Hq, d]
  std::vector<double> lse;  // [num_tokens, Hq]; natural log; -inf where no key is visible (o = 0 there)
};

// Validates p (all tensors and batch arrays must be on the host) and computes the exact result in fp64.
// p.o and p.lse are neither read nor written.
Result<AttentionOracleOut> AttentionOracleF64(const AttentionParams& p);

}  // namespace fp
