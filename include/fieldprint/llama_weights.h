// fieldprint/llama_weights.h — the weights of a Llama model as matrices the CPU linear layer can multiply.
//
// Two storage modes (picked by measurement, see docs/engine.md): kQuantized keeps Q4_1 / Q8_0 / F16 / F32
// tensors as views into the mmap'd GGUF (zero copy; other types are widened to f32 at load), kF32 widens
// every matrix to f32 at load (4-8x the memory traffic per token). Norm weights are always copied to f32.
// Random weights (seeded) give Llama-3-8B-shaped models without a file; they are built small in tests.
// defines: WeightStorage, LayerWeights, LlamaWeights, kDefaultModelFile, ResolveModelPath
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fieldprint/cpu_linear.h"
#include "fieldprint/gguf.h"
#include "fieldprint/model_config.h"
#include "fieldprint/progress.h"
#include "fieldprint/status.h"

namespace fp {

inline constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// Where the model is: `flag` if non-empty, else $FIELDPRINT_MODEL, else $FIELDPRINT_CACHE/<default file>,
// else
// ~/.cache/fieldprint/<default file>. The path is returned whether or not the file exists.
std::string ResolveModelPath(const std::string& flag);

enum class WeightStorage : uint8_t { kQuantized, kF32 };

struct LayerWeights {
  std::vector<float> attn_norm;  // [d_model]
  WeightMatrix wq;               // [n_heads * head_dim, d_model]
  WeightMatrix wk;               // [n_kv_heads * head_dim, d_model]
  WeightMatrix wv;               // [n_kv_heads * head_dim, d_model]
  WeightMatrix wo;               // [d_model, n_heads * head_dim]
  std::vector<float> ffn_norm;   // [d_model]
  WeightMatrix w_gate;           // [d_ff, d_model]
  WeightMatrix w_up;             // [d_ff, d_model]
  WeightMatrix w_down;           // [d_model, d_ff]
};

class LlamaWeights {
 public:
  // Opens and maps `path`, reads the config and binds every tensor, checking each one's type and shape.
  // progress (optional): called once per layer bound (done = layers so far, total = n_layers).
  static Result<LlamaWeights> Load(const std::string& path, WeightStorage storage,
                                   const LoadProgress& progress = {});
  // Binds the tensors of an already opened file (which is moved in and kept alive).
  static Result<LlamaWeights> FromGguf(GgufFile file, WeightStorage storage, const LoadProgress& progress = {});
  // Random weights for `config` (uniform, scaled like a trained model so activations stay O(1)), matrices of
  // `type` (kF32, kF16, kQ8_0 or kQ4_1). Deterministic in `seed`.
  static Result<LlamaWeights> Random(const ModelConfig& config, uint64_t seed, WeightType type);

  LlamaWeights(LlamaWeights&&) noexcept = default;
  LlamaWeights& operator=(LlamaWeights&&) noexcept = default;

  const ModelConfig& config() const { return config_; }
  const WeightMatrix& token_embd() const { return token_embd_; }  // [vocab, d_model]
  const WeightMatrix& output() const { return output_; }          // [vocab, d_model] (== token_embd if tied)
  const std::vector<float>& output_norm() const { return output_norm_; }  // [d_model]
  const LayerWeights& layer(int i) const { return layers_[static_cast<size_t>(i)]; }
  const GgufFile* gguf() const { return file_.get(); }  // null for random weights
  // Bytes of matrices read per decoded token (what bounds decode speed).
  size_t matrix_bytes_per_token() const;
  // Embedding row of `token` into out[d_model]. OutOfRange for a bad token id.
  Status Embed(int32_t token, float* out) const;

 private:
  LlamaWeights() = default;
  Result<WeightMatrix> Bind(const std::string& name, int64_t rows, int64_t cols, WeightStorage storage);
  Result<std::vector<float>> BindVector(const std::string& name, int64_t n);
  WeightMatrix Own(std::vector<uint8_t> bytes, WeightType type, int64_t rows, int64_t cols);

  ModelConfig config_;
  std::unique_ptr<GgufFile> file_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> owned_;  // converted or random matrices
  WeightMatrix token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
};

}  // namespace fp
