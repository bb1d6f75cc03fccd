// attention_prefill_hopper_ws.cuh — the warp-specialized Hopper (sm_90a) prefill kernel: bf16, head_dim 128;
// the default Hopper kernel (kPrefillHopperPipeline, attention_prefill_launch.cuh).
//
// Same contract, work split, KV order, masks and causal tile skipping as the CTA-barrier kernel PrefillHopperKernel
// (attention_prefill_hopper.cuh), built the FlashAttention-3 way: no CTA barrier per KV tile, mbarrier rings instead.
//   - Persistent: one CTA per SM (or one per work item: PrefillConfig::persistent) walks the work items (sequence
//     x kv head x 128-row query tile, heaviest first: CtaWorkItem). Q has its own full / empty mbarrier pair and
//     the output is staged apart from Q, so the next item's Q and first K/V tiles load while this item's last
//     P V and epilogue run; the rings' stage and phase count tiles over the whole walk.
//   - 3 warpgroups (384 threads). Warpgroup 0 is the producer: it gathers Q and the K/V tiles (BN = 128 keys)
//     through the block table with 16-byte cp.async (any page size) into rings of STAGES K and STAGES V buffers
//     (STAGES = 2 is the one built: Q, 4 x 32 KiB K/V and the 32 KiB output tile, 193 KiB of shared memory).
//     After each tile's copies every producer thread issues cp.async.mbarrier.arrive.noinc on the tile's "full"
//     mbarrier (count 128): the arrival happens once that thread's earlier copies have landed, so the producer
//     never waits on its own copies. It waits on the ring's "empty" mbarriers (one arrival per consumer warp,
//     count 8) before reusing a buffer. `setmaxnreg` hands its registers to the consumers (producer 48,
//     consumers 224 per thread: within the CTA's 384 x 168).
//   - Warpgroups 1 and 2 are consumers, 64 packed rows each. Per tile: wait K full, S = Q K^T (wgmma m64n128k16,
//     Q and K from shared memory), release K, softmax, rescale O (lazily: only when a row's maximum grew by more
//     than 2^8), P packed to bf16 A fragments in registers, wait V full, O += P V (one wgmma m64n128k16 per 16
//     keys, V MN-major over both 64-wide halves of d), release V. K is released as soon as S is done, so the
//     producer refills K while P V still reads V.
//   - Tensor-core turns for the S MMAs: a pair of named barriers (4, 5) hands the turn back and forth (consumer 0,
//     1, 0, ...), so one consumer's softmax runs while the other's S MMAs run. Consumers only ever wait on
//     mbarriers and their turn, so nothing re-aligns the two per tile.
//   - Proxy fence: cp.async writes are generic-proxy writes and wgmma reads through the async proxy. Each consumer
//     thread issues fence.proxy.async after its wait on a "full" mbarrier and before the wgmma that reads the
//     buffer (the barrier's completion makes the copies visible to it; the fence carries them to the async proxy).
// Determinism: as the CTA-barrier kernel (fixed KV order and tile size per row; no atomics; reruns bit-identical).
// Device code only in the sm_90a pass (FP_PREFILL_SM90A); other passes compile an empty stub.
// defines: PrefillHopperWsTile, PrefillHopperWsKernel
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_prefill_kernel.cuh"
#include "attention/attention_prefill_wgmma.cuh"

namespace fp::prefill {

template <int STAGES>
struct PrefillHopperWsTile {
  static constexpr int kD = 128;
  static constexpr int kBM = 128;
  static constexpr int kBN = 128;
  static constexpr int kThreads = 384;
  static constexpr int kBarriers = 2 + 4 * STAGES;  // Q full / empty; K full / empty, V full / empty per stage
  // Q, STAGES x (K, V), the output staging tile, 1 KiB to align the base to the 1024-byte swizzle atom, then the
  // mbarriers.
  static constexpr size_t kSmemBytes = static_cast<size_t>(2 * kBM + 2 * STAGES * kBN) * kD * 2 + 1024 + 8 * kBarriers;
  static_assert(kSmemBytes <= 232448, "over the 227 KiB of shared memory a block may have");
  // setmaxnreg moves registers within the CTA's launch allocation (168 a thread at 384 threads, one CTA per SM):
  // past it the consumers' setmaxnreg.inc would wait forever. 48 / 224 is the split ptxas fits without spills.
  static constexpr int kProducerRegs = 48, kConsumerRegs = 224;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kThreads * 168, "setmaxnreg past the allocation");
};

template <int STAGES>
__global__ void __launch_bounds__(384, 1) PrefillHopperWsKernel(const __grid_constant__ PrefillArgs a) {
#if FP_PREFILL_SM90A
  using T = __nv_bfloat16;
  using Mma = MmaTraits<T>;
  constexpr int D = 128, BM = 128, BN = 128, CPR = D / 8;
  const float kNegInf = -__int_as_float(0x7f800000);

  extern __shared__ uint4 smem_raw[];
  T* sQ = SmemAlign1024(smem_raw);  // [2][BM][64]
  T* sK = sQ + BM * D;                                                      // [STAGES][2][BN][64]
  T* sV = sK + STAGES * BN * D;                                             // [STAGES][2][BN][64]
  T* sO = sV + STAGES * BN * D;  // [2][BM][64] output staging, apart from sQ, where the next item's Q may land
  uint64_t* q_full = reinterpret_cast<uint64_t*>(sO + BM * D);             // [1]
  uint64_t* q_empty = q_full + 1;                                           // [1]
  uint64_t* k_full = q_empty + 1;                                           // [STAGES]
  uint64_t* k_empty = k_full + STAGES;                                      // [STAGES]
  uint64_t* v_full = k_empty + STAGES;                                      // [STAGES]
  uint64_t* v_empty = v_full + STAGES;                                      // [STAGES]

  const int Hkv = a.num_kv_heads, G = a.group, Hq = Hkv * G, A = a.anchor_len;
  const int n_items = a.work_x * a.work_y;

  const int tid = static_cast<int>(threadIdx.x), wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  if (tid == 0) {
    MbarInit(q_full, 128);
    MbarInit(q_empty, 8);
#pragma unroll
    for (int st = 0; st < STAGES; ++st) {
      MbarInit(k_full + st, 128);
      MbarInit(v_full + st, 128);
      MbarInit(k_empty + st, 8);
      MbarInit(v_empty + st, 8);
    }
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------- producer: Q, then K/V tiles in order into the rings ----------------
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PrefillHopperWsTile<STAGES>::kProducerRegs) : "memory");
    const int ld_row = tid / CPR, ld_chunk = tid % CPR;  // rows ld_row + 8 i (i < 16), one 16-byte chunk each
    const T* q = static_cast<const T*>(a.q);
    // Lane l owns tile row prow = 2 * warp + (l & 1) + 8 * (l >> 1), one of the 32 rows this warp copies (row
    // ld_row + 8 i is lane 2 i + (lane >> 4)'s): it resolves that row's element offset for the next tile (-1 past
    // the segment: zero-fill) one tile ahead, and the copies take it with a shuffle, so no index arithmetic or
    // block-table latency sits in the copy loop.
    const int prow = 2 * warp + (lane & 1) + 8 * (lane >> 1);
    // Copies of one K or V tile into buffer dst (rows past the segment zero-fill: 0 * poisoned V would be NaN).
    // Row ld_row + 8 i sits 8 i rows after row ld_row in the same swizzle phase.
    auto copy_tile = [&](int64_t off_lane, const T* base, T* dst) {
      T* d0 = dst + SwizzleOffset128<BN>(ld_row, ld_chunk);
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        const int64_t off = __shfl_sync(0xffffffffu, off_lane, 2 * i + (lane >> 4));
        const bool ok = off >= 0;
        CpAsync16(d0 + i * 8 * 64, base + (ok ? off + ld_chunk * 8 : 0), ok ? 16 : 0);
      }
    };
    uint32_t tile = 0, items_done = 0;  // over the whole walk: the rings' stage and phase, Q's phase
#pragma unroll 1
    for (int item = static_cast<int>(blockIdx.x); item < n_items; item += static_cast<int>(gridDim.x)) {
      const CtaWork w = CtaWorkItem<BM, BN>(a, item);
      if (w.empty) continue;  // uniform over the CTA
      const int s = w.s, hk = w.hk, q0 = w.q0, nq = w.nq, m0 = w.m0, kv_len = w.kv_len;
      const int nA = w.n_anchor, n_tiles = w.n_tiles;
      MbarWait(q_empty, (items_done & 1) ^ 1);  // both consumers' last S MMAs of the previous item completed
#pragma unroll 1
      for (int i = 0; i < BM / 8; ++i) {
        const int r = ld_row + i * 8, pr = m0 + r, tok = pr / G;
        const bool ok = tok < nq;
        const T* src = ok ? q + ((static_cast<int64_t>(q0 + tok) * Hq + hk * G + pr % G) * D + ld_chunk * 8) : q;
        CpAsync16(sQ + SwizzleOffset128<BM>(r, ld_chunk), src, ok ? 16 : 0);
      }
      CpAsyncMbarArrive(q_full);

      auto row_offset = [&](int j) -> int64_t {
        if (j >= n_tiles) return -1;
        if (j < nA) {
          const int t = j * BN + prow;
          return t < A ? (static_cast<int64_t>(t) * Hkv + hk) * D : -1;
        }
        const int t = (j - nA) * BN + prow;
        if (t >= kv_len) return -1;
        const int blk = a.page_shift >= 0 ? t >> a.page_shift : t / a.page_size;
        const int page = __ldg(a.block_table + static_cast<int64_t>(s) * a.max_blocks_per_seq + blk);
        return ((static_cast<int64_t>(page) * a.page_size + (t - blk * a.page_size)) * Hkv + hk) * D;
      };
      int64_t off = row_offset(0);
      for (int j = 0; j < n_tiles; ++j, ++tile) {
        const int st = static_cast<int>(tile % STAGES);
        const uint32_t ph = ((tile / STAGES) & 1) ^ 1;  // the first use of a buffer waits on nothing
        const int64_t off_next = row_offset(j + 1);
        const bool anchor = j < nA;
        MbarWait(k_empty + st, ph);
        copy_tile(off, static_cast<const T*>(anchor ? a.anchor_k : a.k_pool), sK + st * BN * D);
        CpAsyncMbarArrive(k_full + st);
        MbarWait(v_empty + st, ph);
        copy_tile(off, static_cast<const T*>(anchor ? a.anchor_v : a.v_pool), sV + st * BN * D);
        CpAsyncMbarArrive(v_full + st);
        off = off_next;
      }
      ++items_done;
    }
    // Leave no copy in flight behind an exited thread. The copies are in no commit group, so commit them into one
    // and wait for it (cp.async.wait_group alone covers committed groups only). The consumers wait on every "full"
    // barrier anyway; this costs the idle producer only.
    CpAsyncCommit();
    CpAsyncWait<0>();
  } else {
    // ---------------- consumers: 64 packed rows each ----------------
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(PrefillHopperWsTile<STAGES>::kConsumerRegs) : "memory");
    const int c = wg - 1;
    const int g4 = lane / 4, t4 = lane % 4;
    const int wg_row0 = 64 * c;
    // Tensor-core turns: consumer c waits on barrier 4 + c before issuing and then opens 4 + (1 - c). Consumer 1
    // opens consumer 0's first turn; consumer 0 takes one extra turn at the end so both barriers end balanced.
    auto turn_wait = [&] { asm volatile("bar.sync %0, 256;\n" ::"r"(4 + c) : "memory"); };
    auto turn_pass = [&] { asm volatile("bar.arrive %0, 256;\n" ::"r"(5 - c) : "memory"); };
    auto release = [&](uint64_t* bar) {  // after this warp's wgmma reads of the buffer completed
      __syncwarp();
      if (lane == 0) MbarArrive(bar);
    };
    if (c == 1) turn_pass();

    uint32_t tile = 0, items_done = 0;  // as the producer's
#pragma unroll 1
    for (int item = static_cast<int>(blockIdx.x); item < n_items; item += static_cast<int>(gridDim.x)) {
      const CtaWork w = CtaWorkItem<BM, BN>(a, item);
      if (w.empty) continue;  // uniform over the CTA
      const int nA = w.n_anchor, nP_free = w.n_free, n_tiles = w.n_tiles;
      // Per row (g4, g4 + 8), once per item: gamma's anchor bias (log2 units) and the last visible paged key.
      float anchor_bias[2];
      int paged_last[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int pr = w.m0 + wg_row0 + 16 * warp + g4 + 8 * h;
        anchor_bias[h] = AnchorBiasLog2(a, w, pr);
        paged_last[h] = LastPagedKey(a, w, pr);
      }
      float o_acc[16][4];  // [n8 tile][frag]: column 8 * nt + 2 * t4 + (e & 1), rows g4 (+ 8)
#pragma unroll
      for (int i = 0; i < 16; ++i) o_acc[i][0] = o_acc[i][1] = o_acc[i][2] = o_acc[i][3] = 0.f;
      float m_run[2] = {kNegInf, kNegInf}, l_run[2] = {0.f, 0.f};
      // A "full" barrier's completion makes the producer's cp.async (generic-proxy) writes visible to this
      // thread; the fence then orders them before its wgmma (async-proxy) reads of the buffer.
      auto acquire = [](uint64_t* bar, uint32_t parity) {
        MbarWait(bar, parity);
        FenceProxyAsync();
      };
      acquire(q_full, items_done & 1);

      auto issue_pv = [&](const T* cV, const uint32_t(&p)[BN / 16][4]) {
        FenceOperand(o_acc);
        WgmmaFence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) WgmmaRS128(o_acc, p[kk], SmemDesc128(cV + kk * 16 * 64, BN * 128));
      };
      // Scale, bias, mask and exponentiate S(j) in place; returns the factors O must be rescaled by.
      // The row maximum is taken over the raw scores (of scale_log2 * S, the maximum is scale_log2 times the raw
      // maximum, or the raw minimum when the scale is negative), so scaling, bias and the shift by the maximum
      // are one FFMA before the MUFU exponential: 4 instructions an element instead of 5 (the consumers'
      // softmax, not the tensor cores, bounded this kernel: ncu, ALU the busiest pipe).
      const bool scale_pos = a.scale_log2 > 0.f;
      constexpr float kRescaleSlack = 8.f;  // P <= 256 (FlashAttention-4's threshold)
      const float hidden = scale_pos ? kNegInf : -kNegInf;  // a masked raw score: scales to -inf either way
      auto softmax = [&](int j, float (&sc)[BN / 8][4], float (&alpha)[2]) {
        const bool anchor = j < nA;
        const int key0 = anchor ? j * BN : (j - nA) * BN;
        const bool masked = anchor ? (key0 + BN > A) : (j - nA >= nP_free);
        const float bias[2] = {anchor ? anchor_bias[0] : 0.f, anchor ? anchor_bias[1] : 0.f};
        const int last[2] = {anchor ? A - 1 : paged_last[0], anchor ? A - 1 : paged_last[1]};
        if (masked) {
#pragma unroll
          for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              if (key0 + nt * 8 + 2 * t4 + (e & 1) > last[e / 2]) sc[nt][e] = hidden;
            }
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float ext = hidden;  // the raw maximum (scale > 0) or minimum (scale < 0) of the row's scores
          if (scale_pos) {
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) ext = fmaxf(ext, fmaxf(sc[nt][2 * h], sc[nt][2 * h + 1]));
            ext = fmaxf(ext, __shfl_xor_sync(0xffffffffu, ext, 1));
            ext = fmaxf(ext, __shfl_xor_sync(0xffffffffu, ext, 2));
          } else {
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) ext = fminf(ext, fminf(sc[nt][2 * h], sc[nt][2 * h + 1]));
            ext = fminf(ext, __shfl_xor_sync(0xffffffffu, ext, 1));
            ext = fminf(ext, __shfl_xor_sync(0xffffffffu, ext, 2));
          }
          // Lazy rescaling: the running maximum moves only when the tile's passes it by more than kRescaleSlack
          // (log2 units), so after the first tiles O is almost never rescaled. P stays <= 2^kRescaleSlack, which
          // bf16 P and the fp32 sums carry without loss; l and O share the stale maximum, so the result is exact.
          const float m_tile = ext * a.scale_log2 + bias[h];     // -inf when the tile hides the whole row
          const bool moves = m_tile > m_run[h] + kRescaleSlack;  // also the first visible tile (m_run = -inf)
          const float m_new = moves ? m_tile : m_run[h];
          const float m_use = m_new == kNegInf ? 0.f : m_new;  // a row with nothing visible yet stays all-zero
          alpha[h] = moves ? FastExp2(m_run[h] - m_use) : 1.f;
          m_run[h] = m_new;
          const float shift = bias[h] - m_use;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < BN / 8; ++nt) {
            sc[nt][2 * h] = FastExp2(fmaf(sc[nt][2 * h], a.scale_log2, shift));
            sc[nt][2 * h + 1] = FastExp2(fmaf(sc[nt][2 * h + 1], a.scale_log2, shift));
            sum += sc[nt][2 * h] + sc[nt][2 * h + 1];
          }
          l_run[h] = l_run[h] * alpha[h] + sum;
        }
      };
      auto rescale = [&](const float (&alpha)[2]) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          o_acc[i][0] *= alpha[0];
          o_acc[i][1] *= alpha[0];
          o_acc[i][2] *= alpha[1];
          o_acc[i][3] *= alpha[1];
        }
      };
      auto pack = [&](const float (&sc)[BN / 8][4], uint32_t (&p)[BN / 16][4]) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
          PackPFragment<T>(sc[2 * kk], sc[2 * kk + 1], p[kk]);
        }
      };

      for (int j = 0; j < n_tiles; ++j, ++tile) {
        const int st = static_cast<int>(tile % STAGES);
        const uint32_t ph = (tile / STAGES) & 1;
        float sc[BN / 8][4];      // S(j), then P(j) in fp32: column 8 nt + 2 t4 + (e & 1), rows g4 (+ 8)
        float alpha[2];           // O's rescale factors, rows g4 and g4 + 8
        uint32_t pa[BN / 16][4];  // P(j) as bf16 A fragments (keys 16 kk .. 16 kk + 15)
        acquire(k_full + st, ph);
        turn_wait();  // S MMAs take turns with the other consumer's
        IssueQkT<BM, BN, D>(sc, sQ, sK + st * BN * D, wg_row0);
        WgmmaCommit();
        turn_pass();
        WgmmaWait<0>();
        FenceOperand(sc);
        release(k_empty + st);  // K(j) read: the producer may refill it while this consumer does softmax and P V
        if (j == n_tiles - 1) release(q_empty);  // Q read for the last time: the next item's Q may load
        softmax(j, sc, alpha);
        pack(sc, pa);
        // Rare with lazy rescaling; after the pack, where S no longer holds registers (before it, ptxas spilled).
        if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) rescale(alpha);
        acquire(v_full + st, ph);
        issue_pv(sV + st * BN * D, pa);
        WgmmaCommit();
        WgmmaWait<0>();
        FenceOperand(o_acc);
        FenceOperand(pa);  // the register operands stay untouched until the P V MMAs completed
        release(v_empty + st);
      }
      if (n_tiles == 0) release(q_empty);

      // Epilogue: finish the row sums, normalise, stage this consumer's 64 rows in its own rows of sO, write 16-byte
      // chunks. Barrier 1 + c first: every thread of this warpgroup has read the previous item's rows out of sO.
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + c) : "memory");
      const CtaWork we = CtaWorkItem<BM, BN>(a, item);  // again, not w: no registers held across the tile loop
      float inv[2];
      FinishWarpgroupRows(a, we, wg_row0, warp, lane, l_run, m_run, inv);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wg_row0 + 16 * warp + g4 + 8 * h;
          const uint32_t v = Mma::Pack(o_acc[i][2 * h] * inv[h], o_acc[i][2 * h + 1] * inv[h]);
          *reinterpret_cast<uint32_t*>(sO + SwizzleOffset128<BM>(r, i) + 2 * t4) = v;
        }
      }
      StoreWarpgroupRows<BM>(a, we, sO, wg_row0, 1 + c, tid % 128);  // bar 1 + c: this consumer's 64 rows staged
      ++items_done;
    }
    if (c == 0) turn_wait();  // consumer 1's last pass
  }
#else
  (void)a;
#endif  // FP_PREFILL_SM90A
}

}  // namespace fp::prefill
