// attention_prefill.cu — host side of the CUDA prefill kernel: checks everything on the host copies of the batch
// before any launch (a bad request is a Status, never a fault), sizes the grid from the host copies, picks the
// kernel (mma.sync: dtype x head_dim x tile rows, attention_prefill_kernel.cuh; or the sm_90a wgmma kernels,
// attention_prefill_hopper.cuh, or the warp-specialized one, attention_prefill_hopper_ws.cuh) and launches.
// defines: AttentionPrefillCuda, AttentionPrefillCudaConfig
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attention/attention_prefill_hopper.cuh"
#include "attention/attention_prefill_hopper_ws.cuh"
#include "attention/attention_prefill_kernel.cuh"
#include "attention/attention_prefill_launch.cuh"
#include "core/cuda_device.h"
#include "fieldprint/attention.h"

namespace fp {
namespace {

bool Aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// kernel<<<grid, threads, smem>>>(args) with the opt-in above 48 KiB of dynamic shared memory, once per kernel
// (thread-safe static init in each caller's instantiation).
template <typename Kernel>
Status LaunchWithSmem(Kernel kernel, cudaError_t attr_err, const prefill::PrefillArgs& args, dim3 grid, int threads,
                      size_t smem, cudaStream_t stream) {
  if (attr_err != cudaSuccess) {
    return Internal(std::string("prefill: cudaFuncSetAttribute failed: ") + cudaGetErrorString(attr_err));
  }
  kernel<<<grid, threads, smem, stream>>>(args);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return Internal(std::string("prefill: launch failed: ") + cudaGetErrorString(err));
  return Status::Ok();
}

template <typename Tile, typename Kernel>
cudaError_t AllowSmem(Kernel kernel) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Tile::kSmemBytes));
}

template <typename T, int D, int W, int MT, int BN>
Status Launch(const prefill::PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  using Tile = prefill::PrefillTile<D, W, MT, BN>;
  auto* kernel = prefill::PrefillKernel<T, D, W, MT, BN>;
  static const cudaError_t attr_err = AllowSmem<Tile>(kernel);
  return LaunchWithSmem(kernel, attr_err, args, grid, Tile::kThreads, Tile::kSmemBytes, stream);
}

template <typename T>
Status Dispatch(int d, int warps, const prefill::PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  // warps = 8: 8 x 16 rows, Q in registers (BM 128). warps = 4: 4 x 32 rows at d = 64 (BM 128); at d = 128,
  // 32 rows per warp spilled (255 registers, even with BN = 32 on sm_90a), so 4 x 16 rows (BM 64) there.
  if (d == 64) {
    return warps == 8 ? Launch<T, 64, 8, 1, 64>(args, grid, stream) : Launch<T, 64, 4, 2, 64>(args, grid, stream);
  }
  return warps == 8 ? Launch<T, 128, 8, 1, 64>(args, grid, stream) : Launch<T, 128, 4, 1, 64>(args, grid, stream);
}

template <int BN, int STAGES, bool PP>
Status LaunchHopper(const prefill::PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  using Tile = prefill::PrefillHopperTile<BN, STAGES>;
  auto* kernel = prefill::PrefillHopperKernel<BN, STAGES, PP>;
  static const cudaError_t attr_err = AllowSmem<Tile>(kernel);
  return LaunchWithSmem(kernel, attr_err, args, grid, Tile::kThreads, Tile::kSmemBytes, stream);
}

template <int STAGES>
Status LaunchHopperWs(const prefill::PrefillArgs& args, dim3 grid, cudaStream_t stream) {
  using Tile = prefill::PrefillHopperWsTile<STAGES>;
  auto* kernel = prefill::PrefillHopperWsKernel<STAGES>;
  static const cudaError_t attr_err = AllowSmem<Tile>(kernel);
  return LaunchWithSmem(kernel, attr_err, args, grid, Tile::kThreads, Tile::kSmemBytes, stream);
}

// The Hopper kernel runs only where its sm_90a code exists (the real kernel holds 128 fp32 accumulators a thread).
bool HopperAvailable() { return Sm90aKernelRuns<prefill::PrefillHopperKernel<128, 2, true>>(128); }

// kAuto's choice: kPrefillHopperByDefault unless FP_PREFILL_WGMMA is "0" (off) or "1" (on).
bool HopperOptIn() {
  const char* env = std::getenv("FP_PREFILL_WGMMA");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  if (env != nullptr && std::strcmp(env, "1") == 0) return true;
  return kPrefillHopperByDefault;
}

}  // namespace

Status AttentionPrefillCudaConfig(const AttentionParams& p, const AttentionBatch& hb, cudaStream_t stream,
                                  PrefillConfig cfg) {
  FP_RETURN_IF_ERROR(ValidateAttention(p, hb));
  if (p.q.device != Device::kCuda) {
    return InvalidArgument("prefill: tensors must be on the CUDA device, got q " + p.q.ShapeString());
  }
  if (p.q.dtype != DType::kBF16 && p.q.dtype != DType::kF16) {
    return Unimplemented(std::string("prefill: dtype ") + DTypeName(p.q.dtype) + " (CUDA prefill takes bf16 or f16)");
  }
  const int64_t d = p.head_dim();
  if (d != 64 && d != 128) {
    return Unimplemented("prefill: head_dim " + std::to_string(d) + " (CUDA prefill is built for 64 and 128)");
  }
  // Measured on an H200 (docs/kernel-spec.md, Prefill): d = 128: 8 x 16 rows beat 4 x 16 by 14%; d = 64:
  // 4 x 32 rows beat 8 x 16 by 22%. bf16 d = 128 on sm_90a: the wgmma kernel (BN 128, 2 stages, ping-pong) beat
  // the best mma.sync shape by 27-33%; on an H100 the warp-specialized one (kPrefillHopperPipeline) ran at 27-51%
  // more TFLOP/s than that CTA-barrier wgmma kernel.
  if (cfg.warps == 0) cfg.warps = d == 64 ? 4 : 8;
  if (cfg.warps != 4 && cfg.warps != 8) {
    return InvalidArgument("prefill: warps = " + std::to_string(cfg.warps) + " (4 or 8)");
  }
  if (cfg.block_n == 0) cfg.block_n = 128;
  if (cfg.block_n != 64 && cfg.block_n != 128) {
    return InvalidArgument("prefill: block_n = " + std::to_string(cfg.block_n) + " (64 or 128)");
  }
  if (cfg.stages == 0) cfg.stages = 2;
  if (cfg.stages != 2 && cfg.stages != 3) {
    return InvalidArgument("prefill: stages = " + std::to_string(cfg.stages) + " (2 or 3)");
  }
  const bool hopper_shape = p.q.dtype == DType::kBF16 && d == 128;
  bool hopper = false;
  if (cfg.path == PrefillPath::kHopper) {
    if (!hopper_shape) return Unimplemented("prefill: the Hopper kernel takes bf16 with head_dim 128");
    if (!HopperAvailable()) return Unimplemented("prefill: the Hopper kernel needs an sm_90a build on a 9.0 device");
    hopper = true;
  } else if (cfg.path == PrefillPath::kAuto) {
    hopper = hopper_shape && HopperOptIn() && HopperAvailable();
  } else if (cfg.path != PrefillPath::kMmaSync) {
    return InvalidArgument("prefill: unknown kernel path");
  }
  const int64_t T = p.num_tokens(), Hkv = p.num_kv_heads(), G = p.group_size(), A = p.anchor_len();
  if (T == 0) return Status::Ok();
  // 16-byte copies need 16-byte aligned bases (rows are d * 2 bytes, a multiple of 16, so every row is too).
  const void* ptrs[] = {p.q.data, p.o.data, p.k_pool.data, p.v_pool.data, A > 0 ? p.anchor_k.data : nullptr,
                        A > 0 ? p.anchor_v.data : nullptr};
  for (const void* ptr : ptrs) {
    if (!Aligned16(ptr)) return InvalidArgument("prefill: tensor data must be 16-byte aligned");
  }
  if (p.page_size() > (int64_t{1} << 30) || p.num_blocks() * p.page_size() * Hkv * d > (int64_t{1} << 62)) {
    return InvalidArgument("prefill: pool too large for the kernel's index arithmetic");
  }

  // Grid: x = (sequence, kv head), y = query tile of BM packed rows (token x group head), largest first.
  const int64_t bm = (!hopper && d == 128 && cfg.warps == 4) ? 64 : 128;  // must match Dispatch
  int64_t max_tiles = 0;
  for (int32_t s = 0; s < hb.num_seqs; ++s) {
    const int64_t rows = int64_t{hb.q_indptr[s + 1] - hb.q_indptr[s]} * G;
    if (rows > INT32_MAX) return InvalidArgument("prefill: sequence " + std::to_string(s) + " has too many query rows");
    max_tiles = std::max(max_tiles, (rows + bm - 1) / bm);
  }
  if (max_tiles == 0) return Status::Ok();
  if (max_tiles > 65535 || int64_t{hb.num_seqs} * Hkv > INT32_MAX) {
    return InvalidArgument("prefill: launch too large (" + std::to_string(max_tiles) + " query tiles per sequence)");
  }

  prefill::PrefillArgs args{};
  args.q = p.q.data;
  args.k_pool = p.k_pool.data;
  args.v_pool = p.v_pool.data;
  args.anchor_k = A > 0 ? p.anchor_k.data : nullptr;
  args.anchor_v = A > 0 ? p.anchor_v.data : nullptr;
  args.o = p.o.data;
  args.lse = p.lse;
  args.gamma = p.gamma;
  args.q_indptr = p.batch.q_indptr;
  args.kv_lens = p.batch.kv_lens;
  args.block_table = p.batch.block_table;
  args.max_blocks_per_seq = p.batch.max_blocks_per_seq;
  args.num_kv_heads = static_cast<int32_t>(Hkv);
  args.group = static_cast<int32_t>(G);
  args.page_size = static_cast<int32_t>(p.page_size());
  args.page_shift = -1;
  for (int sh = 0; sh < 31; ++sh) {
    if ((int64_t{1} << sh) == p.page_size()) args.page_shift = sh;
  }
  args.anchor_len = static_cast<int32_t>(A);
  args.scale_log2 = p.scale * 1.4426950408889634f;
  args.causal = p.causal;
  args.work_x = static_cast<int32_t>(hb.num_seqs * Hkv);
  args.work_y = static_cast<int32_t>(max_tiles);

  const dim3 grid(static_cast<unsigned>(hb.num_seqs * Hkv), static_cast<unsigned>(max_tiles));
  if (hopper) {
    // The variants built (bench_prefill times each; docs/kernel-spec.md, Prefill, has the numbers).
    const int bn = cfg.block_n, st = cfg.stages;
    const bool pp = cfg.pingpong;
    const HopperPipeline pipe = cfg.pipeline == HopperPipeline::kDefault ? kPrefillHopperPipeline : cfg.pipeline;
    if (pipe == HopperPipeline::kWarpSpecialized) {
      // One CTA per SM walking the work items (the next item's Q and first K/V tiles load under this one's
      // epilogue), cfg.ctas of them, or one CTA per item (-1).
      const int64_t items = int64_t{args.work_x} * args.work_y;
      if (items > INT32_MAX) {
        return InvalidArgument("prefill: launch too large (" + std::to_string(items) + " work items)");
      }
      const int sms = CurrentDeviceSms();  // the persistent kernel's grid; 0 when unknown
      const int64_t walkers = cfg.ctas > 0 ? cfg.ctas : cfg.ctas == 0 && sms > 0 ? sms : items;
      const int64_t ctas = std::min<int64_t>(items, walkers);
      if (bn == 128 && st == 2) return LaunchHopperWs<2>(args, dim3(static_cast<unsigned>(ctas)), stream);
      return InvalidArgument("prefill: warp-specialized Hopper variant block_n " + std::to_string(bn) + ", stages " +
                             std::to_string(st) + " is not built (block_n 128, 2 stages)");
    }
    if (pipe != HopperPipeline::kCtaBarrier) return InvalidArgument("prefill: unknown Hopper pipeline");
    if (bn == 128 && st == 2 && pp) return LaunchHopper<128, 2, true>(args, grid, stream);
    if (bn == 128 && st == 2 && !pp) return LaunchHopper<128, 2, false>(args, grid, stream);
    if (bn == 128 && st == 3 && pp) return LaunchHopper<128, 3, true>(args, grid, stream);
    if (bn == 64 && st == 3 && pp) return LaunchHopper<64, 3, true>(args, grid, stream);
    if (bn == 64 && st == 2 && pp) return LaunchHopper<64, 2, true>(args, grid, stream);
    return InvalidArgument("prefill: Hopper variant block_n " + std::to_string(bn) + ", stages " +
                           std::to_string(st) + (pp ? ", ping-pong" : "") + " is not built");
  }
  if (p.q.dtype == DType::kBF16) return Dispatch<__nv_bfloat16>(static_cast<int>(d), cfg.warps, args, grid, stream);
  return Dispatch<__half>(static_cast<int>(d), cfg.warps, args, grid, stream);
}

Status AttentionPrefillCuda(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream) {
  return AttentionPrefillCudaConfig(p, host_batch, stream, PrefillConfig{});
}

}  // namespace fp
