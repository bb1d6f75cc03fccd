// cuda_engine_determinism_test.cu — CudaLlama's batch_invariant mode (issue #7): for the same token sequence,
// the KV bytes, the page digests the commitments are built from, and the logits must be bit-identical
//   - when its KV is built by one prefill pass, by chunked prefill (several chunk sizes) or token by token,
//   and
//   - when it decodes alone or inside batches of 1 .. 15 other random sequences at a random batch position.
// Both batch-invariant GEMM choices (cuBLAS on 64-row blocks, the skinny GEMM). Random weights drawn on the
// device from one seed (identical in every engine), an anchor with a non-zero gamma, GQA group 3, prompt
// lengths that end mid-page. A control run without batch_invariant shows the comparison can fail (its chunked
// prefill differs from its decode). Every test skips without a CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "cuda_test_util.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/page_digest.h"

namespace fp {
namespace {

ModelConfig DetConfig() {
  ModelConfig c;
  c.name = "det-tiny";
  c.n_layers = 2;
  c.d_model = 384;
  c.n_heads = 6;
  c.n_kv_heads = 2;  // group 3
  c.head_dim = 64;
  c.d_ff = 768;
  c.vocab_size = 500;
  c.context_length = 1024;
  c.rope_base = 10000.f;
  return c;
}

constexpr uint64_t kSeed = 41;

using Gemm = CudaEngineOptions::InvariantGemm;
constexpr Gemm kGemms[] = {Gemm::kCublasPadded, Gemm::kSkinny};
const char* Name(Gemm g) { return g == Gemm::kSkinny ? "skinny" : "cublas-padded"; }

std::unique_ptr<CudaLlama> MakeEngine(int max_chunk, int max_batch, bool batch_invariant,
                                      Gemm gemm = Gemm::kCublasPadded, bool tied = false) {
  CudaEngineOptions o;
  o.kv_capacity = 4096;
  o.max_batch = max_batch;
  o.max_chunk = max_chunk;
  o.gamma = 0.3f;
  o.split_tokens = 64;  // several splits per sequence: the LSE merge is part of what must not move
  o.batch_invariant = batch_invariant;
  o.batch_invariant_gemm = gemm;
  ModelConfig c = DetConfig();
  c.tied_embeddings = tied;
  auto e = CudaLlama::Random(c, kSeed, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<int32_t> Tokens(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int32_t> u(0, DetConfig().vocab_size - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = u(rng);
  return t;
}

// The sequence's KV bytes (every page, every layer, K then V, filled rows only) and its page digests.
struct SeqKv {
  std::vector<uint8_t> bytes;
  std::vector<Digest> pages;
};

SeqKv ReadSeqKv(CudaLlama& e, SeqId seq) {
  SeqKv out;
  const KvStorage& st = e.cache().storage();
  const int32_t len = *e.Length(seq), P = e.options().page_size, L = e.config().n_layers;
  auto table = e.cache().meta().BlockTable(seq);
  EXPECT_TRUE(table.ok());
  std::vector<std::vector<uint8_t>> host(static_cast<size_t>(2 * L));
  for (int32_t i = 0; i * P < len; ++i) {
    const int32_t fill = std::min(P, len - i * P), page = (*table)[static_cast<size_t>(i)];
    std::vector<ByteSegment> segs;
    for (int l = 0; l < L; ++l) {
      for (int v = 0; v < 2; ++v) {
        auto dev = v == 1 ? st.PageBytesV(l, page, fill) : st.PageBytesK(l, page, fill);
        EXPECT_TRUE(dev.ok());
        auto& h = host[static_cast<size_t>(2 * l + v)];
        h.resize(dev->size());
        EXPECT_EQ(cudaSuccess, cudaMemcpy(h.data(), dev->data(), h.size(), cudaMemcpyDeviceToHost));
        out.bytes.insert(out.bytes.end(), h.begin(), h.end());
        segs.push_back({h.data(), h.size()});
      }
    }
    auto digests = LayerDigestsOfSegmentsCpu(segs, kDefaultChunkBytes);
    EXPECT_TRUE(digests.ok());
    out.pages.push_back(CombineLayerDigests(*digests));
  }
  return out;
}

bool SameBits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Builds the anchor and a sequence holding prompt[0 .. n-1] by `method`, then decodes `next`; returns the
// logits of the last prompt token (from the build) and of the decode step, and the KV after it.
enum class Build { kOnePrefill, kChunked, kTokenByToken };
struct BuildResult {
  std::vector<float> last_prompt_logits, decode_logits;
  SeqKv kv;
};

BuildResult BuildAndDecode(CudaLlama& e, Build method, std::span<const int32_t> anchor_toks,
                           std::span<const int32_t> prompt, int32_t next) {
  BuildResult r;
  auto anchor = e.BuildAnchor(anchor_toks);
  EXPECT_TRUE(anchor.ok()) << anchor.status().ToString();
  auto seq = e.NewSequence(*anchor);
  EXPECT_TRUE(seq.ok());
  if (method == Build::kTokenByToken) {
    std::vector<float> l;
    EXPECT_TRUE(e.Forward(*seq, prompt.first(1), 1, &l).ok());
    for (size_t i = 1; i < prompt.size(); ++i) {
      const SeqId s = *seq;
      const Status st = e.DecodeLogits(std::span(&s, 1), prompt.subspan(i, 1), &l);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    r.last_prompt_logits = l;
  } else {  // kOnePrefill / kChunked differ by the engine's max_chunk
    const Status st = e.Forward(*seq, prompt, 1, &r.last_prompt_logits);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  const SeqId s = *seq;
  const Status st = e.DecodeLogits(std::span(&s, 1), std::span(&next, 1), &r.decode_logits);
  EXPECT_TRUE(st.ok()) << st.ToString();
  r.kv = ReadSeqKv(e, s);
  return r;
}

TEST(CudaDeterminism, KvAndLogitsIndependentOfHowKvWasBuilt) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  const auto anchor = Tokens(rng, 19);
  for (Gemm gemm : kGemms)
    for (int n : {45, 70}) {  // prompts ending mid-page; 70 > the 64-token split and the 64-row GEMM block
      const auto prompt = Tokens(rng, n);
      const int32_t next = Tokens(rng, 1)[0];
      auto one = MakeEngine(128, 4, true, gemm);
      ASSERT_TRUE(one);
      const BuildResult ref = BuildAndDecode(*one, Build::kOnePrefill, anchor, prompt, next);
      struct Variant {
        const char* name;
        int chunk;
        Build method;
      };
      for (const Variant& v :
           {Variant{"chunks of 8", 8, Build::kChunked}, Variant{"chunks of 13", 13, Build::kChunked},
            Variant{"token by token", 128, Build::kTokenByToken}}) {
        auto e = MakeEngine(v.chunk, 4, true, gemm);
        ASSERT_TRUE(e);
        const BuildResult got = BuildAndDecode(*e, v.method, anchor, prompt, next);
        SCOPED_TRACE(Name(gemm));
        EXPECT_TRUE(got.kv.bytes == ref.kv.bytes) << v.name << ", prompt " << n << ": KV bytes differ";
        EXPECT_TRUE(got.kv.pages == ref.kv.pages) << v.name << ", prompt " << n << ": page digests differ";
        EXPECT_TRUE(SameBits(got.last_prompt_logits, ref.last_prompt_logits))
            << v.name << ", prompt " << n << ": logits of the last prompt token differ";
        EXPECT_TRUE(SameBits(got.decode_logits, ref.decode_logits))
            << v.name << ", prompt " << n << ": decode logits differ";
      }
    }
}

// The control: without batch_invariant the prefill kernel and cuBLAS make chunked prefill differ from decode,
// so the comparisons above are able to fail.
TEST(CudaDeterminism, DefaultModeIsNotBuildInvariant) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  const auto anchor = Tokens(rng, 19);
  const auto prompt = Tokens(rng, 70);
  const int32_t next = Tokens(rng, 1)[0];
  auto a = MakeEngine(128, 4, false);
  auto b = MakeEngine(128, 4, false);
  ASSERT_TRUE(a && b);
  const BuildResult one = BuildAndDecode(*a, Build::kOnePrefill, anchor, prompt, next);
  const BuildResult tok = BuildAndDecode(*b, Build::kTokenByToken, anchor, prompt, next);
  EXPECT_FALSE(one.kv.bytes == tok.kv.bytes && SameBits(one.decode_logits, tok.decode_logits))
      << "default mode happened to be bit-identical: the determinism test would not detect a regression";
}

TEST(CudaDeterminism, LogitsIndependentOfBatch) {
  SKIP_WITHOUT_GPU();
  for (Gemm gemm : kGemms) {
    SCOPED_TRACE(Name(gemm));
    std::mt19937 rng(8);
    const auto anchor = Tokens(rng, 23);
    const auto prompt = Tokens(rng, 37);
    const auto steps = Tokens(rng, 4);
    // Alone.
    std::vector<std::vector<float>> alone;
    SeqKv alone_kv;
    {
      auto e = MakeEngine(64, 16, true, gemm);
      ASSERT_TRUE(e);
      auto an = e->BuildAnchor(anchor);
      ASSERT_TRUE(an.ok());
      auto s = e->NewSequence(*an);
      ASSERT_TRUE(s.ok());
      std::vector<float> l;
      ASSERT_TRUE(e->Forward(*s, prompt, 1, &l).ok());
      for (int32_t t : steps) {
        const SeqId id = *s;
        ASSERT_TRUE(e->DecodeLogits(std::span(&id, 1), std::span(&t, 1), &l).ok());
        alone.push_back(l);
      }
      alone_kv = ReadSeqKv(*e, *s);
    }
    const size_t V = static_cast<size_t>(DetConfig().vocab_size);
    for (int batch : {2, 5, 16}) {
      auto e = MakeEngine(64, 16, true, gemm);
      ASSERT_TRUE(e);
      auto an = e->BuildAnchor(anchor);
      ASSERT_TRUE(an.ok());
      std::vector<SeqId> seqs;
      const int pos = std::uniform_int_distribution<int>(0, batch - 1)(rng);  // where our sequence sits
      SeqId ours = -1;
      std::vector<float> l;
      for (int i = 0; i < batch; ++i) {
        auto s = e->NewSequence(*an);
        ASSERT_TRUE(s.ok());
        const auto p = i == pos ? prompt : Tokens(rng, std::uniform_int_distribution<int>(1, 90)(rng));
        ASSERT_TRUE(e->Forward(*s, p, 1, &l).ok());
        seqs.push_back(*s);
        if (i == pos) ours = *s;
      }
      for (size_t k = 0; k < steps.size(); ++k) {
        auto toks = Tokens(rng, batch);
        toks[static_cast<size_t>(pos)] = steps[k];
        ASSERT_TRUE(e->DecodeLogits(seqs, toks, &l).ok());
        EXPECT_TRUE(SameBits(std::span(l).subspan(static_cast<size_t>(pos) * V, V), alone[k]))
            << "step " << k << ": logits at batch position " << pos << " of " << batch
            << " differ from alone";
      }
      const SeqKv kv = ReadSeqKv(*e, ours);
      EXPECT_TRUE(kv.bytes == alone_kv.bytes) << "batch " << batch << ": KV bytes differ from alone";
      EXPECT_TRUE(kv.pages == alone_kv.pages) << "batch " << batch << ": page digests differ from alone";
    }
  }
}

// The skinny deterministic mode keeps the GEMM weights segment-tiled (cuda_engine_layout.cu): an engine switched
// into it by SetDecodeTuning (weights relayouted on the device, a tied LM head copied out of the embedding) must
// give the bits of one loaded in it, and switching back must restore the default mode's results exactly. The
// vocabulary (500) is not a multiple of the 16-row tile, so the LM head has padding rows.
TEST(CudaDeterminism, WeightLayoutSwitchKeepsResults) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  const auto anchor = Tokens(rng, 11);
  const auto prompt = Tokens(rng, 29);
  const int32_t next = Tokens(rng, 1)[0];
  for (const bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "separate LM head");
    auto loaded_det = MakeEngine(128, 4, true, Gemm::kSkinny, tied);
    auto switched = MakeEngine(128, 4, false, Gemm::kSkinny, tied);
    auto plain = MakeEngine(128, 4, false, Gemm::kSkinny, tied);
    ASSERT_TRUE(loaded_det && switched && plain);
    CudaLlama::DecodeTuning det;
    det.split_tokens = 64;  // MakeEngine's
    det.batch_invariant = true;
    det.batch_invariant_gemm = Gemm::kSkinny;
    ASSERT_TRUE(switched->SetDecodeTuning(det).ok());
    const BuildResult want_det = BuildAndDecode(*loaded_det, Build::kOnePrefill, anchor, prompt, next);
    const BuildResult got_det = BuildAndDecode(*switched, Build::kOnePrefill, anchor, prompt, next);
    EXPECT_TRUE(SameBits(got_det.decode_logits, want_det.decode_logits)) << "det mode after the switch differs";
    EXPECT_TRUE(got_det.kv.bytes == want_det.kv.bytes) << "det mode after the switch: KV bytes differ";
    CudaLlama::DecodeTuning off;
    off.split_tokens = 64;
    ASSERT_TRUE(switched->SetDecodeTuning(off).ok());
    ASSERT_TRUE(plain->SetDecodeTuning(off).ok());
    const BuildResult want_off = BuildAndDecode(*plain, Build::kOnePrefill, anchor, prompt, next);
    const BuildResult got_off = BuildAndDecode(*switched, Build::kOnePrefill, anchor, prompt, next);
    EXPECT_TRUE(SameBits(got_off.decode_logits, want_off.decode_logits)) << "default mode after switching back";
    EXPECT_TRUE(SameBits(got_off.last_prompt_logits, want_off.last_prompt_logits));
  }
}

// A prefill after an eager decode step runs the prefill kernel, not the decode plan that step kept (the engine
// once handed that plan to the next prefill, which then failed its signature check).
TEST(CudaDeterminism, PrefillAfterEagerDecodeUsesItsOwnAttention) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(10);
  const auto first = Tokens(rng, 21), second = Tokens(rng, 17);
  const int32_t step = Tokens(rng, 1)[0];
  auto e = MakeEngine(128, 4, false);
  auto fresh = MakeEngine(128, 4, false);
  ASSERT_TRUE(e && fresh);
  CudaLlama::DecodeTuning eager;
  eager.decode_graphs = false;
  eager.split_tokens = 64;
  ASSERT_TRUE(e->SetDecodeTuning(eager).ok());
  ASSERT_TRUE(fresh->SetDecodeTuning(eager).ok());
  auto a = e->NewSequence(nullptr);
  ASSERT_TRUE(a.ok());
  std::vector<float> l;
  ASSERT_TRUE(e->Forward(*a, first, 1, &l).ok());
  const SeqId id = *a;
  ASSERT_TRUE(e->DecodeLogits(std::span(&id, 1), std::span(&step, 1), &l).ok());
  auto b = e->NewSequence(nullptr);
  auto c = fresh->NewSequence(nullptr);
  ASSERT_TRUE(b.ok() && c.ok());
  std::vector<float> got, want;
  const Status st = e->Forward(*b, second, 1, &got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(fresh->Forward(*c, second, 1, &want).ok());
  EXPECT_TRUE(SameBits(got, want));
}

}  // namespace
}  // namespace fp
