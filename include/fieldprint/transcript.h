// fieldprint/transcript.h — a verifiable record of one generation (CPU or CUDA), and its teacher-forced replay.
//
// A transcript names the model (SHA-256 of the GGUF bytes), every engine setting that changes KV bits (page
// size, KV dtype, gamma, weights mode, commit policy, hash chunk size), the anchor tokens and root, the
// sampler and seed, the prompt and generated tokens, and every commit (position, tree size, root, last page
// digest) of the run's Verifier, with an RFC 6962 consistency proof from each full-page commit to the next.
// Because the CPU forward is batch invariant (engine.h), ONE prefill over prompt ++ generated reproduces the
// generation's KV bit for bit, so a verifier recomputes every commit root from scratch and re-samples every
// generated token from the replayed logits. A provisional (partial page) commit is not a prefix of the later
// tree, so it carries no proof; its root is still recomputed.
// CUDA transcripts (device "cuda", weights "bf16", KV bf16) come from CudaLlama in batch_invariant mode, where
// the same holds on the GPU (cuda_engine.h: KV and logits bit-identical whatever the batch and whether built by
// prefill or decode), so ReplayTranscriptCuda checks them exactly the same way, hashing the device KV on the GPU.
// The transcript names the batch-invariant GEMM (generate picks the skinny GEMM where the shapes allow); the CUDA
// engine's other settings are its defaults (split_tokens -1 -> the fixed split of batch_invariant mode): generate
// and verify both use them. Bits may differ on another GPU architecture (other kernels); the tolerant check then
// still applies.
// Optional tolerant fingerprints (fingerprint.h: top-k of a signed sum of the final hidden states per 32 fed
// tokens) let a replay that cannot be bit-exact (another device or linear path) still check the run:
// ReplayOptions::tolerant (a CPU replay, of CPU or CUDA transcripts).
// Optional Ed25519 signature (OpenSSL) over CanonicalBody() with the public key embedded. The JSON is
// untrusted input: Parse checks every field and type and never crashes.
// defines: TranscriptCommit, TranscriptSignature, Transcript, BuildTranscriptCommits, SignTranscript,
// CheckTranscriptSignature, Sha256File, TranscriptFromRun, ReplayOptions, ReplayReport, ReplayTranscript,
// VerifyTranscript, TranscriptFedTokens, RecordFingerprints, ReplayTranscriptTolerant, ReplayTranscriptCuda
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fieldprint/commit_log.h"
#include "fieldprint/fingerprint.h"
#include "fieldprint/merkle.h"
#include "fieldprint/sampler.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"

namespace fp {

class LlamaEngine;
class CudaLlama;
class AnchorSegment;
struct GenerationOptions;
struct GenerationStats;

inline constexpr int32_t kTranscriptVersion = 1;

struct TranscriptCommit {
  int32_t position = 0;
  uint64_t tree_size = 0;
  Digest root;
  Digest last_entry;          // page digest of page tree_size-1 at this commit
  bool has_proof = false;     // a consistency proof from the previous commit (full-page previous)
  std::vector<Digest> proof;  // RFC 6962 PROOF(prev.tree_size, tree of this commit)
  bool operator==(const TranscriptCommit&) const = default;
};

struct TranscriptSignature {
  std::vector<uint8_t> public_key;  // [32] raw Ed25519
  std::vector<uint8_t> signature;   // [64]
};

struct Transcript {
  int32_t version = kTranscriptVersion;
  // Model.
  std::string model_file;  // base name, informational
  Digest model_sha256;
  std::string model_summary;  // ModelConfig::Summary(), informational
  int32_t n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0;
  // Engine settings that change the KV bits.
  std::string device = "cpu";         // "cpu" | "cuda"
  std::string weights = "quantized";  // "quantized" | "f32" (CPU) | "bf16" (CUDA)
  std::string kv_dtype = "f32";       // "f32" | "f16" | "bf16"
  int32_t page_size = 16;
  float gamma = 0.f;
  int32_t commit_every = 0;
  uint64_t chunk_bytes = 4096;
  // CUDA: the batch-invariant GEMM ("skinny" | "cublas-padded", CudaEngineOptions::InvariantGemm), which fixes the
  // logits' and KV's bits. JSON "engine.gemm", written only for "skinny": transcripts from before the field (and
  // their signatures) read as "cublas-padded", what they ran.
  std::string gemm = "cublas-padded";
  // Tokens and sampling.
  std::vector<int32_t> anchor_tokens;
  Digest anchor_root;
  SamplerConfig sampler;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  std::vector<TranscriptCommit> commits;
  // Tolerant fingerprints of the fed tokens' final hidden states (JSON "fingerprints", signed with the rest);
  // absent in transcripts recorded without them.
  std::optional<Fingerprints> fingerprints;
  std::optional<TranscriptSignature> signature;

  // The JSON text (pretty) and its strict parser: InvalidArgument naming the bad field.
  std::string ToJson() const;
  static Result<Transcript> Parse(std::string_view json);
  Status Save(const std::string& path) const;
  static Result<Transcript> Load(const std::string& path);
  // What the signature covers: a domain tag, the compact JSON without "signature" (sorted keys) and the
  // public key in hex.
  std::string CanonicalBody(std::span<const uint8_t> public_key) const;
};

// The transcript's commits from the run's commit log and final tree (Verifier::Log / Tree), with proofs.
// DataLoss when the log does not match the tree.
Result<std::vector<TranscriptCommit>> BuildTranscriptCommits(const CommitLog& log, const MerkleTree& tree);

// The transcript of a finished CPU run (Generator::Generate with verification on, no fault injection) of
// `engine` loaded from model_path in `weights_mode`. FailedPrecondition when the run kept no commitments.
Result<Transcript> TranscriptFromRun(const LlamaEngine& engine, const std::string& model_path,
                                     const std::string& weights_mode, const GenerationOptions& options,
                                     std::span<const int32_t> anchor_tokens, std::span<const int32_t> prompt,
                                     const GenerationStats& stats);
// The same for a run of the CUDA engine, which must be in batch_invariant mode (FailedPrecondition otherwise:
// its roots would not replay). Records device "cuda", weights "bf16" and the pool's KV dtype.
Result<Transcript> TranscriptFromRun(CudaLlama& engine, const std::string& model_path,
                                     const GenerationOptions& options, std::span<const int32_t> anchor_tokens,
                                     std::span<const int32_t> prompt, const GenerationStats& stats);

// Signs with the Ed25519 private key in a PEM file (replaces any signature). InvalidArgument for a key that
// is not Ed25519, IoError for an unreadable file.
Status SignTranscript(Transcript& t, const std::string& pem_path);
// Ok when unsigned or the signature verifies; DataLoss when it does not.
Status CheckTranscriptSignature(const Transcript& t);

Result<Digest> Sha256File(const std::string& path);

struct ReplayOptions {
  int32_t sample = 0;  // > 0: check only this many commits, chosen by `seed` (the last one always)
  uint64_t seed = 0;
  int threads = 0;
  // The exact replay's engine: "cpu", or "cuda" (CudaLlama in batch_invariant mode) for a CUDA transcript.
  std::string device = "cpu";
  // Tolerant mode (always a CPU replay), for replays that cannot be bit-exact: the recorded fingerprints must match within
  // `tolerance`; anchor and commit roots are NOT compared (KV bits differ by design; the consistency proofs
  // still are); a re-sampled token may differ from the recorded one only when the replay's logits of the two
  // are within token_logit_tol (a near tie flipped by noise).
  bool tolerant = false;
  FingerprintTolerance tolerance;
  float token_logit_tol = 0.25f;
  // Tolerant mode only (VerifyTranscript): replay with these settings instead of the transcript's ("" = same).
  std::string weights;   // "quantized" | "f32"
  std::string kv_dtype;  // "f32" | "f16" | "bf16"
};

struct ReplayReport {
  bool ok = false;
  std::string failure;  // what diverged first, empty when ok
  int64_t first_bad_commit = -1;
  int32_t commits_checked = 0;
  int32_t proofs_checked = 0;
  int32_t tokens_resampled = 0;
  double replay_seconds = 0.0;  // anchor + prefill + hashing + re-sampling (not the model load)
  // Where replay_seconds went (exact replays; each phase ends synchronised with its device): the anchor's prefill,
  // the teacher-forced prefill with its logits (or device greedy ids) to the host, page / anchor hashing, and the
  // host checks (commit trees, token re-sampling). The CUDA replay excludes engine creation, CudaLlama::Warmup and
  // the GPU hasher's creation (start-up work; VerifyTranscript does them before the clock starts).
  double anchor_seconds = 0.0, forward_seconds = 0.0, hash_seconds = 0.0, check_seconds = 0.0;
  // The tokens were checked against greedy picks computed on the device (CudaLlama::ForwardGreedy: greedy
  // sampler, CUDA replay) instead of logits re-sampled on the host.
  bool device_argmax = false;
  // The sampled tokens were confirmed on the device (CudaLlama::ForwardSampleBounds: each draw clear of its token's
  // bounds in the softmax walk) instead of re-sampling the logits on the host.
  bool device_sample_bounds = false;
  // Tolerant mode.
  int32_t blocks_checked = 0;
  int64_t first_bad_block = -1;
  int32_t tokens_flipped = 0;  // re-sampled differently but within token_logit_tol
  double min_overlap = 1.0, worst_mean_err = 0.0, worst_err = 0.0;
};

// Teacher-forced replay on `engine` (its page size / dtype / gamma must be the transcript's): builds the
// anchor, prefills prompt ++ generated[:-1] in one call, recomputes anchor and commit roots and re-samples
// the generated tokens. Mismatches land in the report (ok = false); bad input is a Status.
Result<ReplayReport> ReplayTranscript(const Transcript& t, LlamaEngine& engine, const ReplayOptions& options);

// Everything: the signature, the model digest of `model_path`, the consistency proofs, then the replay on an
// engine built from the file with the transcript's settings: options.device "cpu" (LlamaEngine) or "cuda"
// (CudaLlama, batch_invariant; Unimplemented in a build without CUDA). An exact replay on another device than the
// transcript's is Unimplemented; the tolerant one runs on the CPU (a CUDA transcript: f32-widened weights).

Result<ReplayReport> VerifyTranscript(const Transcript& t, const std::string& model_path,
                                      const ReplayOptions& options);

// The tokens a teacher-forced replay feeds: prompt ++ generated[:-1] (the last generated token was never fed).
std::vector<int32_t> TranscriptFedTokens(const Transcript& t);

// Sets t.fingerprints from one teacher-forced prefill of TranscriptFedTokens(t) on `engine` after `anchor`
// (the run's own engine and anchor: the CPU forward is batch invariant, so these are the run's hidden states
// bit for bit). Needs pool room for the fed tokens; the sequence is freed again.
Status RecordFingerprints(Transcript& t, LlamaEngine& engine, const std::shared_ptr<AnchorSegment>& anchor,
                          int32_t top_k = kFingerprintTopK, int32_t block = kFingerprintBlock);

// ReplayTranscript with options.tolerant (transcript_tolerant.cpp): builds the anchor, prefills the fed tokens
// once, compares fingerprints, re-samples tokens with near-tie tolerance. FailedPrecondition when the
// transcript carries no fingerprints.
Result<ReplayReport> ReplayTranscriptTolerant(const Transcript& t, LlamaEngine& engine,
                                              const ReplayOptions& options);

// The CUDA twins (transcript_cuda.cpp). RecordFingerprints from CudaLlama::ForwardHidden (the run's engine; in
// batch_invariant mode its states are the run's bit for bit). ReplayTranscriptCuda: the exact replay of a CUDA
// transcript on `engine` (batch_invariant, the transcript's page size and gamma): anchor root and commit roots from
// the device KV hashed on the GPU (page_digest.h's definition), tokens re-sampled from the replayed logits.
Status RecordFingerprints(Transcript& t, CudaLlama& engine, const std::shared_ptr<AnchorSegment>& anchor,
                          int32_t top_k = kFingerprintTopK, int32_t block = kFingerprintBlock);
Result<ReplayReport> ReplayTranscriptCuda(const Transcript& t, CudaLlama& engine, const ReplayOptions& options);

}  // namespace fp
