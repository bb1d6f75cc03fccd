// attention_prefill_wgmma.cuh — warpgroup-level building blocks of the Hopper prefill path (sm_90a only):
// shared-memory matrix descriptors for the 128-byte swizzle, wgmma fences/commit/wait, and the three
// wgmma.mma_async shapes the kernel uses (S = Q K^T with both operands in shared memory, O += P V with P in
// registers and V read transposed from shared memory).
//
// Shared-memory tiles are [D / 64][rows][64] 16-bit elements: each 64-element (128-byte) row segment is one row of
// a 128B-swizzle atom (8 rows x 128 B = 1024 B, 16-byte chunk index XORed with row & 7), atoms 1024-byte aligned.
// The same bytes serve as a K-major operand (Q, K: rows = M or N, 64 = K) and as an MN-major one (V: rows = K,
// 64 = N), so K and V tiles are written by the same gather code.
// Only compiled into device code for sm_90a (callers guard with FP_PREFILL_SM90A).
// Also the mbarrier primitives of the warp-specialized kernel (attention_prefill_hopper_ws.cuh).
// defines: FP_PREFILL_SM90A, SwizzleOffset128, SmemDesc128, WgmmaFence, WgmmaCommit, WgmmaWait, FenceOperand,
//          FenceProxyAsync, WgmmaSS64, WgmmaSS128, WgmmaRS64, WgmmaRS128, MbarInit, MbarArrive, MbarWait,
//          FP_WGMMA_ACC32 / FP_WGMMA_ACC64, FinishWarpgroupRows, StoreWarpgroupRows,
//          CpAsyncMbarArrive, SmemAlign1024
#pragma once

#include <cuda_runtime.h>

#include <cuda_bf16.h>

#include <cstdint>

#include "attention/attention_prefill_kernel.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP_PREFILL_SM90A 1
#else
#define FP_PREFILL_SM90A 0
#endif

namespace fp::prefill {

// The "+f" operand lists of 16 x 4 and 8 x 4 accumulator fragments (operands %0 .. %63 / %0 .. %31).
#define FP_WGMMA_ACC_ROW(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define FP_WGMMA_ACC32(d)                                                                                  \
  FP_WGMMA_ACC_ROW(d, 0), FP_WGMMA_ACC_ROW(d, 1), FP_WGMMA_ACC_ROW(d, 2), FP_WGMMA_ACC_ROW(d, 3),         \
      FP_WGMMA_ACC_ROW(d, 4), FP_WGMMA_ACC_ROW(d, 5), FP_WGMMA_ACC_ROW(d, 6), FP_WGMMA_ACC_ROW(d, 7)
#define FP_WGMMA_ACC64(d)                                                                                  \
  FP_WGMMA_ACC32(d), FP_WGMMA_ACC_ROW(d, 8), FP_WGMMA_ACC_ROW(d, 9), FP_WGMMA_ACC_ROW(d, 10),               \
      FP_WGMMA_ACC_ROW(d, 11), FP_WGMMA_ACC_ROW(d, 12), FP_WGMMA_ACC_ROW(d, 13), FP_WGMMA_ACC_ROW(d, 14),    \
      FP_WGMMA_ACC_ROW(d, 15)

// The first 1024-byte boundary of dynamic shared memory: the 128-byte swizzle pattern repeats every 1024 bytes
// and descriptors assume aligned atoms (the Hopper kernels' shared memory sizes include 1 KiB of slack for it).
__device__ __forceinline__ __nv_bfloat16* SmemAlign1024(uint4* smem_raw) {
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  return reinterpret_cast<__nv_bfloat16*>(reinterpret_cast<char*>(smem_raw) + ((1024u - (raw & 1023u)) & 1023u));
}

// Element offset of (row, 16-byte chunk c in [0, D/8)) in a [D/64][R][64] tile with 128-byte swizzle.
template <int R>
__device__ __forceinline__ int SwizzleOffset128(int row, int c) {
  return (c >> 3) * (R * 64) + row * 64 + (((c & 7) ^ (row & 7)) << 3);
}

// Descriptor of a 128B-swizzled operand starting at `smem` (1024-byte aligned atom, or an offset of 32 B steps
// inside one for the k-steps of a K-major operand). Stride between 8-row groups (SBO) 1024 B. LBO is ignored for
// K-major swizzled operands and for MN-major ones no wider than one atom (N = 64), which is all we issue; it is set
// to 1024 B as well so that either reading of the two fields gives the same layout. An MN-major operand wider than
// one atom (V as B of m64n128: N = d = 128 = two 64-wide halves) passes the byte stride between its 64-wide halves
// as `lbo`.
__device__ __forceinline__ uint64_t SmemDesc128(const void* smem, uint32_t lbo = 1024) {
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  uint64_t desc = (addr & 0x3FFFFu) >> 4;        // bits 0-13: start address / 16
  desc |= uint64_t{(lbo >> 4) & 0x3FFFu} << 16;  // bits 16-29: leading byte offset / 16
  desc |= uint64_t{1024 >> 4} << 32;             // bits 32-45: stride byte offset / 16
  desc |= uint64_t{1} << 62;                     // bits 62-63: 1 = 128-byte swizzle
  return desc;
}

__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers in place around wgmma issue/wait so the compiler does not read or write them while
// an asynchronous MMA owns them.
template <int N>
__device__ __forceinline__ void FenceOperand(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
  }
}
// Same for A fragments in registers: an asynchronous MMA reads them until its wait, so they must stay live (and
// unclobbered) until a fence placed after that wait.
template <int N>
__device__ __forceinline__ void FenceOperand(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
  }
}
// Makes generic-proxy shared-memory writes (cp.async, st.shared) visible to the async proxy (wgmma operand reads).
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#if FP_PREFILL_SM90A
// D[64 x 64] (+)= A[64 x 16] (smem, K-major) * B[16 x 64] (smem, K-major), bf16 -> fp32.
__device__ __forceinline__ void WgmmaSS64(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : FP_WGMMA_ACC32(d)
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// D[64 x 128] (+)= A[64 x 16] (smem, K-major) * B[16 x 128] (smem, K-major), bf16 -> fp32.
__device__ __forceinline__ void WgmmaSS128(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : FP_WGMMA_ACC64(d)
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// D[64 x 64] += A[64 x 16] (registers, mma.sync A layout per warp) * B[16 x 64] (smem, MN-major).
__device__ __forceinline__ void WgmmaRS64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : FP_WGMMA_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

// D[64 x 128] += A[64 x 16] (registers) * B[16 x 128] (smem, MN-major; the two 64-wide halves `lbo` bytes apart).
__device__ __forceinline__ void WgmmaRS128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : FP_WGMMA_ACC64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

// Issues S = Q K^T for one warpgroup's 64 Q rows (starting at row wg_row0 of the BM-row tile) against a BN-key tile,
// both in the 128-byte-swizzled [D / 64][rows][64] layout: D / 16 k-steps of 16, where a k-step advances 32 B inside
// the atom row, or moves to the next d half. Fences sc first; the caller commits and waits.
template <int BM, int BN, int D>
__device__ __forceinline__ void IssueQkT(float (&sc)[BN / 8][4], const __nv_bfloat16* sQ, const __nv_bfloat16* cK,
                                         int wg_row0) {
  FenceOperand(sc);
  WgmmaFence();
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    const uint64_t da = SmemDesc128(sQ + (kc / 4) * BM * 64 + wg_row0 * 64 + (kc % 4) * 16);
    const uint64_t db = SmemDesc128(cK + (kc / 4) * BN * 64 + (kc % 4) * 16);
    if constexpr (BN == 128) {
      WgmmaSS128(sc, da, db, kc > 0);
    } else {
      WgmmaSS64(sc, da, db, kc > 0);
    }
  }
}

// mbarriers (shared::cta, 8 bytes each). A phase completes when `count` arrivals have come in; waiters name the
// parity of the phase they wait for (waiting on the parity before the first phase returns at once).
__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void MbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(SmemAddr(bar)) : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}
// One arrival on `bar` once all of this thread's earlier cp.async copies have landed (the count includes it).
__device__ __forceinline__ void CpAsyncMbarArrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(SmemAddr(bar)) : "memory");
}
#endif  // FP_PREFILL_SM90A

// The end of one warpgroup's 64 packed rows [row0, row0 + 64) of the CTA's tile, for this thread's two rows
// row0 + 16 warp + lane / 4 (+ 8): the quad's partial row sums added, lse written (by the quad's first lane), and
// inv = 1 / l (0 for a row that saw nothing: its o stays 0 and its lse -inf).
__device__ __forceinline__ void FinishWarpgroupRows(const PrefillArgs& a, const CtaWork& w, int row0, int warp, int lane,
                                                    const float (&l_run)[2], const float (&m_run)[2], float (&inv)[2]) {
  const int G = a.group, Hq = a.num_kv_heads * G;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = l_run[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[h] = l > 0.f ? 1.f / l : 0.f;
    const int pr = w.m0 + row0 + 16 * warp + lane / 4 + 8 * h;
    if (a.lse != nullptr && lane % 4 == 0 && pr < w.rows_total) {
      const int64_t idx = static_cast<int64_t>(w.q0 + pr / G) * Hq + w.hk * G + pr % G;
      a.lse[idx] = l > 0.f ? (m_run[h] + __log2f(l)) * 0.6931471805599453f : -__int_as_float(0x7f800000);
    }
  }
}

// The warpgroup's 64 normalised rows, staged in sQ ([2][BM][64] bf16, 128-byte swizzle), to o in 16-byte chunks
// once the 128-thread named barrier `bar` says all 4 warps have staged theirs. wtid: the thread's index in the
// warpgroup.
template <int BM>
__device__ __forceinline__ void StoreWarpgroupRows(const PrefillArgs& a, const CtaWork& w, const __nv_bfloat16* sQ,
                                                   int row0, int bar, int wtid) {
  constexpr int D = 128, CPR = D / 8;
  const int G = a.group, Hq = a.num_kv_heads * G;
  asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");
  auto* o = static_cast<__nv_bfloat16*>(a.o);
#pragma unroll
  for (int i = 0; i < 64 * CPR / 128; ++i) {
    const int c = wtid + 128 * i, r = row0 + c / CPR, ch = c % CPR;
    const int pr = w.m0 + r;
    if (pr < w.rows_total) {
      const int64_t idx = (static_cast<int64_t>(w.q0 + pr / G) * Hq + w.hk * G + pr % G) * D + ch * 8;
      *reinterpret_cast<uint4*>(o + idx) = *reinterpret_cast<const uint4*>(sQ + SwizzleOffset128<BM>(r, ch));
    }
  }
}

}  // namespace fp::prefill
