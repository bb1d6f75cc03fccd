// attention_decode.cu — plan/run for the CUDA decode path (few query rows per sequence).
//
// Plan (host): validate with ValidateAttention on the host copies of the batch arrays, then cut each sequence
// into work items (sequence, kv head, split, block of <= 16 query rows). Splits have a FIXED size in paged
// tokens, so a sequence's items depend only on its own (kv_len, n_q) and the anchor length, and one kernel serves
// every row count: its result is bit-identical whatever batch it is in. Items (longest first), the merge list and
// the fused-merge counters go into one workspace. Run: re-checks that the tensors match the plan, launches the
// decode kernel (which merges a split sequence's partials itself) or, with fused_merge off, the decode kernel and
// the merge kernel (attention_merge.cu). Graph mode (max_kv_len > 0) cuts the items
// for a fixed capacity and lets the kernel read the lengths from the device; Update() validates each new batch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attention/attention_decode_internal.h"
#include "core/cuda_check.h"
#include "fieldprint/attention.h"
#include "fieldprint/attention_cuda.h"

namespace fp {

using decode::MergeItem;
using decode::WorkItem;

namespace {

size_t AlignUp(size_t x) { return (x + 255) & ~size_t{255}; }
bool Aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// One kernel serves every row count (rows are padded to the mma's 16), so every sequence runs the same code
// whatever batch it is in. The class is kept in the items for a future small-group variant.
int RowsClass(int /*rows*/) { return decode::kMaxRows; }

// Everything Run() must find unchanged (the work items were cut for it).
struct Signature {
  int64_t T, Hq, Hkv, d, A, P, NB;
  DType dtype;
  int32_t num_seqs, max_blocks;
  bool causal;
  bool operator==(const Signature&) const = default;
};

std::string Describe(const Signature& s) {
  return "tokens " + std::to_string(s.T) + ", heads " + std::to_string(s.Hq) + "/" + std::to_string(s.Hkv) +
         ", head_dim " + std::to_string(s.d) + ", anchor " + std::to_string(s.A) + ", page " + std::to_string(s.P) +
         ", blocks " + std::to_string(s.NB) + ", seqs " + std::to_string(s.num_seqs) + ", table stride " +
         std::to_string(s.max_blocks) + (s.causal ? ", causal" : "");
}

Signature SignatureOf(const AttentionParams& p) {
  return {p.num_tokens(), p.num_q_heads(), p.num_kv_heads(), p.head_dim(), p.anchor_len(), p.page_size(),
          p.num_blocks(), p.q.dtype,       p.batch.num_seqs, p.batch.max_blocks_per_seq, p.causal};
}

// Device-side preconditions ValidateAttention leaves to the backend.
Status CheckDeviceParams(const AttentionParams& p) {
  auto on_device = [](const char* name, const TensorView& t) -> Status {
    if (t.numel() > 0 && t.device != Device::kCuda) {
      return InvalidArgument(std::string("decode: ") + name + " must be on the CUDA device, got " + t.ShapeString());
    }
    if (t.numel() > 0 && !Aligned16(t.data)) {
      return InvalidArgument(std::string("decode: ") + name + " must be 16-byte aligned (16-byte vector loads)");
    }
    return Status::Ok();
  };
  FP_RETURN_IF_ERROR(on_device("q", p.q));
  FP_RETURN_IF_ERROR(on_device("o", p.o));
  FP_RETURN_IF_ERROR(on_device("k_pool", p.k_pool));
  FP_RETURN_IF_ERROR(on_device("v_pool", p.v_pool));
  if (p.anchor_len() > 0) {
    FP_RETURN_IF_ERROR(on_device("anchor_k", p.anchor_k));
    FP_RETURN_IF_ERROR(on_device("anchor_v", p.anchor_v));
  }
  if (p.q.dtype != DType::kBF16 && p.q.dtype != DType::kF16) {
    return Unimplemented(std::string("decode: dtype ") + DTypeName(p.q.dtype) + " (bf16 and f16 only)");
  }
  if (p.head_dim() != 64 && p.head_dim() != 128) {
    return Unimplemented("decode: head_dim " + std::to_string(p.head_dim()) + " (64 and 128 only)");
  }
  if (p.num_tokens() > 0 && p.batch.num_seqs > 0 && p.batch.max_blocks_per_seq > 0 && p.batch.block_table == nullptr) {
    return InvalidArgument("decode: batch.block_table is null");
  }
  return Status::Ok();
}

}  // namespace

// Measured on an H200 (bench_decode --sweep, docs/kernel-spec.md "v4"); the same for every batch, so results stay
// batch-invariant. A change here changes result bits (a deployment constant, like a GEMM configuration).
// d=128 (Llama-3 shapes, G=4): 4 warps, split 8192 — 94/92/96/82% of copy bandwidth on B64/B8/B256/B1 rows;
// 8 warps won the two long rows (94%, 85%) but lost 3-6 points on B64/B256. d=64 (SmolLM2, G=3): 8 warps, 4096.
// The anchor rides in the first split: its own splits lost everywhere (up to -14 points on B256).
DecodeConfig DefaultDecodeConfig(int head_dim, int group) {
  (void)group;  // measured at one group per head_dim so far
  if (head_dim == 64) return {4096, 8, AnchorSplit::kRide};
  return {8192, 4, AnchorSplit::kRide};
}

struct AttentionDecodePlan::Impl {
  Signature sig{};
  int split_tokens = 0, warps = 4;
  bool pdl = false;
  std::vector<int32_t> q_indptr;  // [num_seqs + 1] the planned query offsets
  std::vector<int32_t> cap_lens;  // [num_seqs] the planned lengths (max_kv_len in graph mode)
  struct Range {
    int rows_class, first, count;
  };
  std::vector<WorkItem> items;  // host copy, grouped by rows class (kept alive for the async upload)
  std::vector<MergeItem> merges;
  std::vector<Range> ranges;
  int64_t partial_rows = 0;
  int max_splits = 0;
  DeviceBuffer ws;
  WorkItem* d_items = nullptr;    // [items]
  MergeItem* d_merges = nullptr;  // [merges]
  float* d_partial_o = nullptr;   // [partial_rows, Hq, d]
  float* d_partial_lse = nullptr; // [partial_rows, Hq]
  uint32_t* d_merge_counters = nullptr;  // [merge_slots] fused-merge arrivals, zeroed once here
  int32_t merge_slots = 0;
  uint32_t p_magic = 0, p_shift = 0;
};

AttentionDecodePlan::AttentionDecodePlan(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AttentionDecodePlan::AttentionDecodePlan(AttentionDecodePlan&&) noexcept = default;
AttentionDecodePlan& AttentionDecodePlan::operator=(AttentionDecodePlan&&) noexcept = default;
AttentionDecodePlan::~AttentionDecodePlan() = default;

int AttentionDecodePlan::num_work_items() const { return static_cast<int>(impl_->items.size()); }
int AttentionDecodePlan::max_splits() const { return impl_->max_splits; }
int AttentionDecodePlan::split_tokens() const { return impl_->split_tokens; }
int AttentionDecodePlan::warps() const { return impl_->warps; }
size_t AttentionDecodePlan::workspace_bytes() const { return impl_->ws.bytes(); }

Result<AttentionDecodePlan> AttentionDecodePlan::Create(const AttentionParams& p, const AttentionBatch& hb,
                                                        const DecodeOptions& options, cudaStream_t stream) {
  FP_RETURN_IF_ERROR(ValidateAttention(p, hb));
  FP_RETURN_IF_ERROR(CheckDeviceParams(p));
  const int64_t A = p.anchor_len(), P = p.page_size(), G = p.group_size();
  const DecodeConfig def = DefaultDecodeConfig(static_cast<int>(p.head_dim()), static_cast<int>(G));
  const int split = options.split_tokens == 0 ? def.split_tokens : options.split_tokens;
  if (split < 64) {
    return InvalidArgument("decode: split_tokens = " + std::to_string(options.split_tokens) + " must be >= 64");
  }
  if (options.warps != 0 && options.warps != 4 && options.warps != 8) {
    return InvalidArgument("decode: warps = " + std::to_string(options.warps) + " (4, 8 or 0 for the default)");
  }
  const AnchorSplit anchor_mode = options.anchor_split == AnchorSplit::kAuto ? def.anchor_split : options.anchor_split;
  int warps = options.warps == 0 ? def.warps : options.warps;
  {  // 8 warps need up to 192 KiB of shared memory (sm_90); the default falls back to 4 where it does not fit.
    int dev = 0, optin = 0;
    FP_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
    FP_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (decode::DecodeSmemBytes(static_cast<int>(p.head_dim()), warps) > optin) {
      if (options.warps != 0) {
        return Unimplemented("decode: " + std::to_string(warps) + " warps need " +
                             std::to_string(decode::DecodeSmemBytes(static_cast<int>(p.head_dim()), warps)) +
                             " bytes of shared memory, the device allows " + std::to_string(optin));
      }
      warps = 4;
    }
  }
  if (options.max_kv_len < 0 || int64_t{options.max_kv_len} > int64_t{hb.max_blocks_per_seq} * P) {
    return InvalidArgument("decode: max_kv_len = " + std::to_string(options.max_kv_len) +
                           " must be in [0, max_blocks_per_seq * page_size]");
  }
  if (A > INT32_MAX / 2) return InvalidArgument("decode: anchor_len " + std::to_string(A) + " too large");
  if (p.num_blocks() * P > INT32_MAX) {
    return Unimplemented("decode: pool rows num_blocks * page_size = " + std::to_string(p.num_blocks() * P) +
                         " exceed int32 (pool row indices are 32-bit in the kernel)");
  }
  for (int32_t s = 0; s < hb.num_seqs; ++s) {
    if (int64_t{hb.kv_lens[s]} + A > INT32_MAX / 2 || int64_t{options.max_kv_len} + A > INT32_MAX / 2) {
      return InvalidArgument("decode: kv_lens[" + std::to_string(s) + "] + anchor_len exceeds the int32 index range");
    }
    if (options.max_kv_len > 0 && hb.kv_lens[s] > options.max_kv_len) {
      return InvalidArgument("decode: kv_lens[" + std::to_string(s) + "] = " + std::to_string(hb.kv_lens[s]) +
                             " exceeds max_kv_len " + std::to_string(options.max_kv_len));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->sig = SignatureOf(p);
  impl->split_tokens = split;
  impl->warps = warps;
  if (options.pdl) {
    int dev = 0, major = 0;
    FP_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
    FP_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major < 9) return InvalidArgument("decode: pdl needs compute capability >= 9.0");
  }
  impl->pdl = options.pdl;
  if (hb.q_indptr != nullptr) impl->q_indptr.assign(hb.q_indptr, hb.q_indptr + hb.num_seqs + 1);
  {  // pos / P by multiply-shift (Granlund-Montgomery), exact for pos < 2^31
    uint32_t l = 0;
    while ((int64_t{1} << l) < P) ++l;
    impl->p_shift = l;
    impl->p_magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << l) - uint64_t(P))) / uint64_t(P) + 1);
  }

  // ---- cut sequences into splits and items ----
  // The cut depends only on (the planned length, n_q, A, split, anchor mode): never on the rest of the batch.
  const int64_t S = split;
  std::vector<WorkItem> all;
  for (int32_t s = 0; s < hb.num_seqs; ++s) {
    const int32_t q0 = hb.q_indptr[s], nq = hb.q_indptr[s + 1] - q0;
    const int32_t L = options.max_kv_len > 0 ? options.max_kv_len : hb.kv_lens[s];
    impl->cap_lens.push_back(L);
    if (nq == 0) continue;
    std::vector<std::pair<int32_t, int32_t>> splits;  // combined-index ranges
    for (int64_t b = 0; b < L; b += S) {
      splits.emplace_back(static_cast<int32_t>(A + b), static_cast<int32_t>(A + std::min<int64_t>(b + S, L)));
    }
    if (A > 0) {
      if (anchor_mode == AnchorSplit::kOwn) {
        std::vector<std::pair<int32_t, int32_t>> anchor;
        for (int64_t b = 0; b < A; b += S) {
          anchor.emplace_back(static_cast<int32_t>(b), static_cast<int32_t>(std::min<int64_t>(b + S, A)));
        }
        splits.insert(splits.begin(), anchor.begin(), anchor.end());
      } else if (A > S / 2 || splits.empty()) {
        splits.insert(splits.begin(), {0, static_cast<int32_t>(A)});
      } else {
        splits.front().first = 0;
      }
    }
    if (splits.empty()) splits.emplace_back(0, 0);  // nothing visible: the kernel writes o = 0, lse = -inf
    const int ns = static_cast<int>(splits.size());
    impl->max_splits = std::max(impl->max_splits, ns);
    int64_t base = -1;
    if (ns > 1) {
      base = impl->partial_rows;
      impl->partial_rows += int64_t{ns} * nq;
      if (impl->partial_rows > INT32_MAX / 2) return ResourceExhausted("decode: too many split partials");
      for (int32_t j = 0; j < nq && !options.fused_merge; ++j) {
        impl->merges.push_back({q0 + j, static_cast<int32_t>(base + j), nq, ns});
      }
    }
    const int64_t rows = G * nq;
    for (int64_t r0 = 0; r0 < rows; r0 += decode::kMaxRows) {
      for (int64_t h = 0; h < p.num_kv_heads(); ++h) {
        // One fused-merge slot per (sequence, kv head, row block) of a split sequence.
        const int32_t slot = ns > 1 && options.fused_merge ? impl->merge_slots++ : -1;
        for (int k = 0; k < ns; ++k) {
          WorkItem w{};
          w.seq = s;
          w.kv_head = static_cast<int32_t>(h);
          w.q_start = q0;
          w.n_q = nq;
          w.row0 = static_cast<int32_t>(r0);
          w.begin = splits[static_cast<size_t>(k)].first;
          w.end = splits[static_cast<size_t>(k)].second;
          w.kv_len = L;  // the kernel clamps the device length to this
          w.partial_base = ns > 1 ? static_cast<int32_t>(base + int64_t{k} * nq) : -1;
          w.rows_class = RowsClass(static_cast<int>(std::min<int64_t>(decode::kMaxRows, rows - r0)));
          w.merge_slot = slot;
          w.merge_base = static_cast<int32_t>(base);
          w.num_splits = ns;
          all.push_back(w);
        }
      }
    }
  }
  // Group by rows class; inside a class, longest items first (fewer stragglers). Order never changes results:
  // every item computes its own outputs.
  std::stable_sort(all.begin(), all.end(), [](const WorkItem& x, const WorkItem& y) {
    if (x.rows_class != y.rows_class) return x.rows_class < y.rows_class;
    return (x.end - x.begin) > (y.end - y.begin);
  });
  for (size_t i = 0; i < all.size(); ++i) {
    if (impl->ranges.empty() || impl->ranges.back().rows_class != all[i].rows_class) {
      impl->ranges.push_back({all[i].rows_class, static_cast<int>(i), 0});
    }
    ++impl->ranges.back().count;
  }
  impl->items = std::move(all);

  // ---- workspace: [items | merges | partial_o | partial_lse | merge counters] ----
  const size_t items_b = AlignUp(impl->items.size() * sizeof(WorkItem));
  const size_t merges_b = AlignUp(impl->merges.size() * sizeof(MergeItem));
  const size_t po_b = AlignUp(static_cast<size_t>(impl->partial_rows * p.num_q_heads() * p.head_dim()) * 4);
  const size_t pl_b = AlignUp(static_cast<size_t>(impl->partial_rows * p.num_q_heads()) * 4);
  const size_t mc_b = AlignUp(static_cast<size_t>(impl->merge_slots) * 4);
  auto ws = DeviceBuffer::Allocate(items_b + merges_b + po_b + pl_b + mc_b);
  if (!ws.ok()) return ws.status();
  impl->ws = std::move(ws.value());
  auto* base = static_cast<unsigned char*>(impl->ws.get());
  if (base != nullptr) {
    impl->d_items = reinterpret_cast<WorkItem*>(base);
    impl->d_merges = reinterpret_cast<MergeItem*>(base + items_b);
    impl->d_partial_o = reinterpret_cast<float*>(base + items_b + merges_b);
    impl->d_partial_lse = reinterpret_cast<float*>(base + items_b + merges_b + po_b);
    impl->d_merge_counters = reinterpret_cast<uint32_t*>(base + items_b + merges_b + po_b + pl_b);
    if (impl->merge_slots > 0) {
      FP_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(impl->d_merge_counters, 0, static_cast<size_t>(impl->merge_slots) * 4,
                                              stream));
    }
    if (!impl->items.empty()) {
      FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(impl->d_items, impl->items.data(), impl->items.size() * sizeof(WorkItem),
                                              cudaMemcpyHostToDevice, stream));
    }
    if (!impl->merges.empty()) {
      FP_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(impl->d_merges, impl->merges.data(),
                                              impl->merges.size() * sizeof(MergeItem), cudaMemcpyHostToDevice, stream));
    }
  }
  return AttentionDecodePlan(std::move(impl));
}

Status AttentionDecodePlan::Run(const AttentionParams& p, cudaStream_t stream) const {
  const Impl& im = *impl_;
  if (p.q.rank != 3 || p.k_pool.rank != 4 || p.v_pool.rank != 4 || p.o.rank != 3 ||
      (p.anchor_len() > 0 && p.anchor_v.rank != 3) || !(SignatureOf(p) == im.sig)) {
    return InvalidArgument("decode: Run() with tensors or batch that differ from the planned ones (planned " +
                           Describe(im.sig) + "; got " + Describe(SignatureOf(p)) + ")");
  }
  FP_RETURN_IF_ERROR(CheckDeviceParams(p));
  if (p.o.shape != p.q.shape || p.v_pool.shape != p.k_pool.shape ||
      (p.anchor_len() > 0 && p.anchor_v.shape != p.anchor_k.shape)) {
    return InvalidArgument("decode: Run() with mismatched o/v_pool/anchor_v shapes");
  }
  if (!std::isfinite(p.scale) || p.scale == 0.f) return InvalidArgument("decode: scale must be finite and non-zero");
  if (im.items.empty()) return Status::Ok();

  decode::DecodeArgs a{};
  a.q = p.q.data;
  a.k_pool = p.k_pool.data;
  a.v_pool = p.v_pool.data;
  a.anchor_k = p.anchor_len() > 0 ? p.anchor_k.data : p.k_pool.data;  // never dereferenced when A == 0
  a.anchor_v = p.anchor_len() > 0 ? p.anchor_v.data : p.v_pool.data;
  a.o = p.o.data;
  a.lse = p.lse;
  a.gamma = p.gamma;
  a.block_table = p.batch.block_table;
  a.kv_lens = p.batch.kv_lens;
  a.partial_o = im.d_partial_o;
  a.partial_lse = im.d_partial_lse;
  a.merge_counters = im.d_merge_counters;
  a.max_blocks = p.batch.max_blocks_per_seq;
  a.Hq = static_cast<int32_t>(p.num_q_heads());
  a.Hkv = static_cast<int32_t>(p.num_kv_heads());
  a.G = static_cast<int32_t>(p.group_size());
  a.A = static_cast<int32_t>(p.anchor_len());
  a.P = static_cast<int32_t>(p.page_size());
  a.p_magic = im.p_magic;
  a.p_shift = im.p_shift;
  a.qscale = p.scale * 1.4426950408889634f;
  a.causal = p.causal ? 1 : 0;
  const int bf16 = p.q.dtype == DType::kBF16 ? 1 : 0;
  const int d = static_cast<int>(p.head_dim());
  for (const auto& r : im.ranges) {
    a.items = im.d_items + r.first;
    FP_RETURN_IF_ERROR(decode::LaunchDecode(a, bf16, d, im.warps, r.rows_class, r.count, im.pdl, stream));
  }
  if (!im.merges.empty()) {
    decode::MergeArgs m{};
    m.o = p.o.data;
    m.lse = p.lse;
    m.partial_o = im.d_partial_o;
    m.partial_lse = im.d_partial_lse;
    m.items = im.d_merges;
    m.Hq = a.Hq;
    m.d = d;
    FP_RETURN_IF_ERROR(decode::LaunchDecodeMerge(m, bf16, static_cast<int>(im.merges.size()), stream));
  }
  return Status::Ok();
}

Status AttentionDecodePlan::Update(const AttentionParams& p, const AttentionBatch& hb) const {
  const Impl& im = *impl_;
  if (!(SignatureOf(p) == im.sig)) return InvalidArgument("decode: Update() with tensors that differ from the plan");
  FP_RETURN_IF_ERROR(ValidateAttention(p, hb));
  FP_RETURN_IF_ERROR(CheckDeviceParams(p));
  if (static_cast<size_t>(hb.num_seqs) + 1 != im.q_indptr.size() && hb.num_seqs > 0) {
    return InvalidArgument("decode: Update() with another number of sequences than planned");
  }
  for (int32_t s = 0; s < hb.num_seqs + 1 && hb.num_seqs > 0; ++s) {
    if (hb.q_indptr[s] != im.q_indptr[static_cast<size_t>(s)]) {
      return InvalidArgument("decode: Update() with other query offsets than planned (q_indptr[" + std::to_string(s) +
                             "])");
    }
  }
  for (int32_t s = 0; s < hb.num_seqs; ++s) {
    if (hb.kv_lens[s] > im.cap_lens[static_cast<size_t>(s)]) {
      return InvalidArgument("decode: Update(): kv_lens[" + std::to_string(s) + "] = " + std::to_string(hb.kv_lens[s]) +
                             " exceeds the planned length " + std::to_string(im.cap_lens[static_cast<size_t>(s)]) +
                             " (re-plan with a larger max_kv_len)");
    }
  }
  return Status::Ok();
}

Status AttentionDecodeCuda(const AttentionParams& p, const AttentionBatch& host_batch, cudaStream_t stream,
                           const DecodeOptions& options) {
  auto plan = AttentionDecodePlan::Create(p, host_batch, options, stream);
  if (!plan.ok()) return plan.status();
  FP_RETURN_IF_ERROR(plan->Run(p, stream));
  // The workspace is freed when the plan goes out of scope: wait for the launches that use it.
  FP_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return Status::Ok();
}

}  // namespace fp
