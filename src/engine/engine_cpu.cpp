// LlamaEngine (CPU): the forward pass of a Llama-architecture model over the paged KV cache + anchor.
// Layout of every activation buffer is row-major [tokens, features]; see engine.h for the position
// convention.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "fieldprint/attention.h"
#include "fieldprint/engine.h"
#include "fieldprint/head_gamma.h"

namespace fp {

namespace {

// y[t] = x[t] / rms(x[t]) * w, accumulated in double as llama.cpp does (ggml_float).
void RmsNorm(const float* x, const float* w, int64_t n, int64_t d, float eps, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * d;
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float scale = 1.f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
    float* yr = y + t * d;
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * scale * w[i];
  }
}

// "Normal" RoPE (ggml mode 0): adjacent pairs (x[2i], x[2i+1]) rotate by pos * base^(-2i/d). llama.cpp's
// GGUF converter permutes HF's Q/K rows so that this pairing reproduces HF's rotate_half on the original
// model.
void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d, const float* table) {  // table: [n, d/2, 2]
  for (int64_t t = 0; t < n; ++t) {
    const float* cs = table + t * d;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * d;
      for (int64_t i = 0; i < d / 2; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
      }
    }
  }
}

bool AnyBlockType(const LayerWeights& L) {
  for (const WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
    if (m->type == WeightType::kQ4_1 || m->type == WeightType::kQ8_0) return true;
  }
  return false;
}

void ToHalf(DType t, const float* src, size_t n, uint16_t* dst) {
  for (size_t i = 0; i < n; ++i) StoreFromFloat(dst, t, i, src[i]);
}
void FromHalf(DType t, const uint16_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = LoadAsFloat(src, t, i);
}

}  // namespace

Result<std::unique_ptr<LlamaEngine>> LlamaEngine::Create(LlamaWeights weights, const EngineOptions& options) {
  FP_RETURN_IF_ERROR(weights.config().Validate());
  if (options.page_size <= 0 || options.kv_capacity <= 0 || options.max_chunk <= 0) {
    return InvalidArgument("engine: page_size, kv_capacity and max_chunk must be positive");
  }
  auto gammas = ResolveHeadGammas(options.gamma, options.gamma_per_head, weights.config().n_heads);
  if (!gammas.ok()) return InvalidArgument("engine: " + gammas.status().message());
  auto e = std::make_unique<LlamaEngine>(std::move(weights), options, PrivateTag());
  const ModelConfig& c = e->weights_.config();
  e->pool_ = std::make_unique<ThreadPool>(options.num_threads);
  KvLayout layout;
  layout.num_layers = c.n_layers;
  layout.page_size = options.page_size;
  layout.num_blocks = (options.kv_capacity + options.page_size - 1) / options.page_size;
  layout.num_kv_heads = c.n_kv_heads;
  layout.head_dim = c.head_dim;
  layout.dtype = options.kv_dtype;
  auto cache = KvCache::Create(layout, Device::kCpu);
  if (!cache.ok()) return cache.status();
  e->cache_ = std::make_unique<KvCache>(std::move(cache).value());
  e->gamma_ = std::move(gammas).value();
  const auto m = static_cast<size_t>(options.max_chunk);
  const auto d = static_cast<size_t>(c.d_model), hd = static_cast<size_t>(c.head_dim);
  e->x_.resize(m * d);
  e->xn_.resize(m * d);
  e->q_.resize(m * static_cast<size_t>(c.q_dim()));
  e->o_.resize(m * static_cast<size_t>(c.q_dim()));
  e->k_.resize(m * static_cast<size_t>(c.kv_dim()));
  e->v_.resize(m * static_cast<size_t>(c.kv_dim()));
  e->gate_.resize(m * static_cast<size_t>(c.d_ff));
  e->up_.resize(m * static_cast<size_t>(c.d_ff));
  e->rope_.resize(m * hd);
  if (options.kv_dtype != DType::kF32) {
    e->q16_.resize(e->q_.size());
    e->o16_.resize(e->o_.size());
    e->k16_.resize(e->k_.size());
    e->v16_.resize(e->v_.size());
  }
  e->inv_freq_.resize(hd / 2);
  for (size_t i = 0; i < hd / 2; ++i) {
    e->inv_freq_[i] =
        std::pow(static_cast<double>(c.rope_base), -2.0 * static_cast<double>(i) / static_cast<double>(hd));
  }
  return e;
}

Result<SeqId> LlamaEngine::NewSequence(const std::shared_ptr<AnchorSegment>& anchor) {
  const SeqId s = cache_->meta().CreateSequence();
  if (anchor != nullptr && anchor->length() > 0) {
    if (Status st = cache_->AttachAnchor(s, anchor); !st.ok()) {
      (void)cache_->meta().FreeSequence(s);
      return st;
    }
  }
  return s;
}

Result<std::shared_ptr<AnchorSegment>> LlamaEngine::BuildAnchor(std::span<const int32_t> tokens) {
  const ModelConfig& c = config();
  if (tokens.size() > static_cast<size_t>(c.context_length)) {
    return OutOfRange("anchor of " + std::to_string(tokens.size()) + " tokens exceeds the context length " +
                      std::to_string(c.context_length));
  }
  const auto len = static_cast<int32_t>(tokens.size());
  auto anchor =
      AnchorSegment::Create(c.n_layers, len, c.n_kv_heads, c.head_dim, options_.kv_dtype, Device::kCpu);
  if (!anchor.ok()) return anchor.status();
  if (len > 0) {
    // The anchor's own prefill: an anchor-less temporary sequence at positions 0 .. A-1, K/V captured.
    const SeqId tmp = cache_->meta().CreateSequence();
    Status st;
    for (int32_t c0 = 0; c0 < len && st.ok(); c0 += options_.max_chunk) {
      const int32_t m = std::min(options_.max_chunk, len - c0);
      st = ForwardChunk(tmp, tokens.subspan(static_cast<size_t>(c0), static_cast<size_t>(m)), 0, m, nullptr,
                        anchor->get());
    }
    FP_RETURN_IF_ERROR(cache_->meta().FreeSequence(tmp));
    FP_RETURN_IF_ERROR(st);
  }
  (*anchor)->Seal();
  return anchor;
}

Status LlamaEngine::Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits,
                            std::vector<float>* logits) {
  return Forward(seq, tokens, n_logits, logits, {}, nullptr);
}

Status LlamaEngine::Forward(SeqId seq, std::span<const int32_t> tokens, int32_t n_logits,
                            std::vector<float>* logits, std::span<const int32_t> hidden_rows,
                            std::vector<float>* hidden) {
  const ModelConfig& c = config();
  const auto n = static_cast<int64_t>(tokens.size());
  if (n_logits < 0 || n_logits > n) {
    return InvalidArgument("n_logits " + std::to_string(n_logits) + " outside [0, " + std::to_string(n) +
                           "]");
  }
  if (n_logits > 0 && logits == nullptr) return InvalidArgument("forward: null logits");
  if (!hidden_rows.empty() && hidden == nullptr) return InvalidArgument("forward: null hidden");
  for (size_t i = 0; i < hidden_rows.size(); ++i) {
    if (hidden_rows[i] < 0 || hidden_rows[i] >= n || (i > 0 && hidden_rows[i] <= hidden_rows[i - 1]))
      return InvalidArgument("forward: hidden rows must be increasing indices into the tokens");
  }
  auto len = cache_->meta().Length(seq);
  if (!len.ok()) return len.status();
  auto anchor = cache_->meta().Anchor(seq);
  if (!anchor.ok()) return anchor.status();
  const int32_t a = *anchor ? (*anchor)->length() : 0;
  if (a + *len + n > c.context_length) {
    return OutOfRange("sequence would reach " + std::to_string(a + *len + n) +
                      " positions, context length is " + std::to_string(c.context_length));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size)
      return OutOfRange("token id " + std::to_string(t) + " outside the vocabulary");
  }
  if (logits != nullptr)
    logits->assign(static_cast<size_t>(n_logits) * static_cast<size_t>(c.vocab_size), 0.f);
  if (hidden != nullptr) hidden->assign(hidden_rows.size() * static_cast<size_t>(c.d_model), 0.f);
  const int64_t first_logit = n - n_logits;  // global index of the first token whose logits are wanted
  std::vector<int32_t> local;  // [hidden rows of this chunk] chunk-local indices
  size_t h = 0;                // next hidden row
  for (int64_t c0 = 0; c0 < n; c0 += options_.max_chunk) {
    const int64_t m = std::min<int64_t>(options_.max_chunk, n - c0);
    const int64_t lf = std::max<int64_t>(0, first_logit - c0);
    float* out = lf < m ? logits->data() + (c0 + lf - first_logit) * c.vocab_size : nullptr;
    local.clear();
    const size_t h0 = h;
    for (; h < hidden_rows.size() && hidden_rows[h] < c0 + m; ++h)
      local.push_back(static_cast<int32_t>(hidden_rows[h] - c0));
    float* hout = local.empty() ? nullptr : hidden->data() + h0 * static_cast<size_t>(c.d_model);
    FP_RETURN_IF_ERROR(ForwardChunk(seq, tokens.subspan(static_cast<size_t>(c0), static_cast<size_t>(m)), a,
                                    static_cast<int32_t>(lf), out, nullptr, local, hout));
  }
  return Status::Ok();
}

Status LlamaEngine::Attention(int layer, const KvBatch& batch, int32_t n) {
  const ModelConfig& c = config();
  const DType dt = options_.kv_dtype;
  const bool f32 = dt == DType::kF32;
  AttentionParams p;
  p.q = MakeContiguous(f32 ? static_cast<void*>(q_.data()) : q16_.data(), dt, {n, c.n_heads, c.head_dim});
  p.o = MakeContiguous(f32 ? static_cast<void*>(o_.data()) : o16_.data(), dt, {n, c.n_heads, c.head_dim});
  FP_RETURN_IF_ERROR(cache_->BindLayer(layer, batch, &p));
  p.batch = batch.view();
  p.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  p.causal = true;
  p.gamma =
      std::any_of(gamma_.begin(), gamma_.end(), [](float g) { return g != 0.f; }) ? gamma_.data() : nullptr;
  // One sequence: split its query rows across the pool. Rows [j0, j1) of n are a valid launch of their own
  // with kv_len - (n - j1) keys (the rows keep their positions, so causality is unchanged).
  const int32_t kv_len = batch.kv_lens[0];
  const int64_t row_elems = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const size_t esize = DTypeSize(dt);
  std::mutex mu;
  Status first_error;
  pool_->ParallelFor(n, 1, [&](int64_t j0, int64_t j1) {
    AttentionParams s = p;
    s.q.data = static_cast<char*>(p.q.data) + static_cast<size_t>(j0 * row_elems) * esize;
    s.o.data = static_cast<char*>(p.o.data) + static_cast<size_t>(j0 * row_elems) * esize;
    s.q.shape[0] = s.o.shape[0] = j1 - j0;
    const int32_t indptr[2] = {0, static_cast<int32_t>(j1 - j0)};
    const int32_t lens[1] = {kv_len - static_cast<int32_t>(n - j1)};
    s.batch.num_seqs = 1;
    s.batch.q_indptr = indptr;
    s.batch.kv_lens = lens;
    Status st = AttentionCpu(s, 1);
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = st;
    }
  });
  FP_RETURN_IF_ERROR(first_error);
  return Status::Ok();
}

Status LlamaEngine::ForwardChunk(SeqId seq, std::span<const int32_t> tokens, int32_t pos_offset,
                                 int32_t logits_from, float* logits, AnchorSegment* capture,
                                 std::span<const int32_t> hidden_rows, float* hidden) {
  const ModelConfig& c = config();
  const auto n = static_cast<int32_t>(tokens.size());
  if (n == 0) return Status::Ok();
  const int64_t d = c.d_model, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), ff = c.d_ff;
  auto res = cache_->Reserve(seq, n);
  if (!res.ok()) return res.status();
  const int32_t start = res->start;
  // From here on a failure must not leave half-written tokens in the sequence.
  auto fail = [&](Status st) {
    (void)cache_->meta().Truncate(seq, start);
    return st;
  };
  const std::array<SeqId, 1> seqs{seq};
  const std::array<int32_t, 1> qlens{n};
  auto batch = cache_->meta().BuildBatch(seqs, qlens);
  if (!batch.ok()) return fail(batch.status());

  for (int32_t t = 0; t < n; ++t) {
    const double pos = static_cast<double>(pos_offset) + start + t;
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double th = pos * inv_freq_[static_cast<size_t>(i)];
      rope_[static_cast<size_t>(t * hd + 2 * i)] = static_cast<float>(std::cos(th));
      rope_[static_cast<size_t>(t * hd + 2 * i + 1)] = static_cast<float>(std::sin(th));
    }
    if (Status st = weights_.Embed(tokens[static_cast<size_t>(t)], x_.data() + t * d); !st.ok())
      return fail(st);
  }
  const DType dt = options_.kv_dtype;
  const bool f32 = dt == DType::kF32;
  ThreadPool& pool = *pool_;
  // Quantise the normalised activations once for the matrices that share them.
  auto prep = [&](const float* x, int64_t cols, bool quant) {
    if (quant) {
      QuantizeActivations(x, n, cols, &xq_);
    } else {
      xq_.n = n;
      xq_.cols = cols;
    }
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layer(l);
    const bool quant = AnyBlockType(L);
    RmsNorm(x_.data(), L.attn_norm.data(), n, d, c.rms_eps, xn_.data());
    prep(xn_.data(), d, quant);
    for (auto [w, y] :
         {std::pair{&L.wq, q_.data()}, std::pair{&L.wk, k_.data()}, std::pair{&L.wv, v_.data()}}) {
      if (Status st = LinearCpuQ8(*w, xq_, xn_.data(), y, pool); !st.ok()) return fail(st);
    }
    ApplyRope(q_.data(), n, c.n_heads, hd, rope_.data());
    ApplyRope(k_.data(), n, c.n_kv_heads, hd, rope_.data());
    void* kp = k_.data();
    void* vp = v_.data();
    if (!f32) {
      ToHalf(dt, q_.data(), static_cast<size_t>(n * qd), q16_.data());
      ToHalf(dt, k_.data(), static_cast<size_t>(n * kvd), k16_.data());
      ToHalf(dt, v_.data(), static_cast<size_t>(n * kvd), v16_.data());
      kp = k16_.data();
      vp = v16_.data();
    }
    const TensorView kview = MakeContiguous(kp, dt, {n, c.n_kv_heads, c.head_dim});
    const TensorView vview = MakeContiguous(vp, dt, {n, c.n_kv_heads, c.head_dim});
    if (Status st = cache_->WriteLayer(l, *res, kview, vview); !st.ok()) return fail(st);
    if (capture != nullptr) {
      if (Status st = capture->Write(l, start, kview, vview); !st.ok()) return fail(st);
    }
    if (Status st = Attention(l, *batch, n); !st.ok()) return fail(st);
    if (!f32) FromHalf(dt, o16_.data(), static_cast<size_t>(n * qd), o_.data());
    // Residual: x += Wo · o (xn_ is free again and serves as the output buffer).
    prep(o_.data(), qd, quant);
    if (Status st = LinearCpuQ8(L.wo, xq_, o_.data(), xn_.data(), pool); !st.ok()) return fail(st);
    for (int64_t i = 0; i < n * d; ++i) x_[static_cast<size_t>(i)] += xn_[static_cast<size_t>(i)];
    // SwiGLU FFN: x += W_down · (silu(W_gate · xn) * (W_up · xn)).
    RmsNorm(x_.data(), L.ffn_norm.data(), n, d, c.rms_eps, xn_.data());
    prep(xn_.data(), d, quant);
    if (Status st = LinearCpuQ8(L.w_gate, xq_, xn_.data(), gate_.data(), pool); !st.ok()) return fail(st);
    if (Status st = LinearCpuQ8(L.w_up, xq_, xn_.data(), up_.data(), pool); !st.ok()) return fail(st);
    for (int64_t i = 0; i < n * ff; ++i) {
      const float g = gate_[static_cast<size_t>(i)];
      gate_[static_cast<size_t>(i)] = g / (1.f + std::exp(-g)) * up_[static_cast<size_t>(i)];
    }
    prep(gate_.data(), ff, quant);
    if (Status st = LinearCpuQ8(L.w_down, xq_, gate_.data(), xn_.data(), pool); !st.ok()) return fail(st);
    for (int64_t i = 0; i < n * d; ++i) x_[static_cast<size_t>(i)] += xn_[static_cast<size_t>(i)];
  }
  // Final hidden states: the same per-row RmsNorm as the logits path below, so the same bits.
  for (size_t i = 0; i < hidden_rows.size(); ++i) {
    RmsNorm(x_.data() + static_cast<int64_t>(hidden_rows[i]) * d, weights_.output_norm().data(), 1, d,
            c.rms_eps, hidden + static_cast<int64_t>(i) * d);
  }
  if (logits != nullptr && logits_from < n) {
    const int32_t m = n - logits_from;
    RmsNorm(x_.data() + static_cast<int64_t>(logits_from) * d, weights_.output_norm().data(), m, d, c.rms_eps,
            xn_.data());
    const WeightMatrix& out = weights_.output();
    if (out.type == WeightType::kQ4_1 || out.type == WeightType::kQ8_0) {
      QuantizeActivations(xn_.data(), m, d, &xq_);
    } else {
      xq_.n = m;
      xq_.cols = d;
    }
    if (Status st = LinearCpuQ8(out, xq_, xn_.data(), logits, pool); !st.ok()) return fail(st);
  }
  return Status::Ok();
}

}  // namespace fp
