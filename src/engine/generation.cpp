// Generator: prefill, sample, stream; report each step to the Verifier and roll back on corruption. Drives
// either engine through EngineBackend: each step is enqueued, reported to the verifier (OnStepWritten with
// the compute stream, before anything waits on the GPU), and only then are its logits brought to the host.
#include "fieldprint/generation.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <string>

#include "fieldprint/fault_injection.h"
#include "fieldprint/verifier.h"

namespace fp {

Result<VerifyMode> ParseVerifyMode(std::string_view s) {
  if (s == "off") return VerifyMode::kOff;
  if (s == "sync-full") return VerifyMode::kSyncFull;
  if (s == "sync") return VerifyMode::kSync;
  if (s == "async") return VerifyMode::kAsync;
  return InvalidArgument("verify mode '" + std::string(s) + "' is not one of off, sync-full, sync, async");
}

const char* VerifyModeName(VerifyMode m) {
  switch (m) {
    case VerifyMode::kOff:
      return "off";
    case VerifyMode::kSyncFull:
      return "sync-full";
    case VerifyMode::kSync:
      return "sync";
    case VerifyMode::kAsync:
      return "async";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

Result<GenerationStats> Generator::Generate(std::span<const int32_t> prompt, const GenerationOptions& opt,
                                            const std::function<void(std::string_view)>& on_text) {
  if (prompt.empty()) return InvalidArgument("generate: empty prompt");
  if (opt.max_tokens < 0) return InvalidArgument("generate: max_tokens must be >= 0");
  if (opt.commit_every < 0) return InvalidArgument("generate: commit_every must be >= 0");
  if (opt.inject_fault_step >= 0 && opt.verify == VerifyMode::kOff) {
    return InvalidArgument("generate: --inject-fault needs verification on (--verify sync|async|sync-full)");
  }
  if (opt.inject_fault_step >= 0) FP_RETURN_IF_ERROR(CheckKvFaultTarget(opt.inject_fault_target, engine_.cache().layout()));
  if (opt.verified_only && opt.verify == VerifyMode::kOff) {
    return InvalidArgument("generate: --verified-only needs verification on");
  }
  auto sampler = Sampler::Create(opt.sampler);
  if (!sampler.ok()) return sampler.status();
  auto seq_r = engine_.NewSequence(anchor_);
  if (!seq_r.ok()) return seq_r.status();
  const SeqId seq = *seq_r;

  std::unique_ptr<Verifier> ver;
  if (opt.verify != VerifyMode::kOff) {
    VerifierConfig vc;
    vc.policy.every_n_tokens = opt.commit_every;
    vc.audit_bytes_per_step = opt.audit_bytes_per_step;
    vc.anchor_every_steps = 64;
    auto v = Verifier::Create(&engine_.cache(), anchor_, vc, engine_.verifier_kind());
    if (!v.ok()) {
      (void)engine_.FreeSequence(seq);
      return v.status();
    }
    ver = std::move(v).value();
    if (Status st = ver->Track(seq); !st.ok()) {
      (void)engine_.FreeSequence(seq);
      return st;
    }
  }

  GenerationStats stats;
  Status status = [&]() -> Status {
    const auto prompt_len = static_cast<int32_t>(prompt.size());
    std::vector<int32_t> log(prompt.begin(),
                             prompt.end());  // every token of the sequence, fed or about to be
    std::vector<int32_t> gen_pos;   // [generated] log index each generated token occupies (= KV rows it saw)
    std::span<const float> logits;  // [vocab] of the last step's last token (owned by the backend)
    StreamDecoder decoder(tok_);
    size_t released = 0;  // generated tokens whose text went out
    Status fault_pending;  // why the requested fault could not be placed yet (ok: not due or injected)

    auto after_step = [&]() -> Status {
      if (!ver) return Status::Ok();
      const std::array<SeqId, 1> seqs{seq};
      FP_RETURN_IF_ERROR(ver->OnStepWritten(seqs, engine_.stream()));
      if (opt.verify == VerifyMode::kSync || opt.verify == VerifyMode::kSyncFull)
        FP_RETURN_IF_ERROR(ver->Drain());
      if (opt.verify == VerifyMode::kSyncFull) {
        auto fresh = ver->RecomputeRoot(seq, engine_.stream());
        if (!fresh.ok()) return fresh.status();
        auto root = ver->Root(seq);
        if (!root.ok()) return root.status();
        if (!(*fresh == *root) && !ver->IsCorrupt(seq)) {
          return DataLoss("sync-full: recomputed root differs but the verifier raised no event");
        }
      }
      for (const CorruptionEvent& e : ver->TakeEvents()) {
        if (e.kind == CorruptionEvent::Kind::kAnchor) return DataLoss("anchor corrupted: " + e.ToString());
      }
      return Status::Ok();
    };
    auto take_logits = [&]() -> Status {
      auto l = engine_.TakeLogits();
      if (!l.ok()) return l.status();
      logits = *l;
      return Status::Ok();
    };
    auto release = [&](bool all) -> Status {
      int32_t w = 0;
      if (opt.verified_only && !all) {
        auto wm = ver->VerifiedWatermark(seq);
        if (!wm.ok()) return wm.status();
        w = *wm;
      }
      while (released < stats.tokens.size() && (all || !opt.verified_only || gen_pos[released] <= w)) {
        // Control tokens (<|im_end|>, eos) end the turn; they are not text.
        const int32_t id = stats.tokens[released];
        const std::string piece = tok_.IsControl(id) ? std::string() : decoder.Push(id);
        if (on_text && !piece.empty()) on_text(piece);
        ++released;
      }
      return Status::Ok();
    };
    // Rolls back to the last verified commit and recomputes the KV from the token log.
    auto recover = [&]() -> Status {
      auto p = ver->Rollback(seq, engine_.stream());
      if (!p.ok()) return p.status();
      ++stats.rollbacks;
      auto keep = static_cast<int32_t>(log.size());
      if (opt.verified_only) {
        // Unreleased tokens sampled from KV past the verified point are dropped and sampled again. Released
        // tokens were sampled from verified KV and their text is out: they stay in the log.
        keep = std::max(std::min(*p + 1, keep), prompt_len);
        if (released > 0) keep = std::max(keep, gen_pos[released - 1] + 1);
        while (!gen_pos.empty() && gen_pos.back() >= keep && stats.tokens.size() > released) {
          gen_pos.pop_back();
          stats.tokens.pop_back();
        }
        log.resize(static_cast<size_t>(keep));
      }
      if (*p >= keep) return Status::Ok();
      const std::span<const int32_t> all(log);
      if (engine_.replay_any_shape()) {
        FP_RETURN_IF_ERROR(
            engine_.Prefill(seq, all.subspan(static_cast<size_t>(*p), static_cast<size_t>(keep - *p))));
      } else {
        // The original shape (engine_backend.h): the prompt's rest through the prefill, then one decode step
        // per generated token. Exact when the rollback point is 0 or past the prompt.
        const int32_t split = std::min(std::max(*p, prompt_len), keep);
        if (*p < split) {
          FP_RETURN_IF_ERROR(
              engine_.Prefill(seq, all.subspan(static_cast<size_t>(*p), static_cast<size_t>(split - *p))));
        }
        for (int32_t i = split; i < keep; ++i)
          FP_RETURN_IF_ERROR(engine_.Decode(seq, log[static_cast<size_t>(i)]));
      }
      stats.recomputed_tokens += keep - *p;
      FP_RETURN_IF_ERROR(after_step());
      return take_logits();
    };

    const auto t0 = Clock::now();
    FP_RETURN_IF_ERROR(engine_.Prefill(seq, prompt));
    stats.prefill_seconds = Since(t0);
    stats.prompt_tokens = prompt_len;
    FP_RETURN_IF_ERROR(after_step());
    FP_RETURN_IF_ERROR(take_logits());

    const auto t1 = Clock::now();
    auto finished = [&] {
      if (static_cast<int32_t>(stats.tokens.size()) >= opt.max_tokens) return true;
      return opt.stop_at_end_of_turn && !stats.tokens.empty() && tok_.IsEndOfTurn(stats.tokens.back());
    };
    auto decode = [&]() -> Status {
      while (!finished()) {
        auto tok = sampler->Sample(logits);
        if (!tok.ok()) return tok.status();
        stats.tokens.push_back(*tok);
        gen_pos.push_back(static_cast<int32_t>(log.size()));
        FP_RETURN_IF_ERROR(release(false));
        if (finished()) break;  // the last token is not fed: nothing would read its KV
        if (opt.inject_fault_step >= 0 && stats.faults_injected == 0 &&
            static_cast<int64_t>(stats.tokens.size()) >= opt.inject_fault_step) {
          // A flipped bit in committed KV: the silent corruption audits must catch. Until the target's bytes
          // are committed (a page not yet full), try again at the next step.
          FP_RETURN_IF_ERROR(ver->Drain());
          auto table = engine_.cache().meta().BlockTable(seq);
          if (!table.ok()) return table.status();
          auto clog = ver->Log(seq);
          if (!clog.ok()) return clog.status();
          auto fault = ResolveKvFault(opt.inject_fault_target, engine_.cache().layout(), *table,
                                      clog->last_position());
          if (fault.ok()) {
            FP_RETURN_IF_ERROR(FlipKvBit(engine_.cache().storage(), fault->flip));
            ++stats.faults_injected;
            stats.fault_target = KvFaultTargetString(fault->target);
          } else {
            fault_pending = fault.status();
          }
        }
        log.push_back(*tok);
        FP_RETURN_IF_ERROR(engine_.Decode(seq, *tok));
        FP_RETURN_IF_ERROR(after_step());  // async: the hashing event is recorded before the logits wait
        FP_RETURN_IF_ERROR(take_logits());
        if (ver && ver->IsCorrupt(seq)) FP_RETURN_IF_ERROR(recover());
      }
      return Status::Ok();
    };
    FP_RETURN_IF_ERROR(decode());
    if (stats.faults_injected == 0 && !fault_pending.ok()) {
      // The step came but the target never lay in committed KV: say why instead of reporting 0 faults.
      return OutOfRange("generate: the fault was never injected: " + fault_pending.message());
    }
    if (ver) {
      // Close the turn: commit the tail and wait, so the watermark covers what was produced. A corruption
      // found only now rolls back like any other; dropped tokens are generated again.
      for (int attempt = 0;; ++attempt) {
        FP_RETURN_IF_ERROR(ver->MarkTurnEnd(seq));
        FP_RETURN_IF_ERROR(after_step());
        FP_RETURN_IF_ERROR(ver->Drain());
        if (!ver->IsCorrupt(seq)) break;
        if (attempt == 4) return DataLoss("generate: corruption persists after 4 rollbacks");
        FP_RETURN_IF_ERROR(recover());
        FP_RETURN_IF_ERROR(decode());
      }
      auto wm = ver->VerifiedWatermark(seq);
      if (!wm.ok()) return wm.status();
      stats.verified_watermark = *wm;
      auto clog = ver->Log(seq);
      if (!clog.ok()) return clog.status();
      stats.commit_log = std::move(clog).value();
      auto tree = ver->Tree(seq);
      if (!tree.ok()) return tree.status();
      stats.commit_tree = std::move(tree).value();
      stats.anchor_root = ver->AnchorRoot();
      FP_RETURN_IF_ERROR(release(false));
    } else {
      FP_RETURN_IF_ERROR(release(true));
    }
    stats.stop_reason =
        static_cast<int32_t>(stats.tokens.size()) >= opt.max_tokens ? "max-tokens" : "end-of-turn";
    stats.decode_seconds = Since(t1);
    if (auto len = engine_.Length(seq); len.ok()) stats.kv_length = *len;
    stats.generated_tokens = static_cast<int32_t>(stats.tokens.size());
    const std::string tail = decoder.Flush();
    if (on_text && !tail.empty()) on_text(tail);
    return Status::Ok();
  }();
  if (ver) {
    Status st = ver->Forget(seq);
    if (status.ok()) status = st;
  }
  if (Status st = engine_.FreeSequence(seq); status.ok()) status = st;
  if (!status.ok()) return status;
  return stats;
}

}  // namespace fp
