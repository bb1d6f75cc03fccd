// ModelConfig: read from GGUF llama.* metadata, validated before anything is sized by it.
#include "fieldprint/model_config.h"

#include <cmath>
#include <string>

#include "fieldprint/attention.h"

namespace fp {

namespace {

Result<int32_t> GetDim(const GgufFile& f, const std::string& key) {
  auto v = f.GetUint(key);
  if (!v.ok()) return v.status();
  if (*v == 0 || *v > (1u << 30))
    return InvalidArgument(key + " = " + std::to_string(*v) + " is out of range");
  return static_cast<int32_t>(*v);
}

}  // namespace

Status ModelConfig::Validate() const {
  auto positive = [](const char* what, int64_t v) -> Status {
    if (v <= 0) return InvalidArgument(std::string(what) + " must be positive, got " + std::to_string(v));
    return Status::Ok();
  };
  FP_RETURN_IF_ERROR(positive("n_layers", n_layers));
  FP_RETURN_IF_ERROR(positive("d_model", d_model));
  FP_RETURN_IF_ERROR(positive("n_heads", n_heads));
  FP_RETURN_IF_ERROR(positive("n_kv_heads", n_kv_heads));
  FP_RETURN_IF_ERROR(positive("head_dim", head_dim));
  FP_RETURN_IF_ERROR(positive("d_ff", d_ff));
  FP_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  FP_RETURN_IF_ERROR(positive("context_length", context_length));
  if (n_layers > 1024 || d_model > 65536 || d_ff > 262144 || vocab_size > (1 << 22)) {
    return InvalidArgument("model dims implausibly large: " + Summary());
  }
  if (n_heads % n_kv_heads != 0) {
    return InvalidArgument("head_count " + std::to_string(n_heads) + " is not a multiple of head_count_kv " +
                           std::to_string(n_kv_heads));
  }
  if (static_cast<int64_t>(n_heads) * head_dim != d_model) {
    return InvalidArgument("d_model " + std::to_string(d_model) + " != n_heads * head_dim");
  }
  if (head_dim % 2 != 0 || head_dim > kMaxHeadDim) {
    return InvalidArgument("head_dim " + std::to_string(head_dim) +
                           " must be even and <= " + std::to_string(kMaxHeadDim));
  }
  if (d_model % 32 != 0 || d_ff % 32 != 0 || (n_kv_heads * head_dim) % 32 != 0) {
    return InvalidArgument("d_model, d_ff and kv dim must be multiples of 32: " + Summary());
  }
  if (!(rms_eps > 0.f && rms_eps < 1.f)) return InvalidArgument("rms_eps out of range");
  if (!(rope_base > 1.f && std::isfinite(rope_base))) return InvalidArgument("rope_base out of range");
  return Status::Ok();
}

Result<ModelConfig> ModelConfig::FromGguf(const GgufFile& f) {
  auto arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  if (*arch != "llama") {
    return Unimplemented("general.architecture is '" + std::string(*arch) + "', only 'llama' is supported");
  }
  ModelConfig c;
  if (auto n = f.GetString("general.name"); n.ok()) c.name = std::string(*n);
  struct {
    const char* key;
    int32_t* dst;
  } dims[] = {{"llama.block_count", &c.n_layers},
              {"llama.embedding_length", &c.d_model},
              {"llama.attention.head_count", &c.n_heads},
              {"llama.feed_forward_length", &c.d_ff},
              {"llama.context_length", &c.context_length}};
  for (auto& d : dims) {
    auto v = GetDim(f, d.key);
    if (!v.ok()) return v.status();
    *d.dst = *v;
  }
  c.n_kv_heads = c.n_heads;  // absent key: plain multi-head attention
  if (f.Has("llama.attention.head_count_kv")) {
    auto v = GetDim(f, "llama.attention.head_count_kv");
    if (!v.ok()) return v.status();
    c.n_kv_heads = *v;
  }
  if (c.d_model % c.n_heads != 0) return InvalidArgument("embedding_length not divisible by head_count");
  c.head_dim = c.d_model / c.n_heads;
  if (f.Has("llama.rope.dimension_count")) {
    auto v = GetDim(f, "llama.rope.dimension_count");
    if (!v.ok()) return v.status();
    if (*v != c.head_dim)
      return Unimplemented("partial RoPE (rope.dimension_count != head_dim) is not supported");
  }
  if (f.Has("llama.rope.freq_base")) {
    auto v = f.GetFloat("llama.rope.freq_base");
    if (!v.ok()) return v.status();
    c.rope_base = static_cast<float>(*v);
  }
  if (f.Has("llama.attention.layer_norm_rms_epsilon")) {
    auto v = f.GetFloat("llama.attention.layer_norm_rms_epsilon");
    if (!v.ok()) return v.status();
    c.rms_eps = static_cast<float>(*v);
  }
  if (f.Has("llama.rope.scaling.type")) {
    auto v = f.GetString("llama.rope.scaling.type");
    if (v.ok() && *v != "none")
      return Unimplemented("RoPE scaling '" + std::string(*v) + "' is not supported");
  }
  // The vocabulary: explicit key, else the embedding's row count.
  auto emb = f.GetTensor("token_embd.weight");
  if (!emb.ok()) return emb.status();
  if (f.Has("llama.vocab_size")) {
    auto v = GetDim(f, "llama.vocab_size");
    if (!v.ok()) return v.status();
    c.vocab_size = *v;
  } else {
    if ((*emb)->rows() <= 0 || (*emb)->rows() > (1 << 22))
      return InvalidArgument("token_embd rows out of range");
    c.vocab_size = static_cast<int32_t>((*emb)->rows());
  }
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  FP_RETURN_IF_ERROR(c.Validate());
  return c;
}

ModelConfig ModelConfig::Llama3_8B() {
  ModelConfig c;
  c.name = "llama-3-8b-shapes";
  c.n_layers = 32;
  c.d_model = 4096;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.d_ff = 14336;
  c.vocab_size = 128256;
  c.context_length = 8192;
  c.rope_base = 500000.f;
  c.rms_eps = 1e-5f;
  c.tied_embeddings = false;
  return c;
}

std::string ModelConfig::Summary() const {
  return std::to_string(n_layers) + " layers, d " + std::to_string(d_model) + ", heads " +
         std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) + " x " + std::to_string(head_dim) +
         ", ffn " + std::to_string(d_ff) + ", vocab " + std::to_string(vocab_size) +
         (tied_embeddings ? " (tied)" : "");
}

}  // namespace fp
