// fieldprint/fingerprint.h — a tolerant (TOPLOC-style) fingerprint of a generation's final hidden states, for
// replays that cannot be bit-exact (another device, another linear path).
//
// Which positions: the sequence's KV rows r = 0 .. n-1 (n = prompt + generated - 1: every token that was fed;
// the anchor is not fingerprinted) are cut into blocks of `block` rows; block b is fingerprinted at its LAST row,
// min(b * block + block - 1, n - 1), so the last partial block counts too and the last row — whose hidden state
// produced the last generated token — is always in. What: the final hidden state of that row (after the final
// RMSNorm, the vector the LM head reads), its top_k entries by magnitude (ties: the lower index first): indices
// and values rounded to bf16 (values in JSON are exact bf16 numbers).
// Match: see FingerprintTolerance (the thresholds and why).
// defines: kFingerprintBlock, kFingerprintTopK, BlockFingerprint, Fingerprints, FingerprintRows,
//          FingerprintOfRow, MakeFingerprints, FingerprintTolerance, FingerprintMatch, MatchFingerprints
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

inline constexpr int32_t kFingerprintBlock = 32;
// 8 of d_model entries: measured (bench/fingerprint_rates.cpp, docs/transcripts.md) to separate a noisy replay
// of the same model from another model / quantisation / prompt with no errors in hundreds of trials, at
// ~130 bytes of JSON per 32 tokens.
inline constexpr int32_t kFingerprintTopK = 8;

struct BlockFingerprint {
  int32_t row = 0;               // KV row (0-based in the sequence) whose hidden state this is
  std::vector<int32_t> indices;  // [top_k] feature indices, by decreasing |value|
  std::vector<float> values;     // [top_k] the values there, rounded to bf16
  bool operator==(const BlockFingerprint&) const = default;
};

struct Fingerprints {
  int32_t block = kFingerprintBlock;
  int32_t top_k = kFingerprintTopK;
  std::vector<BlockFingerprint> blocks;  // [ceil(n / block)]
  bool operator==(const Fingerprints&) const = default;
  // Shape checks for untrusted input: block, top_k >= 1, rows as FingerprintRows gives for n rows, indices
  // distinct and in [0, d_model), values finite and bf16-exact. InvalidArgument naming the problem.
  Status Validate(int32_t n, int32_t d_model) const;
};

// The fingerprinted rows of a sequence of n KV rows: block-1, 2 block-1, ..., and n-1.  [ceil(n / block)]
std::vector<int32_t> FingerprintRows(int32_t n, int32_t block);

// The fingerprint of one hidden state h [d_model]. InvalidArgument when top_k is outside [1, d_model] or h
// holds a non-finite value.
Result<BlockFingerprint> FingerprintOfRow(std::span<const float> h, int32_t top_k, int32_t row);

// Fingerprints from the hidden states of FingerprintRows(n, block). hidden: [rows.size(), d_model].
Result<Fingerprints> MakeFingerprints(std::span<const float> hidden, int32_t d_model, int32_t n, int32_t block,
                                      int32_t top_k);

// When a replayed block matches a recorded one. Values are compared on the recorded top-k indices that the
// replay also has in its top-k, each error scaled by the block's largest recorded |value| (after the final
// RMSNorm the entries are O(1) per unit of norm weight, so the top value sets the scale; a plain relative
// error would blow up on entries near zero, which top-k by magnitude rarely but possibly holds).
// Defaults, measured over 300 random models (tests/fingerprint_test.cpp, docs/transcripts.md): a replay through
// another linear path (int8 activations vs f32 dots, bf16 vs f32 KV) overlapped >= 6 of 8 with mean error
// <= 0.005 and max <= 0.013; the same floats quantised Q4_1 instead of Q8_0 had a worst-block mean error >= 0.016;
// another seed fails the overlap. The margins are ~2x each way: a GPU replay must be measured against them.
// TOPLOC compares bf16 exponents exactly and bounds mean/median mantissa differences; a scaled absolute error
// is the same test without the cliff at a power of two (1.99 vs 2.01 differ in exponent, not in value).
struct FingerprintTolerance {
  double min_overlap = 0.5;   // |recorded ∩ replayed indices| / top_k at least this
  double max_mean_err = 0.01;  // mean over the matched entries of |a - b| / max|recorded|
  double max_err = 0.04;       // every matched entry
};

struct FingerprintMatch {
  bool ok = false;
  int64_t first_bad_block = -1;  // index into blocks, -1 when ok
  std::string failure;           // why the first bad block failed
  int32_t blocks_checked = 0;
  double min_overlap = 1.0;  // over all blocks (diagnostics)
  double worst_mean_err = 0.0;
  double worst_err = 0.0;
};

// Compares every block (stops at the first failure). A shape mismatch (block, top_k, rows) is a failure.
FingerprintMatch MatchFingerprints(const Fingerprints& recorded, const Fingerprints& replayed,
                                   const FingerprintTolerance& tol = {});

}  // namespace fp
