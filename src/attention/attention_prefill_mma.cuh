// attention_prefill_mma.cuh — warp-level building blocks of the prefill kernel (sm_80+): cp.async 16-byte
// copies, ldmatrix from an XOR-swizzled tile, mma.sync m16n8k16 with fp32 accumulators, fragment packing.
//
// Shared-memory tiles are row-major [rows, D] of 16-bit elements, stored in 16-byte chunks whose chunk index is
// XORed with (row & 7): the 8 row addresses of one ldmatrix phase and the 8 chunks a warp writes with cp.async
// then fall in 8 different 16-byte bank groups, so neither side has bank conflicts (no padding needed).
// defines: CpAsync16, CpAsyncCommit, CpAsyncWait, SwizzleOffset, Ldmatrix4, Ldmatrix4Trans, Mma16816,
//          PackFloat2, MmaTraits, PackPFragment
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fp::prefill {

// 16-byte async global->shared copy; src_bytes == 0 zero-fills the destination without reading src.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Element offset of (row, chunk) in a swizzled [rows, D] tile (chunk = 8 elements = 16 bytes).
template <int D>
__device__ __forceinline__ int SwizzleOffset(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ void Ldmatrix4(uint32_t (&r)[4], const void* smem) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void Ldmatrix4Trans(uint32_t (&r)[4], const void* smem) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <typename T>
struct MmaTraits;

template <>
struct MmaTraits<__nv_bfloat16> {
  // c += a * b, A 16x16 row-major, B 16x8 column-major, fp32 accumulate.
  __device__ __forceinline__ static void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t Pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

template <>
struct MmaTraits<__half> {
  __device__ __forceinline__ static void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t Pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

// P's A fragment for 16 keys from the fp32 C fragments of their two n8 key tiles: two adjacent m16n8 C
// fragments are exactly one m16n8k16 A fragment, so P never leaves registers.
template <typename T>
__device__ __forceinline__ void PackPFragment(const float (&lo)[4], const float (&hi)[4], uint32_t (&p)[4]) {
  p[0] = MmaTraits<T>::Pack(lo[0], lo[1]);
  p[1] = MmaTraits<T>::Pack(lo[2], lo[3]);
  p[2] = MmaTraits<T>::Pack(hi[0], hi[1]);
  p[3] = MmaTraits<T>::Pack(hi[2], hi[3]);
}

}  // namespace fp::prefill
