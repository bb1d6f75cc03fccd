// tree_hash_cuda.cu — batched RFC 6962 tree hashing of many independent items on one CUDA stream.
//
// Pass 0 (LeafKernel): one CTA per aligned group of kLeafGroup leaves of one item, one thread per leaf
// (chunk); the CTA then reduces its group to one node in shared memory. Level-wise pairing with an odd last
// node promoted never pairs across an aligned power-of-two group, so a group's root is exactly the tree's
// node at level log2(kLeafGroup) (the last, short group included).
// Fused finish: for an item of 2..kLeafGroup groups, each CTA counts itself done on a per-item counter and the
// last one reduces the item's group roots to its root (same pairing: the groups are the aligned level-7
// nodes), so such items (up to kLeafGroup^2 leaves: a 2 MiB page, 64 MiB at 4 KiB) need no further launch.
// Passes 1.. (ReduceKernel), only for larger items: one CTA per aligned group of kReduceGroup nodes of one
// item; each thread pairs two nodes from global memory, then the CTA reduces in shared memory. An item whose
// pass has one group writes its root. Items are mapped to CTAs through per-pass group prefix sums (binary search per CTA); an
// item with no leaves gets one empty group whose root is SHA-256("").
// Host work is in Plan (layout into a pinned blob); Run uploads it and enqueues the passes.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fieldprint/tree_hash_cuda.h"
#include "integrity/sha256_device.cuh"

namespace fp {
namespace {

namespace sd = sha256_device;

constexpr int kLeafGroup = 128;     // leaves per CTA in pass 0 (= threads)
// Caps LeafKernel at 56 registers (9 CTAs = 1152 threads per SM), the occupancy the plain chunk kernel gets
// unforced. Measured on H200, 1 GiB at 4 KiB chunks: 63 registers (8 CTAs/SM) gave 87.6% of the plain rate,
// the cap 88.3%: within noise, so the gap is not occupancy (docs/hashing.md).
constexpr int kLeafMinBlocks = 9;
constexpr int kReduceThreads = 256; // threads per CTA in later passes
constexpr int kReduceGroup = 2 * kReduceThreads;
constexpr int kChunkThreads = 128;

#define FP_CUDA_RETURN(expr)                                                                         \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) {                                                                         \
      return Internal(std::string(#expr) + ": " + cudaGetErrorName(e_) + " (" + __FILE__ + ":" +   \
                      std::to_string(__LINE__) + ")");                                               \
    }                                                                                                \
  } while (0)

// Pointers into the uploaded plan blob (all device memory). Shapes in the comments.
struct PassParams {
  const uint64_t* group_off;  // [num_items + 1] prefix sum of this pass's groups per item
  const uint64_t* in_off;     // [num_items] where the item's input nodes start (ReduceKernel)
  const uint64_t* in_count;   // [num_items] input nodes (leaves in pass 0)
  const uint32_t* in_nodes;   // [sum in_count, 8] state words (ReduceKernel)
  uint32_t* out_nodes;        // [num_groups, 8] state words of each group's root
  uint8_t* roots;             // [num_items, 32] final digests
  uint32_t* done_groups;      // [num_items] fused-finish counters; 0 between runs (the last CTA resets)
  uint64_t num_items;
};
struct LeafParams {
  PassParams pass;
  const uint64_t* seg_ptr;         // [num_segments]
  const uint64_t* seg_size;        // [num_segments]
  const uint64_t* seg_leaf_begin;  // [num_segments] first leaf of the segment, counted within its item
  const uint64_t* item_seg_off;    // [num_items + 1]
  uint64_t chunk;
};

__device__ uint64_t FindItem(const uint64_t* off, uint64_t n, uint64_t key) {
  // Largest i in [0, n) with off[i] <= key (off is non-decreasing, off[0] == 0).
  uint64_t lo = 0, hi = n;
  while (hi - lo > 1) {
    const uint64_t mid = (lo + hi) / 2;
    if (off[mid] <= key) lo = mid; else hi = mid;
  }
  return lo;
}

// Reduces m (<= kThreads) nodes, node t held in st by thread t, to one; the root ends in s[.][0].
template <int kThreads>
__device__ void CtaReduce(uint32_t (&s)[8][kThreads], uint32_t st[8], int m) {
  const int t = threadIdx.x;
  if (t < m) {
#pragma unroll
    for (int k = 0; k < 8; ++k) s[k][t] = st[k];
  }
  __syncthreads();
  while (m > 1) {
    const int half = m / 2;
    uint32_t r[8];
    if (t < half) {
      uint32_t l[8], rr[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) { l[k] = s[k][2 * t]; rr[k] = s[k][2 * t + 1]; }
      sd::NodeHash(l, rr, r);
    } else if (t == half && (m & 1)) {
#pragma unroll
      for (int k = 0; k < 8; ++k) r[k] = s[k][m - 1];  // odd last node promoted
    }
    __syncthreads();
    if (t < (m + 1) / 2) {
#pragma unroll
      for (int k = 0; k < 8; ++k) s[k][t] = r[k];
    }
    __syncthreads();
    m = (m + 1) / 2;
  }
}

// Writes the CTA's group root: the item's final digest when the pass has one group for it, else a node.
template <int kThreads>
__device__ void EmitRoot(const PassParams& p, uint32_t (&s)[8][kThreads], uint64_t item, uint64_t group) {
  if (threadIdx.x != 0) return;
  uint32_t st[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) st[k] = s[k][0];
  if (p.group_off[item + 1] - p.group_off[item] == 1) {
    sd::StoreDigest(st, p.roots + 32 * item);
  } else {
    uint32_t* o = p.out_nodes + 8 * (p.group_off[item] + group);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = st[k];
  }
}

// Fused finish of a LeafKernel CTA (see top): the last CTA of an item of 2..kLeafGroup groups reduces the
// item's group roots to its root. Not inlined: keeps LeafKernel's hash loop within its register cap.
__device__ __noinline__ void FusedFinish(const PassParams& p, uint32_t (&s)[8][kLeafGroup], uint64_t item) {
  const uint64_t groups = p.group_off[item + 1] - p.group_off[item];
  if (groups == 1 || groups > kLeafGroup) return;  // uniform per CTA
  // Fused finish (threadfence-reduction pattern): publish this group's node, then count; the last CTA of
  // the item sees every node after its own fence and reduces them.
  __shared__ bool last;
  uint32_t st[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(p.done_groups + item, 1u) == groups - 1;
  }
  __syncthreads();  // also orders CtaReduce's reads of s before the reuse below
  if (!last) return;
  __threadfence();
  const int g = static_cast<int>(groups);
  if (static_cast<int>(threadIdx.x) < g) {
    const uint32_t* in = p.out_nodes + 8 * (p.group_off[item] + threadIdx.x);
#pragma unroll
    for (int k = 0; k < 8; ++k) st[k] = __ldcg(in + k);  // L2: other CTAs wrote these
  }
  CtaReduce<kLeafGroup>(s, st, g);
  if (threadIdx.x == 0) {
    uint32_t r[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) r[k] = s[k][0];
    sd::StoreDigest(r, p.roots + 32 * item);
    p.done_groups[item] = 0;  // ready for the next Run (stream-ordered)
  }
}

__global__ void __launch_bounds__(kLeafGroup, kLeafMinBlocks) LeafKernel(const __grid_constant__ LeafParams lp) {
  __shared__ uint32_t s[8][kLeafGroup];
  const PassParams& p = lp.pass;
  uint32_t st[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  {
    // Scoped so the indices are dead during the hash (register cap, see kLeafMinBlocks); recomputed below.
    const uint64_t item = FindItem(p.group_off, p.num_items, blockIdx.x);
    const uint64_t n_leaves = p.in_count[item];
    const uint64_t leaf = (blockIdx.x - p.group_off[item]) * kLeafGroup + threadIdx.x;
    if (n_leaves == 0) {  // uniform per CTA: the whole CTA leaves here
      if (threadIdx.x == 0) {
        sd::HashMessage<0>(nullptr, 0, st);  // MTH of no leaves = SHA-256("")
        sd::StoreDigest(st, p.roots + 32 * item);
      }
      return;
    }
    if (leaf < n_leaves) {
      const uint64_t s0 = lp.item_seg_off[item], s1 = lp.item_seg_off[item + 1];
      // Last segment of the item whose first leaf is <= leaf (empty segments share a begin; take the last).
      uint64_t lo = s0, hi = s1;
      while (hi - lo > 1) {
        const uint64_t mid = (lo + hi) / 2;
        if (lp.seg_leaf_begin[mid] <= leaf) lo = mid; else hi = mid;
      }
      const uint64_t off = (leaf - lp.seg_leaf_begin[lo]) * lp.chunk;
      const uint64_t len = min(lp.chunk, lp.seg_size[lo] - off);
      sd::HashMessage<1>(reinterpret_cast<const uint8_t*>(lp.seg_ptr[lo]) + off, len, st);
    }
  }
  const uint64_t item = FindItem(p.group_off, p.num_items, blockIdx.x);
  const uint64_t group = blockIdx.x - p.group_off[item];
  const uint64_t n_leaves = p.in_count[item];
  const int m = static_cast<int>(min(uint64_t{kLeafGroup}, n_leaves - min(n_leaves, group * kLeafGroup)));
  CtaReduce<kLeafGroup>(s, st, m);
  EmitRoot<kLeafGroup>(p, s, item, group);
  FusedFinish(p, s, item);
}

__global__ void __launch_bounds__(kReduceThreads) ReduceKernel(const __grid_constant__ PassParams p) {
  __shared__ uint32_t s[8][kReduceThreads];
  const uint64_t item = FindItem(p.group_off, p.num_items, blockIdx.x);
  const uint64_t group = blockIdx.x - p.group_off[item];
  const uint64_t n_in = p.in_count[item];
  const uint64_t first = group * kReduceGroup;
  const uint64_t m_in = min(uint64_t{kReduceGroup}, n_in - first);  // nodes of this group, >= 2 unless last
  const int m = static_cast<int>((m_in + 1) / 2);
  const uint32_t* in = p.in_nodes + 8 * (p.in_off[item] + first);
  const int t = threadIdx.x;
  uint32_t st[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (2 * t + 1 < static_cast<int>(m_in)) {
    uint32_t l[8], r[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) { l[k] = in[16 * t + k]; r[k] = in[16 * t + 8 + k]; }
    sd::NodeHash(l, r, st);
  } else if (2 * t < static_cast<int>(m_in)) {
#pragma unroll
    for (int k = 0; k < 8; ++k) st[k] = in[16 * t + k];  // odd last node promoted
  }
  CtaReduce<kReduceThreads>(s, st, m);
  EmitRoot<kReduceThreads>(p, s, item, group);
}

__global__ void __launch_bounds__(kChunkThreads)
    ChunkKernel(const uint8_t* data, uint64_t n, uint64_t chunk, uint64_t num_chunks, uint8_t* out) {
  const uint64_t i = uint64_t{blockIdx.x} * kChunkThreads + threadIdx.x;
  if (i >= num_chunks) return;
  const uint64_t off = i * chunk;
  uint32_t st[8];
  sd::HashMessage<0>(data + off, min(chunk, n - off), st);
  sd::StoreDigest(st, out + 32 * i);
}

// Restores the caller's current device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&prev_);
    if (device >= 0 && device != prev_) cudaSetDevice(device);
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }

 private:
  int prev_ = 0;
};

template <typename T>
struct DevFree {
  void operator()(T* p) const { cudaFree(p); }
};
template <typename T>
struct HostFree {
  void operator()(T* p) const { cudaFreeHost(p); }
};

}  // namespace

struct GpuTreeHasher::Impl {
  size_t chunk = 0;
  int device = 0;
  // Plan, host side.
  size_t num_items = 0, num_leaves = 0, num_segments = 0;
  std::vector<uint64_t> blob;  // assembled here, then copied into pinned staging
  struct PassLayout {
    size_t group_off, in_off, in_count;  // word offsets into the blob
    size_t num_groups;
  };
  std::vector<PassLayout> passes;
  size_t seg_ptr = 0, seg_size = 0, seg_leaf_begin = 0, item_seg_off = 0;
  // Buffers (capacities in elements).
  std::unique_ptr<uint64_t, HostFree<uint64_t>> staging;  // [blob words] pinned
  size_t staging_cap = 0;
  std::unique_ptr<uint64_t, DevFree<uint64_t>> d_blob;  // [blob words]
  size_t d_blob_cap = 0;
  std::unique_ptr<uint32_t, DevFree<uint32_t>> d_nodes[2];  // [groups, 8] ping-pong
  size_t d_nodes_cap[2] = {0, 0};
  std::unique_ptr<uint8_t, DevFree<uint8_t>> d_roots;  // [num_items, 32]
  size_t d_roots_cap = 0;
  std::unique_ptr<uint32_t, DevFree<uint32_t>> d_done;  // [num_items] fused-finish counters, zeroed once
  size_t d_done_cap = 0;
  cudaEvent_t uploaded = nullptr;  // staging may be overwritten once this fires
  cudaEvent_t done = nullptr;      // device buffers may be freed once this fires
  bool planned = false;

  ~Impl() {
    if (uploaded != nullptr) cudaEventDestroy(uploaded);
    if (done != nullptr) cudaEventDestroy(done);
  }
};

GpuTreeHasher::GpuTreeHasher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTreeHasher::~GpuTreeHasher() {
  if (impl_ && impl_->done != nullptr) cudaEventSynchronize(impl_->done);  // buffers may still be in use
}
size_t GpuTreeHasher::chunk_bytes() const { return impl_->chunk; }
size_t GpuTreeHasher::num_items() const { return impl_->num_items; }
size_t GpuTreeHasher::num_leaves() const { return impl_->num_leaves; }

Result<std::unique_ptr<GpuTreeHasher>> GpuTreeHasher::Create(size_t chunk_bytes, int device) {
  if (chunk_bytes == 0 || chunk_bytes > kMaxChunkBytes) {
    return InvalidArgument("GpuTreeHasher: chunk_bytes " + std::to_string(chunk_bytes) + " outside [1, " +
                           std::to_string(kMaxChunkBytes) + "]");
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return FailedPrecondition("GpuTreeHasher: no CUDA device");
  }
  if (device < 0) FP_CUDA_RETURN(cudaGetDevice(&device));
  if (device >= count) return InvalidArgument("GpuTreeHasher: device " + std::to_string(device) + " not present");
  auto impl = std::make_unique<Impl>();
  impl->chunk = chunk_bytes;
  impl->device = device;
  DeviceGuard guard(device);
  FP_CUDA_RETURN(cudaEventCreateWithFlags(&impl->uploaded, cudaEventDisableTiming));
  FP_CUDA_RETURN(cudaEventCreateWithFlags(&impl->done, cudaEventDisableTiming));
  return std::make_unique<GpuTreeHasher>(std::move(impl));
}

Status GpuTreeHasher::Plan(std::span<const GpuHashItem> items) {
  Impl& m = *impl_;
  m.planned = false;
  size_t num_segments = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = 0; j < items[i].segments.size(); ++j) {
      const ByteSegment& s = items[i].segments[j];
      if (s.data == nullptr && s.size > 0) {
        return InvalidArgument("GpuTreeHasher::Plan: item " + std::to_string(i) + " segment " + std::to_string(j) +
                               " has null data and size " + std::to_string(s.size));
      }
    }
    num_segments += items[i].segments.size();
  }
  const size_t I = items.size();
  m.num_items = I;
  m.num_segments = num_segments;
  auto& b = m.blob;
  b.clear();
  // Segment table and per-item leaf counts.
  m.seg_ptr = 0;
  m.seg_size = num_segments;
  m.seg_leaf_begin = 2 * num_segments;
  m.item_seg_off = 3 * num_segments;
  b.resize(3 * num_segments + I + 1);
  std::vector<uint64_t> leaves(I);  // [num_items]
  size_t si = 0, total_leaves = 0;
  for (size_t i = 0; i < I; ++i) {
    b[m.item_seg_off + i] = si;
    uint64_t n = 0;
    for (const ByteSegment& s : items[i].segments) {
      b[m.seg_ptr + si] = reinterpret_cast<uint64_t>(s.data);
      b[m.seg_size + si] = s.size;
      b[m.seg_leaf_begin + si] = n;
      n += (s.size + m.chunk - 1) / m.chunk;
      ++si;
    }
    leaves[i] = n;
    total_leaves += n;
  }
  b[m.item_seg_off + I] = si;
  m.num_leaves = total_leaves;
  // Passes: pass 0 groups leaves by kLeafGroup (an empty item gets one group); later passes group nodes by
  // kReduceGroup while some item still has more than one node.
  m.passes.clear();
  std::vector<uint64_t> count = leaves, in_off(I, 0);
  for (int pass = 0;; ++pass) {
    const uint64_t g = pass == 0 ? kLeafGroup : kReduceGroup;
    Impl::PassLayout L{};
    L.group_off = b.size();
    b.resize(b.size() + I + 1);
    L.in_off = b.size();
    b.insert(b.end(), in_off.begin(), in_off.end());
    L.in_count = b.size();
    b.insert(b.end(), count.begin(), count.end());
    uint64_t acc = 0;
    bool more = false;
    for (size_t i = 0; i < I; ++i) {
      b[L.group_off + i] = acc;
      uint64_t groups = 0;
      if (pass == 0) groups = std::max<uint64_t>(1, (count[i] + g - 1) / g);
      else if (count[i] > 1) groups = (count[i] + g - 1) / g;
      in_off[i] = acc;
      acc += groups;
      // Done after this pass: one group (its root is written), or pass 0 of <= kLeafGroup groups (fused).
      const bool done = groups == 1 || (pass == 0 && groups <= kLeafGroup);
      count[i] = done ? 0 : groups;
      more = more || count[i] > 1;
    }
    b[L.group_off + I] = acc;
    L.num_groups = acc;
    m.passes.push_back(L);
    if (!more) break;
  }
  // Buffers: grow only; wait for the previous run before touching what it may still use.
  DeviceGuard guard(m.device);
  FP_CUDA_RETURN(cudaEventSynchronize(m.uploaded));
  const size_t words = b.size();
  if (words > m.staging_cap || words > m.d_blob_cap) {
    FP_CUDA_RETURN(cudaEventSynchronize(m.done));
    uint64_t* hp = nullptr;
    uint64_t* dp = nullptr;
    m.staging.reset();
    m.d_blob.reset();
    m.staging_cap = m.d_blob_cap = 0;
    FP_CUDA_RETURN(cudaMallocHost(&hp, words * 8));
    m.staging.reset(hp);
    FP_CUDA_RETURN(cudaMalloc(&dp, words * 8));
    m.d_blob.reset(dp);
    m.staging_cap = m.d_blob_cap = words;
  }
  for (int k = 0; k < 2; ++k) {
    size_t need = 0;
    for (size_t p = k; p < m.passes.size(); p += 2) need = std::max(need, m.passes[p].num_groups);
    if (need > m.d_nodes_cap[k]) {
      FP_CUDA_RETURN(cudaEventSynchronize(m.done));
      uint32_t* dp = nullptr;
      m.d_nodes[k].reset();
      m.d_nodes_cap[k] = 0;
      FP_CUDA_RETURN(cudaMalloc(&dp, need * 32));
      m.d_nodes[k].reset(dp);
      m.d_nodes_cap[k] = need;
    }
  }
  if (I > m.d_roots_cap) {
    FP_CUDA_RETURN(cudaEventSynchronize(m.done));
    uint8_t* dp = nullptr;
    m.d_roots.reset();
    m.d_roots_cap = 0;
    FP_CUDA_RETURN(cudaMalloc(&dp, I * 32));
    m.d_roots.reset(dp);
    m.d_roots_cap = I;
  }
  if (I > m.d_done_cap) {
    FP_CUDA_RETURN(cudaEventSynchronize(m.done));
    uint32_t* dp = nullptr;
    m.d_done.reset();
    m.d_done_cap = 0;
    FP_CUDA_RETURN(cudaMalloc(&dp, I * 4));
    m.d_done.reset(dp);
    FP_CUDA_RETURN(cudaMemset(dp, 0, I * 4));  // kernels keep it zero between runs
    FP_CUDA_RETURN(cudaDeviceSynchronize());     // Run's stream may not sync with the legacy stream
    m.d_done_cap = I;
  }
  std::copy(b.begin(), b.end(), m.staging.get());
  m.planned = true;
  return Status::Ok();
}

Status GpuTreeHasher::Run(CUstream_st* stream, Digest* out) {
  Impl& m = *impl_;
  if (!m.planned) return FailedPrecondition("GpuTreeHasher::Run: no plan (call Plan first)");
  if (out == nullptr && m.num_items > 0) return InvalidArgument("GpuTreeHasher::Run: null output");
  if (m.num_items == 0) return Status::Ok();
  DeviceGuard guard(m.device);
  const uint64_t* d = m.d_blob.get();
  FP_CUDA_RETURN(cudaMemcpyAsync(m.d_blob.get(), m.staging.get(), m.blob.size() * 8, cudaMemcpyHostToDevice, stream));
  FP_CUDA_RETURN(cudaEventRecord(m.uploaded, stream));
  for (size_t p = 0; p < m.passes.size(); ++p) {
    const auto& L = m.passes[p];
    PassParams pp{};
    pp.group_off = d + L.group_off;
    pp.in_off = d + L.in_off;
    pp.in_count = d + L.in_count;
    pp.in_nodes = p == 0 ? nullptr : m.d_nodes[(p - 1) % 2].get();
    pp.out_nodes = m.d_nodes[p % 2].get();
    pp.roots = m.d_roots.get();
    pp.done_groups = m.d_done.get();
    pp.num_items = m.num_items;
    if (L.num_groups == 0) continue;
    if (L.num_groups > 0x7fffffffu) return InvalidArgument("GpuTreeHasher::Run: too many groups for one grid");
    const unsigned grid = static_cast<unsigned>(L.num_groups);
    if (p == 0) {
      LeafParams lp{pp, d + m.seg_ptr, d + m.seg_size, d + m.seg_leaf_begin, d + m.item_seg_off, m.chunk};
      LeafKernel<<<grid, kLeafGroup, 0, stream>>>(lp);
    } else {
      ReduceKernel<<<grid, kReduceThreads, 0, stream>>>(pp);
    }
    FP_CUDA_RETURN(cudaGetLastError());
  }
  FP_CUDA_RETURN(cudaMemcpyAsync(out, m.d_roots.get(), m.num_items * 32, cudaMemcpyDefault, stream));
  FP_CUDA_RETURN(cudaEventRecord(m.done, stream));
  return Status::Ok();
}

Status Sha256ChunksGpu(const void* device_data, size_t n, size_t chunk_bytes, Digest* out, CUstream_st* stream) {
  if (chunk_bytes == 0) return InvalidArgument("Sha256ChunksGpu: chunk_bytes is 0");
  if (device_data == nullptr && n > 0) return InvalidArgument("Sha256ChunksGpu: null data with size > 0");
  const uint64_t chunks = (n + chunk_bytes - 1) / chunk_bytes;
  if (chunks == 0) return Status::Ok();
  if (out == nullptr || (reinterpret_cast<uintptr_t>(out) & 15) != 0) {
    return InvalidArgument("Sha256ChunksGpu: out must be non-null and 16-byte aligned");
  }
  const uint64_t grid = (chunks + kChunkThreads - 1) / kChunkThreads;
  if (grid > 0x7fffffffu) return InvalidArgument("Sha256ChunksGpu: too many chunks for one grid");
  ChunkKernel<<<static_cast<unsigned>(grid), kChunkThreads, 0, stream>>>(
      static_cast<const uint8_t*>(device_data), n, chunk_bytes, chunks, reinterpret_cast<uint8_t*>(out));
  FP_CUDA_RETURN(cudaGetLastError());
  return Status::Ok();
}

Result<std::vector<Digest>> TreeHashGpuSync(std::span<const GpuHashItem> items, size_t chunk_bytes) {
  auto h = GpuTreeHasher::Create(chunk_bytes);
  if (!h.ok()) return h.status();
  FP_RETURN_IF_ERROR((*h)->Plan(items));
  cudaStream_t stream = nullptr;
  FP_CUDA_RETURN(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<Digest> roots(items.size());
  Status st = (*h)->Run(stream, roots.data());
  const cudaError_t e = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  FP_RETURN_IF_ERROR(st);
  if (e != cudaSuccess) return Internal(std::string("TreeHashGpuSync: ") + cudaGetErrorName(e));
  return roots;
}

}  // namespace fp
