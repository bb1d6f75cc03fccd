// engine/cuda_engine_decode.cu — CudaLlama's batched decode step, eager or through a CUDA graph per batch size.
//
// Why graphs: a Llama-3-8B step is ~330 small launches; at B = 1 each kernel runs for microseconds, so host launch
// latency and gaps between kernels are a visible share of the step. Graph mode captures embedding + all layers
// + the logits GEMM once per (batch size, length capacity, anchor) and replays it. What a replay reads from
// device memory, re-uploaded before every launch: tokens, positions, KV slot rows, q offsets, lengths and the
// block table (laid out with cap / page_size pages per row, so its shape is fixed). The attention plan is a
// graph-mode AttentionDecodePlan (max_kv_len = cap, a multiple of the split size: the same work items as an exact
// plan for the longest sequence); its Update() validates every step's host batch before the launch, so a batch
// the graph cannot serve is an error or a re-capture, never a launch on bad data. Re-capture happens when the
// longest sequence crosses a multiple of the split size (every split_tokens steps), the per-step split size
// (split_tokens = -1) moves to another power of two, or the anchor changes.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/cuda_engine_impl.h"
#include "engine/cuda_engine_kernels.h"

namespace fp {

Status CudaLlama::Impl::GraphDecodeStep(std::span<const Reservation> res, std::span<const int32_t> toks,
                                        const KvBatch& batch) {
  const int32_t B = batch.num_seqs(), P = opt.page_size;
  const int n = static_cast<int>(toks.size());
  int64_t max_len = 1;
  for (int32_t l : batch.kv_lens) max_len = std::max<int64_t>(max_len, l);
  const int32_t split_opt = DecodeSplit(batch);
  const int64_t split =
      split_opt != 0 ? split_opt : DefaultDecodeConfig(c.head_dim, c.n_heads / c.n_kv_heads).split_tokens;
  // Capacity: a multiple of the split size and of 512 tokens, so a small split re-captures at most every 512
  // steps. Finer would re-capture more often; coarser leaves empty splits, which cost a CTA each and merge with
  // weight 0 (the fixed 512 split at B = 64 had 5120 CTAs a layer at 4.1k tokens with 1024, 4608 with 512).
  const int64_t gran = split * std::max<int64_t>(1, (512 + split - 1) / split);
  int64_t cap = (max_len + gran - 1) / gran * gran;
  cap = (cap + P - 1) / P * P;
  const int64_t stride = cap / P;
  if (int64_t{B} * stride > int64_t{T} * cache->layout().num_blocks || cap > INT32_MAX / 4) {
    // The fixed-shape table does not fit the metadata buffer: this step runs eagerly.
    FP_RETURN_IF_ERROR(Step(res, toks, batch, true, nullptr));
    return Logits(0, B);
  }
  // The block table re-laid with `stride` pages per row (padding: page 0, never read past a length).
  std::vector<int32_t> table(static_cast<size_t>(B * stride), 0);
  const int64_t copy = std::min<int64_t>(stride, batch.max_blocks_per_seq);
  for (int32_t s = 0; s < B; ++s) {
    std::copy_n(batch.block_table.begin() + int64_t{s} * batch.max_blocks_per_seq, copy,
                table.begin() + int64_t{s} * stride);
  }
  FP_RETURN_IF_ERROR(Upload(res, toks, batch, table.data(), static_cast<int32_t>(stride)));
  AttentionParams p = Params(n, B, static_cast<int32_t>(stride));
  FP_RETURN_IF_ERROR(cache->BindLayer(0, batch, &p));
  const AttentionBatch hb{B, batch.q_indptr.data(), batch.kv_lens.data(), table.data(), static_cast<int32_t>(stride)};

  DecodeGraph& g = graphs[B];
  if (g.exec == nullptr || g.cap != cap || g.split != split || g.anchor != batch.anchor) {
    if (g.exec != nullptr) {
      FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // the old graph may still be running
      cudaGraphExecDestroy(g.exec);
      g.exec = nullptr;
    }
    g.plan.reset();
    DecodeOptions dopt;
    dopt.split_tokens = static_cast<int>(split);
    dopt.max_kv_len = static_cast<int>(cap);
    dopt.fused_merge = opt.fused_merge;
    dopt.pdl = attention_pdl();
    auto pl = AttentionDecodePlan::Create(p, hb, dopt, stream);
    if (!pl.ok()) return pl.status();
    g.plan.emplace(std::move(pl).value());
    // Relaxed: first launches set kernel attributes (not stream work); nothing captured here allocates.
    FP_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    Status st = EnqueueLayers(n, batch, p, hb, &*g.plan, res, nullptr);
    if (st.ok()) (void)(st = Logits(0, B));
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (st.ok() && end != cudaSuccess) (void)(st = CudaStatus(end, "decode graph capture", __FILE__, __LINE__));
    if (st.ok()) {
      const cudaError_t inst = cudaGraphInstantiate(&g.exec, graph, 0);
      if (inst != cudaSuccess) (void)(st = CudaStatus(inst, "decode graph instantiate", __FILE__, __LINE__));
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!st.ok()) {
      g.exec = nullptr;
      g.plan.reset();
      return st;
    }
    g.cap = static_cast<int32_t>(cap);
    g.split = static_cast<int32_t>(split);
    g.anchor = batch.anchor;
    ++graph_captures;
  }
  FP_RETURN_IF_ERROR(g.plan->Update(p, hb));  // every step: the graph only runs on a batch its plan serves
  FP_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g.exec, stream));
  ++graph_replays;
  return Status::Ok();
}

Status CudaLlama::SetDecodeTuning(const DecodeTuning& t) {
  Impl& m = *impl_;
  const CudaEngineOptions before = m.opt;
  CudaEngineOptions& o = m.opt;
  const ModelConfig& c = m.c;
  o.decode_graphs = t.decode_graphs;
  if (t.gemv_max_batch >= 0) o.gemv_max_batch = t.gemv_max_batch;
  if (t.skinny_max_batch >= 0) o.skinny_max_batch = t.skinny_max_batch;
  o.pdl = t.pdl;
  o.attention_pdl = t.attention_pdl;
  o.fused_merge = t.fused_merge;
  o.fused_qkv = t.fused_qkv;
  const bool skinny_ok = SkinnyInvariantGemmFits(c);
  const bool padded_ok = m.T % Impl::kInvariantRows == 0;
  o.batch_invariant_gemm = t.batch_invariant_gemm;
  o.batch_invariant =
      t.batch_invariant &&
      (t.batch_invariant_gemm == CudaEngineOptions::InvariantGemm::kSkinny ? skinny_ok : padded_ok);
  const int32_t split_tokens = t.split_tokens;
  if (split_tokens == -1 || split_tokens == 0 || split_tokens >= 64) o.split_tokens = split_tokens;
  if (m.stream != nullptr) cudaStreamSynchronize(m.stream);
  for (auto& [b, g] : m.graphs) {  // captured with the old GEMM choice
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  }
  m.graphs.clear();
  if (Status st = m.SetWeightLayout(m.WantedWeightLayout()); !st.ok()) {
    m.opt = before;
    return st;
  }
  return Status::Ok();
}

CudaLlama::DecodeStats CudaLlama::decode_stats() const {
  return {impl_->graph_captures, impl_->graph_replays};
}

Status CudaLlama::DecodeStep(std::span<const SeqId> seqs, std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  const auto b = static_cast<int32_t>(seqs.size());
  if (b == 0 || b > m.opt.max_batch || tokens.size() != seqs.size()) {
    return InvalidArgument("decode step: need 1 .. " + std::to_string(m.opt.max_batch) +
                           " sequences and one token each, got " + std::to_string(seqs.size()) + " / " +
                           std::to_string(tokens.size()));
  }
  FP_RETURN_IF_ERROR(m.CheckTokens(tokens));
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (seqs[i] == seqs[j]) return InvalidArgument("decode step: sequence listed twice");
    }
    auto len = m.RoomFor(seqs[i], 1);
    if (!len.ok()) return Status(len.status().code(), "decode step: " + len.status().message());
  }
  std::vector<Reservation> res;
  res.reserve(seqs.size());
  auto undo = [&](Status st) {
    (void)cudaStreamSynchronize(m.stream);
    for (const Reservation& r : res) (void)m.cache->meta().Truncate(r.seq, r.start);
    return st;
  };
  for (SeqId s : seqs) {
    auto r = m.cache->Reserve(s, 1, m.stream);
    if (!r.ok()) return undo(r.status());
    res.push_back(std::move(r).value());
  }
  const std::vector<int32_t> qlens(seqs.size(), 1);
  auto batch = m.cache->meta().BuildBatch(seqs, qlens);
  if (!batch.ok()) return undo(batch.status());
  if (m.opt.decode_graphs) {
    if (Status st = m.GraphDecodeStep(res, tokens, *batch); !st.ok()) return undo(st);
    return Status::Ok();
  }
  if (Status st = m.Step(res, tokens, *batch, true, nullptr); !st.ok()) return undo(st);
  if (Status st = m.Logits(0, b); !st.ok()) return undo(st);
  return Status::Ok();
}

Status CudaLlama::DecodeLogits(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                               std::vector<float>* logits) {
  if (logits == nullptr) return InvalidArgument("decode: null logits");
  FP_RETURN_IF_ERROR(DecodeStep(seqs, tokens));
  logits->resize(seqs.size() * static_cast<size_t>(impl_->c.vocab_size));
  FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), impl_->logits, logits->size() * sizeof(float),
                                          cudaMemcpyDeviceToHost, impl_->stream));
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return Status::Ok();
}

Status CudaLlama::DecodeGreedy(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                               std::vector<int32_t>* next) {
  if (next == nullptr) return InvalidArgument("decode: null next");
  FP_RETURN_IF_ERROR(DecodeStep(seqs, tokens));
  const auto b = static_cast<int>(seqs.size());
  FP_RETURN_IF_ERROR(ce::LaunchArgmax(impl_->logits, b, impl_->c.vocab_size, impl_->next, impl_->stream));
  next->resize(seqs.size());
  FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(next->data(), impl_->next, next->size() * sizeof(int32_t),
                                          cudaMemcpyDeviceToHost, impl_->stream));
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return Status::Ok();
}

}  // namespace fp
