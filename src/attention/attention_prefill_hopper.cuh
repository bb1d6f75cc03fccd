// attention_prefill_hopper.cuh — the Hopper (sm_90a) prefill kernel: bf16, head_dim 128, wgmma.mma_async.
//
// Same contract, work split and KV order as the mma.sync kernel (attention_prefill_kernel.cuh): one CTA per
// (sequence, kv head, 128 packed query rows), anchor tiles first (gamma on their logits), then paged tiles, one fp32
// online softmax in the log2 domain, causal tiles after the CTA's last query never visited, mask only on diagonal
// and tail tiles. Differences:
//   - 2 warpgroups (256 threads); warpgroup w owns packed rows [64w, 64w + 64) and issues
//     S = Q K^T as wgmma m64nBNk16 with Q and K read from shared memory (128B-swizzled, see _wgmma.cuh) and
//     O += P V as wgmma m64n64k16 (two per k-step, one per 64-wide half of d) with P taken straight from the S
//     accumulators in registers and V read MN-major (transposed) from the same [d/64][BN][64] layout as K.
//   - K/V tiles of BN keys (64 or 128) are gathered through the block table by all 256 threads with 16-byte
//     cp.async (any page size) into a ring of STAGES buffers: tiles j+1 .. j+STAGES-1 stream in while tile j is
//     computed. Page ids of the next tile to copy are read into registers one iteration ahead, so the block
//     table's latency hides behind the MMAs. Optional ping-pong of the two warpgroups (PP, below).
//   - cp.async writes are generic-proxy writes: every thread fences them to the async proxy before the barrier that
//     precedes the wgmma reads.
// Determinism: no atomics, fixed KV order and tile size per row; masked keys give exact zeros; reruns are
// bit-identical (results differ in rounding from the mma.sync path, which sums in another order).
// Device code exists only in the sm_90a pass (FP_PREFILL_SM90A); other passes compile an empty stub, which the
// host detects (PrefillHopperAvailable) and never launches.
// defines: PrefillHopperTile, PrefillHopperKernel
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_prefill_kernel.cuh"
#include "attention/attention_prefill_wgmma.cuh"

namespace fp::prefill {

// BN keys per KV tile; STAGES K/V buffers (copies run STAGES - 1 tiles ahead); PP: ping-pong, warpgroup 1 issues
// its S = Q K^T only after warpgroup 0 has issued its own, so that one warpgroup's softmax runs while the other's
// MMAs occupy the tensor cores (without it both warpgroups reach the softmax, and the idle tensor cores, together).
template <int BN, int STAGES>
struct PrefillHopperTile {
  static constexpr int kD = 128;
  static constexpr int kBM = 128;
  static constexpr int kBN = BN;
  static constexpr int kThreads = 256;
  // Q + STAGES x (K, V), plus 1 KiB to align the base to the 1024-byte swizzle atom.
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 2 * STAGES * BN) * kD * 2 + 1024;
  static_assert(kSmemBytes <= 232448, "over the 227 KiB of shared memory a block may have");
};

template <int BN, int STAGES, bool PP>
__global__ void __launch_bounds__(256, 1) PrefillHopperKernel(const __grid_constant__ PrefillArgs a) {
#if FP_PREFILL_SM90A
  using T = __nv_bfloat16;
  using Mma = MmaTraits<T>;
  constexpr int D = 128, BM = 128, CPR = D / 8, RPP = 256 / CPR, KV_PER = BN / RPP;
  const float kNegInf = -__int_as_float(0x7f800000);

  extern __shared__ uint4 smem_raw[];
  T* sQ = SmemAlign1024(smem_raw);  // [2][BM][64]
  T* sK = sQ + BM * D;            // [STAGES][2][BN][64]
  T* sV = sK + STAGES * BN * D;  // [STAGES][2][BN][64]

  const CtaWork w = CtaWorkOf<BM, BN>(a);
  if (w.empty) return;  // uniform over the CTA, before any barrier
  const int Hkv = a.num_kv_heads, G = a.group, Hq = Hkv * G, A = a.anchor_len;
  const int s = w.s, hk = w.hk, q0 = w.q0, nq = w.nq, m0 = w.m0, kv_len = w.kv_len;
  const int nA = w.n_anchor, nP_free = w.n_free, n_tiles = w.n_tiles;

  const int tid = static_cast<int>(threadIdx.x), wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int ld_row = tid / CPR, ld_chunk = tid % CPR;
  const T* q = static_cast<const T*>(a.q);

  // Q tile: packed row r -> token (m0 + r) / G, head hk * G + (m0 + r) % G; rows past the sequence zero-fill.
#pragma unroll
  for (int i = 0; i < BM / RPP; ++i) {
    const int r = ld_row + i * RPP, pr = m0 + r, tok = pr / G;
    const bool ok = tok < nq;
    const T* src = ok ? q + ((static_cast<int64_t>(q0 + tok) * Hq + hk * G + pr % G) * D + ld_chunk * 8) : q;
    CpAsync16(sQ + SwizzleOffset128<BM>(r, ld_chunk), src, ok ? 16 : 0);
  }

  // Page ids of this thread's KV_PER rows of tile j (0 where unused). Read one iteration before the copies.
  auto fetch_pages = [&](int j, int (&pg)[KV_PER]) {
#pragma unroll
    for (int i = 0; i < KV_PER; ++i) {
      pg[i] = 0;
      if (j >= nA && j < n_tiles) {
        const int t = (j - nA) * BN + ld_row + i * RPP;
        if (t < kv_len) {
          const int blk = a.page_shift >= 0 ? t >> a.page_shift : t / a.page_size;
          pg[i] = __ldg(a.block_table + static_cast<int64_t>(s) * a.max_blocks_per_seq + blk);
        }
      }
    }
  };
  // cp.async copies of KV tile j into stage st; rows past the segment zero-fill (0 * poisoned V would be NaN).
  auto load_kv = [&](int j, int st, const int (&pg)[KV_PER]) {
    T* dk = sK + st * BN * D;
    T* dv = sV + st * BN * D;
    const bool anchor = j < nA;
    const T* kbase = static_cast<const T*>(anchor ? a.anchor_k : a.k_pool);
    const T* vbase = static_cast<const T*>(anchor ? a.anchor_v : a.v_pool);
#pragma unroll
    for (int i = 0; i < KV_PER; ++i) {
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
          off = ((static_cast<int64_t>(pg[i]) * a.page_size + in_page) * Hkv + hk) * D + ld_chunk * 8;
        }
      }
      CpAsync16(dk + SwizzleOffset128<BN>(r, ld_chunk), kbase + off, ok ? 16 : 0);
      CpAsync16(dv + SwizzleOffset128<BN>(r, ld_chunk), vbase + off, ok ? 16 : 0);
    }
  };

  // Prologue: tiles 0 .. STAGES-2 in flight (one commit group each, empty where past the end); pg then holds the
  // page ids of tile STAGES-1, the first one the loop copies.
  int pg[KV_PER];
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    fetch_pages(st, pg);
    if (st < n_tiles) load_kv(st, st, pg);
    CpAsyncCommit();
  }
  fetch_pages(STAGES - 1, pg);

  // This thread's rows inside the warpgroup's 64: 16 * warp + lane / 4 (+ 8), as in an m16n8 C fragment.
  const int g4 = lane / 4, t4 = lane % 4;
  const int wg_row0 = 64 * wg;
  auto packed_row = [&](int h) { return m0 + wg_row0 + 16 * warp + g4 + 8 * h; };

  float o_acc[2][8][4];  // [d half][n8 tile][frag]: column 64 * half + 8 * n + 2 * t4 + (e & 1)
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
    for (int i = 0; i < 8; ++i) o_acc[hf][i][0] = o_acc[hf][i][1] = o_acc[hf][i][2] = o_acc[hf][i][3] = 0.f;
  }
  float m_run[2] = {kNegInf, kNegInf}, l_run[2] = {0.f, 0.f};

  for (int j = 0; j < n_tiles; ++j) {
    CpAsyncWait<STAGES - 2>();  // this thread's copies of tile j landed (later tiles may still stream)
    FenceProxyAsync();
    __syncthreads();  // tile j visible to all; everyone is past tile j-1, whose stage the next copies reuse
    const int jn = j + STAGES - 1;
    if (jn < n_tiles) load_kv(jn, jn % STAGES, pg);
    CpAsyncCommit();
    fetch_pages(jn + 1, pg);
    const T* cK = sK + (j % STAGES) * BN * D;
    const T* cV = sV + (j % STAGES) * BN * D;

    // S = Q K^T (IssueQkT).
    float sc[BN / 8][4];
    if constexpr (PP) {
      if (wg == 1) asm volatile("bar.sync 3, 256;\n" ::: "memory");  // after warpgroup 0's S was issued
    }
    IssueQkT<BM, BN, D>(sc, sQ, cK, wg_row0);
    WgmmaCommit();
    if constexpr (PP) {
      if (wg == 0) asm volatile("bar.arrive 3, 256;\n" ::: "memory");
    }
    WgmmaWait<0>();
    FenceOperand(sc);

    // Scale into the log2 domain; bias anchor logits; mask the segment tail and the causal diagonal.
    const bool anchor = j < nA;
    const int key0 = anchor ? j * BN : (j - nA) * BN;
    const bool masked = anchor ? (key0 + BN > A) : (j - nA >= nP_free);
    float bias[2] = {0.f, 0.f};
    int last[2] = {0, 0};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int pr = packed_row(h);
      if (anchor) bias[h] = AnchorBiasLog2(a, w, pr);
      if (masked) last[h] = anchor ? A - 1 : LastPagedKey(a, w, pr);
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = sc[nt][e] * a.scale_log2 + bias[e / 2];
        if (masked && key0 + nt * 8 + 2 * t4 + (e & 1) > last[e / 2]) v = kNegInf;
        sc[nt][e] = v;
      }
    }

    // Online softmax (a quad of 4 lanes shares a row).
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = kNegInf;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(sc[nt][2 * h], sc[nt][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[h], mx);
      const float m_use = m_new == kNegInf ? 0.f : m_new;  // a row with nothing visible yet stays all-zero
      alpha[h] = FastExp2(m_run[h] - m_use);
      m_run[h] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        sc[nt][2 * h] = FastExp2(sc[nt][2 * h] - m_use);
        sc[nt][2 * h + 1] = FastExp2(sc[nt][2 * h + 1] - m_use);
        sum += sc[nt][2 * h] + sc[nt][2 * h + 1];
      }
      l_run[h] = l_run[h] * alpha[h] + sum;
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        o_acc[hf][i][0] *= alpha[0];
        o_acc[hf][i][1] *= alpha[0];
        o_acc[hf][i][2] *= alpha[1];
        o_acc[hf][i][3] *= alpha[1];
      }
    }

    // O += P V: P's A fragment for keys [16 kk, 16 kk + 16) is the S accumulators of n8 tiles 2 kk and 2 kk + 1.
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      PackPFragment<T>(sc[2 * kk], sc[2 * kk + 1], pa[kk]);
    }
    FenceOperand(o_acc[0]);
    FenceOperand(o_acc[1]);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) WgmmaRS64(o_acc[hf], pa[kk], SmemDesc128(cV + hf * BN * 64 + kk * 16 * 64));
    }
    WgmmaCommit();
    WgmmaWait<0>();
    FenceOperand(o_acc[0]);
    FenceOperand(o_acc[1]);
  }
  CpAsyncWait<0>();  // with no KV tile the Q copies may still be in flight; sQ is reused below
  __syncthreads();   // (also: no warpgroup still reads sQ through wgmma)

  // Epilogue: finish the row sums, normalise, stage the warpgroup's rows in sQ, write 16-byte chunks.
  float inv[2];
  FinishWarpgroupRows(a, w, wg_row0, warp, lane, l_run, m_run, inv);
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = wg_row0 + 16 * warp + g4 + 8 * h;
        const uint32_t v = Mma::Pack(o_acc[hf][i][2 * h] * inv[h], o_acc[hf][i][2 * h + 1] * inv[h]);
        *reinterpret_cast<uint32_t*>(sQ + SwizzleOffset128<BM>(r, hf * 8 + i) + 2 * t4) = v;
      }
    }
  }
  StoreWarpgroupRows<BM>(a, w, sQ, wg_row0, 1 + wg, tid % 128);  // bar 1 + wg: this warpgroup's 64 rows staged
#else
  (void)a;
#endif  // FP_PREFILL_SM90A
}

}  // namespace fp::prefill
