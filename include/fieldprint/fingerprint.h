// fieldprint/fingerprint.h — a tolerant (TOPLOC-style) fingerprint of a generation's final hidden states, for
// replays that cannot be bit-exact (another device, another linear path).
//
// Which positions: the sequence's KV rows r = 0 .. n-1 (n = prompt + generated - 1: every token that was fed;
// the anchor is not fingerprinted) are cut into blocks of `block` rows (the last block may be partial). EVERY row
// of a block enters its fingerprint, so a token changed anywhere changes its own row's state and is caught in its
// own block (fingerprinting only the block's last row let a changed token elsewhere through about half the time:
// its effect reaches that row only through attention).
// What: the final hidden states h_r (after the final RMSNorm, the vectors the LM head reads) of the block's rows
// are combined into one signed sum v = sum_r s(r) h_r, s(r) = +-1 a fixed pseudo-random function of the row
// (FingerprintSign), and v's top_k entries by magnitude (ties: the lower index first) are kept: indices and values
// rounded to bf16 (values in JSON are exact bf16 numbers). Why a sum: the JSON stays top_k numbers per block (a
// per-row top-k would be `block` times larger). Why signed: real models' normed states share large features
// (the norm weight's outliers) across tokens; a plain sum would add those coherently (block x) and bury one row's
// content (1/block of the scale), a random-signed sum adds them like any other content (sqrt(block) x), so one
// changed row still moves the top entries by ~1/sqrt(block) of their scale. The top-k of the flattened
// [rows, d_model] block was rejected: its entries come from a few rows, so most rows would not be covered.
// Match: see FingerprintTolerance (the thresholds and why).
// defines: kFingerprintBlock, kFingerprintTopK, BlockFingerprint, Fingerprints, FingerprintRows, FingerprintSign,
//          SignedBlockSum, FingerprintOfRow, MakeFingerprints, FingerprintTolerance, FingerprintMatch,
//          MatchFingerprints
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

inline constexpr int32_t kFingerprintBlock = 32;
// 16 of d_model entries of the block sum: measured on the CPU (tests/fingerprint_test.cpp, 300 trials,
// docs/transcripts.md) to separate a noisy replay of the same model from another seed / Q4_1 for Q8_0 / a changed
// token with no errors; top-8 let one Q4_1 model in 300 through (the mean over 8 entries is too noisy). ~250 bytes
// of JSON per 32 tokens.
inline constexpr int32_t kFingerprintTopK = 16;

struct BlockFingerprint {
  int32_t row = 0;               // the block's last KV row (0-based in the sequence); it covers (row - block, row]
  std::vector<int32_t> indices;  // [top_k] feature indices of the signed block sum, by decreasing |value|
  std::vector<float> values;     // [top_k] the sum's values there, rounded to bf16
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

// The last row of each block of a sequence of n KV rows: block-1, 2 block-1, ..., and n-1.  [ceil(n / block)]
std::vector<int32_t> FingerprintRows(int32_t n, int32_t block);

// s(row) in {+1, -1}: bit 0 of splitmix64(row). Fixed forever (it is part of what a transcript means).
float FingerprintSign(int32_t row);

// sum_{i < rows} FingerprintSign(first_row + i) * hidden[i] over hidden [rows, d_model], accumulated in double in
// row order and rounded to float once. [d_model]
std::vector<float> SignedBlockSum(std::span<const float> hidden, int32_t d_model, int32_t first_row);

// The top-k fingerprint of one vector h [d_model] (a block's signed sum), labelled `row`. InvalidArgument when
// top_k is outside [1, d_model] or h holds a non-finite value.
Result<BlockFingerprint> FingerprintOfRow(std::span<const float> h, int32_t top_k, int32_t row);

// Fingerprints of the hidden states of ALL n rows. hidden: [n, d_model].
Result<Fingerprints> MakeFingerprints(std::span<const float> hidden, int32_t d_model, int32_t n, int32_t block,
                                      int32_t top_k);

// When a replayed block matches a recorded one. Values are compared on the recorded top-k indices that the
// replay also has in its top-k, each error scaled by the block's largest recorded |value| (after the final
// RMSNorm the entries are O(1) per unit of norm weight, so the top value sets the scale; a plain relative
// error would blow up on entries near zero, which top-k by magnitude rarely but possibly holds).
// Defaults, measured on the CPU over 300 random models (tests/fingerprint_test.cpp, docs/transcripts.md; top-16 of
// signed block sums): a replay through another linear path (int8 activations vs f32 dots, bf16 vs f32 KV)
// overlapped >= 14 of 16 with worst-block mean error <= 0.0030 and max <= 0.0106; the same floats quantised Q4_1
// instead of Q8_0 had a worst-block mean error >= 0.0134; another seed and a changed token fail. The margin above
// is only ~1.3x: a GPU replay must be measured against these (FingerprintCudaTest prints its numbers).
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
