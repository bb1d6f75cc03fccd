// engine/cuda_engine.cu — CudaLlama: host orchestration of the CUDA forward (design in cuda_engine.h).
//
// A step (prefill chunk or batched decode) is: Reserve slots in the KvCache (copy-on-write copies on our stream),
// upload the step's small host arrays (tokens, positions, slot rows, batch metadata) into one fixed device block
// (one copy from pinned staging),
// then enqueue the per-layer work (EnqueueLayers: no uploads, no host waits, so cuda_engine_decode.cu can capture
// it into a CUDA graph). Device buffers are sized once for max(max_batch, max_chunk) tokens so no step allocates,
// except an eager decode step's attention plan. GEMMs take bf16 operands with fp32 compute and output: the GEMV
// kernel (cuda_gemv.cu) for n <= gemv_max_batch tokens, the skinny tensor-core GEMM (cuda_skinny_gemm.cu) for
// n <= skinny_max_batch, else cuBLAS with CUBLAS_GEMM_DEFAULT on a fixed shape, which cuBLAS runs
// deterministically on one GPU model (but not batch-invariantly: batch_invariant mode uses the skinny GEMM for
// every n). Kernels other than cuBLAS and the prefill attention are launched with PDL on sm_90+ (core/cuda_pdl.cuh).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/cuda_engine_impl.h"
#include "fieldprint/head_gamma.h"
#include "engine/cuda_engine_kernels.h"

namespace fp {

namespace {

template <typename T>
Result<T*> Alloc(std::vector<DeviceBuffer>* owned, size_t count) {
  auto b = DeviceBuffer::Allocate(std::max<size_t>(count, 1) * sizeof(T));
  if (!b.ok()) return b.status();
  owned->push_back(std::move(b.value()));
  return static_cast<T*>(owned->back().get());
}

constexpr size_t kBlasWorkspace = size_t{32} << 20;

}  // namespace

CudaLlama::Impl::~Impl() {
  if (stream != nullptr) cudaStreamSynchronize(stream);
  for (auto& [b, g] : graphs) {
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  }
  graphs.clear();
  plan.reset();
  if (blas != nullptr) cublasDestroy(blas);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

Status CudaLlama::Impl::Init(const ModelConfig& config, const CudaEngineOptions& options) {
  const CudaEngineOptions& o_ = options;
  FP_RETURN_IF_ERROR(config.Validate());
  if (o_.page_size <= 0 || o_.kv_capacity <= 0 || o_.max_chunk <= 0 || o_.max_batch <= 0) {
    return InvalidArgument("cuda engine: page_size, kv_capacity, max_chunk and max_batch must be positive");
  }
  auto heads = ResolveHeadGammas(o_.gamma, o_.gamma_per_head, config.n_heads);
  if (!heads.ok()) return InvalidArgument("cuda engine: " + heads.status().message());
  if (o_.split_tokens != 0 && o_.split_tokens != -1 && o_.split_tokens < 64) {
    return InvalidArgument("cuda engine: split_tokens must be -1 (per step), 0 (kernel default) or >= 64");
  }
  if (o_.gemv_max_batch < 0 || o_.skinny_max_batch < 0) {
    return InvalidArgument("cuda engine: gemv_max_batch and skinny_max_batch must be >= 0");
  }
  if (o_.batch_invariant && o_.batch_invariant_gemm == CudaEngineOptions::InvariantGemm::kSkinny &&
      !SkinnyInvariantGemmFits(config)) {
    return Unimplemented("cuda engine: the skinny batch-invariant GEMM needs d_model, q_dim and d_ff multiples of 32");
  }
  if (config.head_dim != 64 && config.head_dim != 128) {
    return Unimplemented("cuda engine: head_dim " + std::to_string(config.head_dim) + " (attention kernels: 64, 128)");
  }
  c = config;
  opt = o_;
  FP_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  FP_RETURN_IF_ERROR(CublasStatus(cublasCreate(&blas), "create"));
  FP_RETURN_IF_ERROR(CublasStatus(cublasSetStream(blas, stream), "set stream"));
  {
    int dev = 0;
    FP_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
    FP_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, dev));
    int major = 0;
    FP_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    pdl_supported = major >= 9;
  }
  {  // an explicit workspace: GEMMs captured into a CUDA graph must not allocate
    auto ws = DeviceBuffer::Allocate(kBlasWorkspace);
    if (!ws.ok()) return ws.status();
    owned.push_back(std::move(ws.value()));
    blas_ws = owned.back().get();
    FP_RETURN_IF_ERROR(CublasStatus(cublasSetWorkspace(blas, blas_ws, kBlasWorkspace), "set workspace"));
  }

  KvLayout layout;
  layout.num_layers = c.n_layers;
  layout.page_size = o_.page_size;
  layout.num_blocks = static_cast<int32_t>((int64_t{o_.kv_capacity} + o_.page_size - 1) / o_.page_size);
  layout.num_kv_heads = c.n_kv_heads;
  layout.head_dim = c.head_dim;
  layout.dtype = DType::kBF16;
  auto kv = KvCache::Create(layout, Device::kCuda);
  if (!kv.ok()) return kv.status();
  cache = std::make_unique<KvCache>(std::move(kv).value());

  T = std::max(o_.max_batch, o_.max_chunk);
  // Padded cuBLAS (batch_invariant mode) runs blocks of exactly kInvariantRows token rows: the scratch rows past a
  // step's tokens are computed and ignored, so every buffer gets whole blocks.
  if (o_.batch_invariant && o_.batch_invariant_gemm == CudaEngineOptions::InvariantGemm::kCublasPadded) {
    T = (T + kInvariantRows - 1) / kInvariantRows * kInvariantRows;
  }
  const auto t = static_cast<size_t>(T);
  const auto d = static_cast<size_t>(c.d_model), qd = static_cast<size_t>(c.q_dim()),
             kvd = static_cast<size_t>(c.kv_dim()), ff = static_cast<size_t>(c.d_ff),
             vocab = static_cast<size_t>(c.vocab_size);
#define FP_ALLOC(ptr, type, count)                 \
  do {                                             \
    auto r_ = Alloc<type>(&owned, (count));        \
    if (!r_.ok()) return r_.status();              \
    ptr = r_.value();                              \
  } while (0)
  FP_ALLOC(x, float, t * d);
  FP_ALLOC(xn, bf16, t * std::max(d, qd));
  FP_ALLOC(qkv, float, t * (qd + 2 * kvd));
  FP_ALLOC(q, bf16, t * qd);
  FP_ALLOC(o, bf16, t * qd);
  FP_ALLOC(gu, float, t * 2 * ff);
  FP_ALLOC(h, bf16, t * ff);
  FP_ALLOC(logits, float, t * vocab);
  FP_ALLOC(kcap, bf16, t * kvd);
  FP_ALLOC(vcap, bf16, t * kvd);
  {  // the step block: [slot_rows int64 | tokens | positions | meta int32], 8-byte aligned at its start
    const size_t meta_ints = 2 * t + 1 + t * static_cast<size_t>(layout.num_blocks);
    int64_t* block = nullptr;
    FP_ALLOC(block, int64_t, t + (2 * t + meta_ints + 1) / 2);
    slot_rows = block;
    tokens = reinterpret_cast<int32_t*>(block + t);
    positions = tokens + t;
    meta = positions + t;
  }
  FP_ALLOC(next, int32_t, t);
  FP_ALLOC(bounds, SampleBounds, t);
  FP_ALLOC(inv_freq, double, static_cast<size_t>(c.head_dim / 2));
  FP_ALLOC(rope_cs, float2, t * static_cast<size_t>(c.head_dim / 2));
  FP_ALLOC(gamma, float, static_cast<size_t>(c.n_heads));
  std::vector<double> inv(static_cast<size_t>(c.head_dim / 2));
  for (size_t i = 0; i < inv.size(); ++i) {
    inv[i] = std::pow(static_cast<double>(c.rope_base), -2.0 * static_cast<double>(i) / c.head_dim);
  }
  FP_CUDA_RETURN_IF_ERROR(cudaMemcpy(inv_freq, inv.data(), inv.size() * sizeof(double), cudaMemcpyHostToDevice));
  gamma_nonzero = std::any_of(heads->begin(), heads->end(), [](float v) { return v != 0.f; });
  FP_CUDA_RETURN_IF_ERROR(cudaMemcpy(gamma, heads->data(), heads->size() * sizeof(float), cudaMemcpyHostToDevice));
  return AllocWeights();
}

Status CudaLlama::Impl::AllocWeights() {
  const auto d = static_cast<size_t>(c.d_model), qd = static_cast<size_t>(c.q_dim()),
             kvd = static_cast<size_t>(c.kv_dim()), ff = static_cast<size_t>(c.d_ff),
             vocab = static_cast<size_t>(c.vocab_size);
  layers.resize(static_cast<size_t>(c.n_layers));
  for (LayerDev& L : layers) {
    FP_ALLOC(L.attn_norm, float, d);
    FP_ALLOC(L.ffn_norm, float, d);
  }
  FP_ALLOC(embd, bf16, vocab * d);
  if (c.tied_embeddings) out_w = embd;
  // GEMM weights: room for either layout (WeightLayoutRows: rows rounded up to the tile).
  for (const GemmWeight& g : GemmWeights()) {
    FP_ALLOC(*g.w, bf16, static_cast<size_t>(ce::WeightLayoutRows(g.out)) * static_cast<size_t>(g.in));
  }
  FP_ALLOC(out_norm, float, d);
#undef FP_ALLOC
  weight_bytes = 2 * (static_cast<size_t>(c.n_layers) * ((qd + 2 * kvd) * d + d * qd + 3 * ff * d) + vocab * d);
  return Status::Ok();
}

// y[n, out] = x[n, in] · W[out, in]^T + beta * y.  Column-major view: y^T = op_T(W^T) · x^T.
bool CudaLlama::Impl::UseSkinny(int n) const {
  if (opt.batch_invariant) return opt.batch_invariant_gemm == CudaEngineOptions::InvariantGemm::kSkinny;
  return n <= opt.skinny_max_batch;
}

bool CudaLlama::Impl::UseFusedQkv(int n) const {
  const bool gemv_path = n == 1 && !opt.batch_invariant && opt.gemv_max_batch >= 1 && !UseSkinny(n);
  if (!gemv_path || opt.fused_qkv == CudaEngineOptions::FusedQkv::kOff || c.head_dim % 8 != 0 ||
      !ce::GemvNormSupported(c.d_model, ce::GemvNorm{x, out_norm, c.rms_eps})) {
    return false;
  }
  return opt.fused_qkv == CudaEngineOptions::FusedQkv::kOn || c.q_dim() + 2 * c.kv_dim() >= 8 * num_sms;
}

Status CudaLlama::Impl::Gemm(const bf16* w, int out, int in, const bf16* xin, int n, float* y, float beta) {
  if (w_layout != ce::WeightLayout::kRowMajor && !(opt.batch_invariant && UseSkinny(n))) {
    return Internal("cuda engine: segment-tiled weights outside the skinny deterministic mode");
  }
  if (opt.batch_invariant) {
    if (UseSkinny(n)) return ce::LaunchSkinnyGemm(w, out, in, xin, n, y, beta, pdl(), stream, w_layout);
    // One cuBLAS shape for every step: [out] x [kInvariantRows] x [in] per block of token rows. A token's output
    // row depends only on its own input row under a fixed kernel, so it is the same at any n and any row.
    const float alpha = 1.f;
    for (int r0 = 0; r0 < n; r0 += kInvariantRows) {
      if (r0 + kInvariantRows > T) return Internal("cuda engine: padded GEMM block exceeds the scratch rows");
      FP_RETURN_IF_ERROR(CublasStatus(
          cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, kInvariantRows, in, &alpha, w, CUDA_R_16BF, in,
                       xin + int64_t{r0} * in, CUDA_R_16BF, in, &beta, y + int64_t{r0} * out, CUDA_R_32F, out,
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "padded gemm"));
    }
    return Status::Ok();
  }
  if (n <= opt.gemv_max_batch && ce::GemvSupported(out, in, w, xin, n)) {
    return ce::LaunchGemvBf16(w, out, in, xin, n, y, beta, stream, pdl());
  }
  if (UseSkinny(n) && ce::SkinnyGemmSupported(out, in, w, xin, n)) {
    return ce::LaunchSkinnyGemm(w, out, in, xin, n, y, beta, pdl(), stream);
  }
  const float alpha = 1.f;
  return CublasStatus(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, w, CUDA_R_16BF, in, xin,
                                   CUDA_R_16BF, in, &beta, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      "gemm");
}

Status CudaLlama::Impl::Upload(std::span<const Reservation> res, std::span<const int32_t> toks, const KvBatch& batch,
                               const int32_t* table, int32_t stride) {
  const int32_t a = batch.anchor ? batch.anchor->length() : 0;
  std::vector<int32_t> pos(toks.size());
  std::vector<int64_t> rows(toks.size());
  size_t k = 0;
  for (const Reservation& r : res) {
    for (size_t i = 0; i < r.slots.size(); ++i, ++k) {
      if (k >= toks.size()) return Internal("cuda engine: reservations exceed the step's tokens");
      pos[k] = a + r.start + static_cast<int32_t>(i);
      rows[k] = int64_t{r.slots[i].block} * opt.page_size + r.slots[i].offset;
    }
  }
  if (k != toks.size()) return Internal("cuda engine: reservations do not cover the step's tokens");
  const int32_t ns = batch.num_seqs();
  const size_t cells = static_cast<size_t>(ns) * static_cast<size_t>(stride);
  if (ns > T || toks.size() > static_cast<size_t>(T) ||
      cells > static_cast<size_t>(T) * static_cast<size_t>(cache->layout().num_blocks)) {
    return Internal("cuda engine: batch metadata exceeds the device buffers");
  }
  // Packed into pinned staging with the device block's layout and sent in ONE copy, from the block's start to
  // the end of the used table (the unused tails of the regions in between carry stale bytes no kernel reads).
  auto* base = reinterpret_cast<std::byte*>(slot_rows);
  auto off = [&](const void* dev) { return static_cast<size_t>(static_cast<const std::byte*>(dev) - base); };
  const size_t bytes = off(d_table()) + cells * 4;
  auto host = upload_staging.Acquire(bytes);
  if (!host.ok()) return host.status();
  auto put = [&](const void* dev, const void* src, size_t n) {
    if (n > 0) std::memcpy(*host + off(dev), src, n);
  };
  put(slot_rows, rows.data(), rows.size() * 8);
  put(tokens, toks.data(), toks.size() * 4);
  put(positions, pos.data(), pos.size() * 4);
  put(d_indptr(), batch.q_indptr.data(), batch.q_indptr.size() * 4);
  put(d_lens(), batch.kv_lens.data(), batch.kv_lens.size() * 4);
  put(d_table(), table, cells * 4);
  const cudaError_t copy = cudaMemcpyAsync(base, *host, bytes, cudaMemcpyHostToDevice, stream);
  FP_RETURN_IF_ERROR(upload_staging.Release(copy == cudaSuccess ? stream : nullptr));
  FP_CUDA_RETURN_IF_ERROR(copy);
  return Status::Ok();
}

AttentionParams CudaLlama::Impl::Params(int n, int32_t ns, int32_t stride) const {
  const int hd = c.head_dim;
  AttentionParams p;
  p.q = MakeContiguous(q, DType::kBF16, {n, c.n_heads, hd}, Device::kCuda);
  p.o = MakeContiguous(o, DType::kBF16, {n, c.n_heads, hd}, Device::kCuda);
  p.scale = 1.f / std::sqrt(static_cast<float>(hd));
  p.causal = true;
  p.gamma = gamma_nonzero ? gamma : nullptr;
  p.batch = AttentionBatch{ns, d_indptr(), d_lens(), d_table(), stride};
  return p;
}

Status CudaLlama::Impl::EnqueueLayers(int n, const KvBatch& batch, AttentionParams p, const AttentionBatch& host_batch,
                                      const AttentionDecodePlan* dplan, std::span<const Reservation> res,
                                      AnchorSegment* capture) {
  const int d = c.d_model, qd = c.q_dim(), kvd = c.kv_dim(), ff = c.d_ff, hd = c.head_dim;
  // The RoPE table first: the q|k|v GEMV reads it before its PDL wait, which needs a kernel with a wait between.
  FP_RETURN_IF_ERROR(ce::LaunchRopeTable(positions, inv_freq, n, hd / 2, rope_cs, stream, pdl()));
  FP_RETURN_IF_ERROR(ce::LaunchEmbed(tokens, n, embd, d, x, stream, pdl()));
  const bool fused = UseFusedQkv(n);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerDev& L = layers[static_cast<size_t>(l)];
    auto kp = cache->storage().LayerK(l);
    auto vp = cache->storage().LayerV(l);
    if (!kp.ok()) return kp.status();
    if (!vp.ok()) return vp.status();
    ce::RopeWriteArgs ra{qkv, rope_cs, slot_rows, q, static_cast<bf16*>(kp->data),
                         static_cast<bf16*>(vp->data), capture ? kcap : nullptr, capture ? vcap : nullptr,
                         n, c.n_heads, c.n_kv_heads, hd};
    if (fused && capture == nullptr) {
      FP_RETURN_IF_ERROR(ce::LaunchGemvNormRopeBf16(L.wqkv, d, {x, L.attn_norm, c.rms_eps}, ra, stream, pdl()));
    } else {
      FP_RETURN_IF_ERROR(ce::LaunchRmsNorm(x, L.attn_norm, n, d, c.rms_eps, xn, stream, pdl()));
      FP_RETURN_IF_ERROR(Gemm(L.wqkv, qd + 2 * kvd, d, xn, n, qkv, 0.f));
      FP_RETURN_IF_ERROR(ce::LaunchRopeWriteKv(ra, stream, pdl()));
    }
    if (capture != nullptr) {
      const TensorView kv = MakeContiguous(kcap, DType::kBF16, {n, c.n_kv_heads, hd}, Device::kCuda);
      const TensorView vv = MakeContiguous(vcap, DType::kBF16, {n, c.n_kv_heads, hd}, Device::kCuda);
      FP_RETURN_IF_ERROR(capture->Write(l, res[0].start, kv, vv, stream));
    }
    FP_RETURN_IF_ERROR(cache->BindLayer(l, batch, &p));
    if (dplan != nullptr) {  // with PDL (attention_pdl()) when it was planned so
      FP_RETURN_IF_ERROR(dplan->Run(p, stream));
    } else {
      FP_RETURN_IF_ERROR(AttentionPrefillCuda(p, host_batch, stream));
    }
    FP_RETURN_IF_ERROR(Gemm(L.wo, d, qd, o, n, x, 1.f));  // residual add fused (beta = 1)
    FP_RETURN_IF_ERROR(ce::LaunchRmsNorm(x, L.ffn_norm, n, d, c.rms_eps, xn, stream, pdl()));
    if (UseSkinny(n) && ce::SkinnyGemmSupported(2 * ff, d, L.wgu, xn, n)) {
      FP_RETURN_IF_ERROR(ce::LaunchSkinnyGemmSwiGlu(L.wgu, ff, d, xn, n, h, pdl(), stream, w_layout));
    } else if (n == 1 && !opt.batch_invariant && n <= opt.gemv_max_batch && ff % 4 == 0 &&
               ce::GemvSupported(2 * ff, d, L.wgu, xn, n)) {
      FP_RETURN_IF_ERROR(ce::LaunchGemvSwiGluBf16(L.wgu, ff, d, xn, h, stream, pdl()));
    } else {
      FP_RETURN_IF_ERROR(Gemm(L.wgu, 2 * ff, d, xn, n, gu, 0.f));
      FP_RETURN_IF_ERROR(ce::LaunchSwiGlu(gu, n, ff, h, stream, pdl()));
    }
    FP_RETURN_IF_ERROR(Gemm(L.wdown, d, ff, h, n, x, 1.f));
  }
  return Status::Ok();
}

Status CudaLlama::Impl::Step(std::span<const Reservation> res, std::span<const int32_t> toks, const KvBatch& batch,
                             bool decode, AnchorSegment* capture) {
  const int n = static_cast<int>(toks.size());
  FP_RETURN_IF_ERROR(Upload(res, toks, batch, batch.block_table.data(), batch.max_blocks_per_seq));
  AttentionParams p = Params(n, batch.num_seqs(), batch.max_blocks_per_seq);
  const AttentionBatch host_batch = batch.view();
  // Batch-invariant mode runs prefill chunks through the decode kernel too (multi-query rows, the same fixed
  // split): a query's attention then does not depend on how its KV was built or how many queries share the call.
  // Other prefill steps run the prefill kernel, never the kept plan of an earlier step (after an eager decode or a
  // deterministic step, that plan still lives in `plan`).
  const AttentionDecodePlan* dplan = nullptr;
  if (decode || opt.batch_invariant) {
    FP_RETURN_IF_ERROR(cache->BindLayer(0, batch, &p));
    plan.reset();  // frees the previous step's workspace (cudaFree waits for its last use)
    DecodeOptions dopt;
    dopt.split_tokens = DecodeSplit(batch);
    dopt.fused_merge = opt.fused_merge;
    dopt.pdl = attention_pdl();
    auto pl = AttentionDecodePlan::Create(p, host_batch, dopt, stream);
    if (!pl.ok()) return pl.status();
    plan.emplace(std::move(pl).value());
    dplan = &*plan;
  }
  return EnqueueLayers(n, batch, p, host_batch, dplan, res, capture);
}

int32_t CudaLlama::Impl::DecodeSplit(const KvBatch& batch) const {
  if (opt.split_tokens >= 0) return opt.split_tokens;
  if (opt.batch_invariant) return kBatchInvariantSplit;
  const int32_t def = DefaultDecodeConfig(c.head_dim, c.n_heads / c.n_kv_heads).split_tokens;
  int64_t tokens = 0;
  for (int32_t l : batch.kv_lens) tokens = std::max<int64_t>(tokens, l);
  // CTAs at split S ~ B * Hkv * max_len / S. Measured (bench_e2e sNNN variants, H200, Llama-3-8B shape, context
  // 4096, fused merge): 512 won at B = 1 (64 CTAs, +0.3-0.6% over 256: the SMs attention leaves free run the O
  // GEMV's PDL prefetch; 1024 and 2048 lost 4% and 12%) and at B = 16 (1024 CTAs, +2% over 2048), while B = 64
  // wanted one split per sequence (512 CTAs; 512 gave 4096 CTAs and lost 4%). So: 512 while that is at most ~8
  // CTAs per SM, else about 2 per SM.
  const int64_t ctas512 = batch.num_seqs() * c.n_kv_heads * ((tokens + 511) / 512);
  if (ctas512 <= 8 * int64_t{num_sms}) return std::min<int32_t>(512, def);
  const int64_t want = tokens * batch.num_seqs() * c.n_kv_heads / (2 * int64_t{num_sms}) + 1;
  int32_t s = 256;
  while (s < def && s < want) s *= 2;
  return std::min(s, def);
}

Status CudaLlama::Impl::Logits(int64_t row0, int32_t m) {
  if (m <= 0) return Status::Ok();
  FP_RETURN_IF_ERROR(ce::LaunchRmsNorm(x + row0 * c.d_model, out_norm, m, c.d_model, c.rms_eps, xn, stream, pdl()));
  return Gemm(out_w, c.vocab_size, c.d_model, xn, m, logits, 0.f);
}

Status CudaLlama::Impl::ForwardChunk(SeqId seq, std::span<const int32_t> toks, int32_t logits_from,
                                     float* host_logits, int32_t* host_ids, AnchorSegment* capture,
                                     const BoundsJob* job) {
  const auto n = static_cast<int32_t>(toks.size());
  if (n == 0) return Status::Ok();
  auto res = cache->Reserve(seq, n, stream);
  if (!res.ok()) return res.status();
  const int32_t start = res->start;
  auto fail = [&](Status st) {
    (void)cudaStreamSynchronize(stream);  // nothing in flight may still write the rows we give back
    (void)cache->meta().Truncate(seq, start);
    return st;
  };
  const std::array<SeqId, 1> seqs{seq};
  const std::array<int32_t, 1> qlens{n};
  auto batch = cache->meta().BuildBatch(seqs, qlens);
  if (!batch.ok()) return fail(batch.status());
  if (Status st = Step(std::span<const Reservation>(&res.value(), 1), toks, *batch, false, capture); !st.ok()) {
    return fail(st);
  }
  if ((host_logits != nullptr || host_ids != nullptr || job != nullptr) && logits_from < n) {
    const int32_t m = n - logits_from;
    if (Status st = Logits(logits_from, m); !st.ok()) return fail(st);
    if (job != nullptr) {  // m picked ids in, m bounds out: 24 bytes a row instead of [m, vocab] floats
      const size_t ib = static_cast<size_t>(m) * sizeof(int32_t), bb = static_cast<size_t>(m) * sizeof(SampleBounds);
      if (cudaError_t e = cudaMemcpyAsync(next, job->picked, ib, cudaMemcpyHostToDevice, stream); e != cudaSuccess)
        return fail(CudaStatus(e, "picked ids to device", __FILE__, __LINE__));
      if (Status st = ce::LaunchSampleBounds(logits, m, c.vocab_size, next, job->inv_temperature, bounds, stream);
          !st.ok())
        return fail(st);
      if (cudaError_t e = cudaMemcpyAsync(job->out, bounds, bb, cudaMemcpyDeviceToHost, stream); e != cudaSuccess)
        return fail(CudaStatus(e, "sample bounds to host", __FILE__, __LINE__));
    } else if (host_ids != nullptr) {  // m <= n <= T ids: `next` holds them; n ints cross the bus instead of [m, vocab]
      if (Status st = ce::LaunchArgmaxChecked(logits, m, c.vocab_size, next, stream); !st.ok()) return fail(st);
      const size_t bytes = static_cast<size_t>(m) * sizeof(int32_t);
      if (cudaError_t e = cudaMemcpyAsync(host_ids, next, bytes, cudaMemcpyDeviceToHost, stream); e != cudaSuccess) {
        return fail(CudaStatus(e, "ids to host", __FILE__, __LINE__));
      }
    } else {
      const size_t bytes = static_cast<size_t>(m) * static_cast<size_t>(c.vocab_size) * sizeof(float);
      if (cudaError_t e = cudaMemcpyAsync(host_logits, logits, bytes, cudaMemcpyDeviceToHost, stream);
          e != cudaSuccess) {
        return fail(CudaStatus(e, "logits to host", __FILE__, __LINE__));
      }
    }
  }
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    return fail(CudaStatus(e, "forward", __FILE__, __LINE__));
  }
  return Status::Ok();
}

// ---- public API ----------------------------------------------------------------------------------------------

CudaLlama::CudaLlama(std::unique_ptr<Impl> impl, PrivateTag) : impl_(std::move(impl)) {}
CudaLlama::~CudaLlama() = default;
const ModelConfig& CudaLlama::config() const { return impl_->c; }
const CudaEngineOptions& CudaLlama::options() const { return impl_->opt; }
KvCache& CudaLlama::cache() { return *impl_->cache; }
CUstream_st* CudaLlama::stream() const { return impl_->stream; }
size_t CudaLlama::weight_bytes() const { return impl_->weight_bytes; }
const float* CudaLlama::device_logits() const { return impl_->logits; }

Result<std::unique_ptr<CudaLlama>> CudaLlama::FromWeights(const LlamaWeights& w, const CudaEngineOptions& options,
                                                          const LoadProgress& progress) {
  auto impl = std::make_unique<Impl>();
  FP_RETURN_IF_ERROR(impl->Init(w.config(), options));
  Impl& m = *impl;
  // Matrix -> f32 rows on the host -> bf16 (round to nearest even) -> device, at dst + row0 * cols.
  std::vector<float> row;
  std::vector<Bf16> host;
  auto upload = [&](const WeightMatrix& mat, bf16* dst, int64_t row0, const char* name) -> Status {
    FP_RETURN_IF_ERROR(mat.Validate(name));
    row.resize(static_cast<size_t>(mat.cols));
    host.resize(static_cast<size_t>(mat.rows * mat.cols));
    for (int64_t r = 0; r < mat.rows; ++r) {
      FP_RETURN_IF_ERROR(DequantizeRow(mat, r, row.data()));
      for (int64_t i = 0; i < mat.cols; ++i) {
        host[static_cast<size_t>(r * mat.cols + i)] = FloatToBf16(row[static_cast<size_t>(i)]);
      }
    }
    FP_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst + row0 * mat.cols, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    return Status::Ok();
  };
  // gate|up rows interleaved by GateUpRow (tiles of 4 gate + 4 up rows: the skinny GEMM's SwiGLU epilogue).
  auto upload_gate_up = [&](const WeightMatrix& gate, const WeightMatrix& up, bf16* dst) -> Status {
    FP_RETURN_IF_ERROR(gate.Validate("w_gate"));
    FP_RETURN_IF_ERROR(up.Validate("w_up"));
    if (gate.rows != up.rows || gate.cols != up.cols || gate.rows % 4 != 0) {
      return InvalidArgument("cuda engine: w_gate and w_up must have the same shape with rows a multiple of 4");
    }
    row.resize(static_cast<size_t>(gate.cols));
    host.resize(static_cast<size_t>(2 * gate.rows * gate.cols));
    for (int half = 0; half < 2; ++half) {
      const WeightMatrix& mat = half == 0 ? gate : up;
      for (int64_t r = 0; r < mat.rows; ++r) {
        FP_RETURN_IF_ERROR(DequantizeRow(mat, r, row.data()));
        const int64_t dr = ce::GateUpRow(r, half == 1);
        for (int64_t i = 0; i < mat.cols; ++i) {
          host[static_cast<size_t>(dr * mat.cols + i)] = FloatToBf16(row[static_cast<size_t>(i)]);
        }
      }
    }
    FP_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    return Status::Ok();
  };
  auto vec = [](const std::vector<float>& v, float* dst) {
    return cudaMemcpy(dst, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice);
  };
  const ModelConfig& c = m.c;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layer(l);
    LayerDev& D = m.layers[static_cast<size_t>(l)];
    if (L.attn_norm.size() != static_cast<size_t>(c.d_model) || L.ffn_norm.size() != static_cast<size_t>(c.d_model)) {
      return InvalidArgument("cuda engine: norm weights of layer " + std::to_string(l) + " have the wrong size");
    }
    FP_CUDA_RETURN_IF_ERROR(vec(L.attn_norm, D.attn_norm));
    FP_CUDA_RETURN_IF_ERROR(vec(L.ffn_norm, D.ffn_norm));
    FP_RETURN_IF_ERROR(upload(L.wq, D.wqkv, 0, "wq"));
    FP_RETURN_IF_ERROR(upload(L.wk, D.wqkv, c.q_dim(), "wk"));
    FP_RETURN_IF_ERROR(upload(L.wv, D.wqkv, c.q_dim() + c.kv_dim(), "wv"));
    FP_RETURN_IF_ERROR(upload(L.wo, D.wo, 0, "wo"));
    FP_RETURN_IF_ERROR(upload_gate_up(L.w_gate, L.w_up, D.wgu));
    FP_RETURN_IF_ERROR(upload(L.w_down, D.wdown, 0, "w_down"));
    if (progress) progress(l + 1, c.n_layers + 1);
  }
  FP_RETURN_IF_ERROR(upload(w.token_embd(), m.embd, 0, "token_embd"));
  if (!c.tied_embeddings) FP_RETURN_IF_ERROR(upload(w.output(), m.out_w, 0, "output"));
  if (w.output_norm().size() != static_cast<size_t>(c.d_model)) {
    return InvalidArgument("cuda engine: output norm has the wrong size");
  }
  FP_CUDA_RETURN_IF_ERROR(vec(w.output_norm(), m.out_norm));
  FP_RETURN_IF_ERROR(m.SetWeightLayout(m.WantedWeightLayout()));
  if (progress) progress(c.n_layers + 1, c.n_layers + 1);
  return std::make_unique<CudaLlama>(std::move(impl), PrivateTag());
}

Result<std::unique_ptr<CudaLlama>> CudaLlama::Random(const ModelConfig& config, uint64_t seed,
                                                     const CudaEngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  FP_RETURN_IF_ERROR(impl->Init(config, options));
  Impl& m = *impl;
  const ModelConfig& c = m.c;
  const auto d = static_cast<size_t>(c.d_model), qd = static_cast<size_t>(c.q_dim()),
             kvd = static_cast<size_t>(c.kv_dim()), ff = static_cast<size_t>(c.d_ff);
  uint64_t stream_id = 0;
  // Uniform(-a, a), a = gain * sqrt(3 / cols): unit-variance inputs give unit-variance outputs.
  auto fill = [&](bf16* dst, size_t rows, size_t cols, float gain) {
    const float a = gain * std::sqrt(3.f / static_cast<float>(cols));
    return ce::LaunchRandomBf16(dst, rows * cols, seed * 0x100000001b3ull + (++stream_id) * 0x9e3779b97f4a7c15ull, a,
                                m.stream);
  };
  for (LayerDev& L : m.layers) {
    FP_RETURN_IF_ERROR(ce::LaunchFillF32(L.attn_norm, d, 1.f, m.stream));
    FP_RETURN_IF_ERROR(ce::LaunchFillF32(L.ffn_norm, d, 1.f, m.stream));
    FP_RETURN_IF_ERROR(fill(L.wqkv, qd + 2 * kvd, d, 1.f));
    FP_RETURN_IF_ERROR(fill(L.wo, d, qd, 0.5f));
    FP_RETURN_IF_ERROR(fill(L.wgu, 2 * ff, d, 1.f));
    FP_RETURN_IF_ERROR(fill(L.wdown, d, ff, 0.5f));
  }
  FP_RETURN_IF_ERROR(fill(m.embd, static_cast<size_t>(c.vocab_size), d, std::sqrt(static_cast<float>(d))));
  if (!c.tied_embeddings) FP_RETURN_IF_ERROR(fill(m.out_w, static_cast<size_t>(c.vocab_size), d, 1.f));
  FP_RETURN_IF_ERROR(ce::LaunchFillF32(m.out_norm, d, 1.f, m.stream));
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  FP_RETURN_IF_ERROR(m.SetWeightLayout(m.WantedWeightLayout()));
  return std::make_unique<CudaLlama>(std::move(impl), PrivateTag());
}

Result<SeqId> CudaLlama::NewSequence(const std::shared_ptr<AnchorSegment>& anchor) {
  const SeqId s = impl_->cache->meta().CreateSequence();
  if (anchor != nullptr && anchor->length() > 0) {
    if (Status st = impl_->cache->AttachAnchor(s, anchor); !st.ok()) {
      (void)impl_->cache->meta().FreeSequence(s);
      return st;
    }
  }
  return s;
}

Status CudaLlama::FreeSequence(SeqId seq) { return impl_->cache->meta().FreeSequence(seq); }
Status CudaLlama::Truncate(SeqId seq, int32_t new_len) { return impl_->cache->meta().Truncate(seq, new_len); }
Result<int32_t> CudaLlama::Length(SeqId seq) const { return impl_->cache->meta().Length(seq); }

Result<std::shared_ptr<AnchorSegment>> CudaLlama::BuildAnchor(std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  const ModelConfig& c = m.c;
  if (tokens.size() > static_cast<size_t>(c.context_length)) {
    return OutOfRange("anchor of " + std::to_string(tokens.size()) + " tokens exceeds the context length");
  }
  FP_RETURN_IF_ERROR(m.CheckTokens(tokens));
  const auto len = static_cast<int32_t>(tokens.size());
  auto anchor = AnchorSegment::Create(c.n_layers, len, c.n_kv_heads, c.head_dim, DType::kBF16, Device::kCuda);
  if (!anchor.ok()) return anchor.status();
  if (len > 0) {
    // The anchor's own prefill: an anchor-less temporary sequence at positions 0 .. A-1, K/V captured.
    const SeqId tmp = m.cache->meta().CreateSequence();
    Status st;
    for (int32_t c0 = 0; c0 < len && st.ok(); c0 += m.opt.max_chunk) {
      const int32_t n = std::min(m.opt.max_chunk, len - c0);
      (void)(st = m.ForwardChunk(tmp, tokens.subspan(static_cast<size_t>(c0), static_cast<size_t>(n)), n, nullptr,
                                 nullptr, anchor->get()));
    }
    FP_RETURN_IF_ERROR(m.cache->meta().FreeSequence(tmp));
    FP_RETURN_IF_ERROR(st);
  }
  (*anchor)->Seal();
  return anchor;
}

Result<int32_t> CudaLlama::Impl::RoomFor(SeqId seq, int64_t n) const {
  auto len = cache->meta().Length(seq);
  if (!len.ok()) return len.status();
  auto anchor = cache->meta().Anchor(seq);
  if (!anchor.ok()) return anchor.status();
  const int64_t reach = int64_t{*anchor ? (*anchor)->length() : 0} + *len + n;
  if (reach > c.context_length) {
    return OutOfRange("sequence would reach " + std::to_string(reach) + " positions, context length is " +
                      std::to_string(c.context_length));
  }
  return *len;
}

}  // namespace fp
