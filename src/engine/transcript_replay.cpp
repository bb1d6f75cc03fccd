// Transcript verification: the consistency proofs (transcript only), the model digest, then a teacher-forced
// replay on the CPU engine — ONE prefill over prompt ++ generated[:-1] (the last generated token was never
// fed), page digests of the replayed KV, every commit root (or a seeded sample) rebuilt, and every generated
// token re-sampled from the replayed logits with the recorded sampler and seed.
#include <algorithm>
#include <chrono>
#include <set>

#include "fieldprint/commit_policy.h"
#include "fieldprint/engine.h"
#include "fieldprint/page_digest.h"
#include "fieldprint/transcript.h"

namespace fp {

namespace {

ReplayReport Fail(ReplayReport r, int64_t commit, std::string why) {
  r.ok = false;
  r.first_bad_commit = commit;
  r.failure = std::move(why);
  return r;
}

// Commit positions the run's Verifier made: the prompt's prefill is one step, each fed generated token one
// more, then the turn end.
Result<std::vector<int32_t>> PolicyPositions(const Transcript& t, int32_t kv_len) {
  CommitPolicyConfig pc;
  pc.every_n_tokens = t.commit_every;
  auto policy = CommitPolicy::Create(pc, t.page_size);
  if (!policy.ok()) return policy.status();
  std::vector<int32_t> out;
  int32_t last = 0;
  auto step = [&](int32_t len, bool turn_end) -> Status {
    auto d = policy->Decide(last, len, CommitFlags{turn_end, false});
    if (!d.ok()) return d.status();
    if (d->reason != CommitReason::kNone && d->position > last) {
      out.push_back(d->position);
      last = d->position;
    }
    return Status::Ok();
  };
  const auto p = static_cast<int32_t>(t.prompt.size());
  for (int32_t len = p; len <= kv_len; ++len) FP_RETURN_IF_ERROR(step(len, false));
  FP_RETURN_IF_ERROR(step(kv_len, true));
  return out;
}

}  // namespace

Result<ReplayReport> ReplayTranscript(const Transcript& t, LlamaEngine& engine, const ReplayOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (opt.tolerant) return ReplayTranscriptTolerant(t, engine, opt);
  ReplayReport rep;
  if (t.device != "cpu") return Unimplemented("transcript: only CPU transcripts replay bit for bit");
  const ModelConfig& c = engine.config();
  if (c.n_layers != t.n_layers || c.d_model != t.d_model || c.n_heads != t.n_heads ||
      c.n_kv_heads != t.n_kv_heads || c.vocab_size != t.vocab_size) {
    return Fail(rep, -1, "model hyper-parameters differ from the transcript's");
  }
  if (engine.options().page_size != t.page_size || DTypeName(engine.options().kv_dtype) != t.kv_dtype ||
      engine.options().gamma != t.gamma) {
    return InvalidArgument("replay: the engine's page size / KV dtype / gamma differ from the transcript's");
  }
  if (t.chunk_bytes == 0 || t.chunk_bytes > kMaxChunkBytes) return InvalidArgument("transcript: chunk_bytes");
  for (const auto* v : {&t.anchor_tokens, &t.prompt, &t.generated}) {
    for (int32_t id : *v) {
      if (id < 0 || id >= c.vocab_size) return InvalidArgument("transcript: token id out of the vocabulary");
    }
  }
  if (t.prompt.empty()) return InvalidArgument("transcript: empty prompt");

  // The anchor and its root.
  auto anchor = engine.BuildAnchor(t.anchor_tokens);
  if (!anchor.ok()) return anchor.status();
  Digest anchor_root = Sha256(nullptr, 0);
  if ((*anchor)->length() > 0) {
    auto layers = AnchorLayerDigestsCpu(**anchor, t.chunk_bytes);
    if (!layers.ok()) return layers.status();
    anchor_root = CombineLayerDigests(*layers);
  }
  if (!(anchor_root == t.anchor_root)) return Fail(rep, -1, "anchor root differs");

  // One teacher-forced prefill.
  std::vector<int32_t> fed = t.prompt;  // [prompt + generated - 1]
  if (t.generated.size() > 1) fed.insert(fed.end(), t.generated.begin(), t.generated.end() - 1);
  const auto kv_len = static_cast<int32_t>(fed.size());
  const auto n_logits = static_cast<int32_t>(t.generated.size());
  auto seq = engine.NewSequence(*anchor);
  if (!seq.ok()) return seq.status();
  std::vector<float> logits;  // [n_logits, vocab]
  auto result = [&]() -> Result<ReplayReport> {
    FP_RETURN_IF_ERROR(engine.Forward(*seq, fed, n_logits, &logits));

    // Commit positions must be the policy's.
    auto expect = PolicyPositions(t, kv_len);
    if (!expect.ok()) return expect.status();
    for (size_t i = 0; i < std::max(expect->size(), t.commits.size()); ++i) {
      if (i >= expect->size() || i >= t.commits.size() || (*expect)[i] != t.commits[i].position) {
        return Fail(rep, static_cast<int64_t>(i),
                    "commit positions differ from what the commit policy gives");
      }
    }
    // Which commits to check.
    std::set<size_t> pick;
    const size_t n = t.commits.size();
    if (opt.sample > 0 && static_cast<size_t>(opt.sample) < n) {
      uint64_t s = opt.seed;
      while (pick.size() < static_cast<size_t>(opt.sample)) {
        s += 0x9E3779B97F4A7C15ull;  // splitmix64
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        pick.insert(static_cast<size_t>((z ^ (z >> 31)) % n));
      }
    } else {
      for (size_t i = 0; i < n; ++i) pick.insert(i);
    }
    const size_t last_pick = pick.empty() ? 0 : *pick.rbegin() + 1;
    auto table = engine.cache().meta().BlockTable(*seq);
    if (!table.ok()) return table.status();
    auto page_digest = [&](int64_t page, int32_t fill) -> Result<Digest> {
      if (page < 0 || static_cast<size_t>(page) >= table->size())
        return OutOfRange("replay: page past the KV");
      auto layers = PageLayerDigestsCpu(engine.cache().storage(), (*table)[static_cast<size_t>(page)], fill,
                                        t.chunk_bytes);
      if (!layers.ok()) return layers.status();
      return CombineLayerDigests(*layers);
    };
    MerkleTree tree;  // full pages so far, plus at most one provisional leaf
    bool provisional = false;
    for (size_t i = 0; i < last_pick; ++i) {
      const TranscriptCommit& cm = t.commits[i];
      const int64_t full = cm.position / t.page_size;
      const auto fill = static_cast<int32_t>(cm.position % t.page_size);
      if (provisional) FP_RETURN_IF_ERROR(tree.TruncateTo(tree.size() - 1));
      provisional = false;
      while (static_cast<int64_t>(tree.size()) < full) {
        auto d = page_digest(static_cast<int64_t>(tree.size()), t.page_size);
        if (!d.ok()) return d.status();
        tree.Append(*d);
      }
      if (fill > 0) {
        auto d = page_digest(full, fill);
        if (!d.ok()) return d.status();
        tree.Append(*d);
        provisional = true;
      }
      if (!pick.count(i)) continue;
      ++rep.commits_checked;
      if (tree.size() != cm.tree_size || !(tree.Root() == cm.root)) {
        return Fail(rep, static_cast<int64_t>(i),
                    "commit " + std::to_string(i) + " (position " + std::to_string(cm.position) +
                        "): replayed root " + tree.Root().Hex() + " != recorded " + cm.root.Hex());
      }
      auto last = tree.Entry(tree.size() - 1);
      if (!last.ok() || !(*last == cm.last_entry)) {
        return Fail(rep, static_cast<int64_t>(i),
                    "commit " + std::to_string(i) + ": last page digest differs");
      }
    }

    // Re-sample every generated token from the replayed logits.
    auto sampler = Sampler::Create(t.sampler);
    if (!sampler.ok()) return sampler.status();
    const auto vocab = static_cast<size_t>(c.vocab_size);
    for (int32_t i = 0; i < n_logits; ++i) {
      auto tok =
          sampler->Sample(std::span<const float>(logits).subspan(static_cast<size_t>(i) * vocab, vocab));
      if (!tok.ok()) return tok.status();
      ++rep.tokens_resampled;
      if (*tok != t.generated[static_cast<size_t>(i)]) {
        return Fail(rep, -1,
                    "generated token " + std::to_string(i) + " is " +
                        std::to_string(t.generated[static_cast<size_t>(i)]) + ", the replay samples " +
                        std::to_string(*tok));
      }
    }
    rep.ok = true;
    return rep;
  }();
  (void)engine.FreeSequence(*seq);
  if (result.ok()) result->replay_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
}

Result<ReplayReport> VerifyTranscript(const Transcript& t, const std::string& model_path,
                                      const ReplayOptions& opt) {
  ReplayReport rep;
  if (t.device != "cpu" && !opt.tolerant)
    return Unimplemented("transcript: only CPU transcripts replay bit for bit (try the tolerant check)");
  if (!opt.tolerant && (!opt.weights.empty() || !opt.kv_dtype.empty()))
    return InvalidArgument("replay: other weights / KV dtype only in the tolerant mode");
  const std::string weights_mode = opt.weights.empty() ? t.weights : opt.weights;
  const std::string kv_dtype = opt.kv_dtype.empty() ? t.kv_dtype : opt.kv_dtype;
  if (weights_mode != "quantized" && weights_mode != "f32") return InvalidArgument("replay: weights mode");
  if (kv_dtype != "f32" && kv_dtype != "f16" && kv_dtype != "bf16") return InvalidArgument("replay: KV dtype");
  if (Status st = CheckTranscriptSignature(t); !st.ok()) {
    if (st.code() == StatusCode::kDataLoss) return Fail(rep, -1, st.message());
    return st;
  }
  // Append-only history, from the transcript alone.
  for (size_t i = 1; i < t.commits.size(); ++i) {
    const TranscriptCommit& p = t.commits[i - 1];
    const TranscriptCommit& cm = t.commits[i];
    const bool prev_full = static_cast<int64_t>(p.tree_size) * t.page_size == p.position;
    if (prev_full != cm.has_proof)
      return Fail(rep, static_cast<int64_t>(i), "consistency proof missing or unexpected");
    if (!cm.has_proof) continue;
    if (!MerkleTree::VerifyConsistency(p.tree_size, cm.tree_size, p.root, cm.root, cm.proof)) {
      return Fail(rep, static_cast<int64_t>(i), "commit " + std::to_string(i) + ": consistency proof fails");
    }
    ++rep.proofs_checked;
  }
  auto digest = Sha256File(model_path);
  if (!digest.ok()) return digest.status();
  if (!(*digest == t.model_sha256)) return Fail(rep, -1, "model file digest differs from the transcript's");
  auto weights =
      LlamaWeights::Load(model_path, weights_mode == "f32" ? WeightStorage::kF32 : WeightStorage::kQuantized);
  if (!weights.ok()) return weights.status();
  EngineOptions eo;
  eo.num_threads = opt.threads;
  eo.kv_dtype = kv_dtype == "f16" ? DType::kF16 : kv_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  eo.page_size = t.page_size;
  eo.gamma = t.gamma;
  const size_t need = t.prompt.size() + t.generated.size() + static_cast<size_t>(t.page_size);
  if (need > (size_t{1} << 24)) return InvalidArgument("transcript: too many tokens");
  eo.kv_capacity = static_cast<int32_t>(need);
  auto engine = LlamaEngine::Create(std::move(weights).value(), eo);
  if (!engine.ok()) return engine.status();
  auto r = ReplayTranscript(t, **engine, opt);
  if (r.ok()) r->proofs_checked = rep.proofs_checked;
  return r;
}

}  // namespace fp
