// LlamaWeights: binds GGUF tensors (zero-copy views of the mapping, or widened to f32) or makes random ones.
// Every tensor's type and shape is checked against the config before the forward pass may index it.
#include "fieldprint/llama_weights.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "fieldprint/dtype.h"
#include "fieldprint/quant.h"

namespace fp {

namespace {

// Direct (zero-copy) mapping of a GGUF type to a kernel type; false when the type must be widened.
bool KernelTypeOf(GgmlType t, WeightType* out) {
  switch (t) {
    case GgmlType::kF32:
      *out = WeightType::kF32;
      return true;
    case GgmlType::kF16:
      *out = WeightType::kF16;
      return true;
    case GgmlType::kQ8_0:
      *out = WeightType::kQ8_0;
      return true;
    case GgmlType::kQ4_1:
      *out = WeightType::kQ4_1;
      return true;
    default:
      return false;
  }
}

// splitmix64: a fixed, portable stream (std distributions differ between standard libraries).
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.f / 16777216.f) * 2.f - 1.f; }  // [-1, 1)
};

}  // namespace

std::string ResolveModelPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* m = std::getenv("FIELDPRINT_MODEL"); m != nullptr && *m != '\0') return m;
  if (const char* c = std::getenv("FIELDPRINT_CACHE"); c != nullptr && *c != '\0') {
    return std::string(c) + "/" + kDefaultModelFile;
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/fieldprint/" + kDefaultModelFile;
}

WeightMatrix LlamaWeights::Own(std::vector<uint8_t> bytes, WeightType type, int64_t rows, int64_t cols) {
  owned_.push_back(std::make_unique<std::vector<uint8_t>>(std::move(bytes)));
  WeightMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.data = owned_.back()->data();
  m.row_bytes = WeightRowBytes(type, cols);
  return m;
}

Result<WeightMatrix> LlamaWeights::Bind(const std::string& name, int64_t rows, int64_t cols,
                                        WeightStorage storage) {
  auto t = file_->GetTensor(name);
  if (!t.ok()) return t.status();
  const GgufTensor& g = **t;
  if (g.n_dims != 2 || g.cols() != cols || g.rows() != rows) {
    return InvalidArgument(name + " has shape " + g.ShapeString() + ", expected [" + std::to_string(cols) +
                           ", " + std::to_string(rows) + "]");
  }
  WeightType kt;
  if (storage == WeightStorage::kQuantized && KernelTypeOf(g.type, &kt)) {
    WeightMatrix m{kt, rows, cols, g.data, WeightRowBytes(kt, cols)};
    if (m.row_bytes * static_cast<size_t>(rows) != g.nbytes)
      return InvalidArgument(name + ": byte size mismatch");
    FP_RETURN_IF_ERROR(m.Validate(name.c_str()));
    return m;
  }
  if (!CanDequantize(g.type)) {
    return Unimplemented(name + ": tensor type " + GgmlTypeName(g.type) + " is not supported by the engine");
  }
  auto rb = RowBytes(g.type, cols);
  if (!rb.ok()) return rb.status();
  if (*rb * static_cast<size_t>(rows) != g.nbytes) return InvalidArgument(name + ": byte size mismatch");
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols) * sizeof(float));
  auto* dst = reinterpret_cast<float*>(bytes.data());
  for (int64_t r = 0; r < rows; ++r) {
    FP_RETURN_IF_ERROR(DequantizeRow(g.type, g.data + static_cast<size_t>(r) * *rb, dst + r * cols, cols));
  }
  return Own(std::move(bytes), WeightType::kF32, rows, cols);
}

Result<std::vector<float>> LlamaWeights::BindVector(const std::string& name, int64_t n) {
  auto t = file_->GetTensor(name);
  if (!t.ok()) return t.status();
  const GgufTensor& g = **t;
  if (g.numel() != n || g.rows() != 1) {
    return InvalidArgument(name + " has shape " + g.ShapeString() + ", expected [" + std::to_string(n) + "]");
  }
  if (!CanDequantize(g.type)) return Unimplemented(name + ": unsupported type " + GgmlTypeName(g.type));
  auto rb = RowBytes(g.type, n);
  if (!rb.ok()) return rb.status();
  if (*rb != g.nbytes) return InvalidArgument(name + ": byte size mismatch");
  std::vector<float> v(static_cast<size_t>(n));
  FP_RETURN_IF_ERROR(DequantizeRow(g.type, g.data, v.data(), n));
  return v;
}

Result<LlamaWeights> LlamaWeights::Load(const std::string& path, WeightStorage storage, const LoadProgress& progress) {
  auto f = GgufFile::Open(path);
  if (!f.ok()) return f.status();
  return FromGguf(std::move(f).value(), storage, progress);
}

Result<LlamaWeights> LlamaWeights::FromGguf(GgufFile file, WeightStorage storage, const LoadProgress& progress) {
  LlamaWeights w;
  w.file_ = std::make_unique<GgufFile>(std::move(file));
  auto cfg = ModelConfig::FromGguf(*w.file_);
  if (!cfg.ok()) return cfg.status();
  w.config_ = *cfg;
  const ModelConfig& c = w.config_;
  auto bind = [&](const std::string& name, int64_t rows, int64_t cols, WeightMatrix* out) -> Status {
    auto m = w.Bind(name, rows, cols, storage);
    if (!m.ok()) return m.status();
    *out = *m;
    return Status::Ok();
  };
  auto bindv = [&](const std::string& name, int64_t n, std::vector<float>* out) -> Status {
    auto v = w.BindVector(name, n);
    if (!v.ok()) return v.status();
    *out = std::move(v).value();
    return Status::Ok();
  };
  FP_RETURN_IF_ERROR(bind("token_embd.weight", c.vocab_size, c.d_model, &w.token_embd_));
  if (c.tied_embeddings) {
    w.output_ = w.token_embd_;
  } else {
    FP_RETURN_IF_ERROR(bind("output.weight", c.vocab_size, c.d_model, &w.output_));
  }
  FP_RETURN_IF_ERROR(bindv("output_norm.weight", c.d_model, &w.output_norm_));
  w.layers_.resize(static_cast<size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    LayerWeights& L = w.layers_[static_cast<size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    FP_RETURN_IF_ERROR(bindv(p + "attn_norm.weight", c.d_model, &L.attn_norm));
    FP_RETURN_IF_ERROR(bindv(p + "ffn_norm.weight", c.d_model, &L.ffn_norm));
    FP_RETURN_IF_ERROR(bind(p + "attn_q.weight", c.q_dim(), c.d_model, &L.wq));
    FP_RETURN_IF_ERROR(bind(p + "attn_k.weight", c.kv_dim(), c.d_model, &L.wk));
    FP_RETURN_IF_ERROR(bind(p + "attn_v.weight", c.kv_dim(), c.d_model, &L.wv));
    FP_RETURN_IF_ERROR(bind(p + "attn_output.weight", c.d_model, c.q_dim(), &L.wo));
    FP_RETURN_IF_ERROR(bind(p + "ffn_gate.weight", c.d_ff, c.d_model, &L.w_gate));
    FP_RETURN_IF_ERROR(bind(p + "ffn_up.weight", c.d_ff, c.d_model, &L.w_up));
    FP_RETURN_IF_ERROR(bind(p + "ffn_down.weight", c.d_model, c.d_ff, &L.w_down));
    if (progress) progress(i + 1, c.n_layers);
  }
  return w;
}

Result<LlamaWeights> LlamaWeights::Random(const ModelConfig& config, uint64_t seed, WeightType type) {
  FP_RETURN_IF_ERROR(config.Validate());
  LlamaWeights w;
  w.config_ = config;
  Rng rng{seed};
  std::vector<float> row;
  Status encoded;  // the first encoding error, reported once every matrix is made
  // Uniform(-a, a) with a = sqrt(3 / cols) has variance 1 / cols: a unit-variance input gives unit outputs.
  auto make = [&](int64_t rows, int64_t cols, float gain) {
    const float a = gain * std::sqrt(3.f / static_cast<float>(cols));
    const size_t rb = WeightRowBytes(type, cols);
    std::vector<uint8_t> bytes(rb * static_cast<size_t>(rows));
    row.resize(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& x : row) x = a * rng.Uniform();
      uint8_t* dst = bytes.data() + rb * static_cast<size_t>(r);
      if (Status st = EncodeWeightRow(type, row.data(), cols, dst); !st.ok() && encoded.ok()) encoded = st;
    }
    return w.Own(std::move(bytes), type, rows, cols);
  };
  const ModelConfig& c = w.config_;
  // Embedding rows of norm ~sqrt(d) (RMS 1) so the first RMSNorm sees ordinary inputs.
  w.token_embd_ = make(c.vocab_size, c.d_model, std::sqrt(static_cast<float>(c.d_model)));
  w.output_ = c.tied_embeddings ? w.token_embd_ : make(c.vocab_size, c.d_model, 1.f);
  w.output_norm_.assign(static_cast<size_t>(c.d_model), 1.f);
  w.layers_.resize(static_cast<size_t>(c.n_layers));
  for (auto& L : w.layers_) {
    L.attn_norm.assign(static_cast<size_t>(c.d_model), 1.f);
    L.ffn_norm.assign(static_cast<size_t>(c.d_model), 1.f);
    L.wq = make(c.q_dim(), c.d_model, 1.f);
    L.wk = make(c.kv_dim(), c.d_model, 1.f);
    L.wv = make(c.kv_dim(), c.d_model, 1.f);
    // Residual branches scaled down so the stream does not grow with depth.
    L.wo = make(c.d_model, c.q_dim(), 0.5f);
    L.w_gate = make(c.d_ff, c.d_model, 1.f);
    L.w_up = make(c.d_ff, c.d_model, 1.f);
    L.w_down = make(c.d_model, c.d_ff, 0.5f);
  }
  FP_RETURN_IF_ERROR(encoded);
  return w;
}

size_t LlamaWeights::matrix_bytes_per_token() const {
  size_t b = output_.row_bytes * static_cast<size_t>(output_.rows);
  for (const auto& L : layers_) {
    for (const WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
      b += m->row_bytes * static_cast<size_t>(m->rows);
    }
  }
  return b;
}

Status LlamaWeights::Embed(int32_t token, float* out) const {
  if (token < 0 || token >= config_.vocab_size) {
    return OutOfRange("token id " + std::to_string(token) + " outside [0, " +
                      std::to_string(config_.vocab_size) + ")");
  }
  return DequantizeRow(token_embd_, token, out);
}

}  // namespace fp
