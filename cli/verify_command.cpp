// `fieldprint verify`: signature, model digest, consistency proofs, then one teacher-forced prefill that rebuilds
// every commit root (or a seeded sample) and re-samples the generated tokens: on the CPU (--device cpu, CPU
// transcripts) or on the GPU (--device cuda, CUDA transcripts: the batch-invariant CUDA engine, KV hashed on the
// GPU). --tolerant checks the transcript's fingerprints instead of the roots (fingerprint.h) in a CPU replay, for
// replays that are not bit-exact (a CUDA transcript on the CPU).
#include "verify_command.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "fieldprint/llama_weights.h"
#include "fieldprint/transcript.h"

namespace fp::cli {

namespace {

struct VerifyArgs {
  std::string transcript;
  std::string model;
  int32_t sample = 0;
  uint64_t seed = 0;
  int threads = 0;
  bool tolerant = false;
  std::string device = "cpu";
  std::string replay_weights;
  std::string replay_kv_dtype;
};

int Run(const VerifyArgs& a) {
  if (a.transcript.empty()) {
    std::fprintf(
        stderr,
        "fieldprint verify: usage: fieldprint verify TRANSCRIPT [--model PATH] [--sample N --seed S] "
        "[--device cpu|cuda | --tolerant]\n");
    return 2;
  }
  auto t = Transcript::Load(a.transcript);
  if (!t.ok()) {
    std::fprintf(stderr, "fieldprint verify: %s\n", t.status().ToString().c_str());
    return 2;
  }
  // Default model: the transcript's file name beside the usual model locations.
  std::string model = a.model;
  if (model.empty()) {
    const std::string dflt = ResolveModelPath("");
    model = (std::filesystem::path(dflt).parent_path() / t->model_file).string();
  }
  std::fprintf(stderr, "transcript: %zu prompt + %zu generated tokens, %zu commits, %s, recorded on %s; model %s\n",
               t->prompt.size(), t->generated.size(), t->commits.size(), t->signature ? "signed" : "unsigned",
               t->device.c_str(), model.c_str());
  ReplayOptions o;
  o.sample = a.sample;
  o.seed = a.seed;
  o.threads = a.threads;
  o.tolerant = a.tolerant;
  o.device = a.device;
  o.weights = a.replay_weights;
  o.kv_dtype = a.replay_kv_dtype;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = VerifyTranscript(*t, model, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) {
    std::fprintf(stderr, "fieldprint verify: %s\n", r.status().ToString().c_str());
    return 2;
  }
  if (!r->ok) {
    std::printf("MISMATCH: %s", r->failure.c_str());
    if (r->first_bad_commit >= 0)
      std::printf(" (first divergent commit %lld)", static_cast<long long>(r->first_bad_commit));
    if (r->first_bad_block >= 0)
      std::printf(" (first divergent fingerprint block %lld)", static_cast<long long>(r->first_bad_block));
    std::printf("\n");
    return 1;
  }
  if (a.tolerant) {
    std::printf(
        "OK (tolerant): %d fingerprint blocks (min overlap %.3f, worst mean error %.4f, worst error %.4f), %d "
        "consistency proofs, %d tokens re-sampled (%d near-tie flips); commit roots not compared; replay %.3f s, "
        "total %.3f s\n",
        r->blocks_checked, r->min_overlap, r->worst_mean_err, r->worst_err, r->proofs_checked,
        r->tokens_resampled, r->tokens_flipped, r->replay_seconds, s);
    return 0;
  }
  std::printf(
      "OK (%s replay, bit-exact): %d commit roots, %d consistency proofs, %d tokens %s; replay %.3f s (anchor "
      "%.3f + forward %.3f + hash %.3f + check %.3f), total %.3f s\n",
      a.device.c_str(), r->commits_checked, r->proofs_checked, r->tokens_resampled,
      r->device_argmax          ? "checked by device argmax"
      : r->device_sample_bounds ? "checked against device sample bounds"
                                : "re-sampled",
      r->replay_seconds, r->anchor_seconds,
      r->forward_seconds, r->hash_seconds, r->check_seconds, s);
  return 0;
}

}  // namespace

void RegisterVerifyCommand(CLI::App& app) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "verify", "verify a generation transcript by replay (exit 0 ok, 1 mismatch, 2 bad input)");
  cmd->add_option("transcript", args->transcript, "transcript JSON written by generate --transcript");
  cmd->add_option("--model", args->model,
                  "GGUF file (default: the transcript's file name in the model cache)");
  cmd->add_option("--sample", args->sample, "check only N commit roots, picked by --seed (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->seed, "seed of the commit sample");
  cmd->add_option("--threads", args->threads, "CPU threads (0 = all cores)");
  auto* dev = cmd->add_option("--device", args->device,
                              "replay engine of the bit-exact check: cpu (CPU transcripts) | cuda (CUDA "
                              "transcripts: batch-invariant CUDA engine, KV hashed on the GPU)")
                  ->check(CLI::IsMember({"cpu", "cuda"}));
  auto* tol = cmd->add_flag(
      "--tolerant", args->tolerant,
      "accept a replay that is not bit-exact: check the transcript's fingerprints (top-k of final hidden "
      "states per 32 tokens) within tolerance instead of the commit roots, in a CPU replay; how a CUDA "
      "transcript is checked without a GPU (docs/transcripts.md)")
                  ->excludes(dev);
  cmd->add_option("--replay-weights", args->replay_weights,
                  "with --tolerant: replay with these weights (quantized | f32) instead of the transcript's")
      ->check(CLI::IsMember({"quantized", "f32"}))
      ->needs(tol);
  cmd->add_option("--replay-kv-dtype", args->replay_kv_dtype,
                  "with --tolerant: replay with this KV dtype (f32 | f16 | bf16) instead of the transcript's")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->needs(tol);
  cmd->callback([args] {
    const int rc = Run(*args);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace fp::cli
