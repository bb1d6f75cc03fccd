// fieldprint/attention.h — the PagedFieldprintAttention contract and its CPU reference.
//
//   O = softmax( Q · [K_anchor ; K_paged]^T · scale + bias ) · [V_anchor ; V_paged]
//
// for every query row, over ONE softmax spanning the dense anchor segment (shared by every sequence, always
// fully visible, its logits shifted by gamma[h]) and the sequence's paged KV (causal if asked).
// defines: AttentionBatch, AttentionParams, ValidateAttention, AttentionCpu, kMaxHeadDim
#pragma once

#include <cstdint>

#include "fieldprint/status.h"
#include "fieldprint/tensor.h"

namespace fp {

inline constexpr int kMaxHeadDim = 256;

// Per-sequence metadata of a launch. Int32 arrays; on the device of the tensors for a launch, on the host
// for validation and planning.
//   query rows of sequence s:   [q_indptr[s], q_indptr[s+1])            (n_q(s) rows)
//   paged tokens of sequence s: kv_lens[s], stored in pages block_table[s, 0 .. ceil(kv_lens[s]/page)-1]
//   query row j of s sits at position kv_lens[s] - n_q(s) + j (its own K/V are already in the cache), so
//   under `causal` it sees paged positions [0, kv_lens[s] - n_q(s) + j]; the anchor is always visible.
struct AttentionBatch {
  int32_t num_seqs = 0;
  const int32_t* q_indptr = nullptr;     // [num_seqs + 1], q_indptr[0] == 0, non-decreasing
  const int32_t* kv_lens = nullptr;      // [num_seqs]
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks_per_seq] physical page ids
  int32_t max_blocks_per_seq = 0;
};

struct AttentionParams {
  TensorView q;        // [num_tokens, num_q_heads, head_dim]
  TensorView k_pool;   // [num_blocks, page_size, num_kv_heads, head_dim]  (one layer of the paged pool)
  TensorView v_pool;   // [num_blocks, page_size, num_kv_heads, head_dim]
  TensorView anchor_k; // [anchor_len, num_kv_heads, head_dim]; anchor_len may be 0 (then data may be null,
                       // and dtype/device are not checked); both anchor views may also be left default (rank 0)
  TensorView anchor_v; // [anchor_len, num_kv_heads, head_dim]
  TensorView o;        // [num_tokens, num_q_heads, head_dim], written
  float* lse = nullptr;          // [num_tokens, num_q_heads] natural-log sum-exp of the logits, or null
  const float* gamma = nullptr;  // [num_q_heads] log-bias added to anchor logits, or null (= 0)
  float scale = 0.f;             // usually 1/sqrt(head_dim)
  bool causal = true;            // applies to the paged part only
  AttentionBatch batch;

  // Shape accessors (valid after ValidateAttention).
  int64_t num_tokens() const { return q.shape[0]; }
  int64_t num_q_heads() const { return q.shape[1]; }
  int64_t head_dim() const { return q.shape[2]; }
  int64_t num_blocks() const { return k_pool.shape[0]; }
  int64_t page_size() const { return k_pool.shape[1]; }
  int64_t num_kv_heads() const { return k_pool.shape[2]; }
  int64_t anchor_len() const { return anchor_k.rank == 3 ? anchor_k.shape[0] : 0; }
  int64_t group_size() const { return num_q_heads() / num_kv_heads(); }
};

// Checks everything a kernel relies on: ranks, shapes, dtypes (q, K, V, anchor, o share one dtype), devices,
// contiguity, head counts divisible, head_dim in [1, kMaxHeadDim], finite non-zero scale, q_indptr monotone and
// ending at num_tokens, kv_lens within table capacity, every used block id in [0, num_blocks), n_q <= kv_len
// under causal, non-null buffers. `host_batch` holds host-readable copies of p.batch's arrays (for a CPU call,
// p.batch itself); its num_seqs and max_blocks_per_seq must equal p.batch's. Never reads past the arrays'
// documented extents (block_table only in each row's used prefix, so unused slots may hold anything).
// Codes: kOutOfRange for a block id outside the pool or a kv_len beyond the table's capacity; kInvalidArgument
// for everything else. gamma and lse are not checked (they may be device pointers).
Status ValidateAttention(const AttentionParams& p, const AttentionBatch& host_batch);

// Reference implementation: fp32 accumulation, one pass of online softmax per query row, spread over
// `num_threads` threads (0 = hardware concurrency). All tensors on the host (CUDA tensors: kInvalidArgument,
// checked before the batch arrays are read). A row that sees no key at all (no anchor, kv_len 0) gets o = 0 and
// lse = -inf. Results do not depend on num_threads (bit for bit). Nothing is written when validation fails.
Status AttentionCpu(const AttentionParams& p, int num_threads = 0);

}  // namespace fp
