// attention_prefill_kernel.cuh — the PagedFieldprintAttention prefill kernel: FlashAttention-2 style tiles on
// tensor cores (mma.sync m16n8k16, sm_80 and sm_90), K/V gathered page by page through the block table.
//
// Work split: one CTA per (sequence, kv head, query tile). A query tile is BM = 16*W "packed rows", row r being
// (query token r / G, head r % G) of the GQA group of that kv head, so every K/V byte a CTA stages in shared
// memory serves all G heads. Each of the W warps owns 16*MT packed rows (MT = 1: Q kept in registers; MT = 2:
// each K/V fragment feeds two m-tiles, Q re-read from shared memory).
// KV loop: the anchor's tiles first (gamma added to their logits), then the sequence's paged tiles, all in ONE
// online softmax (fp32, log2 domain). Under `causal`, paged tiles wholly after the tile's last query position
// are never visited; tiles wholly before its first one run unmasked; only the diagonal tiles pay for the mask.
// K/V tiles (BN = 64 tokens) come in with 16-byte cp.async, double-buffered: tile j+1 streams in while j is
// computed; each tile row resolves its own page id, so any page size works (no page-aligned tiles needed).
// Determinism: no atomics, a fixed KV order per row and masked keys contribute exact zeros, so a row's result
// does not depend on which other rows share its tile (batch-invariant) and reruns are bit-identical.
// defines: PrefillArgs, CtaWork, CtaWorkAt, CtaWorkOf, CtaWorkItem, AnchorBiasLog2, LastPagedKey, PrefillTile, PrefillKernel, FastExp2
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_prefill_mma.cuh"

namespace fp::prefill {

// Device pointers and scalars of one launch (passed by value as a __grid_constant__).
struct PrefillArgs {
  const void* q;         // [num_tokens, Hq, D]
  const void* k_pool;    // [num_blocks, page_size, Hkv, D]
  const void* v_pool;    // [num_blocks, page_size, Hkv, D]
  const void* anchor_k;  // [anchor_len, Hkv, D]
  const void* anchor_v;  // [anchor_len, Hkv, D]
  void* o;               // [num_tokens, Hq, D]
  float* lse;            // [num_tokens, Hq] or null
  const float* gamma;    // [Hq] or null
  const int32_t* q_indptr;     // [num_seqs + 1]
  const int32_t* kv_lens;      // [num_seqs]
  const int32_t* block_table;  // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq;
  int32_t num_kv_heads;
  int32_t group;        // Hq / Hkv
  int32_t page_size;
  int32_t page_shift;   // log2(page_size) when a power of two, else -1
  int32_t anchor_len;
  float scale_log2;     // scale * log2(e)
  bool causal;
  int32_t work_x;       // the CTA work grid: sequences x kv heads ...
  int32_t work_y;       // ... x query tiles (a persistent kernel walks it; the others launch it as their grid)
};

// One CTA's share of the grid (x: sequence x kv head; y: query tile, run backwards so the heaviest causal tiles
// start first) and its KV tile schedule: tiles [0, n_anchor) of the anchor, then paged tiles [0, n_paged) up to the
// last one any of its rows can see; paged tiles [0, n_free) are visible to every row and inside kv_len (no mask).
// Query token j of sequence s sits at paged position diag + j. empty: no rows (the CTA returns before any barrier).
struct CtaWork {
  int s, hk, q0, nq, rows_total, m0, kv_len, diag, n_anchor, n_paged, n_free, n_tiles;
  bool empty;
};

template <int BM, int BN>
__device__ __forceinline__ CtaWork CtaWorkAt(const PrefillArgs& a, int x, int m_tile) {
  CtaWork w{};
  const int Hkv = a.num_kv_heads, G = a.group;
  w.s = x / Hkv;
  w.hk = x % Hkv;
  w.q0 = a.q_indptr[w.s];
  w.nq = a.q_indptr[w.s + 1] - w.q0;
  w.rows_total = w.nq * G;
  w.m0 = m_tile * BM;
  w.empty = w.m0 >= w.rows_total;
  if (w.empty) return w;
  w.kv_len = a.kv_lens[w.s];
  w.diag = w.kv_len - w.nq;
  const int tok_lo = w.m0 / G, tok_hi = min(w.m0 + BM - 1, w.rows_total - 1) / G;
  w.n_anchor = (a.anchor_len + BN - 1) / BN;
  const int paged_end = a.causal ? min(w.kv_len, w.diag + tok_hi + 1) : w.kv_len;
  w.n_paged = paged_end > 0 ? (paged_end + BN - 1) / BN : 0;
  const int free_end = a.causal ? min(w.kv_len, w.diag + tok_lo + 1) : w.kv_len;
  w.n_free = free_end > 0 ? free_end / BN : 0;
  w.n_tiles = w.n_anchor + w.n_paged;
  return w;
}

// The CTA's own work item in a launched grid; y runs backwards so the heaviest causal tiles start first.
template <int BM, int BN>
__device__ __forceinline__ CtaWork CtaWorkOf(const PrefillArgs& a) {
  return CtaWorkAt<BM, BN>(a, static_cast<int>(blockIdx.x), static_cast<int>(gridDim.y - 1 - blockIdx.y));
}

// Work item i of a persistent walk, in the launched grid's order (heaviest query tiles first).
template <int BM, int BN>
__device__ __forceinline__ CtaWork CtaWorkItem(const PrefillArgs& a, int i) {
  return CtaWorkAt<BM, BN>(a, i % a.work_x, a.work_y - 1 - i / a.work_x);
}

// Gamma's bias on the anchor logits of packed row pr, in log2 units (0 without gamma).
__device__ __forceinline__ float AnchorBiasLog2(const PrefillArgs& a, const CtaWork& w, int pr) {
  return a.gamma ? __ldg(a.gamma + w.hk * a.group + pr % a.group) * 1.4426950408889634f : 0.f;
}

// The last paged key packed row pr may see: its own position when causal (clamped to the context), else the
// context's last.
__device__ __forceinline__ int LastPagedKey(const PrefillArgs& a, const CtaWork& w, int pr) {
  return a.causal ? min(w.kv_len - 1, w.diag + min(pr / a.group, w.nq - 1)) : w.kv_len - 1;
}

template <int D, int W, int MT, int BN>
struct PrefillTile {
  static constexpr int kBM = 16 * MT * W;  // packed query rows per CTA (MT m16 tiles per warp)
  static constexpr int kBN = BN;           // keys per KV tile
  static constexpr int kThreads = 32 * W;
  static constexpr int kChunksPerRow = D / 8;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 4 * kBN) * D * 2 + 2 * kBN * 4;  // Q,K2,V2,pages
  static_assert(kThreads % kChunksPerRow == 0 && kBN % kRowsPerPass == 0 && kBM % kRowsPerPass == 0);
};

__device__ __forceinline__ float FastExp2(float x) {  // MUFU.EX2; exp2(-inf) = +0, which the mask relies on
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// MT = 1: Q stays in registers for the whole KV loop. MT = 2: each warp owns 32 rows, so every K/V fragment read
// from shared memory feeds twice the MMAs; Q is then re-read from shared memory per k-step (registers). At
// D = 128, MT = 2 only fits 255 registers with BN = 32 (BN = 64 spilled 128 B even with a partly unrolled k loop).
template <typename T, int D, int W, int MT, int BN>
__global__ void __launch_bounds__(32 * W) PrefillKernel(const __grid_constant__ PrefillArgs a) {
  using Tile = PrefillTile<D, W, MT, BN>;
  using Mma = MmaTraits<T>;
  constexpr int BM = Tile::kBM, CPR = Tile::kChunksPerRow, RPP = Tile::kRowsPerPass;
  constexpr bool kQInRegs = MT == 1;
  const float kNegInf = -__int_as_float(0x7f800000);

  extern __shared__ uint4 smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM, D] swizzled; reused to stage the output
  T* sK = sQ + BM * D;                     // [2][BN, D]
  T* sV = sK + 2 * BN * D;                 // [2][BN, D]
  int* sPages = reinterpret_cast<int*>(sV + 2 * BN * D);  // [2][BN] page id of each row of the next tiles

  const CtaWork w = CtaWorkOf<BM, BN>(a);
  if (w.empty) return;  // uniform over the CTA, before any barrier
  const int Hkv = a.num_kv_heads, G = a.group, Hq = Hkv * G, A = a.anchor_len;
  const int s = w.s, hk = w.hk, q0 = w.q0, nq = w.nq, rows_total = w.rows_total, m0 = w.m0, kv_len = w.kv_len;
  const int nA = w.n_anchor, nP_free = w.n_free, n_tiles = w.n_tiles;

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int ld_row = tid / CPR, ld_chunk = tid % CPR;
  const T* q = static_cast<const T*>(a.q);

  // Q tile: packed row r -> token (m0 + r) / G, head hk * G + (m0 + r) % G; rows past the sequence zero-fill.
#pragma unroll
  for (int i = 0; i < BM / RPP; ++i) {
    const int r = ld_row + i * RPP, pr = m0 + r, tok = pr / G;
    const bool ok = tok < nq;
    const T* src = ok ? q + ((static_cast<int64_t>(q0 + tok) * Hq + hk * G + pr % G) * D + ld_chunk * 8) : q;
    CpAsync16(sQ + SwizzleOffset<D>(r, ld_chunk), src, ok ? 16 : 0);
  }

  // Page ids of paged tiles, one int per tile row in a 2-slot shared array. Thread r < BN reads the id of row r
  // of tile j + 2 into a register at the top of iteration j and stores it at the bottom, so neither the block
  // table's latency nor per-thread page registers sit on the copy path.
  auto page_of = [&](int j, int r) -> int {
    if (j < nA || j >= n_tiles) return 0;
    const int t = (j - nA) * BN + r;
    if (t >= kv_len) return 0;
    const int blk = a.page_shift >= 0 ? t >> a.page_shift : t / a.page_size;
    return __ldg(a.block_table + static_cast<int64_t>(s) * a.max_blocks_per_seq + blk);
  };
  // Issues the cp.async copies of KV tile j into stage `st` (page ids from fetch_pages(j)). Rows past the segment
  // zero-fill: a masked key's probability is exactly 0 and 0 * (zero V) stays 0; stale or poisoned V could be NaN.
  auto load_kv = [&](int j, int st) {
    T* dk = sK + st * BN * D;
    T* dv = sV + st * BN * D;
    const int* pg = sPages + (j & 1) * BN;
    const bool anchor = j < nA;
    const T* kbase = static_cast<const T*>(anchor ? a.anchor_k : a.k_pool);
    const T* vbase = static_cast<const T*>(anchor ? a.anchor_v : a.v_pool);
#pragma unroll
    for (int i = 0; i < BN / RPP; ++i) {
      const int r = ld_row + i * RPP;
      int64_t off = 0;
      bool ok;
      if (anchor) {
        const int t = j * BN + r;
        ok = t < A;
        if (ok) off = (static_cast<int64_t>(t) * Hkv + hk) * D + ld_chunk * 8;
      } else {
        const int t = (j - nA) * BN + r;
        ok = t < kv_len;
        if (ok) {
          const int blk = a.page_shift >= 0 ? t >> a.page_shift : t / a.page_size;
          const int in_page = t - blk * a.page_size;
          off = ((static_cast<int64_t>(pg[r]) * a.page_size + in_page) * Hkv + hk) * D + ld_chunk * 8;
        }
      }
      CpAsync16(dk + SwizzleOffset<D>(r, ld_chunk), kbase + off, ok ? 16 : 0);
      CpAsync16(dv + SwizzleOffset<D>(r, ld_chunk), vbase + off, ok ? 16 : 0);
    }
  };

  if (tid < BN) {
    sPages[tid] = page_of(0, tid);
    sPages[BN + tid] = page_of(1, tid);
  }
  __syncthreads();
  if (n_tiles > 0) load_kv(0, 0);
  CpAsyncCommit();

  // Per-thread rows: in m-tile mt this thread holds rows 16*(MT*warp + mt) + lane/4 (+ 8). Their causal bound
  // and gamma are recomputed where needed (diagonal / anchor tiles only) to keep registers for the accumulators.
  const int g4 = lane / 4, t4 = lane % 4;
  const int warp_row0 = 16 * MT * warp;
  auto packed_row = [&](int mt, int h) { return m0 + warp_row0 + 16 * mt + g4 + 8 * h; };

  uint32_t qf[kQInRegs ? D / 16 : 1][4];
  float o_acc[MT][D / 8][4];
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o_acc[mt][i][0] = o_acc[mt][i][1] = o_acc[mt][i][2] = o_acc[mt][i][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = kNegInf;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }
  auto q_frag_addr = [&](int mt, int kc) {
    return sQ + SwizzleOffset<D>(warp_row0 + 16 * mt + (lane % 8) + ((lane / 8) % 2) * 8, kc * 2 + lane / 16);
  };

  for (int j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) load_kv(j + 1, (j + 1) & 1);
    CpAsyncCommit();
    const int next_page = tid < BN ? page_of(j + 2, tid) : 0;
    CpAsyncWait<1>();
    __syncthreads();
    if constexpr (kQInRegs) {
      if (j == 0) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) Ldmatrix4(qf[kc], q_frag_addr(0, kc));
      }
    }
    const T* cK = sK + (j & 1) * BN * D;
    const T* cV = sV + (j & 1) * BN * D;

    // S = Q K^T for this warp's 16*MT rows x BN keys.
    float sc[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.f;
    }
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      uint32_t qa[MT][4];
      if constexpr (!kQInRegs) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) Ldmatrix4(qa[mt], q_frag_addr(mt, kc));
      }
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        uint32_t b[4];
        Ldmatrix4(b, cK + SwizzleOffset<D>(np * 16 + (lane % 8) + (lane / 16) * 8, kc * 2 + (lane / 8) % 2));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint32_t(&af)[4] = kQInRegs ? qf[kQInRegs ? kc : 0] : qa[mt];
          Mma::Mma(sc[mt][2 * np], af, b[0], b[1]);
          Mma::Mma(sc[mt][2 * np + 1], af, b[2], b[3]);
        }
      }
    }

    // Scale into the log2 domain; bias anchor logits; mask the segment tail and the causal diagonal.
    const bool anchor = j < nA;
    const int key0 = anchor ? j * BN : (j - nA) * BN;
    const bool masked = anchor ? (key0 + BN > A) : (j - nA >= nP_free);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float bias[2] = {0.f, 0.f};
      int last[2] = {0, 0};  // last visible key of the row in this segment
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int pr = packed_row(mt, h);
        if (anchor) bias[h] = AnchorBiasLog2(a, w, pr);
        if (masked) last[h] = anchor ? A - 1 : LastPagedKey(a, w, pr);
      }
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float v = sc[mt][nt][e] * a.scale_log2 + bias[e / 2];
          if (masked && key0 + nt * 8 + 2 * t4 + (e & 1) > last[e / 2]) v = kNegInf;
          sc[mt][nt][e] = v;
        }
      }
    }

    // Online softmax: new running max per row (the quad of 4 lanes shares a row), rescale, exponentiate.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float alpha[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = kNegInf;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(sc[mt][nt][2 * h], sc[mt][nt][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[mt][h], mx);
        const float m_use = m_new == kNegInf ? 0.f : m_new;  // a row with nothing visible yet stays all-zero
        alpha[h] = FastExp2(m_run[mt][h] - m_use);
        m_run[mt][h] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
          sc[mt][nt][2 * h] = FastExp2(sc[mt][nt][2 * h] - m_use);
          sc[mt][nt][2 * h + 1] = FastExp2(sc[mt][nt][2 * h + 1] - m_use);
          sum += sc[mt][nt][2 * h] + sc[mt][nt][2 * h + 1];
        }
        l_run[mt][h] = l_run[mt][h] * alpha[h] + sum;
      }
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o_acc[mt][i][0] *= alpha[0];
        o_acc[mt][i][1] *= alpha[0];
        o_acc[mt][i][2] *= alpha[1];
        o_acc[mt][i][3] *= alpha[1];
      }
    }

    // O += P V: the C fragments of two adjacent key n-tiles are exactly one A fragment of P.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        PackPFragment<T>(sc[mt][2 * kk], sc[mt][2 * kk + 1], pa[mt]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        Ldmatrix4Trans(b, cV + SwizzleOffset<D>(kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8, dp * 2 + lane / 16));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Mma::Mma(o_acc[mt][2 * dp], pa[mt], b[0], b[1]);
          Mma::Mma(o_acc[mt][2 * dp + 1], pa[mt], b[2], b[3]);
        }
      }
    }
    if (tid < BN) sPages[(j & 1) * BN + tid] = next_page;  // slot of tile j + 2 (tile j's ids are used)
    __syncthreads();  // the next iteration's copies overwrite this stage and read the page ids
  }
  CpAsyncWait<0>();  // with no KV tile the Q copies may still be in flight; sQ is reused below
  __syncthreads();

  // Epilogue: finish the row sums, normalise, stage this warp's rows in sQ, write 16-byte chunks.
  T* o = static_cast<T*>(a.o);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = l_run[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[h] = l > 0.f ? 1.f / l : 0.f;
      const int pr = packed_row(mt, h);
      if (a.lse != nullptr && t4 == 0 && pr < rows_total) {
        const int64_t idx = static_cast<int64_t>(q0 + pr / G) * Hq + hk * G + pr % G;
        a.lse[idx] = l > 0.f ? (m_run[mt][h] + __log2f(l)) * 0.6931471805599453f : kNegInf;
      }
    }
    T* sO = sQ + (warp_row0 + 16 * mt) * D;  // [16, D] swizzled, rows of this warp only
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t v = Mma::Pack(o_acc[mt][i][2 * h] * inv[h], o_acc[mt][i][2 * h + 1] * inv[h]);
        *reinterpret_cast<uint32_t*>(sO + SwizzleOffset<D>(g4 + 8 * h, i) + 2 * t4) = v;
      }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16 * CPR / 32; ++i) {
      const int c = lane + 32 * i, r = c / CPR, ch = c % CPR;
      const int pr = m0 + warp_row0 + 16 * mt + r;
      if (pr < rows_total) {
        const int64_t idx = (static_cast<int64_t>(q0 + pr / G) * Hq + hk * G + pr % G) * D + ch * 8;
        *reinterpret_cast<uint4*>(o + idx) = *reinterpret_cast<const uint4*>(sO + SwizzleOffset<D>(r, ch));
      }
    }
  }
}

}  // namespace fp::prefill
