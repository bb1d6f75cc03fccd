// fieldprint/head_gamma.h — the anchor log-bias gamma per query head, as the engines take it.
//
// The attention contract (attention.h) adds gamma[h] to head h's anchor logits. Engines take one value for
// every head (`gamma`) or a vector of exactly n_heads values (`gamma_per_head`, which wins when non-empty);
// the CLI takes the same as text: "0.5" or "0.5,0,-1,2". Both engines resolve their options through
// ResolveHeadGammas, so the CPU and the CUDA engine accept and reject the same inputs.
// defines: ParseGammaList, ResolveHeadGammas, IsUniform
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

// Comma-separated finite floats (spaces around items allowed), at least one, no empty items ("1,,2", "1,",
// ""), no trailing junk ("1x"). InvalidArgument naming the bad item otherwise. The count is not checked here
// (the model is not known yet).
Result<std::vector<float>> ParseGammaList(std::string_view text);

// [n_heads] gammas from engine options: per_head when non-empty (its size must be n_heads), else `gamma` for
// every head. InvalidArgument for a wrong count ("3 values for 4 heads") or a non-finite value.
Result<std::vector<float>> ResolveHeadGammas(float gamma, std::span<const float> per_head, int n_heads);

// True when every value equals the first (an empty list is uniform).
bool IsUniform(std::span<const float> values);

}  // namespace fp
