// Llama hyper-parameters from GGUF metadata, cross-checked against the tensor shapes so that a file whose
// metadata and weights disagree is refused here rather than read out of bounds by the engine.
#include "fieldprint/hparams.h"

namespace fp {

Result<LlamaHParams> ReadLlamaHParams(const GgufFile& f) {
  LlamaHParams h;
  auto arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  h.arch = std::string(*arch);
  if (h.arch != "llama") return Unimplemented("hparams: architecture '" + h.arch + "' is not llama");
  const std::string a = h.arch + ".";
  auto get = [&](const std::string& key, int64_t* dst, bool required) -> Status {
    if (!f.Has(key))
      return required ? InvalidArgument("hparams: metadata '" + key + "' is missing") : Status::Ok();
    auto v = f.GetInt(key);
    if (!v.ok()) return v.status();
    if (*v <= 0 || *v > (int64_t{1} << 32))
      return InvalidArgument("hparams: '" + key + "' = " + std::to_string(*v));
    *dst = *v;
    return Status::Ok();
  };
  FP_RETURN_IF_ERROR(get(a + "block_count", &h.n_layers, true));
  FP_RETURN_IF_ERROR(get(a + "embedding_length", &h.hidden, true));
  FP_RETURN_IF_ERROR(get(a + "attention.head_count", &h.n_heads, true));
  FP_RETURN_IF_ERROR(get(a + "feed_forward_length", &h.ffn, true));
  h.n_kv_heads = h.n_heads;
  FP_RETURN_IF_ERROR(get(a + "attention.head_count_kv", &h.n_kv_heads, false));
  if (h.hidden % h.n_heads != 0) return InvalidArgument("hparams: hidden size not divisible by head count");
  h.head_dim = h.hidden / h.n_heads;
  FP_RETURN_IF_ERROR(get(a + "attention.key_length", &h.head_dim, false));
  if (h.n_heads % h.n_kv_heads != 0)
    return InvalidArgument("hparams: head count not divisible by kv head count");
  FP_RETURN_IF_ERROR(get(a + "context_length", &h.context, false));
  h.rope_dim = h.head_dim;
  FP_RETURN_IF_ERROR(get(a + "rope.dimension_count", &h.rope_dim, false));
  if (f.Has(a + "rope.freq_base")) {
    auto v = f.GetFloat(a + "rope.freq_base");
    if (!v.ok()) return v.status();
    h.rope_theta = *v;
  }
  if (f.Has(a + "attention.layer_norm_rms_epsilon")) {
    auto v = f.GetFloat(a + "attention.layer_norm_rms_epsilon");
    if (!v.ok()) return v.status();
    h.rms_eps = *v;
  }
  if (f.Has(a + "vocab_size")) {
    FP_RETURN_IF_ERROR(get(a + "vocab_size", &h.vocab, true));
  } else if (const GgufValue* t = f.Find("tokenizer.ggml.tokens"); t && t->type == GgufValueType::kArray) {
    h.vocab = static_cast<int64_t>(t->count);
  }
  auto emb = f.GetTensor("token_embd.weight");
  if (!emb.ok()) return emb.status();
  if ((*emb)->n_dims != 2 || (*emb)->ne[0] != h.hidden || (h.vocab && (*emb)->ne[1] != h.vocab)) {
    return InvalidArgument("hparams: token_embd.weight is " + (*emb)->ShapeString() + ", want [" +
                           std::to_string(h.hidden) + ", " + std::to_string(h.vocab) + "]");
  }
  h.vocab = (*emb)->ne[1];
  if (const GgufTensor* q = f.FindTensor("blk.0.attn_q.weight")) {
    if (q->ne[0] != h.hidden || q->ne[1] != h.n_heads * h.head_dim) {
      return InvalidArgument("hparams: blk.0.attn_q.weight is " + q->ShapeString() + ", inconsistent with " +
                             std::to_string(h.n_heads) + " heads of " + std::to_string(h.head_dim));
    }
  }
  h.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  return h;
}

}  // namespace fp
