// cuda_engine_graph_test.cu — CudaLlama's graph-replayed decode step against its eager decode step.
//
// Two engines with the same device-drawn random weights: one replays a CUDA graph per batch size, the other
// launches eagerly (a fresh exact-length attention plan per step). Their logits must be bit-identical at every
// step, while the sequences grow across split boundaries (re-captures), the batch shrinks (another batch size)
// and sequences are truncated (shorter lengths under a captured capacity). The GEMV path (B <= 8) is compared
// with cuBLAS on the same engine (tolerance: they round differently). Skips without a CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "fieldprint/cuda_engine.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

ModelConfig Tiny(int head_dim) {
  ModelConfig c;
  c.name = "tiny";
  c.n_layers = 2;
  c.d_model = 512;
  c.n_heads = 256 / head_dim * 2;  // d_model = n_heads * head_dim: 8 heads of 64 or 4 of 128 (group 2)
  c.n_kv_heads = c.n_heads / 2;
  c.head_dim = head_dim;
  c.d_ff = 512;
  c.vocab_size = 384;
  c.context_length = 2048;
  c.rope_base = 10000.f;
  return c;
}

std::unique_ptr<CudaLlama> Make(const ModelConfig& c, bool graphs) {
  CudaEngineOptions o;
  o.kv_capacity = 4096;
  o.max_batch = 4;
  o.max_chunk = 64;
  o.split_tokens = 64;  // crossings every 64 steps: re-captures inside the test
  o.gamma = 0.3f;
  o.decode_graphs = graphs;
  auto e = CudaLlama::Random(c, 99, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

TEST(CudaEngineGraph, ReplayIsBitIdenticalToEager) {
  SKIP_WITHOUT_GPU();
  for (int hd : {64, 128}) {
    const ModelConfig c = Tiny(hd);
    auto g = Make(c, true), e = Make(c, false);
    ASSERT_TRUE(g && e);
    std::mt19937 rng(7 + hd);
    std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
    std::vector<int32_t> anchor_toks(40);
    for (auto& t : anchor_toks) t = tok(rng);
    auto ag = g->BuildAnchor(anchor_toks), ae = e->BuildAnchor(anchor_toks);
    ASSERT_TRUE(ag.ok() && ae.ok());
    std::vector<SeqId> sg, se;
    const int prompt[3] = {3, 60, 1000};  // the last crosses the 1024-token capacity while decoding
    for (int s = 0; s < 3; ++s) {
      std::vector<int32_t> p(static_cast<size_t>(prompt[s]));
      for (auto& t : p) t = tok(rng);
      auto a = g->NewSequence(*ag), b = e->NewSequence(*ae);
      ASSERT_TRUE(a.ok() && b.ok());
      std::vector<float> unused;
      ASSERT_TRUE(g->Forward(*a, p, 0, &unused).ok());
      ASSERT_TRUE(e->Forward(*b, p, 0, &unused).ok());
      sg.push_back(*a);
      se.push_back(*b);
    }
    std::vector<float> lg, le;
    int mismatches = 0;
    for (int k = 0; k < 90; ++k) {
      if (k == 50) {  // a shorter batch: another graph
        sg.pop_back();
        se.pop_back();
      }
      if (k == 70) {  // truncation: lengths shrink under the captured capacity
        ASSERT_TRUE(g->Truncate(sg[1], 20).ok());
        ASSERT_TRUE(e->Truncate(se[1], 20).ok());
      }
      std::vector<int32_t> t(sg.size());
      for (auto& x : t) x = tok(rng);
      Status s1 = g->DecodeLogits(sg, t, &lg), s2 = e->DecodeLogits(se, t, &le);
      ASSERT_TRUE(s1.ok()) << s1.ToString();
      ASSERT_TRUE(s2.ok()) << s2.ToString();
      ASSERT_EQ(lg.size(), le.size());
      if (std::memcmp(lg.data(), le.data(), lg.size() * 4) != 0) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << "head_dim " << hd;
    const auto st = g->decode_stats();
    EXPECT_EQ(st.graph_replays, 90);
    EXPECT_GE(st.graph_captures, 3);  // first, the capacity crossing at 1024, a new batch size
    EXPECT_LT(st.graph_captures, 12);
    EXPECT_EQ(e->decode_stats().graph_replays, 0);
  }
}

TEST(CudaEngineGraph, GemmKernelsAgreeAndPdlAndFusionKeepBits) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = Tiny(128);
  auto g = Make(c, true);
  ASSERT_TRUE(g);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
  for (int B : {1, 3, 4}) {
    std::vector<SeqId> seqs;
    for (int s = 0; s < B; ++s) {
      auto id = g->NewSequence(nullptr);
      ASSERT_TRUE(id.ok());
      // Sequence 0 is longer than the per-step attention split (512): its step runs several splits and the merge.
      std::vector<int32_t> p(static_cast<size_t>(s == 0 ? 600 : 10 + 7 * s));
      for (auto& t : p) t = tok(rng);
      std::vector<float> unused;
      ASSERT_TRUE(g->Forward(*id, p, 0, &unused).ok());
      seqs.push_back(*id);
    }
    std::vector<int32_t> t(static_cast<size_t>(B));
    for (auto& x : t) x = tok(rng);
    // The same step through cuBLAS (reference), the GEMV and the skinny tensor-core GEMM (+ fused SwiGLU).
    // pdl also chooses the attention's launch: with PDL (early KV prefetch, fused merge) or without it (the split
    // merge as its own kernel).
    // fused: at B = 1, RMSNorm and RoPE + KV write inside the q|k|v GEMV (off: their own kernels).
    auto step = [&](int32_t gemv, int32_t skinny, bool pdl, std::vector<float>* out, bool fused = true) {
      CudaLlama::DecodeTuning tu;
      tu.gemv_max_batch = gemv;
      tu.skinny_max_batch = skinny;
      tu.pdl = pdl;
      tu.fused_merge = pdl;
      tu.fused_qkv = fused ? CudaEngineOptions::FusedQkv::kOn : CudaEngineOptions::FusedQkv::kOff;
      ASSERT_TRUE(g->SetDecodeTuning(tu).ok());
      ASSERT_TRUE(g->DecodeLogits(seqs, t, out).ok());
      for (SeqId s : seqs) ASSERT_TRUE(g->Truncate(s, *g->Length(s) - 1).ok());
    };
    std::vector<float> ref, gemv, skinny, skinny_nopdl, gemv_nopdl, gemv_separate;
    step(0, 0, true, &ref);
    step(8, 0, true, &gemv);
    step(0, 64, true, &skinny);
    step(0, 64, false, &skinny_nopdl);
    step(8, 0, false, &gemv_nopdl);
    step(8, 0, true, &gemv_separate, false);
    for (const auto* v : {&gemv, &skinny}) {
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        num += (double((*v)[i]) - ref[i]) * (double((*v)[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
      }
      EXPECT_TRUE(std::isfinite(num) && den > 0) << "B " << B;
      EXPECT_LT(num / den, 1e-4) << "B " << B << (v == &gemv ? " gemv" : " skinny") << " vs cuBLAS";
    }
    EXPECT_TRUE(skinny == skinny_nopdl) << "B " << B << ": PDL changed the bits";
    EXPECT_TRUE(gemv == gemv_nopdl) << "B " << B << ": PDL / the fused merge changed the GEMV path's bits";
    EXPECT_TRUE(gemv == gemv_separate) << "B " << B << ": fusing RMSNorm / RoPE into the GEMVs changed the bits";
    for (SeqId s : seqs) ASSERT_TRUE(g->FreeSequence(s).ok());
  }
}

}  // namespace
}  // namespace fp
