// engine/cuda_engine_impl.h — CudaLlama::Impl, shared by cuda_engine.cu (setup, weights, prefill, eager
// steps) and cuda_engine_decode.cu (the decode step: eager or a CUDA graph per batch size). Internal to
// src/engine. defines: CublasStatus, LayerDev, CudaLlama::Impl
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"
#include "fieldprint/attention_cuda.h"
#include "kvcache/pinned_staging.h"
#include "fieldprint/cuda_engine.h"

namespace fp {

using bf16 = __nv_bfloat16;
namespace ce = cuda_engine;

inline Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Internal(std::string("cuda engine: cuBLAS ") + what + " failed: " + cublasGetStatusName(s));
}

// The GEMM weights lie in CudaLlama::Impl::w_layout (row-major, or segment-tiled in the skinny deterministic mode),
// each buffer sized for ce::WeightLayoutRows(rows) rows.
struct LayerDev {
  float* attn_norm = nullptr;  // [d]
  float* ffn_norm = nullptr;   // [d]
  bf16* wqkv = nullptr;        // [qd + 2 kvd, d]  rows: q | k | v
  bf16* wo = nullptr;          // [d, qd]
  bf16* wgu = nullptr;         // [2 ff, d]        rows: gate and up interleaved in tiles of 4 (GateUpRow)
  bf16* wdown = nullptr;       // [d, ff]
};

struct CudaLlama::Impl {
  ModelConfig c;
  CudaEngineOptions opt;
  std::vector<DeviceBuffer> owned;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::unique_ptr<KvCache> cache;

  // Weights.
  std::vector<LayerDev> layers;
  bf16* embd = nullptr;       // [vocab, d] row-major (the embedding lookup's)
  bf16* out_w = nullptr;      // [vocab, d] in w_layout (== embd when tied and row-major, else tied_out_w)
  float* out_norm = nullptr;  // [d]
  size_t weight_bytes = 0;
  ce::WeightLayout w_layout = ce::WeightLayout::kRowMajor;
  DeviceBuffer tied_out_w;  // the LM head's segment-tiled copy of a tied embedding (w_layout tiled only)

  // Scratch for T = max(max_batch, max_chunk) tokens.
  int32_t T = 0;
  float* x = nullptr;            // [T, d] residual stream
  bf16* xn = nullptr;            // [T, max(d, qd)] normalised input of the next GEMM
  float* qkv = nullptr;          // [T, qd + 2 kvd]
  bf16* q = nullptr;             // [T, Hq, hd]
  bf16* o = nullptr;             // [T, Hq, hd]
  float* gu = nullptr;           // [T, 2 ff] gate|up rows interleaved (GateUpRow); unused on the skinny path
  bf16* h = nullptr;             // [T, ff]
  float* logits = nullptr;       // [T, vocab]
  bf16* kcap = nullptr;          // [T, Hkv, hd] anchor capture
  bf16* vcap = nullptr;          // [T, Hkv, hd]
  // The step's host inputs live in ONE device block, [slot_rows | tokens | positions | meta], filled by one copy
  // out of pinned staging per step (six small copies cost a few us of stream time each at B = 1).
  int64_t* slot_rows = nullptr;  // [T] (the block's start)
  int32_t* tokens = nullptr;     // [T]
  int32_t* positions = nullptr;  // [T]
  int32_t* next = nullptr;       // [T] argmax (or a chunk's picked ids for LaunchSampleBounds)
  SampleBounds* bounds = nullptr;  // [T] LaunchSampleBounds output
  double* inv_freq = nullptr;    // [hd / 2]
  float2* rope_cs = nullptr;     // [T, hd / 2] (cos, sin) of the step's tokens' angles (LaunchRopeTable)
  float* gamma = nullptr;        // [Hq]
  bool gamma_nonzero = false;
  int32_t* meta = nullptr;  // [T + 1 | T | T * num_blocks]: q_indptr, kv_lens, block_table (block's end)
  kvcache_detail::PinnedStaging upload_staging;  // host side of the step block
  void* blas_ws = nullptr;  // cuBLAS workspace (set explicitly so captured GEMMs never allocate)
  std::optional<AttentionDecodePlan>
      plan;  // the last eager decode step's (kept until the next step replaces it)

  // One captured decode step (all layers + logits) per batch size. Valid while the batch has the same size,
  // the same anchor and every length <= cap (the plan's max_kv_len; the block table is laid out with cap / P
  // pages per row); re-captured otherwise.
  struct DecodeGraph {
    int32_t cap = 0, split = 0;
    std::shared_ptr<AnchorSegment> anchor;  // held: its address and storage stay valid while captured
    std::optional<AttentionDecodePlan> plan;
    cudaGraphExec_t exec = nullptr;
  };
  std::map<int32_t, DecodeGraph> graphs;
  int64_t graph_captures = 0, graph_replays = 0;
  int num_sms = 132;
  bool pdl_supported = false;  // compute capability >= 9.0
  // The fixed attention split of batch_invariant mode when split_tokens is -1 (per step elsewhere): 8 splits of
  // a 4k context, enough CTAs at B = 1 without too many merges at B = 64 (bench_e2e "det" rows).
  static constexpr int32_t kBatchInvariantSplit = 512;
  // Token rows per padded cuBLAS call in batch_invariant mode (CudaEngineOptions::InvariantGemm::kCublasPadded).
  static constexpr int kInvariantRows = 64;

  bool pdl() const { return opt.pdl && pdl_supported; }
  bool attention_pdl() const { return pdl() && opt.attention_pdl; }
  // Whether a step of n tokens runs its GEMMs on the skinny GEMM (then gate|up fuses SwiGLU).
  bool UseSkinny(int n) const;
  // Whether a step of n tokens runs the q|k|v GEMV with RMSNorm and RoPE + KV write fused
  // (CudaEngineOptions::fused_qkv; only one token on the GEMV path, shapes the fused kernel takes).
  bool UseFusedQkv(int n) const;

  // The decode split size of a step (CudaEngineOptions::split_tokens).
  int32_t DecodeSplit(const KvBatch& batch) const;

  ~Impl();

  int32_t* d_indptr() const { return meta; }
  int32_t* d_lens() const { return meta + T + 1; }
  int32_t* d_table() const { return meta + 2 * T + 1; }

  Status Init(const ModelConfig& config, const CudaEngineOptions& o);
  Status AllocWeights();
  // The layout the options want: segment-tiled in the skinny batch-invariant mode (only the skinny GEMM reads
  // the weights there), row-major elsewhere (GEMV, cuBLAS). SetWeightLayout moves every GEMM weight there
  // (cuda_engine_layout.cu; a no-op when already so), synchronising the stream.
  ce::WeightLayout WantedWeightLayout() const;
  Status SetWeightLayout(ce::WeightLayout layout);
  // The GEMM weight matrices [out, in] that follow w_layout, by where their pointers live: each layer's q|k|v, o,
  // gate|up and down, then the LM head when it is not tied (a tied one is the row-major embedding table; see
  // tied_out_w). AllocWeights sizes them and SetWeightLayout moves them from this one list. Needs `layers` sized.
  struct GemmWeight {
    bf16** w;
    int out, in;
  };
  std::vector<GemmWeight> GemmWeights();
  // y[n, out] = x[n, in] . W^T + beta y: GEMV, skinny GEMM or cuBLAS (CudaEngineOptions).
  Status Gemm(const bf16* w, int out, int in, const bf16* xin, int n, float* y, float beta);
  // Host arrays of one step -> the fixed device buffers. table: [num_seqs, stride] (host).
  Status Upload(std::span<const Reservation> res, std::span<const int32_t> toks, const KvBatch& batch,
                const int32_t* table, int32_t stride);
  // Attention parameters over the fixed device buffers for n tokens of ns sequences, block table stride
  // `stride`.
  AttentionParams Params(int n, int32_t ns, int32_t stride) const;
  // Embedding + every layer, nothing else (no uploads, no host waits: capturable). plan: decode attention, or
  // null for the prefill kernel on host_batch.
  Status EnqueueLayers(int n, const KvBatch& batch, AttentionParams p, const AttentionBatch& host_batch,
                       const AttentionDecodePlan* dplan, std::span<const Reservation> res,
                       AnchorSegment* capture);
  // Eager step: upload, plan (decode), enqueue.
  Status Step(std::span<const Reservation> res, std::span<const int32_t> toks, const KvBatch& batch,
              bool decode, AnchorSegment* capture);
  // A decode step through the batch size's CUDA graph (captured on first use or when it no longer fits).
  Status GraphDecodeStep(std::span<const Reservation> res, std::span<const int32_t> toks,
                         const KvBatch& batch);
  Status Logits(int64_t row0, int32_t m);  // logits of residual rows [row0, row0 + m) into `logits`
  // ForwardSampleBounds's request for the output rows: their picked ids and where their bounds go (host).
  struct BoundsJob {
    const int32_t* picked = nullptr;  // [rows]
    double inv_temperature = 1.0;
    SampleBounds* out = nullptr;      // [rows]
  };
  // Appends toks to seq; rows logits_from .. n-1 then give their logits (host_logits [m, vocab]), their checked
  // device argmax (host_ids [m], LaunchArgmaxChecked) or their sample bounds (bounds, LaunchSampleBounds),
  // m = n - logits_from; all null: none. Synchronises.
  Status ForwardChunk(SeqId seq, std::span<const int32_t> toks, int32_t logits_from, float* host_logits,
                      int32_t* host_ids, AnchorSegment* capture, const BoundsJob* bounds = nullptr);
  // Forward / ForwardGreedy / ForwardSampleBounds: the last n_out rows' logits (logits [n_out, vocab]), greedy
  // ids (ids [n_out]) or sample bounds (bounds: n_out rows).
  Status ForwardRows(SeqId seq, std::span<const int32_t> tokens, int32_t n_out, float* logits, int32_t* ids,
                     const BoundsJob* bounds = nullptr);
  // The sequence's length, if n more tokens fit its context (anchor + length + n <= context_length), else
  // OutOfRange; unknown sequences are errors.
  Result<int32_t> RoomFor(SeqId seq, int64_t n) const;
  Status CheckTokens(std::span<const int32_t> toks) const {
    for (int32_t t : toks) {
      if (t < 0 || t >= c.vocab_size)
        return OutOfRange("token id " + std::to_string(t) + " outside the vocabulary");
    }
    return Status::Ok();
  }
};

}  // namespace fp
