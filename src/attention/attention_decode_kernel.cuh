// attention_decode_kernel.cuh — the decode CTA: one (sequence, kv head, split, block of <= 16 query rows).
//
// Design (docs/kernel-spec.md has the numbers and the history):
// - W = 4 or 8 warps, each an independent stream: warp w takes the 16-token steps w, w+W, ... of the CTA's range
//   (neighbouring warps read neighbouring tokens at the same time), through its OWN 3-stage cp.async ring in
//   shared memory (16-byte LDGSTS .cg, zero-filled past the end, XOR-swizzled 16-byte chunks so ldmatrix is
//   conflict-free). Only __syncwarp inside the loop; one __syncthreads at the end.
// - Tensor cores serve the whole GQA group at once (the rows are the group's heads x queries, padded to 16):
//   S = Q K^T with mma.m16n8k16 (Q fragments in registers, K via ldmatrix), then O += P V with P taken straight
//   from the S accumulators (no shared-memory round trip), V via ldmatrix.trans. Each K/V byte is read once.
// - Page ids are resolved one step ahead: lane l < 16 loads the block-table entry of token l of the step after
//   next, computes its pool row, and the row numbers are broadcast with shuffles when the copies are issued.
//   Anchor rows use an evict_last L2 policy (every sequence re-reads them), paged rows evict_first.
// - Online softmax in fp32, log2 domain (scale*log2 e applied to S), per warp; anchor tokens are simply the first
//   combined indices with gamma*log2 e added; causal limits per row. The 4 warps merge through shared memory in
//   a fixed order (deterministic), then o/lse (one split) or the split's partial (several splits) is written.
// - Fused merge (default): the CTA that finishes a row block's last split merges the splits' partials
//   (MergeSplitsRow), so no merge kernel (and no launch gap before the next kernel) follows.
// - PDL-ready: lets the next kernel launch at once, issues the first KV steps whose rows predate the step before
//   waiting (griddepcontrol.wait) for the previous kernel, and reads q and this step's KV rows only after it.
// The first version (CUDA cores, a butterfly per logit) issued ~130 warp instructions per token and stalled at
// ~60% of the copy bandwidth: issue-bound. This one issues roughly a tenth of that per token.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "attention/attention_decode_internal.h"
#include "core/cuda_pdl.cuh"

namespace fp::decode {

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename T>
__device__ __forceinline__ uint2 Pack4(float a, float b, float c, float d);

template <>
__device__ __forceinline__ uint2 Pack4<__nv_bfloat16>(float a, float b, float c, float d) {
  const __nv_bfloat162 x = __floats2bfloat162_rn(a, b), y = __floats2bfloat162_rn(c, d);
  uint2 r;
  memcpy(&r.x, &x, 4);
  memcpy(&r.y, &y, 4);
  return r;
}

template <>
__device__ __forceinline__ uint2 Pack4<__half>(float a, float b, float c, float d) {
  const __half2 x = __floats2half2_rn(a, b), y = __floats2half2_rn(c, d);
  uint2 r;
  memcpy(&r.x, &x, 4);
  memcpy(&r.y, &y, 4);
  return r;
}

// Split-KV merge of one (query token, head) row by one warp: split k's normalised o [d] and log2 sum-exp sit at
// partial row (base + k * stride); writes o_row [d] and, when lse is non-null, *lse (natural log).
//   o = sum_k 2^(lse_k - M) o_k / sum_k 2^(lse_k - M),  lse = (M + log2 sum_k 2^(lse_k - M)) * ln 2
// The lanes load 32 splits' lse at once (max and weights by shuffles); lane l owns dims [4l, 4l + 4) and sums
// the splits' partials with the loads issued back to back. The order is fixed (splits ascending for o, a fixed
// shuffle tree for the weights' sum), so the result depends only on the row's own splits (batch invariance)
// and is the same bits in the merge kernel and in the decode kernel's fused merge. Loads bypass L1 (__ldcg):
// in the fused merge, other CTAs of the running grid wrote them.
template <typename T>
__device__ __forceinline__ void MergeSplitsRow(const float* partial_o, const float* partial_lse, int Hq, int d,
                                               int base, int stride, int ns, int h, T* o_row, float* lse) {
  const int lane = threadIdx.x & 31, x = lane * 4;
  const bool has_x = x < d;
  auto lse_of = [&](int k) { return __ldcg(partial_lse + int64_t(base + k * stride) * Hq + h); };
  float M = -INFINITY;
  for (int k0 = 0; k0 < ns; k0 += 32) {
    if (k0 + lane < ns) M = fmaxf(M, lse_of(k0 + lane));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float L = 0.f;
  if (M != -INFINITY) {
    for (int k0 = 0; k0 < ns; k0 += 32) {
      const float wk = k0 + lane < ns ? Exp2(lse_of(k0 + lane) - M) : 0.f;
      L += wk;
      const int kn = min(32, ns - k0);
#pragma unroll 8
      for (int j = 0; j < kn; ++j) {
        const float w = __shfl_sync(0xffffffffu, wk, j);
        if (has_x) {
          const int64_t prow = int64_t(base + (k0 + j) * stride) * Hq + h;
          const float4 v = *reinterpret_cast<const float4*>(partial_o + prow * d + x);
          o.x += w * v.x;
          o.y += w * v.y;
          o.z += w * v.z;
          o.w += w * v.w;
        }
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) L += __shfl_xor_sync(0xffffffffu, L, off);
    const float inv = 1.f / L;
    o.x *= inv;
    o.y *= inv;
    o.z *= inv;
    o.w *= inv;
  }
  if (has_x) *reinterpret_cast<uint2*>(o_row + x) = Pack4<T>(o.x, o.y, o.z, o.w);
  if (lse != nullptr && lane == 0) *lse = M == -INFINITY ? -INFINITY : (M + __log2f(L)) * 0.6931471805599453f;
}

__device__ __forceinline__ uint64_t L2Policy(bool evict_last) {
  uint64_t pol;
  if (evict_last) {
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  }
  return pol;
}

// 16-byte async copy global -> shared; src_bytes 0 zero-fills (reads nothing).
__device__ __forceinline__ void CpAsync16(uint32_t smem, const void* gmem, uint32_t src_bytes, uint64_t pol) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;" ::"r"(smem), "l"(gmem),
               "r"(src_bytes), "l"(pol)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4T(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b, m16n8k16, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void Mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void Mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ __forceinline__ uint32_t Pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 x = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &x, 4);
  } else {
    const __half2 x = __floats2half2_rn(lo, hi);
    memcpy(&r, &x, 4);
  }
  return r;
}

template <int D, int W>
struct Tiling {
  static constexpr int kWarps = W;
  static constexpr int kStep = 16;                      // tokens per warp step (the mma's k for P V)
  static constexpr int kChunks = D / 8;                 // 16-byte chunks per token row
  static constexpr int kRowsPerIssue = 32 / kChunks;    // token rows one warp-wide copy covers
  static constexpr int kIssues = kStep / kRowsPerIssue; // copies per lane per step, each for K and for V
  static constexpr int kStageBytes = 2 * kStep * D * 2; // K + V of one step
  static constexpr int kWarpRing = kStages * kStageBytes;
  static constexpr int kSmemBytes = kWarps * kWarpRing;
};


// 2 CTAs per SM except d=128 with 8 warps (192 KiB of rings: one CTA, the same bytes in flight as two 4-warp CTAs).
template <int D, int W>
inline constexpr int kMinBlocks = (D == 128 && W == 8) ? 1 : 2;

template <typename T, int D, int W>
__global__ void __launch_bounds__(W * 32, kMinBlocks<D, W>) DecodeKernel(const __grid_constant__ DecodeArgs a) {
  using Tl = Tiling<D, W>;
  constexpr int kCtaThreads = W * 32;
  constexpr int kW = Tl::kWarps, kStep = Tl::kStep, kC = Tl::kChunks, kKS = D / 16;
  static_assert(kW * kMaxRows * D * 4 + 2 * kW * kMaxRows * 4 <= Tl::kSmemBytes, "reduction must fit in the rings");
  extern __shared__ __align__(128) unsigned char smem[];

  // PDL (no-ops without it): the next kernel may launch now; this one waits (below) for the previous kernel
  // before it reads q or a KV row that step wrote. Readable before the wait: the plan's items, the uploaded batch
  // arrays (kv_lens, block table: copies precede every kernel of the step) and the KV rows that existed before
  // the step (the anchor, paged positions < kv_len - n_q).
  WorkItem it = a.items[blockIdx.x];
  // The length comes from the device batch (graph replay: same items, longer sequences), clamped to the planned
  // one so no device value can index past the block-table row; the range ends at the sequence's last token.
  it.kv_len = max(0, min(__ldg(a.kv_lens + it.seq), it.kv_len));
  it.end = max(it.begin, min(it.end, a.A + it.kv_len));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int kvh = it.kv_head, G = a.G, Hq = a.Hq, A = a.A;
  const int rows_total = G * it.n_q;

  // ---- addressing ----
  // Lane l < 16 resolves token l of a step to the byte address of its K row (chunk 0) and broadcasts it; the
  // low bit (rows are 16-byte aligned) marks an anchor row, a null address a token past the range (zero-fill).
  const int64_t row_bytes = int64_t(a.Hkv) * D * 2;  // bytes between consecutive token rows
  const int my_chunk = lane % kC, my_row0 = lane / kC;
  const char* kpool = static_cast<const char*>(a.k_pool) + int64_t(kvh) * D * 2;
  const char* kanc = static_cast<const char*>(a.anchor_k) + int64_t(kvh) * D * 2;
  const int64_t dv_pool = static_cast<const char*>(a.v_pool) - static_cast<const char*>(a.k_pool);  // V = K + dv
  const int64_t dv_anc = static_cast<const char*>(a.anchor_v) - static_cast<const char*>(a.anchor_k);
  const int32_t* bt = a.block_table + int64_t(it.seq) * a.max_blocks;
  const uint64_t pol_stream = L2Policy(false), pol_anchor = L2Policy(true);
  const uint32_t ring = static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + warp * Tl::kWarpRing;
  // Swizzled byte offset of (token row, 16-byte chunk) inside a [kStep, D] tile.
  auto swz = [](int row, int chunk) { return uint32_t(row * (D * 2) + ((chunk ^ (row & 7)) << 4)); };

  const int n = it.end - it.begin;
  const int nsteps = n > warp * kStep ? (n - warp * kStep + kW * kStep - 1) / (kW * kStep) : 0;
  auto step_base = [&](int s) { return it.begin + (s * kW + warp) * kStep; };

  int pid = 0;  // block-table entry of token (lane & 15) of the next step to issue (loaded a step ahead)
  auto load_pid = [&](int s) {
    const int idx = step_base(s) + (lane & 15);
    pid = 0;
    if (s < nsteps && idx < it.end && idx >= A) {
      const uint32_t pos = uint32_t(idx - A);
      pid = __ldg(bt + ((__umulhi(pos, a.p_magic) + pos) >> a.p_shift));
    }
  };
  auto row_addr = [&](int s) -> uint64_t {
    const int idx = step_base(s) + (lane & 15);
    if (idx >= it.end) return 0;
    if (idx < A) return reinterpret_cast<uint64_t>(kanc + int64_t(idx) * row_bytes) | 1u;
    const uint32_t pos = uint32_t(idx - A);
    const uint32_t page = (__umulhi(pos, a.p_magic) + pos) >> a.p_shift;
    const int64_t row = int64_t(pid) * a.P + int(pos - page * uint32_t(a.P));
    return reinterpret_cast<uint64_t>(kpool + row * row_bytes);
  };
  auto issue = [&](int s) {
    const uint64_t mine = row_addr(s);
    const uint32_t stage = ring + uint32_t(s % kStages) * Tl::kStageBytes;
#pragma unroll
    for (int i = 0; i < Tl::kIssues; ++i) {
      const int row = my_row0 + i * Tl::kRowsPerIssue;
      const uint64_t addr = __shfl_sync(0xffffffffu, mine, row);
      const bool anchor = addr & 1u;
      const char* kp = reinterpret_cast<const char*>(addr & ~uint64_t{1}) + my_chunk * 16;
      const char* vp = kp + (anchor ? dv_anc : dv_pool);
      const uint32_t bytes = addr != 0 ? 16u : 0u;
      const uint64_t pol = anchor ? pol_anchor : pol_stream;
      const uint32_t off = swz(row, my_chunk);
      CpAsync16(stage + off, addr != 0 ? kp : kanc, bytes, pol);
      CpAsync16(stage + kStep * D * 2 + off, addr != 0 ? vp : kanc, bytes, pol);
    }
  };

  float o[D / 8][4];  // O fragments: rows g / g+8, dims nt*8 + 2t (+1)
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this lane's partial sum (reduced at the end)

  // Pipeline prologue: the leading steps whose rows all predate this step are issued before the PDL wait (they
  // stream while the previous kernel finishes), the rest after it; one commit group per stage either way.
  const int old_end = A + max(0, it.kv_len - it.n_q);  // combined index of the first row this step wrote
  load_pid(0);
  int early = 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (early == s && s < nsteps && step_base(s) + kStep <= old_end) {
      issue(s);
      load_pid(s + 1);
      CpAsyncCommit();
      ++early;
    }
  }
  PdlWait();
  PdlLaunchDependents();
  // ---- Q fragments (rows g and g+8 of this block; zero for rows past the block) and per-row limits ----
  uint32_t qf[kKS][4];
  int climit[2];
  float gbias[2];
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const int rr = it.row0 + g + 8 * h2;
    climit[h2] = it.end - 1;
    gbias[h2] = 0.f;
    const T* qrow = nullptr;
    if (rr < rows_total) {
      const int j = rr / G, head = kvh * G + rr % G;
      qrow = static_cast<const T*>(a.q) + (int64_t(it.q_start + j) * Hq + head) * D;
      const int last = A + (a.causal ? it.kv_len - it.n_q + j : it.kv_len - 1);
      climit[h2] = min(climit[h2], last);
      if (a.gamma != nullptr) gbias[h2] = a.gamma[head] * 1.4426950408889634f;
    }
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      qf[ks][h2] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + ks * 16 + 2 * t) : 0u;
      qf[ks][h2 + 2] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + ks * 16 + 8 + 2 * t) : 0u;
    }
  }

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < early) continue;
    if (s < nsteps) issue(s);
    load_pid(s + 1);
    CpAsyncCommit();
  }

  for (int s = 0; s < nsteps; ++s) {
    CpAsyncWait<kStages - 2>();  // this lane's copies of step s have landed
    __syncwarp();                // ... and every lane's; also: everyone is done reading step s-1's stage
    if (s + kStages - 1 < nsteps) issue(s + kStages - 1);
    load_pid(s + kStages);
    CpAsyncCommit();

    const uint32_t ktile = ring + uint32_t(s % kStages) * Tl::kStageBytes, vtile = ktile + kStep * D * 2;
    // S = Q K^T: two n-tiles of 8 tokens. ldmatrix.x4 lanes: matrix mi = lane/8 -> tokens (mi/2)*8.., chunk +mi%2.
    float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t b[4];
      const int mi = lane >> 3;
      LdMatrixX4(b, ktile + swz((mi >> 1) * 8 + (lane & 7), ks * 2 + (mi & 1)));
      Mma<T>(sc[0], qf[ks], b[0], b[1]);
      Mma<T>(sc[1], qf[ks], b[2], b[3]);
    }
    // Online softmax on the accumulators: lane holds rows g (c0, c1) and g+8 (c2, c3), tokens nt*8 + 2t + e.
    const int base = step_base(s);
    float p[2][4], cr[2];
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      float mx = m[h2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int idx = base + nt * 8 + 2 * t + e;
          float x = sc[nt][2 * h2 + e] * a.qscale + (idx < A ? gbias[h2] : 0.f);
          x = idx <= climit[h2] ? x : -INFINITY;
          sc[nt][2 * h2 + e] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mu = mx == -INFINITY ? 0.f : mx;  // all masked so far: keep exp2(-inf) = 0, never NaN
      const float corr = Exp2(m[h2] - mu);
      m[h2] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          p[nt][2 * h2 + e] = Exp2(sc[nt][2 * h2 + e] - mu);
          sum += p[nt][2 * h2 + e];
        }
      }
      l[h2] = l[h2] * corr + sum;
      cr[h2] = corr;
    }
    // Rescale O only when a running max moved somewhere in the warp (rare after the first steps).
    if (__any_sync(0xffffffffu, cr[0] != 1.f || cr[1] != 1.f)) {
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        o[nt][0] *= cr[0];
        o[nt][1] *= cr[0];
        o[nt][2] *= cr[1];
        o[nt][3] *= cr[1];
      }
    }
    // O += P V: P (16 rows x 16 tokens) is the A operand, straight from the S accumulator layout.
    const uint32_t pa[4] = {Pack2<T>(p[0][0], p[0][1]), Pack2<T>(p[0][2], p[0][3]), Pack2<T>(p[1][0], p[1][1]),
                            Pack2<T>(p[1][2], p[1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      const int mi = lane >> 3;  // matrices: (tokens 0-7 | 8-15) x (dims dp*16 | +8)
      LdMatrixX4T(b, vtile + swz((mi & 1) * 8 + (lane & 7), dp * 2 + (mi >> 1)));
      Mma<T>(o[2 * dp], pa, b[0], b[1]);
      Mma<T>(o[2 * dp + 1], pa, b[2], b[3]);
    }
  }
  CpAsyncWait<0>();
  __syncthreads();  // the rings are reused for the cross-warp reduction

  // ---- merge the kW warps (fixed order) ----
  float* red = reinterpret_cast<float*>(smem);  // [kW, 16, D]
  float* red_m = red + kW * kMaxRows * D;       // [kW, 16]
  float* red_l = red_m + kW * kMaxRows;         // [kW, 16]
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    float lt = l[h2];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const int r = g + 8 * h2;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      *reinterpret_cast<float2*>(red + (warp * kMaxRows + r) * D + nt * 8 + 2 * t) =
          make_float2(o[nt][2 * h2], o[nt][2 * h2 + 1]);
    }
    if (t == 0) {
      red_m[warp * kMaxRows + r] = m[h2];
      red_l[warp * kMaxRows + r] = lt;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kMaxRows * D / 4; i += kCtaThreads) {
    const int r = i / (D / 4), x = (i % (D / 4)) * 4;
    const int rr = it.row0 + r;
    if (rr >= rows_total) continue;
    float M = -INFINITY;
    for (int w = 0; w < kW; ++w) M = fmaxf(M, red_m[w * kMaxRows + r]);
    float L = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (M != -INFINITY) {
      for (int w = 0; w < kW; ++w) {
        const float wt = Exp2(red_m[w * kMaxRows + r] - M);
        L += red_l[w * kMaxRows + r] * wt;
        const float4 v = *reinterpret_cast<const float4*>(red + (w * kMaxRows + r) * D + x);
        acc.x += wt * v.x;
        acc.y += wt * v.y;
        acc.z += wt * v.z;
        acc.w += wt * v.w;
      }
      const float inv = 1.f / L;
      acc.x *= inv;
      acc.y *= inv;
      acc.z *= inv;
      acc.w *= inv;
    }
    const float lse2 = M == -INFINITY ? -INFINITY : M + __log2f(L);
    const int j = rr / G, head = kvh * G + rr % G;
    if (it.partial_base < 0) {
      const int64_t orow = int64_t(it.q_start + j) * Hq + head;
      *reinterpret_cast<uint2*>(static_cast<T*>(a.o) + orow * D + x) = Pack4<T>(acc.x, acc.y, acc.z, acc.w);
      if (a.lse != nullptr && x == 0) a.lse[orow] = lse2 * 0.6931471805599453f;
    } else {
      const int64_t prow = int64_t(it.partial_base + j) * Hq + head;
      *reinterpret_cast<float4*>(a.partial_o + prow * D + x) = acc;
      if (x == 0) a.partial_lse[prow] = lse2;
    }
  }

  // ---- fused split-KV merge: the last split of this (sequence, kv head, row block) to finish merges them ----
  // Threadfence-reduction pattern: every thread fences its partial writes, one thread counts the arrival; the
  // CTA that completes the count reads the other splits' partials from L2 and resets the counter for the next
  // launch. Which CTA arrives last changes nothing: MergeSplitsRow reads the splits in a fixed order.
  if (it.merge_slot >= 0) {
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      const uint32_t arrived = atomicAdd(a.merge_counters + it.merge_slot, 1u) + 1u;
      s_last = arrived == uint32_t(it.num_splits);
      if (s_last) a.merge_counters[it.merge_slot] = 0u;
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    const int rows = min(kMaxRows, rows_total - it.row0);
    for (int r = warp; r < rows; r += kW) {
      const int rr = it.row0 + r, j = rr / G, head = kvh * G + rr % G;
      const int64_t orow = int64_t(it.q_start + j) * Hq + head;
      MergeSplitsRow<T>(a.partial_o, a.partial_lse, Hq, D, it.merge_base + j, it.n_q, it.num_splits, head,
                        static_cast<T*>(a.o) + orow * D, a.lse != nullptr ? a.lse + orow : nullptr);
    }
  }
}

}  // namespace fp::decode
