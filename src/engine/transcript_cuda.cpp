// CUDA transcripts (transcript.h): recording a CudaLlama run (batch_invariant mode) and replaying it exactly on the
// GPU. The replay is the CPU one's (transcript_replay.cpp, shared checks in transcript_internal.h) with the device
// KV hashed where it lives: one GpuTreeHasher batch over every (page, layer) the checked commits need, the layer
// digests combined on the host exactly as page_digest.h defines them — the digests the run's CUDA Verifier
// committed to. Plain C++: the stream is synchronised through the runtime API only in CUDA builds; without CUDA no
// CudaLlama exists and every entry point fails before touching the device.
#include <chrono>
#include <numeric>

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

// Digests of objects laid out as [2 * L] segments (K then V per layer, page_digest.h): one GPU batch of L items
// per object, then the L layer digests of each combined. [objects.size()]
Result<std::vector<Digest>> CombinedDigestsGpu(const std::vector<std::vector<ByteSegment>>& objects,
                                               size_t chunk_bytes) {
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
  auto layer_digests = TreeHashGpuSync(items, chunk_bytes);  // [objects * L]
  if (!layer_digests.ok()) return layer_digests.status();
  if (layer_digests->size() != items.size()) return Internal("transcript: GPU hasher returned a wrong count");
  size_t at = 0;
  for (size_t n : layers) {
    out.push_back(CombineLayerDigests(std::span<const Digest>(*layer_digests).subspan(at, n)));
    at += n;
  }
  return out;
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
                                                    o.page_size, o.gamma};
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
  using Clock = std::chrono::steady_clock;
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

  // The anchor and its root (hashed on the GPU).
  auto anchor = engine.BuildAnchor(t.anchor_tokens);
  if (!anchor.ok()) return anchor.status();
  FP_RETURN_IF_ERROR(SyncEngine(engine));  // the hasher runs on its own stream
  Digest anchor_root = Sha256(nullptr, 0);
  if ((*anchor)->length() > 0) {
    auto segs = AnchorLayerSegments(**anchor);
    if (!segs.ok()) return segs.status();
    auto root = CombinedDigestsGpu({std::move(segs).value()}, t.chunk_bytes);
    if (!root.ok()) return root.status();
    anchor_root = root->front();
  }
  if (!(anchor_root == t.anchor_root)) {
    rep.failure = "anchor root differs";
    return rep;
  }

  // One teacher-forced prefill (batch_invariant: the same bits as the run's prefill + decode steps).
  const std::vector<int32_t> fed = TranscriptFedTokens(t);  // [prompt + generated - 1]
  const auto n_logits = static_cast<int32_t>(t.generated.size());
  auto seq = engine.NewSequence(*anchor);
  if (!seq.ok()) return seq.status();
  std::vector<float> logits;  // [n_logits, vocab]
  auto result = [&]() -> Result<ReplayReport> {
    FP_RETURN_IF_ERROR(engine.Forward(*seq, fed, n_logits, &logits));  // synchronises
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
      return CombinedDigestsGpu(objects, t.chunk_bytes);
    };
    return transcript_detail::CheckCommitsAndTokens(t, opt, static_cast<int32_t>(fed.size()), digests, logits,
                                                    c.vocab_size);
  }();
  (void)engine.FreeSequence(*seq);
  if (result.ok()) result->replay_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
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
  co.kv_capacity = static_cast<int32_t>(t.prompt.size() + t.generated.size()) + t.page_size;
  auto engine = CudaLlama::FromWeights(*weights, co);
  if (!engine.ok()) return engine.status();
  return ReplayTranscriptCuda(t, **engine, opt);
}

}  // namespace transcript_detail

}  // namespace fp
