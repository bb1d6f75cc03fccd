// fieldprint/generation.h — the generation loop: prompt prefill, sampling, streaming, and the verified
// watermark with rollback.
//
// The loop drives an EngineBackend (engine_backend.h): the CPU engine or the CUDA engine; the verifier runs
// on the matching backend (CPU worker, or the CUDA side stream fed by OnStepWritten(seqs, compute stream)).
// One sequence attends to a shared sealed anchor. Every forward step (the prompt's prefill, then one token
// per decode step) is reported to the Verifier when verification is on:
//   off        no hashing
//   sync-full  after every step, re-hash ALL committed pages of the sequence and compare (the naive scheme)
//   sync       after every step, wait for the incremental commit hashing (Drain)
//   async      hashing runs on the verifier's worker; decode never waits for it
// On a corruption event the verifier rolls the cache back to the last commit that re-verifies; the loop
// re-prefills the token log from there (the tokens already produced are kept: the KV is recomputed, not the
// text) and carries on. With verified_only, text is released only once the verified watermark covers the
// KV it was sampled from; otherwise it streams at once and unverified tokens are only counted.
// defines: VerifyMode, ParseVerifyMode, VerifyModeName, GenerationOptions, GenerationStats, Generator
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fieldprint/commit_log.h"
#include "fieldprint/engine.h"
#include "fieldprint/engine_backend.h"
#include "fieldprint/fault_injection.h"
#include "fieldprint/sampler.h"
#include "fieldprint/merkle.h"
#include "fieldprint/sha256.h"
#include "fieldprint/status.h"
#include "fieldprint/tokenizer.h"

namespace fp {

enum class VerifyMode : uint8_t { kOff, kSyncFull, kSync, kAsync };
Result<VerifyMode> ParseVerifyMode(std::string_view s);  // "off", "sync-full", "sync", "async"
const char* VerifyModeName(VerifyMode m);

struct GenerationOptions {
  int32_t max_tokens = 128;
  SamplerConfig sampler;
  VerifyMode verify = VerifyMode::kOff;
  int32_t commit_every = 0;               // commit every N tokens besides full pages (0 = pages only)
  int64_t inject_fault_step = -1;         // flip one committed KV bit before this decode step (-1 = never)
  KvFaultTarget inject_fault_target;      // which bit (fault_injection.h); injected at the first step >=
                                          // inject_fault_step where the target is committed
  bool verified_only = false;             // hold text until the watermark covers it
  size_t audit_bytes_per_step = 1 << 20;  // re-hash budget that finds injected faults
  bool stop_at_end_of_turn = true;        // stop on eos / <|im_end|>
};

struct GenerationStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // wall time of the decode loop (sampling and verification included)
  int32_t rollbacks = 0;
  int32_t recomputed_tokens = 0;  // tokens re-prefilled after rollbacks
  int32_t faults_injected = 0;
  std::string fault_target;  // where the injected fault landed (KvFaultTargetString of the concrete target)
  int32_t verified_watermark = 0;  // sequence positions covered by verified commits at the end
  int32_t kv_length = 0;           // sequence positions in the KV at the end (the last token is not fed)
  std::string stop_reason;         // "end-of-turn", "max-tokens"
  std::vector<int32_t> tokens;     // the generated token ids
  // With verification on: the sequence's commitments at the end (for transcripts, transcript.h).
  CommitLog commit_log = CommitLog(16);  // initialised: keeps GenerationStats{} valid (explicit ctor)
  MerkleTree commit_tree;  // page digests of the last commit
  Digest anchor_root;
  double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0; }
  double decode_tok_s() const { return decode_seconds > 0 ? generated_tokens / decode_seconds : 0.0; }
};

class Generator {
 public:
  // engine and tokenizer must outlive the generator; anchor (on the engine's device) may be null.
  Generator(LlamaEngine& engine, const Tokenizer& tokenizer, std::shared_ptr<AnchorSegment> anchor)
      : owned_(MakeCpuBackend(engine)), engine_(*owned_), tok_(tokenizer), anchor_(std::move(anchor)) {}
  Generator(EngineBackend& engine, const Tokenizer& tokenizer, std::shared_ptr<AnchorSegment> anchor)
      : engine_(engine), tok_(tokenizer), anchor_(std::move(anchor)) {}

  // Generates after `prompt` (token ids of the sequence part: the anchor is not repeated). on_text receives
  // complete UTF-8 pieces as they are released. The sequence is freed at the end.
  Result<GenerationStats> Generate(std::span<const int32_t> prompt, const GenerationOptions& options,
                                   const std::function<void(std::string_view)>& on_text);

 private:
  std::unique_ptr<EngineBackend> owned_;  // the CPU adapter when built from a LlamaEngine
  EngineBackend& engine_;
  const Tokenizer& tok_;
  std::shared_ptr<AnchorSegment> anchor_;
};

}  // namespace fp
