// CUDA transcripts (transcript.h): recording a CudaLlama run (batch_invariant mode) and replaying it exactly on the
// GPU. The replay is the CPU one's (transcript_replay.cpp, shared checks in transcript_internal.h) with the device
// KV hashed where it lives: one GpuTreeHasher batch over every (page, layer) the checked commits need, the layer
// digests combined on the host exactly as page_digest.h defines them — the digests the run's CUDA Verifier
// committed to. Plain C++: the stream is synchronised through the runtime API only in CUDA builds; without CUDA no
// CudaLlama exists and every entry point fails before touching the device.
// Timing (issue #7: verify must cost a small fraction of generate): replay_seconds covers only per-transcript work.
// One GpuTreeHasher, created before the clock, serves the anchor and the page batch on the engine's stream (not a
// hasher, pinned buffer and stream per batch); VerifyTranscriptCuda warms the engine (CudaLlama::Warmup) and the
// hasher first, and replays the fed tokens in one chunk. A greedy transcript's tokens are checked from device
// argmax ids (CudaLlama::ForwardGreedy), so the [generated, vocab] logits never cross to the host. A sampling
// transcript with a temperature-only sampler is first checked against device-computed bounds of each token in the
// softmax walk (ConfirmBySampleBounds: 24 bytes a row cross); only when a row is too close to call, refused or
// wrong do the logits cross, into pinned memory reserved before the clock (ReplayLogits), to be re-sampled on all
// cores (transcript_detail::ResampleRows), which is also the path of top-k / top-p samplers.
#include <algorithm>
#include <chrono>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#if defined(FIELDPRINT_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "fieldprint/cuda_engine.h"
#include "fieldprint/generation.h"
#include "fieldprint/page_digest.h"
#include "fieldprint/transcript.h"
#include "fieldprint/tree_hash_cuda.h"
#include "transcript_internal.h"

namespace fp {

namespace {

// Transcript::gemm's name of a batch-invariant GEMM.
std::string GemmName(CudaEngineOptions::InvariantGemm g) {
  return g == CudaEngineOptions::InvariantGemm::kSkinny ? "skinny" : "cublas-padded";
}

Status SyncEngine(CudaLlama& e) {
#if defined(FIELDPRINT_HAVE_CUDA)
  const cudaError_t err = cudaStreamSynchronize(e.stream());
  if (err != cudaSuccess) return Internal(std::string("transcript: cuda sync: ") + cudaGetErrorName(err));
  return Status::Ok();
#else
  (void)e;
  return Unimplemented("this build has no CUDA");
#endif
}

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Host memory for a sampling replay's logits [generated, vocab] f32 (50 MB for 256 tokens of a 49152-token
// vocabulary), on the host path: top-k / top-p samplers, and a temperature-only transcript whose device sample
// bounds could not decide a row. There the check must repeat the recording sampler's decision bit for bit, which
// rests on the host libm's double exp of every logit of the row, so the rows are re-sampled on the host
// (ResampleRows, all cores). Why pinned: into a pageable std::vector the copy was zero-fill + page
// faults + the driver's staged copy, ~44 of the 50 ms "forward" on an H200 (issue #7); into cudaMallocHost memory
// it is one DMA. Reserved before the replay's clock (pinning 50 MB takes milliseconds too), like the hasher, for
// the transcripts that take the host path by design (ReplayLogitFloats); pageable memory otherwise and when
// pinning fails (correct, only slower).
class ReplayLogits {
 public:
  ReplayLogits() = default;
  ~ReplayLogits() { Release(); }
  ReplayLogits(const ReplayLogits&) = delete;
  ReplayLogits& operator=(const ReplayLogits&) = delete;

  // Best effort: pinned memory for `floats` (none for 0).
  void Reserve(size_t floats) {
    if (floats <= pinned_floats_) return;
    Release();
#if defined(FIELDPRINT_HAVE_CUDA)
    void* p = nullptr;
    if (cudaMallocHost(&p, floats * sizeof(float)) == cudaSuccess) {
      pinned_ = static_cast<float*>(p);
      pinned_floats_ = floats;
    } else {
      (void)cudaGetLastError();  // not sticky, but leave no error behind for the engine's next check
    }
#endif
  }
  // `floats` floats: the pinned block when it is big enough, else a pageable vector.
  std::span<float> Get(size_t floats) {
    if (floats <= pinned_floats_) return {pinned_, floats};
    fallback_.resize(floats);
    return fallback_;
  }

 private:
  void Release() {
#if defined(FIELDPRINT_HAVE_CUDA)
    if (pinned_ != nullptr) (void)cudaFreeHost(pinned_);
#endif
    pinned_ = nullptr;
    pinned_floats_ = 0;
  }

  float* pinned_ = nullptr;  // [pinned_floats_]
  size_t pinned_floats_ = 0;
  std::vector<float> fallback_;
};

// Whether the fed tokens can fit the engine's KV pool at all (its capacity is rounded up to pages): otherwise the
// forward fails, and no [generated, vocab] host buffer should be sized from the transcript's claim first.
bool FitsEngine(const Transcript& t, const CudaLlama& engine) {
  const CudaEngineOptions& o = engine.options();
  return t.prompt.size() + t.generated.size() <=
         static_cast<size_t>(std::max(o.kv_capacity, 0)) + static_cast<size_t>(std::max(o.page_size, 0));
}

// Whether t's tokens can be confirmed by device sample bounds (ConfirmBySampleBounds): temperature-only sampling.
bool SampleBoundsApply(const Transcript& t, int32_t vocab) {
  return !t.sampler.greedy() && vocab > 0 && t.sampler.Unfiltered(static_cast<size_t>(vocab));
}

// Floats of pinned logits worth reserving before a replay of t: its logits [generated, vocab] when the host
// re-samples them (top-k / top-p samplers); 0 for greedy (device argmax), for temperature-only sampling (device
// sample bounds; their rare fallback uses pageable memory) and when t cannot fit the engine.
size_t ReplayLogitFloats(const Transcript& t, const CudaLlama& engine) {
  if (t.sampler.greedy() || SampleBoundsApply(t, engine.config().vocab_size) || !FitsEngine(t, engine)) return 0;
  return t.generated.size() * static_cast<size_t>(std::max(engine.config().vocab_size, 0));
}

// Digests of objects laid out as [2 * L] segments (K then V per layer, page_digest.h): one GPU batch of L items
// per object on the engine's stream, then the L layer digests of each combined. [objects.size()]
Result<std::vector<Digest>> CombinedDigestsGpu(GpuTreeHasher& hasher, CudaLlama& engine,
                                               const std::vector<std::vector<ByteSegment>>& objects) {
  std::vector<GpuHashItem> items;  // [objects * L]
  std::vector<size_t> layers;      // [objects] L of each
  for (const auto& segs : objects) {
    if (segs.empty() || segs.size() % 2 != 0) return Internal("transcript: segments not in K/V pairs");
    for (size_t l = 0; l < segs.size() / 2; ++l)
      items.push_back(GpuHashItem{std::span<const ByteSegment>(segs).subspan(2 * l, 2)});
    layers.push_back(segs.size() / 2);
  }
  std::vector<Digest> out;  // [objects]
  if (items.empty()) return out;
  FP_RETURN_IF_ERROR(hasher.Plan(items));
  std::vector<Digest> layer_digests(items.size());  // [objects * L]; Run's copy accepts pageable memory
  FP_RETURN_IF_ERROR(hasher.Run(engine.stream(), layer_digests.data()));
  FP_RETURN_IF_ERROR(SyncEngine(engine));
  size_t at = 0;
  for (size_t n : layers) {
    out.push_back(CombineLayerDigests(std::span<const Digest>(layer_digests).subspan(at, n)));
    at += n;
  }
  return out;
}

// A sampling transcript's tokens confirmed on the device instead of re-sampled on the host (the [n, vocab] logits
// stay on the GPU): for a temperature-only sampler, each row's draw u (taken in order, as Sample takes them) must
// lie at least kSampleBoundMargin inside its recorded token's [lo, hi) in the softmax walk (cuda_sample_bounds.cu:
// device and host values are both within ~1.6e-11 of the real ones at vocab 49152, so such a row is decided
// exactly as the host walk decides it). Any other row (closer than the margin, outside, refused) answers false and
// the caller takes the exact host path, which also writes the mismatch report.
constexpr double kSampleBoundMargin = 1e-9;

Result<bool> ConfirmBySampleBounds(const Transcript& t, CudaLlama& engine, SeqId seq, std::span<const int32_t> fed) {
  auto sampler = Sampler::Create(t.sampler);
  if (!sampler.ok()) return sampler.status();
  const int32_t vocab = engine.config().vocab_size;
  std::vector<SampleBounds> b;  // [generated]
  FP_RETURN_IF_ERROR(
      engine.ForwardSampleBounds(seq, fed, t.generated, 1.0 / static_cast<double>(t.sampler.temperature), &b));
  for (size_t i = 0; i < b.size(); ++i) {
    const double u = sampler->NextUniform();
    const bool last = t.generated[i] == vocab - 1;  // the walk also ends there when u rounds past the total
    if (b[i].refused || !(u >= b[i].lo + kSampleBoundMargin) || !(last || u < b[i].hi - kSampleBoundMargin))
      return false;
  }
  return true;
}

// The exact replay on `engine` with `hasher` and `host_logits` (prepared by the caller, outside the timed region).
Result<ReplayReport> ReplayWithHasher(const Transcript& t, CudaLlama& engine, const ReplayOptions& opt,
                                      GpuTreeHasher& hasher, ReplayLogits& host_logits) {
  const auto t0 = Clock::now();
  ReplayReport rep;
  if (opt.tolerant) return InvalidArgument("replay: the tolerant replay runs on the CPU");
  if (t.device != "cuda")
    return Unimplemented("transcript: recorded on " + t.device + "; the CUDA replay checks only CUDA transcripts");
  const CudaEngineOptions& o = engine.options();
  if (!o.batch_invariant) return InvalidArgument("replay: the CUDA engine must be in batch_invariant mode");
  const ModelConfig& c = engine.config();
  std::string mismatch;
  FP_RETURN_IF_ERROR(transcript_detail::CheckTranscriptInput(t, c, &mismatch));
  if (!mismatch.empty()) {
    rep.failure = mismatch;
    return rep;
  }
  if (o.page_size != t.page_size || DTypeName(engine.cache().layout().dtype) != t.kv_dtype || o.gamma != t.gamma ||
      !o.gamma_per_head.empty()) {
    return InvalidArgument("replay: the engine's page size / KV dtype / gamma differ from the transcript's");
  }
  if (GemmName(o.batch_invariant_gemm) != t.gemm) {
    return InvalidArgument("replay: the engine's batch-invariant GEMM (" + GemmName(o.batch_invariant_gemm) +
                           ") is not the transcript's (" + t.gemm + ")");
  }
  if (hasher.chunk_bytes() != t.chunk_bytes) return Internal("replay: the hasher's chunk size is not the transcript's");

  // The anchor (BuildAnchor synchronises) and its root (hashed on the GPU).
  auto ts = Clock::now();
  auto anchor = engine.BuildAnchor(t.anchor_tokens);
  if (!anchor.ok()) return anchor.status();
  const double anchor_s = Since(ts);
  ts = Clock::now();
  Digest anchor_root = Sha256(nullptr, 0);
  if ((*anchor)->length() > 0) {
    auto segs = AnchorLayerSegments(**anchor);
    if (!segs.ok()) return segs.status();
    auto root = CombinedDigestsGpu(hasher, engine, {std::move(segs).value()});
    if (!root.ok()) return root.status();
    anchor_root = root->front();
  }
  const double anchor_hash_s = Since(ts);
  if (!(anchor_root == t.anchor_root)) {
    rep.failure = "anchor root differs";
    return rep;
  }

  // One teacher-forced prefill (batch_invariant: the same bits as the run's prefill + decode steps). A greedy
  // sampler's picks are made on the device: n ints to the host instead of [n, vocab] floats.
  const std::vector<int32_t> fed = TranscriptFedTokens(t);  // [prompt + generated - 1]
  const auto n_out = static_cast<int32_t>(t.generated.size());
  const bool device_argmax = t.sampler.greedy();
  auto seq = engine.NewSequence(*anchor);
  if (!seq.ok()) return seq.status();
  std::span<float> logits;    // [n_out, vocab] (sampling transcripts), pinned when reserved
  std::vector<int32_t> ids;   // [n_out] (greedy transcripts; sampling ones confirmed by SampleBounds)
  bool by_bounds = false;
  double forward_s = 0.0;
  auto result = [&]() -> Result<ReplayReport> {
    const auto tf = Clock::now();
    if (!device_argmax && n_out > 0 && SampleBoundsApply(t, c.vocab_size)) {
      auto decided = ConfirmBySampleBounds(t, engine, *seq, fed);
      if (!decided.ok()) return decided.status();
      if (*decided) {
        by_bounds = true;
        ids = t.generated;
      } else {  // a row too close to call (or wrong): the exact host path below, on a fresh sequence
        FP_RETURN_IF_ERROR(engine.FreeSequence(*seq));
        auto fresh = engine.NewSequence(*anchor);
        if (!fresh.ok()) return fresh.status();
        *seq = *fresh;
      }
    }
    if (device_argmax) {
      FP_RETURN_IF_ERROR(engine.ForwardGreedy(*seq, fed, n_out, &ids));  // synchronises
    } else if (!by_bounds) {
      if (!FitsEngine(t, engine))
        return ResourceExhausted("replay: the transcript's tokens exceed the engine's KV pool");
      logits = host_logits.Get(t.generated.size() * static_cast<size_t>(c.vocab_size));
      FP_RETURN_IF_ERROR(engine.ForwardInto(*seq, fed, n_out, logits));  // synchronises
    }
    forward_s = Since(tf);
    auto table = engine.cache().meta().BlockTable(*seq);
    if (!table.ok()) return table.status();
    auto digests = [&](std::span<const transcript_detail::PageFill> pages) -> Result<std::vector<Digest>> {
      std::vector<std::vector<ByteSegment>> objects;  // [pages] of [2 * L] device segments
      for (const auto& pf : pages) {
        if (pf.page < 0 || static_cast<size_t>(pf.page) >= table->size())
          return OutOfRange("replay: page past the KV");
        auto segs = PageLayerSegments(engine.cache().storage(), (*table)[static_cast<size_t>(pf.page)], pf.fill);
        if (!segs.ok()) return segs.status();
        objects.push_back(std::move(segs).value());
      }
      return CombinedDigestsGpu(hasher, engine, objects);
    };
    transcript_detail::ReplayedTokens toks;
    toks.use_ids = device_argmax || by_bounds;
    toks.ids_from_sample_bounds = by_bounds;
    toks.logits = logits;
    toks.vocab = c.vocab_size;
    toks.greedy_ids = ids;
    return transcript_detail::CheckCommitsAndTokens(t, opt, static_cast<int32_t>(fed.size()), digests, toks);
  }();
  (void)engine.FreeSequence(*seq);
  if (result.ok()) {
    result->replay_seconds = Since(t0);
    result->anchor_seconds = anchor_s;
    result->forward_seconds = forward_s;
    result->hash_seconds += anchor_hash_s;
  }
  return result;
}

}  // namespace

Result<Transcript> TranscriptFromRun(CudaLlama& engine, const std::string& model_path,
                                     const GenerationOptions& options, std::span<const int32_t> anchor_tokens,
                                     std::span<const int32_t> prompt, const GenerationStats& stats) {
  const CudaEngineOptions& o = engine.options();
  if (!o.batch_invariant)
    return FailedPrecondition("transcript: the CUDA engine must run in batch_invariant mode to be replayable");
  if (!o.gamma_per_head.empty()) return FailedPrecondition("transcript: records one gamma, not a per-head list");
  const transcript_detail::TranscriptEngineInfo info{"cuda", "bf16", DTypeName(engine.cache().layout().dtype),
                                                    o.page_size, o.gamma, GemmName(o.batch_invariant_gemm)};
  return transcript_detail::TranscriptFromRunInfo(engine.config(), info, model_path, options, anchor_tokens, prompt,
                                                  stats);
}

Status RecordFingerprints(Transcript& t, CudaLlama& engine, const std::shared_ptr<AnchorSegment>& anchor,
                          int32_t top_k, int32_t block) {
  const int32_t d = engine.config().d_model;
  if (top_k < 1 || top_k > d || block < 1)
    return InvalidArgument("fingerprint: top_k must be in [1, d_model] and block >= 1");
  const std::vector<int32_t> fed = TranscriptFedTokens(t);
  if (fed.empty()) return InvalidArgument("fingerprint: nothing fed");
  auto seq = engine.NewSequence(anchor);
  if (!seq.ok()) return seq.status();
  std::vector<int32_t> rows(fed.size());  // [n] every row: a block's fingerprint covers all of them
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<float> hidden;  // [n, d_model]
  Status st = engine.ForwardHidden(*seq, fed, rows, &hidden);
  if (Status f = engine.FreeSequence(*seq); st.ok()) st = f;
  FP_RETURN_IF_ERROR(st);
  auto f = MakeFingerprints(hidden, d, static_cast<int32_t>(fed.size()), block, top_k);
  if (!f.ok()) return f.status();
  t.fingerprints = std::move(f).value();
  return Status::Ok();
}

Result<ReplayReport> ReplayTranscriptCuda(const Transcript& t, CudaLlama& engine, const ReplayOptions& opt) {
  auto hasher = GpuTreeHasher::Create(t.chunk_bytes);  // InvalidArgument for a bad chunk size, as the checks would
  if (!hasher.ok()) return hasher.status();
  ReplayLogits host_logits;
  host_logits.Reserve(ReplayLogitFloats(t, engine));
  return ReplayWithHasher(t, engine, opt, **hasher, host_logits);
}

namespace transcript_detail {

Result<ReplayReport> VerifyTranscriptCuda(const Transcript& t, const std::string& model_path,
                                          const ReplayOptions& opt) {
  // The CUDA engine widens every matrix to bf16 itself: the zero-copy quantised view is the cheapest source.
  auto weights = LlamaWeights::Load(model_path, WeightStorage::kQuantized);
  if (!weights.ok()) return weights.status();
  CudaEngineOptions co;  // the defaults generate --transcript uses, batch_invariant on
  co.page_size = t.page_size;
  co.gamma = t.gamma;
  co.max_batch = 1;
  co.batch_invariant = true;
  co.batch_invariant_gemm = t.gemm == "skinny" ? CudaEngineOptions::InvariantGemm::kSkinny
                                               : CudaEngineOptions::InvariantGemm::kCublasPadded;
  co.kv_capacity = static_cast<int32_t>(t.prompt.size() + t.generated.size()) + t.page_size;
  // The fed tokens in one chunk (one attention plan, one host wait; batch_invariant: the same bits at any chunk
  // size, tests/cuda/cuda_engine_determinism_test.cu), up to 1024 rows of scratch ([T, vocab] f32 logits).
  const auto fed = static_cast<int32_t>(t.prompt.size() + t.generated.size());
  co.max_chunk = std::clamp(fed, co.max_chunk, 1024);
  auto engine = CudaLlama::FromWeights(*weights, co);
  if (!engine.ok()) return engine.status();
  // Start-up work before the replay's clock (generate does the same before its anchor): the first kernel launches
  // and cuBLAS calls, the hasher's buffers and its first launches (one page of the pool, contents irrelevant).
  FP_RETURN_IF_ERROR((*engine)->Warmup());
  auto hasher = GpuTreeHasher::Create(t.chunk_bytes);
  if (!hasher.ok()) return hasher.status();
  {
    auto segs = PageLayerSegments((*engine)->cache().storage(), 0, t.page_size);
    if (!segs.ok()) return segs.status();
    auto warm = CombinedDigestsGpu(**hasher, **engine, {std::move(segs).value()});
    if (!warm.ok()) return warm.status();
  }
  ReplayLogits host_logits;
  host_logits.Reserve(ReplayLogitFloats(t, **engine));
  return ReplayWithHasher(t, **engine, opt, **hasher, host_logits);
}

}  // namespace transcript_detail

}  // namespace fp
