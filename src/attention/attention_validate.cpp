// ValidateAttention: every precondition the CPU reference and the CUDA kernels rely on, checked once on the host
// with messages that name the offending value and what was expected. Concern: a malformed launch must come back
// as a Status, never as an out-of-bounds read. All size arithmetic is int64 with explicit overflow checks, and the
// batch arrays are read only within their documented extents (block_table only in its used prefix per row).
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "fieldprint/attention.h"

namespace fp {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

// numel with an overflow check; also rejects negative dims.
Status CheckedNumel(const char* name, const TensorView& t, int64_t* out) {
  int64_t n = 1;
  for (int i = 0; i < t.rank; ++i) {
    if (t.shape[i] < 0) return InvalidArgument(std::string(name) + ": negative dim " + Str(i) + " in " + t.ShapeString());
    if (__builtin_mul_overflow(n, t.shape[i], &n)) {
      return InvalidArgument(std::string(name) + ": element count overflows int64 for " + t.ShapeString());
    }
  }
  // Byte size must fit too (DTypeSize <= 4).
  if (n > std::numeric_limits<int64_t>::max() / 4) {
    return InvalidArgument(std::string(name) + ": byte size overflows for " + t.ShapeString());
  }
  *out = n;
  return Status::Ok();
}

// Rank, non-negative dims, contiguity, non-null data when non-empty.
Status CheckTensor(const char* name, const TensorView& t, int rank) {
  if (t.rank != rank) {
    return InvalidArgument(std::string(name) + ": expected rank " + Str(rank) + ", got rank " + Str(t.rank) + " (" +
                           t.ShapeString() + ")");
  }
  int64_t n = 0;
  FP_RETURN_IF_ERROR(CheckedNumel(name, t, &n));
  if (n > 0 && t.data == nullptr) return InvalidArgument(std::string(name) + ": null data for " + t.ShapeString());
  if (n > 0 && !t.is_contiguous()) {
    return InvalidArgument(std::string(name) + ": must be contiguous (row-major), got " + t.ShapeString());
  }
  return Status::Ok();
}

Status SameDim(const char* a, const TensorView& ta, int da, const char* b, const TensorView& tb, int db,
               const char* what) {
  if (ta.shape[da] != tb.shape[db]) {
    return InvalidArgument(std::string(what) + " mismatch: " + a + " dim " + Str(da) + " = " + Str(ta.shape[da]) +
                           " but " + b + " dim " + Str(db) + " = " + Str(tb.shape[db]) + " (" + a + " " +
                           ta.ShapeString() + ", " + b + " " + tb.ShapeString() + ")");
  }
  return Status::Ok();
}

Status SameTypeAndDevice(const char* name, const TensorView& t, const TensorView& q) {
  if (t.dtype != q.dtype) {
    return InvalidArgument(std::string("dtype mismatch: ") + name + " is " + DTypeName(t.dtype) + " but q is " +
                           DTypeName(q.dtype) + " (all of q, k_pool, v_pool, anchor_k, anchor_v, o share one dtype)");
  }
  if (t.device != q.device) {
    return InvalidArgument(std::string("device mismatch: ") + name + " is " + t.ShapeString() + " but q is " +
                           q.ShapeString() + " (all tensors must be on one device)");
  }
  return Status::Ok();
}

Status CheckShapes(const AttentionParams& p) {
  FP_RETURN_IF_ERROR(CheckTensor("q", p.q, 3));
  FP_RETURN_IF_ERROR(CheckTensor("o", p.o, 3));
  FP_RETURN_IF_ERROR(CheckTensor("k_pool", p.k_pool, 4));
  FP_RETURN_IF_ERROR(CheckTensor("v_pool", p.v_pool, 4));
  // An absent anchor may be left default-constructed (rank 0) on both; otherwise both are [A, Hkv, d].
  const bool no_anchor = p.anchor_k.rank == 0 && p.anchor_v.rank == 0;
  if (!no_anchor) {
    FP_RETURN_IF_ERROR(CheckTensor("anchor_k", p.anchor_k, 3));
    FP_RETURN_IF_ERROR(CheckTensor("anchor_v", p.anchor_v, 3));
  }

  for (int i = 0; i < 3; ++i) FP_RETURN_IF_ERROR(SameDim("o", p.o, i, "q", p.q, i, "shape"));
  for (int i = 0; i < 4; ++i) FP_RETURN_IF_ERROR(SameDim("v_pool", p.v_pool, i, "k_pool", p.k_pool, i, "shape"));
  FP_RETURN_IF_ERROR(SameDim("k_pool", p.k_pool, 3, "q", p.q, 2, "head_dim"));

  const int64_t d = p.q.shape[2], Hq = p.q.shape[1], Hkv = p.k_pool.shape[2], P = p.k_pool.shape[1];
  if (d < 1 || d > kMaxHeadDim) {
    return InvalidArgument("head_dim = " + Str(d) + " is out of range [1, " + Str(kMaxHeadDim) + "]");
  }
  if (Hkv < 1) return InvalidArgument("num_kv_heads = " + Str(Hkv) + " must be >= 1 (k_pool " + p.k_pool.ShapeString() + ")");
  if (Hq < 1) return InvalidArgument("num_q_heads = " + Str(Hq) + " must be >= 1 (q " + p.q.ShapeString() + ")");
  if (Hq % Hkv != 0) {
    return InvalidArgument("num_q_heads = " + Str(Hq) + " is not divisible by num_kv_heads = " + Str(Hkv));
  }
  if (P < 1) return InvalidArgument("page_size = " + Str(P) + " must be >= 1 (k_pool " + p.k_pool.ShapeString() + ")");
  if (p.q.shape[0] > std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("num_tokens = " + Str(p.q.shape[0]) + " exceeds int32 (q_indptr is int32)");
  }

  if (!no_anchor) {
    for (int i = 0; i < 3; ++i) {
      FP_RETURN_IF_ERROR(SameDim("anchor_v", p.anchor_v, i, "anchor_k", p.anchor_k, i, "anchor shape"));
    }
    FP_RETURN_IF_ERROR(SameDim("anchor_k", p.anchor_k, 1, "k_pool", p.k_pool, 2, "anchor num_kv_heads"));
    FP_RETURN_IF_ERROR(SameDim("anchor_k", p.anchor_k, 2, "q", p.q, 2, "anchor head_dim"));
  }

  FP_RETURN_IF_ERROR(SameTypeAndDevice("o", p.o, p.q));
  FP_RETURN_IF_ERROR(SameTypeAndDevice("k_pool", p.k_pool, p.q));
  FP_RETURN_IF_ERROR(SameTypeAndDevice("v_pool", p.v_pool, p.q));
  // An empty anchor is never read, so its dtype/device do not matter (callers often leave it default).
  if (p.anchor_len() > 0) {
    FP_RETURN_IF_ERROR(SameTypeAndDevice("anchor_k", p.anchor_k, p.q));
    FP_RETURN_IF_ERROR(SameTypeAndDevice("anchor_v", p.anchor_v, p.q));
  }

  if (!std::isfinite(p.scale) || p.scale == 0.f) {
    return InvalidArgument("scale = " + std::to_string(p.scale) + " must be finite and non-zero");
  }
  return Status::Ok();
}

Status CheckBatch(const AttentionParams& p, const AttentionBatch& hb) {
  const AttentionBatch& db = p.batch;
  const int64_t T = p.q.shape[0], P = p.k_pool.shape[1], NB = p.k_pool.shape[0];
  if (hb.num_seqs < 0) return InvalidArgument("num_seqs = " + Str(hb.num_seqs) + " must be >= 0");
  if (hb.max_blocks_per_seq < 0) {
    return InvalidArgument("max_blocks_per_seq = " + Str(hb.max_blocks_per_seq) + " must be >= 0");
  }
  if (hb.num_seqs != db.num_seqs || hb.max_blocks_per_seq != db.max_blocks_per_seq) {
    return InvalidArgument("host_batch (num_seqs " + Str(hb.num_seqs) + ", max_blocks_per_seq " +
                           Str(hb.max_blocks_per_seq) + ") does not describe p.batch (num_seqs " + Str(db.num_seqs) +
                           ", max_blocks_per_seq " + Str(db.max_blocks_per_seq) + ")");
  }
  const int32_t S = hb.num_seqs;
  if (S == 0) {
    if (T != 0) return InvalidArgument("num_seqs = 0 but q has num_tokens = " + Str(T) + " (expected 0)");
    return Status::Ok();
  }
  // Null checks on both the host copy (read here) and the launch's own arrays (read by the kernel).
  const bool need_table = hb.max_blocks_per_seq > 0;
  auto null_check = [&](const AttentionBatch& b, const char* which) -> Status {
    if (b.q_indptr == nullptr) return InvalidArgument(std::string(which) + ".q_indptr is null with num_seqs = " + Str(S));
    if (b.kv_lens == nullptr) return InvalidArgument(std::string(which) + ".kv_lens is null with num_seqs = " + Str(S));
    if (need_table && b.block_table == nullptr) {
      return InvalidArgument(std::string(which) + ".block_table is null with max_blocks_per_seq = " +
                             Str(hb.max_blocks_per_seq));
    }
    return Status::Ok();
  };
  FP_RETURN_IF_ERROR(null_check(hb, "host_batch"));
  FP_RETURN_IF_ERROR(null_check(db, "batch"));

  if (hb.q_indptr[0] != 0) return InvalidArgument("q_indptr[0] = " + Str(hb.q_indptr[0]) + ", expected 0");
  for (int32_t s = 0; s < S; ++s) {
    if (hb.q_indptr[s + 1] < hb.q_indptr[s]) {
      return InvalidArgument("q_indptr is not monotone: q_indptr[" + Str(s + 1) + "] = " + Str(hb.q_indptr[s + 1]) +
                             " < q_indptr[" + Str(s) + "] = " + Str(hb.q_indptr[s]));
    }
  }
  if (hb.q_indptr[S] != T) {
    return InvalidArgument("q_indptr[" + Str(S) + "] = " + Str(hb.q_indptr[S]) + ", expected num_tokens = " + Str(T));
  }
  const int64_t M = hb.max_blocks_per_seq;
  for (int32_t s = 0; s < S; ++s) {
    const int64_t kv_len = hb.kv_lens[s];
    const int64_t nq = int64_t{hb.q_indptr[s + 1]} - hb.q_indptr[s];
    if (kv_len < 0) return InvalidArgument("kv_lens[" + Str(s) + "] = " + Str(kv_len) + " must be >= 0");
    const int64_t used = kv_len == 0 ? 0 : (kv_len - 1) / P + 1;  // ceil without overflow even for huge P
    if (used > M) {
      return OutOfRange("kv_lens[" + Str(s) + "] = " + Str(kv_len) + " needs " + Str(used) + " pages of " + Str(P) +
                        " but the block table holds max_blocks_per_seq = " + Str(M));
    }
    if (p.causal && nq > kv_len) {
      return InvalidArgument("causal: sequence " + Str(s) + " has n_q = " + Str(nq) + " query rows but kv_len = " +
                             Str(kv_len) + " (expected n_q <= kv_len: each query's own K/V must be in the cache)");
    }
    const int32_t* row = hb.block_table + s * M;  // s * M <= INT32_MAX^2: fits int64
    for (int64_t i = 0; i < used; ++i) {
      if (row[i] < 0 || row[i] >= NB) {
        return OutOfRange("block_table[" + Str(s) + ", " + Str(i) + "] = " + Str(row[i]) + " is out of range [0, " +
                          Str(NB) + ")");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateAttention(const AttentionParams& p, const AttentionBatch& host_batch) {
  FP_RETURN_IF_ERROR(CheckShapes(p));
  return CheckBatch(p, host_batch);
}

}  // namespace fp
