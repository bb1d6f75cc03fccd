// engine/cuda_gemv.cu — bf16 GEMV for small decode batches: y[n, out] = x[n, in] . W[out, in]^T + beta * y, n
// <= 8.
//
// Why: at B = 1 the decode step is a stream of weight reads (15 GB for Llama-3-8B) and cuBLAS's bf16 GemmEx
// at n = 1 reached about half the copy bandwidth (bench/results/e2e-*). Here each warp owns R output rows and
// streams them with 16-byte loads (ld.global.cs: W is read once, x stays in L1/L2), kU chunks of 256 elements
// issued before any is used so enough bytes are in flight, fp32 FMAs, a butterfly per (row, token) at the
// end. The reduction order is fixed by (in, lane), so results are deterministic and independent of `out`.
// At n = 1 the q|k|v GEMV can also take its neighbours: the RMSNorm before it (each block normalizes the f32
// residual row into shared memory: 16 KiB of L2 reads next to the block's 64 KiB of weights) and RoPE + KV write
// after it (a block's 8 rows are 4 whole rotation pairs): two kernels fewer per layer on the critical path of a
// B = 1 step (CudaEngineOptions::fused_qkv has the measurements). Fused and separate paths share their arithmetic
// (cuda_row_ops.cuh), so the bits are the same.
// defines: GemvSupported, LaunchGemvBf16, LaunchGemvSwiGluBf16, GemvNormSupported, LaunchGemvNormRopeBf16
//          (declared in cuda_engine_kernels.h)
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "core/cuda_check.h"
#include "engine/cuda_engine_kernels.h"
#include "core/cuda_pdl.cuh"
#include "engine/cuda_row_ops.cuh"

namespace fp::cuda_engine {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float Dot8(const uint4& w, const uint4& x) {
  const auto* wp = reinterpret_cast<const __nv_bfloat162*>(&w);
  const auto* xp = reinterpret_cast<const __nv_bfloat162*>(&x);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(wp[i]), b = __bfloat1622float2(xp[i]);
    s = fmaf(a.x, b.x, s);
    s = fmaf(a.y, b.y, s);
  }
  return s;
}

// The GEMV's input rows: bf16 x [n, in] read from global memory, or (n = 1) the f32 residual row normalized by
// RMSNorm in the prologue, into shared memory (bit-identical to LaunchRmsNorm: RmsNormRowVec). Each block
// normalizes the row again, so this pays only where the grid is about one wave (the q|k|v matrix).
enum class GemvIn { kBf16, kNormF32 };
// What the block does with its 8 finished rows: store y (R rows per warp, NT tokens), or (NT = R = 1) SwiGLU of a
// GateUpRow tile (4 gate + 4 up rows -> 4 h values), or RoPE + KV write of 8 q|k|v rows (4 adjacent pairs).
enum class GemvOut { kStore, kSwiGlu, kRope };

struct GemvArgs {
  const __nv_bfloat16* w;  // [out, in]
  int out, in;
  const __nv_bfloat16* x;  // kBf16: [n, in]
  const float* xf;         // kNormF32: [in] f32 residual row
  const float* norm_w;     // kNormF32: [in]
  float eps;
  int n;
  float* y;                // kStore: [n, out]
  float beta;
  __nv_bfloat16* h;        // kSwiGlu: [out / 2]
  RopeWriteArgs rope;      // kRope (n = 1; rope.qkv unused: the rows come from the accumulators)
};

// NT: token slots (>= n), R: rows per warp, kU: 256-element chunks in flight per row and lane step, V: the norm's
// float4 per thread (kNormF32). Fusions remove a kernel (and its launch gap) from each layer at B = 1.
template <int NT, int R, int kU, GemvIn IN = GemvIn::kBf16, int V = 0, GemvOut OUT = GemvOut::kStore>
// (The min-blocks bound of 2 where the loads in flight fit 128 registers: without it ptxas 13.0 spills the NT = 8
// variant while far below the register limit.)
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kU * R > 8 ? 1 : 2) GemvKernel(const GemvArgs a) {
  static_assert(IN == GemvIn::kBf16 || NT == 1, "gemv: the fused norm takes one token");
  static_assert(OUT == GemvOut::kStore || (NT == 1 && R == 1), "gemv: tile epilogues take one token, one row a warp");
  extern __shared__ uint4 xs[];  // kNormF32: the normalized row, in / 8 chunks
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5)) * R;
  const int out = a.out, in = a.in;
  const uint4* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    wrow[r] =
        reinterpret_cast<const uint4*>(a.w + int64_t(min(row0 + r, out - 1)) * in);  // rows past out: unused
  }
  const int chunks = in / 8;  // 16-byte chunks per row
  uint4 wv[kU][R];
  auto load = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * 32;
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = c < chunks ? __ldcs(wrow[r] + c) : make_uint4(0, 0, 0, 0);
    }
  };
  load(lane);  // before the wait: weights never depend on the previous kernel (PDL)
  // kRope: the 4 epilogue threads fetch their pair's (cos, sin) and the token's slot row before the wait too, so no
  // dependent load sits between the reduction and the stores. Both are safe to read early: the slot rows are the
  // step's upload (copied before its first kernel) and the RoPE table comes from a kernel at least two launches
  // back (a PDL kernel's early part runs only once its predecessor has passed its own wait).
  float2 rope_cs = make_float2(0.f, 0.f);
  int64_t rope_slot = 0;
  if constexpr (OUT == GemvOut::kRope) {
    if (threadIdx.x < 4) {
      const int e = 8 * static_cast<int>(blockIdx.x) + 2 * static_cast<int>(threadIdx.x);
      rope_slot = a.rope.slot_rows[0];
      if (e < (a.rope.hq + a.rope.hkv) * a.rope.hd) rope_cs = a.rope.cs[(e % a.rope.hd) / 2];
    }
  }
  PdlWait();
  PdlLaunchDependents();
  if constexpr (IN == GemvIn::kNormF32) {
    static_assert(kWarpsPerBlock * 32 == kRowThreads, "gemv: the fused norm's reduction needs kRowThreads");
    __shared__ float red[32];
    RmsNormRowVec<V>(a.xf, a.norm_w, in, a.eps, reinterpret_cast<__nv_bfloat16*>(xs), red);
    __syncthreads();
  }
  if (row0 >= out) return;  // (kStore only: the tile epilogues' grids have no such warps)
  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
  }
  for (int c0 = lane; c0 < chunks; c0 += 32 * kU) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * 32;
      if (c >= chunks) continue;  // (not break: keeps the loop unrolled, wv in registers)
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t < a.n) {
          const uint4 xv =
              IN == GemvIn::kNormF32 ? xs[c] : __ldg(reinterpret_cast<const uint4*>(a.x + int64_t(t) * in) + c);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][t] += Dot8(wv[u][r], xv);
        }
      }
    }
    if (c0 + 32 * kU < chunks) load(c0 + 32 * kU);
  }
  if constexpr (OUT == GemvOut::kStore) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        float v = acc[r][t];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && t < a.n && row0 + r < out) {
          float* dst = a.y + int64_t(t) * out + row0 + r;
          *dst = a.beta == 0.f ? v : v + a.beta * *dst;
        }
      }
    }
  } else {
    __shared__ float tile[kWarpsPerBlock];  // the block's 8 rows, the same butterfly as kStore
    float v = acc[0][0];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) tile[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x >= 4) return;
    const int p = static_cast<int>(threadIdx.x);
    if constexpr (OUT == GemvOut::kSwiGlu) {  // the SwiGLU kernel's expression: bit-identical
      a.h[4 * int64_t(blockIdx.x) + p] = SwiGluBf16(tile[p], tile[p + 4]);
    } else {  // RopeWriteKernel's arithmetic on pair p of the tile's rows (q | k | v; heads are whole tiles)
      RopeWritePair(a.rope, rope_slot, 0, 8 * static_cast<int>(blockIdx.x) + 2 * p, tile[2 * p], tile[2 * p + 1],
                    rope_cs);
    }
  }
}

template <int NT, int R, int kU, GemvIn IN = GemvIn::kBf16, int V = 0, GemvOut OUT = GemvOut::kStore>
Status Launch(const GemvArgs& a, unsigned blocks, cudaStream_t stream, bool pdl) {
  const size_t smem = IN == GemvIn::kNormF32 ? static_cast<size_t>(a.in) * 2 : 0;
  FP_CUDA_RETURN_IF_ERROR(LaunchKernel(pdl, GemvKernel<NT, R, kU, IN, V, OUT>, dim3(blocks),
                                       dim3(kWarpsPerBlock * 32), smem, stream, a));
  return Status::Ok();
}

unsigned StoreBlocks(int out, int rows_per_warp) {
  const int rows = kWarpsPerBlock * rows_per_warp;
  return static_cast<unsigned>((out + rows - 1) / rows);
}

// The fused norm's float4 per thread (RmsNormRowVec's V) for a row of `in` floats, 0 where unsupported.
int NormVec(int in) {
  const int per = (in / 4 + kRowThreads - 1) / kRowThreads;
  return per <= 1 ? 1 : per <= 2 ? 2 : per <= 4 ? 4 : per <= 8 ? 8 : 0;
}

Status LaunchNormRope(const GemvArgs& a, unsigned blocks, cudaStream_t stream, bool pdl) {
  constexpr GemvIn kIn = GemvIn::kNormF32;
  switch (NormVec(a.in)) {
    case 1: return Launch<1, 1, 4, kIn, 1, GemvOut::kRope>(a, blocks, stream, pdl);
    case 2: return Launch<1, 1, 4, kIn, 2, GemvOut::kRope>(a, blocks, stream, pdl);
    case 4: return Launch<1, 1, 4, kIn, 4, GemvOut::kRope>(a, blocks, stream, pdl);
    default: return Launch<1, 1, 4, kIn, 8, GemvOut::kRope>(a, blocks, stream, pdl);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool GemvSupported(int out, int in, const void* w, const void* x, int n) {
  return n >= 1 && n <= kGemvMaxRows && out > 0 && in > 0 && in % 8 == 0 && Aligned16(w) && Aligned16(x);
}

bool GemvNormSupported(int in, const GemvNorm& norm) {
  return in > 0 && in % 8 == 0 && NormVec(in) != 0 && norm.x != nullptr && norm.w != nullptr &&
         Aligned16(norm.x) && Aligned16(norm.w);
}

Status LaunchGemvBf16(const __nv_bfloat16* w, int out, int in, const __nv_bfloat16* x, int n, float* y,
                      float beta, cudaStream_t stream, bool pdl, int depth) {
  if (!GemvSupported(out, in, w, x, n) || (depth != 0 && depth != 4 && depth != 8 && depth != 16)) {
    return InvalidArgument("gemv: unsupported shape (n " + std::to_string(n) + ", in " + std::to_string(in) +
                           "), depth " + std::to_string(depth) + " or unaligned operands");
  }
  GemvArgs a{};
  a.w = w, a.out = out, a.in = in, a.x = x, a.n = n, a.y = y, a.beta = beta;
  // Depth 4 is the measured choice for every Llama-3-8B matrix and n (bench_gemm on an H200: d8 and d16 were
  // slower, up to 2x at n >= 2: more registers, fewer resident warps).
  if (depth == 0) depth = 4;
  auto launch = [&]<int NT, int R>() {
    const unsigned blocks = StoreBlocks(out, R);
    if (depth == 16) return Launch<NT, R, 16>(a, blocks, stream, pdl);
    if (depth == 8) return Launch<NT, R, 8>(a, blocks, stream, pdl);
    return Launch<NT, R, 4>(a, blocks, stream, pdl);
  };
  // Two rows per warp once several tokens share each weight load (halves the x traffic through L1).
  if (n == 1) return launch.template operator()<1, 1>();
  if (n == 2) return launch.template operator()<2, 1>();
  if (n <= 4) return launch.template operator()<4, 2>();
  return launch.template operator()<8, 2>();
}

// kWarpsPerBlock = 8 rows per block: one GateUpRow tile, or four RoPE pairs.
static_assert(kWarpsPerBlock == 8, "gemv: a tile epilogue's block must cover 8 rows");

Status LaunchGemvSwiGluBf16(const __nv_bfloat16* w_gate_up, int ff, int in, const __nv_bfloat16* x,
                            __nv_bfloat16* h, cudaStream_t stream, bool pdl) {
  if (ff <= 0 || ff % 4 != 0 || h == nullptr || !GemvSupported(2 * ff, in, w_gate_up, x, 1)) {
    return InvalidArgument("gemv swiglu: unsupported shape (ff " + std::to_string(ff) + ", in " +
                           std::to_string(in) + ": ff a multiple of 4, in of 8) or unaligned operands");
  }
  GemvArgs a{};
  a.w = w_gate_up, a.out = 2 * ff, a.in = in, a.x = x, a.n = 1, a.h = h;
  return Launch<1, 1, 4, GemvIn::kBf16, 0, GemvOut::kSwiGlu>(a, static_cast<unsigned>(ff / 4), stream, pdl);
}

Status LaunchGemvNormRopeBf16(const __nv_bfloat16* w_qkv, int in, const GemvNorm& norm, const RopeWriteArgs& rope,
                              cudaStream_t stream, bool pdl) {
  const int out = (rope.hq + 2 * rope.hkv) * rope.hd;
  if (rope.n != 1 || rope.hd <= 0 || rope.hd % 8 != 0 || rope.hq <= 0 || rope.hkv <= 0 ||
      rope.k_cap != nullptr || rope.v_cap != nullptr || !Aligned16(w_qkv) || !GemvNormSupported(in, norm)) {
    return InvalidArgument("gemv norm rope: unsupported shape (one token, head_dim " + std::to_string(rope.hd) +
                           " a multiple of 8, in " + std::to_string(in) +
                           " a multiple of 8, at most 8192, no anchor capture) or unaligned operands");
  }
  GemvArgs a{};
  a.w = w_qkv, a.out = out, a.in = in, a.xf = norm.x, a.norm_w = norm.w, a.eps = norm.eps, a.n = 1;
  a.rope = rope;
  return LaunchNormRope(a, static_cast<unsigned>(out / 8), stream, pdl);
}

}  // namespace fp::cuda_engine
