// Transcript verification: the consistency proofs (transcript only), the model digest, then a teacher-forced
// replay on the engine the transcript was recorded on — ONE prefill over prompt ++ generated[:-1] (the last
// generated token was never fed), page digests of the replayed KV, every commit root (or a seeded sample)
// rebuilt, and every generated token re-sampled from the replayed logits with the recorded sampler and seed.
// The CPU replay is here; the CUDA one (same checks, device KV hashed on the GPU) in transcript_cuda.cpp.
#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "fieldprint/commit_policy.h"
#include "fieldprint/engine.h"
#include "fieldprint/page_digest.h"
#include "fieldprint/thread_pool.h"
#include "fieldprint/transcript.h"
#include "transcript_internal.h"

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

namespace transcript_detail {

Status CheckTranscriptInput(const Transcript& t, const ModelConfig& c, std::string* mismatch) {
  mismatch->clear();
  if (c.n_layers != t.n_layers || c.d_model != t.d_model || c.n_heads != t.n_heads ||
      c.n_kv_heads != t.n_kv_heads || c.vocab_size != t.vocab_size) {
    *mismatch = "model hyper-parameters differ from the transcript's";
    return Status::Ok();
  }
  if (t.chunk_bytes == 0 || t.chunk_bytes > kMaxChunkBytes) return InvalidArgument("transcript: chunk_bytes");
  for (const auto* v : {&t.anchor_tokens, &t.prompt, &t.generated}) {
    for (int32_t id : *v) {
      if (id < 0 || id >= c.vocab_size) return InvalidArgument("transcript: token id out of the vocabulary");
    }
  }
  if (t.prompt.empty()) return InvalidArgument("transcript: empty prompt");
  return Status::Ok();
}

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

std::vector<Result<int32_t>> ResampleRows(Sampler& sampler, std::span<const float> logits, int32_t vocab,
                                          int32_t n_rows, int threads) {
  const auto v = static_cast<size_t>(vocab);
  std::vector<Result<int32_t>> out(static_cast<size_t>(n_rows), Result<int32_t>(0));  // [n_rows]
  // The draws first, in stream order: one per row for a sampling config (sampler.h). Where a row fails its
  // checks, Sample would have stopped the stream there and the caller stops at that row: the later draws are
  // never looked at.
  std::vector<double> draws(static_cast<size_t>(n_rows), 0.0);  // [n_rows]
  if (!sampler.config().greedy()) {
    for (auto& u : draws) u = sampler.NextUniform();
  }
  auto pick = [&](int64_t b, int64_t e) {
    SamplerScratch scratch;  // per chunk: Pick is const and touches only this
    for (int64_t i = b; i < e; ++i) {
      const auto r = static_cast<size_t>(i);
      out[r] = sampler.Pick(logits.subspan(r * v, v), draws[r], &scratch);
    }
  };
  // A 49152-token row costs ~0.5 ms (its exps), starting a pool well under that: rows in parallel unless the whole
  // job is tiny (tests' toy vocabularies).
  int n_threads = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  n_threads = std::clamp(n_threads, 1, std::max<int32_t>(1, n_rows));
  if (n_threads == 1 || static_cast<int64_t>(n_rows) * vocab < (int64_t{1} << 16)) {
    pick(0, n_rows);
  } else {
    ThreadPool pool(n_threads);
    pool.ParallelFor(n_rows, 1, pick);
  }
  return out;
}

namespace {

Result<ReplayReport> CheckCommitsAndTokensBody(const Transcript& t, const ReplayOptions& opt, int32_t kv_len,
                                               const PageDigestFn& digests, const ReplayedTokens& tokens,
                                               double* hash_seconds) {
  ReplayReport rep;
  const auto n_logits = static_cast<int32_t>(t.generated.size());
  if (tokens.use_ids) {
    if (!t.sampler.greedy() && !tokens.ids_from_sample_bounds)
      return Internal("replay: device greedy ids for a sampling (non-greedy) transcript");
    if (t.sampler.greedy() && tokens.ids_from_sample_bounds)
      return Internal("replay: sample-bound ids for a greedy transcript");
    if (tokens.greedy_ids.size() != static_cast<size_t>(n_logits)) return Internal("replay: ids of the wrong count");
  } else if (tokens.vocab <= 0 ||
             tokens.logits.size() != static_cast<size_t>(n_logits) * static_cast<size_t>(tokens.vocab)) {
    return Internal("replay: logits of the wrong size");
  }
  // Commit positions must be the policy's.
  auto expect = PolicyPositions(t, kv_len);
  if (!expect.ok()) return expect.status();
  for (size_t i = 0; i < std::max(expect->size(), t.commits.size()); ++i) {
    if (i >= expect->size() || i >= t.commits.size() || (*expect)[i] != t.commits[i].position) {
      return Fail(rep, static_cast<int64_t>(i), "commit positions differ from what the commit policy gives");
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
  // Every page the checked prefix of commits needs: full pages up to the furthest commit, and the partial
  // pages at the commit fills. Hashed in one call (one GPU batch on the device).
  std::vector<PageFill> need;
  std::map<std::pair<int64_t, int32_t>, size_t> where;  // (page, fill) -> index into need
  int64_t max_full = 0;
  for (size_t i = 0; i < last_pick; ++i) {
    const TranscriptCommit& cm = t.commits[i];
    if (cm.position > kv_len) return Fail(rep, static_cast<int64_t>(i), "commit position past the tokens");
    max_full = std::max<int64_t>(max_full, cm.position / t.page_size);
    const auto fill = static_cast<int32_t>(cm.position % t.page_size);
    if (fill > 0 && where.emplace(std::make_pair(cm.position / t.page_size, fill), need.size()).second)
      need.push_back({cm.position / t.page_size, fill});
  }
  for (int64_t p = 0; p < max_full; ++p) {
    where.emplace(std::make_pair(p, t.page_size), need.size());
    need.push_back({p, t.page_size});
  }
  const auto th = Clock::now();
  auto got = digests(need);
  *hash_seconds = Since(th);
  if (!got.ok()) return got.status();
  if (got->size() != need.size()) return Internal("replay: page digests of the wrong count");
  auto page_digest = [&](int64_t page, int32_t fill) { return (*got)[where.at({page, fill})]; };

  MerkleTree tree;  // full pages so far, plus at most one provisional leaf
  bool provisional = false;
  for (size_t i = 0; i < last_pick; ++i) {
    const TranscriptCommit& cm = t.commits[i];
    const int64_t full = cm.position / t.page_size;
    const auto fill = static_cast<int32_t>(cm.position % t.page_size);
    if (provisional) FP_RETURN_IF_ERROR(tree.TruncateTo(tree.size() - 1));
    provisional = false;
    while (static_cast<int64_t>(tree.size()) < full)
      tree.Append(page_digest(static_cast<int64_t>(tree.size()), t.page_size));
    if (fill > 0) {
      tree.Append(page_digest(full, fill));
      provisional = true;
    }
    if (!pick.count(i)) continue;
    ++rep.commits_checked;
    if (tree.size() != cm.tree_size || !(tree.Root() == cm.root)) {
      return Fail(rep, static_cast<int64_t>(i),
                  "commit " + std::to_string(i) + " (position " + std::to_string(cm.position) + "): replayed root " +
                      tree.Root().Hex() + " != recorded " + cm.root.Hex());
    }
    auto last = tree.Entry(tree.size() - 1);
    if (!last.ok() || !(*last == cm.last_entry)) {
      return Fail(rep, static_cast<int64_t>(i), "commit " + std::to_string(i) + ": last page digest differs");
    }
  }

  // Re-sample every generated token from the replayed logits, or take the device's greedy picks.
  auto sampler = Sampler::Create(t.sampler);
  if (!sampler.ok()) return sampler.status();
  rep.device_argmax = tokens.use_ids && !tokens.ids_from_sample_bounds;
  rep.device_sample_bounds = tokens.use_ids && tokens.ids_from_sample_bounds;
  std::vector<Result<int32_t>> picked;  // [n_logits]
  if (!tokens.use_ids) picked = ResampleRows(*sampler, tokens.logits, tokens.vocab, n_logits, opt.threads);
  for (int32_t i = 0; i < n_logits; ++i) {
    Result<int32_t> tok = 0;
    if (tokens.use_ids) {
      const int32_t id = tokens.greedy_ids[static_cast<size_t>(i)];
      if (id < 0) {  // what Sampler::Sample answers for such logits
        tok = InvalidArgument("sampler: the replayed logits of generated token " + std::to_string(i) +
                              " hold a NaN or +inf, or only -inf");
      } else {
        tok = id;
      }
    } else {
      tok = std::move(picked[static_cast<size_t>(i)]);
    }
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
}

}  // namespace

Result<ReplayReport> CheckCommitsAndTokens(const Transcript& t, const ReplayOptions& opt, int32_t kv_len,
                                           const PageDigestFn& digests, const ReplayedTokens& tokens) {
  const auto t0 = Clock::now();
  double hash_s = 0.0;
  auto r = CheckCommitsAndTokensBody(t, opt, kv_len, digests, tokens, &hash_s);
  if (r.ok()) {
    r->hash_seconds += hash_s;
    r->check_seconds = Since(t0) - hash_s;
  }
  return r;
}

}  // namespace transcript_detail

Result<ReplayReport> ReplayTranscript(const Transcript& t, LlamaEngine& engine, const ReplayOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (opt.tolerant) return ReplayTranscriptTolerant(t, engine, opt);
  ReplayReport rep;
  if (t.device != "cpu")
    return Unimplemented("transcript: recorded on " + t.device + "; the CPU replays only CPU transcripts bit for bit");
  const ModelConfig& c = engine.config();
  std::string mismatch;
  FP_RETURN_IF_ERROR(transcript_detail::CheckTranscriptInput(t, c, &mismatch));
  if (!mismatch.empty()) return Fail(rep, -1, mismatch);
  if (engine.options().page_size != t.page_size || DTypeName(engine.options().kv_dtype) != t.kv_dtype ||
      engine.options().gamma != t.gamma) {
    return InvalidArgument("replay: the engine's page size / KV dtype / gamma differ from the transcript's");
  }

  // The anchor and its root.
  auto ta = Clock::now();
  auto anchor = engine.BuildAnchor(t.anchor_tokens);
  if (!anchor.ok()) return anchor.status();
  const double anchor_s = std::chrono::duration<double>(Clock::now() - ta).count();
  ta = Clock::now();
  Digest anchor_root = Sha256(nullptr, 0);
  if ((*anchor)->length() > 0) {
    auto layers = AnchorLayerDigestsCpu(**anchor, t.chunk_bytes);
    if (!layers.ok()) return layers.status();
    anchor_root = CombineLayerDigests(*layers);
  }
  const double anchor_hash_s = std::chrono::duration<double>(Clock::now() - ta).count();
  if (!(anchor_root == t.anchor_root)) return Fail(rep, -1, "anchor root differs");

  // One teacher-forced prefill.
  const std::vector<int32_t> fed = TranscriptFedTokens(t);  // [prompt + generated - 1]
  const auto kv_len = static_cast<int32_t>(fed.size());
  const auto n_logits = static_cast<int32_t>(t.generated.size());
  auto seq = engine.NewSequence(*anchor);
  if (!seq.ok()) return seq.status();
  std::vector<float> logits;  // [n_logits, vocab]
  double forward_s = 0.0;
  auto result = [&]() -> Result<ReplayReport> {
    const auto tf = Clock::now();
    FP_RETURN_IF_ERROR(engine.Forward(*seq, fed, n_logits, &logits));
    forward_s = std::chrono::duration<double>(Clock::now() - tf).count();
    auto table = engine.cache().meta().BlockTable(*seq);
    if (!table.ok()) return table.status();
    auto digests = [&](std::span<const transcript_detail::PageFill> pages) -> Result<std::vector<Digest>> {
      std::vector<Digest> out;  // [pages]
      for (const auto& pf : pages) {
        if (pf.page < 0 || static_cast<size_t>(pf.page) >= table->size())
          return OutOfRange("replay: page past the KV");
        auto layers = PageLayerDigestsCpu(engine.cache().storage(), (*table)[static_cast<size_t>(pf.page)],
                                          pf.fill, t.chunk_bytes);
        if (!layers.ok()) return layers.status();
        out.push_back(CombineLayerDigests(*layers));
      }
      return out;
    };
    transcript_detail::ReplayedTokens toks;
    toks.logits = logits;
    toks.vocab = c.vocab_size;
    return transcript_detail::CheckCommitsAndTokens(t, opt, kv_len, digests, toks);
  }();
  (void)engine.FreeSequence(*seq);
  if (result.ok()) {
    result->replay_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    result->anchor_seconds = anchor_s;
    result->forward_seconds = forward_s;
    result->hash_seconds += anchor_hash_s;
  }
  return result;
}

Result<ReplayReport> VerifyTranscript(const Transcript& t, const std::string& model_path,
                                      const ReplayOptions& opt) {
  ReplayReport rep;
  if (opt.device != "cpu" && opt.device != "cuda") return InvalidArgument("replay: device must be cpu or cuda");
  if (opt.tolerant && opt.device != "cpu") return InvalidArgument("replay: the tolerant replay runs on the CPU");
  if (!opt.tolerant && t.device != opt.device) {
    return Unimplemented("transcript: recorded on " + t.device + ", which replays bit for bit only on " + t.device +
                         " (verify --device " + t.device + "); elsewhere use the tolerant check");
  }
  if (!opt.tolerant && (!opt.weights.empty() || !opt.kv_dtype.empty()))
    return InvalidArgument("replay: other weights / KV dtype only in the tolerant mode");
  // A CUDA transcript's weights are the GGUF's rounded to bf16; the CPU's nearest is the f32 widening.
  const std::string weights_mode = !opt.weights.empty() ? opt.weights : t.weights == "bf16" ? "f32" : t.weights;
  const std::string kv_dtype = opt.kv_dtype.empty() ? t.kv_dtype : opt.kv_dtype;
  if (opt.device == "cpu" && weights_mode != "quantized" && weights_mode != "f32")
    return InvalidArgument("replay: weights mode");
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
  const size_t need = t.prompt.size() + t.generated.size() + static_cast<size_t>(t.page_size);
  if (need > (size_t{1} << 24)) return InvalidArgument("transcript: too many tokens");
  if (opt.device == "cuda") {
    auto r = transcript_detail::VerifyTranscriptCuda(t, model_path, opt);
    if (r.ok()) r->proofs_checked = rep.proofs_checked;
    return r;
  }
  auto weights =
      LlamaWeights::Load(model_path, weights_mode == "f32" ? WeightStorage::kF32 : WeightStorage::kQuantized);
  if (!weights.ok()) return weights.status();
  EngineOptions eo;
  eo.num_threads = opt.threads;
  eo.kv_dtype = kv_dtype == "f16" ? DType::kF16 : kv_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  eo.page_size = t.page_size;
  eo.gamma = t.gamma;
  eo.kv_capacity = static_cast<int32_t>(need);
  auto engine = LlamaEngine::Create(std::move(weights).value(), eo);
  if (!engine.ok()) return engine.status();
  auto r = ReplayTranscript(t, **engine, opt);
  if (r.ok()) r->proofs_checked = rep.proofs_checked;
  return r;
}

}  // namespace fp
