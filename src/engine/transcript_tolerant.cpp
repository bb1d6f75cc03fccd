// Tolerant transcripts: recording the fingerprints of a run (one teacher-forced prefill on the run's own CPU
// engine, which is batch invariant, so the hidden states are the run's bit for bit) and the tolerant replay,
// which accepts a replay whose numbers differ a little (another device, another linear path, another KV dtype):
// the fingerprints must match within FingerprintTolerance and each re-sampled token must equal the recorded one
// or be a near tie with it. Anchor and commit roots are not compared here (their bits are what differs).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "fieldprint/engine.h"
#include "fieldprint/transcript.h"

namespace fp {

namespace {

// One prefill of `fed` after `anchor`; every row's hidden state (each block's fingerprint covers all its rows),
// and the logits of the last n_logits tokens. The sequence is freed again.
Status PrefillHidden(LlamaEngine& engine, const std::shared_ptr<AnchorSegment>& anchor,
                     std::span<const int32_t> fed, int32_t n_logits, std::vector<float>* logits,
                     std::vector<float>* hidden) {
  if (fed.empty()) return InvalidArgument("fingerprint: nothing fed");
  auto seq = engine.NewSequence(anchor);
  if (!seq.ok()) return seq.status();
  std::vector<int32_t> rows(fed.size());  // [n] 0 .. n-1
  std::iota(rows.begin(), rows.end(), 0);
  Status st = engine.Forward(*seq, fed, n_logits, logits, rows, hidden);
  if (Status f = engine.FreeSequence(*seq); st.ok()) st = f;
  return st;
}

}  // namespace

std::vector<int32_t> TranscriptFedTokens(const Transcript& t) {
  std::vector<int32_t> fed = t.prompt;  // [prompt + generated - 1]
  if (t.generated.size() > 1) fed.insert(fed.end(), t.generated.begin(), t.generated.end() - 1);
  return fed;
}

Status RecordFingerprints(Transcript& t, LlamaEngine& engine, const std::shared_ptr<AnchorSegment>& anchor,
                          int32_t top_k, int32_t block) {
  const int32_t d = engine.config().d_model;
  if (top_k < 1 || top_k > d || block < 1)
    return InvalidArgument("fingerprint: top_k must be in [1, d_model] and block >= 1");
  const std::vector<int32_t> fed = TranscriptFedTokens(t);
  std::vector<float> hidden;  // [fed, d_model]
  FP_RETURN_IF_ERROR(PrefillHidden(engine, anchor, fed, 0, nullptr, &hidden));
  auto f = MakeFingerprints(hidden, d, static_cast<int32_t>(fed.size()), block, top_k);
  if (!f.ok()) return f.status();
  t.fingerprints = std::move(f).value();
  return Status::Ok();
}

Result<ReplayReport> ReplayTranscriptTolerant(const Transcript& t, LlamaEngine& engine, const ReplayOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  ReplayReport rep;
  auto fail = [&](std::string why) {
    rep.ok = false;
    rep.failure = std::move(why);
    return rep;
  };
  if (!t.fingerprints) {
    return FailedPrecondition(
        "transcript: no fingerprints to check tolerantly (record them with generate --transcript, "
        "--fingerprint-top-k > 0)");
  }
  const ModelConfig& c = engine.config();
  if (c.n_layers != t.n_layers || c.d_model != t.d_model || c.n_heads != t.n_heads ||
      c.n_kv_heads != t.n_kv_heads || c.vocab_size != t.vocab_size) {
    return fail("model hyper-parameters differ from the transcript's");
  }
  // gamma changes the function computed, not just its rounding: it must be the transcript's.
  if (engine.options().gamma != t.gamma) return InvalidArgument("replay: the engine's gamma differs");
  for (const auto* v : {&t.anchor_tokens, &t.prompt, &t.generated}) {
    for (int32_t id : *v) {
      if (id < 0 || id >= c.vocab_size) return InvalidArgument("transcript: token id out of the vocabulary");
    }
  }
  if (t.prompt.empty()) return InvalidArgument("transcript: empty prompt");
  const std::vector<int32_t> fed = TranscriptFedTokens(t);
  const Fingerprints& rec = *t.fingerprints;
  FP_RETURN_IF_ERROR(rec.Validate(static_cast<int32_t>(fed.size()), c.d_model));

  auto anchor = engine.BuildAnchor(t.anchor_tokens);
  if (!anchor.ok()) return anchor.status();
  const auto n_logits = static_cast<int32_t>(t.generated.size());
  std::vector<float> logits;  // [n_logits, vocab]
  std::vector<float> hidden;  // [fed, d_model]
  FP_RETURN_IF_ERROR(PrefillHidden(engine, *anchor, fed, n_logits, &logits, &hidden));
  auto replayed = MakeFingerprints(hidden, c.d_model, static_cast<int32_t>(fed.size()), rec.block, rec.top_k);
  if (!replayed.ok()) return replayed.status();
  const FingerprintMatch m = MatchFingerprints(rec, *replayed, opt.tolerance);
  rep.blocks_checked = m.blocks_checked;
  rep.min_overlap = m.min_overlap;
  rep.worst_mean_err = m.worst_mean_err;
  rep.worst_err = m.worst_err;
  if (!m.ok) {
    rep.first_bad_block = m.first_bad_block;
    return fail("fingerprint " + m.failure);
  }

  // Tokens: the same sampler and seed; a different pick is accepted only as a near tie in the replay's logits.
  auto sampler = Sampler::Create(t.sampler);
  if (!sampler.ok()) return sampler.status();
  const auto vocab = static_cast<size_t>(c.vocab_size);
  for (int32_t i = 0; i < n_logits; ++i) {
    const std::span<const float> row = std::span<const float>(logits).subspan(static_cast<size_t>(i) * vocab, vocab);
    auto tok = sampler->Sample(row);
    if (!tok.ok()) return tok.status();
    ++rep.tokens_resampled;
    const int32_t want = t.generated[static_cast<size_t>(i)];
    if (*tok == want) continue;
    const float gap = row[static_cast<size_t>(*tok)] - row[static_cast<size_t>(want)];
    if (std::fabs(gap) > opt.token_logit_tol) {
      return fail("generated token " + std::to_string(i) + " is " + std::to_string(want) + ", the replay samples " +
                  std::to_string(*tok) + " (logit gap " + std::to_string(gap) + ")");
    }
    ++rep.tokens_flipped;
  }
  rep.ok = true;
  rep.replay_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

}  // namespace fp
