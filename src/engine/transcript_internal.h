// transcript_internal.h — what the CPU and the CUDA exact replays of a transcript share (transcript_replay.cpp):
// the input checks, the commit positions the policy gives, and the commit-root / token check over page digests
// that each engine supplies from its own KV bytes (host hashing for the CPU pool, GpuTreeHasher for the device
// pool: the same digests by definition, page_digest.h). Also the engine-neutral TranscriptFromRun core.
// defines: transcript_detail::PageFill, PageDigestFn, CheckTranscriptInput, ReplayedTokens, CheckCommitsAndTokens,
//          ResampleRows, TranscriptEngineInfo, TranscriptFromRunInfo, VerifyTranscriptCuda
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "fieldprint/model_config.h"
#include "fieldprint/sampler.h"
#include "fieldprint/transcript.h"

namespace fp::transcript_detail {

// Page `page` of the sequence (0-based logical index) hashed over its first `fill` rows.
struct PageFill {
  int64_t page = 0;
  int32_t fill = 0;
};
// The page digests of `pages`, in order ([pages.size()]).
using PageDigestFn = std::function<Result<std::vector<Digest>>(std::span<const PageFill> pages)>;

// Model shape, token ids, prompt and chunk size against the replaying engine's config: InvalidArgument /
// a failed report (ok = false, model differs) in *mismatch.
Status CheckTranscriptInput(const Transcript& t, const ModelConfig& c, std::string* mismatch);

// What a replay produced for the generated tokens: the logits of every generated position, re-sampled on the host
// with the recorded sampler, or (greedy sampler only) the device's greedy pick of each (CudaLlama::ForwardGreedy:
// the same rule as Sampler::Sample, -1 where Sample would refuse the logits), which spares the [generated, vocab]
// copy to the host.
struct ReplayedTokens {
  bool use_ids = false;
  std::span<const float> logits;         // [generated, vocab] when !use_ids
  int32_t vocab = 0;
  std::span<const int32_t> greedy_ids;  // [generated] when use_ids
  // use_ids for a sampling transcript: ids are the recorded tokens, each confirmed on the device (SampleBounds).
  bool ids_from_sample_bounds = false;
};

// Every row of logits [n_rows, vocab] re-sampled with `sampler`: [n_rows], exactly the answers of n_rows
// sequential Sample calls (the draws are taken in order first, then the rows are picked on up to `threads`
// threads, <= 0 = all cores; Sampler::Pick). Where a row's answer is an error, the later rows' are meaningless
// (Sample would have stopped there): read them in order and stop at the first error. Advances the sampler's
// stream by n_rows draws (none when greedy).
std::vector<Result<int32_t>> ResampleRows(Sampler& sampler, std::span<const float> logits, int32_t vocab,
                                          int32_t n_rows, int threads);

// Commit positions against the policy, the picked commits' roots rebuilt from `digests` (all needed pages hashed
// in one call), then every generated token checked against `tokens`. kv_len = fed tokens. Fills the report's
// hash_seconds (time inside `digests`), check_seconds (the rest) and device_argmax.
Result<ReplayReport> CheckCommitsAndTokens(const Transcript& t, const ReplayOptions& opt, int32_t kv_len,
                                           const PageDigestFn& digests, const ReplayedTokens& tokens);

// What TranscriptFromRun records about the engine.
struct TranscriptEngineInfo {
  std::string device, weights, kv_dtype;
  int32_t page_size = 16;
  float gamma = 0.f;
  std::string gemm = "cublas-padded";  // Transcript::gemm
};
Result<Transcript> TranscriptFromRunInfo(const ModelConfig& c, const TranscriptEngineInfo& e,
                                         const std::string& model_path, const GenerationOptions& options,
                                         std::span<const int32_t> anchor_tokens, std::span<const int32_t> prompt,
                                         const GenerationStats& stats);

// VerifyTranscript's replay step for device "cuda" (transcript_cuda.cpp): a batch_invariant CudaLlama from the
// model file with the transcript's settings, then ReplayTranscriptCuda.
Result<ReplayReport> VerifyTranscriptCuda(const Transcript& t, const std::string& model_path,
                                          const ReplayOptions& opt);

}  // namespace fp::transcript_detail
