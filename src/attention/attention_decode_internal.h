// attention_decode_internal.h — what the decode planner (attention_decode.cu), its kernel
// (attention_decode_kernel.cuh) and the split-KV merge (attention_merge.cu) share: the work-item records the
// planner writes into the workspace and the kernels' argument blocks. Plain structs, device-copyable.
// defines: decode::WorkItem, decode::MergeItem, decode::DecodeArgs, decode::MergeArgs, LaunchDecodeMerge
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fieldprint/status.h"

namespace fp::decode {

inline constexpr int kThreads = 128;  // merge kernel's CTA; the decode CTA has 4 or 8 warps (a template argument)
inline constexpr int kMaxRows = 16;   // query rows (GQA group x queries) served by one CTA: the mma's M
inline constexpr int kStages = 3;     // cp.async pipeline depth, per warp

// One CTA's work: (sequence, kv head, split, row block). Token indices are in the "combined" stream:
// [0, A) is the anchor, A + pos is paged position pos.
struct WorkItem {
  int32_t seq;           // index into the block table
  int32_t kv_head;
  int32_t q_start;       // first query token of the sequence (q_indptr[seq])
  int32_t n_q;           // query tokens of the sequence
  int32_t row0;          // first group row of this block; row r = j * G + g (query j, head kv_head * G + g)
  int32_t begin, end;    // combined-index range of this split
  int32_t kv_len;        // planned paged length (max_kv_len in graph mode): clamps the device length
  int32_t partial_base;  // -1: write o/lse directly; else partial row set (partial_base + j) of the split
  int32_t rows_class;    // reserved (one kernel serves every block of <= 16 rows)
  // Fused merge (DecodeOptions::fused_merge): the last of the num_splits items of this (sequence, kv head, row
  // block) to finish merges them; merge_slot indexes its arrival counter, -1 when a merge kernel does it (or no
  // merge is needed). merge_base is split 0's partial row set: split k's is merge_base + k * n_q.
  int32_t merge_slot;
  int32_t merge_base;
  int32_t num_splits;
  int32_t pad_[3];
};
static_assert(sizeof(WorkItem) == 64);

// One query token of a split sequence: merge its ns partial results, split k at row set (base + k * stride).
struct MergeItem {
  int32_t token;
  int32_t base;
  int32_t stride;
  int32_t num_splits;
};
static_assert(sizeof(MergeItem) == 16);

struct DecodeArgs {
  const void* q;         // [T, Hq, d]
  const void* k_pool;    // [NB, P, Hkv, d]
  const void* v_pool;    // [NB, P, Hkv, d]
  const void* anchor_k;  // [A, Hkv, d]
  const void* anchor_v;  // [A, Hkv, d]
  void* o;               // [T, Hq, d]
  float* lse;            // [T, Hq] or null
  const float* gamma;    // [Hq] or null
  const int32_t* block_table;  // [num_seqs, max_blocks]
  const int32_t* kv_lens;      // [num_seqs] read at launch (graph replay), clamped to the item's kv_len
  const WorkItem* items;       // [num_items] of this launch
  float* partial_o;            // [partial_rows, Hq, d] fp32, normalised per split
  float* partial_lse;          // [partial_rows, Hq] log2 domain
  uint32_t* merge_counters;    // [merge slots] arrivals per fused merge; 0 between launches (the last resets)
  int64_t max_blocks;
  int32_t Hq, Hkv, G, A, P;
  uint32_t p_magic, p_shift;   // pos / P == (umulhi(pos, magic) + pos) >> shift, pos < 2^31
  float qscale;                // scale * log2(e): logits live in the log2 domain
  int32_t causal;
};

struct MergeArgs {
  void* o;                   // [T, Hq, d]
  float* lse;                // [T, Hq] or null
  const float* partial_o;    // [partial_rows, Hq, d]
  const float* partial_lse;  // [partial_rows, Hq]
  const MergeItem* items;    // [num_merge]
  int32_t Hq, d;
};

// Launchers (each checks cudaGetLastError after its launch).
// pdl: programmatic dependent launch (core/cuda_pdl.cuh; the caller checks the device is sm_90+).
Status LaunchDecode(const DecodeArgs& args, int dtype_is_bf16, int head_dim, int warps, int rows_class,
                    int num_items, bool pdl, cudaStream_t stream);
// Dynamic shared memory the decode kernel needs for (head_dim, warps).
int DecodeSmemBytes(int head_dim, int warps);
Status LaunchDecodeMerge(const MergeArgs& args, int dtype_is_bf16, int num_merge, cudaStream_t stream);

}  // namespace fp::decode
