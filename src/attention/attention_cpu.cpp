// AttentionCpu — the fp32 CPU reference of PagedFieldprintAttention (semantics: AttentionOracleF64).
//
// Design: one work item = (sequence, kv head, chunk of query tokens). An item loads its query rows for the whole
// GQA group (G heads x chunk tokens), then streams keys in tiles of kTile positions: the anchor first (logits
// + gamma[h]), then the paged positions through the block table. Each tile is widened to fp32 once (K stored
// transposed, V row-major, head_dim padded to kLane) and reused by every row of the item, so the GQA group
// shares the K/V reads, as the CUDA kernels do. Per row: running (max, sum, acc[d]) online softmax in fp32,
// natural-log domain. Causal masking applies to the paged part only; a row with no visible key gets o = 0 and
// lse = -inf. Inner loops have compile-time trip counts (kTile, kLane) so GCC vectorises them at -O2 without
// -ffast-math (its -O2 "very cheap" vectoriser refuses loops that need a scalar epilogue).
// Threads: std::thread workers pull items from an atomic counter; tiny problems run on the calling thread.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "fieldprint/attention.h"
#include "fieldprint/dtype.h"

namespace fp {
namespace {

constexpr int kTile = 64;  // key positions per tile
constexpr int kLane = 16;  // head_dim is padded to a multiple of this in scratch buffers

// dst[0..n) = widen(src[off .. off+n)); the dtype switch sits outside the loop.
void Widen(const void* base, DType t, int64_t off, int64_t n, float* __restrict dst) {
  switch (t) {
    case DType::kF32: {
      const float* s = static_cast<const float*>(base) + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      break;
    }
    case DType::kBF16: {
      const uint16_t* s = reinterpret_cast<const uint16_t*>(static_cast<const Bf16*>(base) + off);
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = static_cast<uint32_t>(s[i]) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        dst[i] = f;
      }
      break;
    }
    case DType::kF16: {
      const float* tab = F16ToFloatTable();  // F16ToFloat is out of line and branchy: one load instead
      const uint16_t* s = reinterpret_cast<const uint16_t*>(static_cast<const F16*>(base) + off);
      for (int64_t i = 0; i < n; ++i) dst[i] = tab[s[i]];
      break;
    }
  }
}

// dst[off .. off+n) = round(src[0..n)) in dtype t.
void Narrow(const float* src, int64_t n, void* base, DType t, int64_t off) {
  switch (t) {
    case DType::kF32: std::memcpy(static_cast<float*>(base) + off, src, static_cast<size_t>(n) * 4); break;
    case DType::kBF16: {
      Bf16* d = static_cast<Bf16*>(base) + off;
      for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
      break;
    }
    case DType::kF16: {
      F16* d = static_cast<F16*>(base) + off;
      for (int64_t i = 0; i < n; ++i) d[i] = FloatToF16(src[i]);
      break;
    }
  }
}

// s[0..kTile) = q . kt[:, j] for every tile slot (fixed width: padded slots hold zeros).
// Free functions with restrict parameters: GCC -O2 vectorises them only when it needs no alias check.
void TileLogits(const float* __restrict q, const float* __restrict kt, int64_t d, float* __restrict s) {
  for (int j = 0; j < kTile; ++j) s[j] = 0.f;
  for (int64_t x = 0; x < d; ++x) {
    const float qx = q[x];
    for (int j = 0; j < kTile; ++j) s[j] += qx * kt[x * kTile + j];
  }
}

// acc = acc * alpha + sum_j p[j] * vt[j, :] over the first nv tile slots; dp is a multiple of kLane.
void AccumulateTile(const float* __restrict p, int64_t nv, float alpha, const float* __restrict vt, int64_t dp,
                    float* __restrict acc) {
  for (int64_t xb = 0; xb < dp; xb += kLane) {
    for (int u = 0; u < kLane; ++u) acc[xb + u] *= alpha;
  }
  for (int64_t j = 0; j < nv; ++j) {
    const float pj = p[j];
    for (int64_t xb = 0; xb < dp; xb += kLane) {
      for (int u = 0; u < kLane; ++u) acc[xb + u] += pj * vt[j * dp + xb + u];
    }
  }
}

struct WorkItem {
  int32_t seq;
  int32_t kv_head;
  int32_t j_begin, j_end;  // query rows [j_begin, j_end) of the sequence (relative to q_indptr[seq])
};

// Per-thread scratch, sized once per call.
struct Scratch {
  std::vector<float> kt;   // [dp, kTile] current K tile, transposed, zero-padded
  std::vector<float> vt;   // [kTile, dp] current V tile, zero-padded
  std::vector<float> q;    // [rows, dp] query rows of the item, pre-multiplied by scale
  std::vector<float> acc;  // [rows, dp] running un-normalised output
  std::vector<float> m;    // [rows] running max logit
  std::vector<float> l;    // [rows] running sum of exp(logit - m)
  std::vector<float> s;    // [kTile] logits of one row against the tile
  std::vector<float> orow; // [d] one normalised output row before rounding
};

class Runner {
 public:
  explicit Runner(const AttentionParams& p)
      : p_(p),
        Hq_(p.num_q_heads()),
        Hkv_(p.num_kv_heads()),
        G_(p.group_size()),
        d_(p.head_dim()),
        dp_((p.head_dim() + kLane - 1) / kLane * kLane),
        P_(p.page_size()),
        A_(p.anchor_len()),
        dt_(p.q.dtype) {}

  int64_t dp() const { return dp_; }

  void Prepare(Scratch& sc, int64_t max_rows) const {
    sc.kt.assign(static_cast<size_t>(dp_ * kTile), 0.f);
    sc.vt.assign(static_cast<size_t>(kTile * dp_), 0.f);
    sc.q.assign(static_cast<size_t>(max_rows * dp_), 0.f);
    sc.acc.assign(static_cast<size_t>(max_rows * dp_), 0.f);
    sc.m.assign(static_cast<size_t>(max_rows), 0.f);
    sc.l.assign(static_cast<size_t>(max_rows), 0.f);
    sc.s.assign(kTile, 0.f);
    sc.orow.assign(static_cast<size_t>(d_), 0.f);
  }

  void Run(const WorkItem& it, Scratch& sc) const {
    const AttentionBatch& b = p_.batch;
    const int64_t q0 = b.q_indptr[it.seq];
    const int64_t nq = b.q_indptr[it.seq + 1] - q0;
    const int64_t kv_len = b.kv_lens[it.seq];
    const int64_t nj = it.j_end - it.j_begin;
    const int64_t rows = nj * G_;  // row r = (token jj = r / G, head g = r % G)
    // Last paged position visible to query row j (inclusive); -1 = none.
    auto last_visible = [&](int64_t j) { return p_.causal ? kv_len - nq + j : kv_len - 1; };

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = q0 + it.j_begin + r / G_, h = int64_t{it.kv_head} * G_ + r % G_;
      float* qr = &sc.q[static_cast<size_t>(r * dp_)];
      Widen(p_.q.data, dt_, (t * Hq_ + h) * d_, d_, qr);
      const float scale = p_.scale;
      for (int64_t x = 0; x < d_; ++x) qr[x] *= scale;
      std::fill(qr + d_, qr + dp_, 0.f);
      std::fill(&sc.acc[static_cast<size_t>(r * dp_)], &sc.acc[static_cast<size_t>((r + 1) * dp_)], 0.f);
      sc.m[static_cast<size_t>(r)] = -std::numeric_limits<float>::infinity();
      sc.l[static_cast<size_t>(r)] = 0.f;
    }

    // Anchor segment: every row sees every anchor key.
    for (int64_t k0 = 0; k0 < A_; k0 += kTile) {
      const int64_t n = std::min<int64_t>(kTile, A_ - k0);
      for (int64_t i = 0; i < n; ++i) {
        LoadKV(p_.anchor_k.data, p_.anchor_v.data, ((k0 + i) * Hkv_ + it.kv_head) * d_, i, sc);
      }
      ClearTail(n, sc);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = int64_t{it.kv_head} * G_ + r % G_;
        Update(r, n, p_.gamma ? p_.gamma[h] : 0.f, sc);
      }
    }

    // Paged segment: only as far as the item's last row can see.
    const int64_t seg_end = last_visible(it.j_end - 1) + 1;
    const int32_t* table = b.block_table + int64_t{it.seq} * b.max_blocks_per_seq;
    for (int64_t k0 = 0; k0 < seg_end; k0 += kTile) {
      const int64_t n = std::min<int64_t>(kTile, seg_end - k0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t pos = k0 + i;
        const int64_t blk = table[pos / P_];
        LoadKV(p_.k_pool.data, p_.v_pool.data, ((blk * P_ + pos % P_) * Hkv_ + it.kv_head) * d_, i, sc);
      }
      ClearTail(n, sc);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t nv = std::min(n, last_visible(it.j_begin + r / G_) + 1 - k0);
        if (nv > 0) Update(r, nv, 0.f, sc);
      }
    }

    // Normalise and store.
    float* ob = sc.orow.data();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = q0 + it.j_begin + r / G_, h = int64_t{it.kv_head} * G_ + r % G_;
      const float l = sc.l[static_cast<size_t>(r)];
      const float* acc = &sc.acc[static_cast<size_t>(r * dp_)];
      const float inv = l > 0.f ? 1.f / l : 0.f;  // l == 0 only when no key was visible (acc is 0 too)
      for (int64_t x = 0; x < d_; ++x) ob[x] = acc[x] * inv;
      Narrow(ob, d_, p_.o.data, dt_, (t * Hq_ + h) * d_);
      if (p_.lse) {
        p_.lse[t * Hq_ + h] = l > 0.f ? sc.m[static_cast<size_t>(r)] + std::log(l)
                                      : -std::numeric_limits<float>::infinity();
      }
    }
  }

 private:
  // Widens key/value row `off` into tile slot i (K transposed).
  void LoadKV(const void* kbase, const void* vbase, int64_t off, int64_t i, Scratch& sc) const {
    float krow[kMaxHeadDim];
    Widen(kbase, dt_, off, d_, krow);
    float* kt = sc.kt.data();
    for (int64_t x = 0; x < d_; ++x) kt[x * kTile + i] = krow[x];
    Widen(vbase, dt_, off, d_, &sc.vt[static_cast<size_t>(i * dp_)]);
  }

  // Zeroes tile slots [n, kTile) of K so the fixed-width logit loop reads defined values.
  void ClearTail(int64_t n, Scratch& sc) const {
    if (n == kTile) return;
    float* kt = sc.kt.data();
    for (int64_t x = 0; x < d_; ++x) std::fill(kt + x * kTile + n, kt + (x + 1) * kTile, 0.f);
  }

  // Online-softmax step of row r over the first nv (>= 1) keys of the tile; bias is added to every logit.
  void Update(int64_t r, int64_t nv, float bias, Scratch& sc) const {
    float* s = sc.s.data();
    TileLogits(&sc.q[static_cast<size_t>(r * dp_)], sc.kt.data(), d_, s);
    float mt = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < nv; ++j) {
      s[j] += bias;
      mt = std::max(mt, s[j]);
    }
    float& m = sc.m[static_cast<size_t>(r)];
    float& l = sc.l[static_cast<size_t>(r)];
    const float m_new = std::max(m, mt);
    const float alpha = std::exp(m - m_new);  // m = -inf on the first tile: alpha = 0
    float sum = 0.f;
    for (int64_t j = 0; j < nv; ++j) sum += (s[j] = std::exp(s[j] - m_new));
    l = l * alpha + sum;
    m = m_new;
    AccumulateTile(s, nv, alpha, sc.vt.data(), dp_, &sc.acc[static_cast<size_t>(r * dp_)]);
  }

  const AttentionParams& p_;
  const int64_t Hq_, Hkv_, G_, d_, dp_, P_, A_;
  const DType dt_;
};

bool OnCuda(const TensorView& t) { return t.device == Device::kCuda; }

}  // namespace

Status AttentionCpu(const AttentionParams& p, int num_threads) {
  // Before validation: for a CUDA launch the batch arrays are device pointers the host must not read.
  for (const auto& [name, t] : {std::pair<const char*, const TensorView*>{"q", &p.q}, {"k_pool", &p.k_pool},
                                {"v_pool", &p.v_pool}, {"anchor_k", &p.anchor_k}, {"anchor_v", &p.anchor_v},
                                {"o", &p.o}}) {
    if (OnCuda(*t)) {
      return InvalidArgument(std::string("AttentionCpu needs host tensors, but ") + name + " is " + t->ShapeString() +
                             " (use the CUDA path for device tensors)");
    }
  }
  FP_RETURN_IF_ERROR(ValidateAttention(p, p.batch));

  const AttentionBatch& b = p.batch;
  const int64_t G = p.group_size(), Hkv = p.num_kv_heads(), A = p.anchor_len();
  // Query chunk: enough rows per item to amortise each K/V tile, few enough that prefill spreads over threads.
  const int64_t chunk = std::max<int64_t>(1, 64 / G);
  std::vector<WorkItem> items;
  int64_t max_rows = 0;
  double work = 0;  // ~ multiply-adds, to decide how many threads are worth starting
  for (int32_t s = 0; s < b.num_seqs; ++s) {
    const int64_t nq = b.q_indptr[s + 1] - b.q_indptr[s];
    for (int64_t j0 = 0; j0 < nq; j0 += chunk) {
      const int64_t j1 = std::min(nq, j0 + chunk);
      for (int64_t hk = 0; hk < Hkv; ++hk) {
        items.push_back({s, static_cast<int32_t>(hk), static_cast<int32_t>(j0), static_cast<int32_t>(j1)});
      }
      max_rows = std::max(max_rows, (j1 - j0) * G);
      work += static_cast<double>((j1 - j0) * G * Hkv) * static_cast<double>(A + b.kv_lens[s]) *
              static_cast<double>(p.head_dim());
    }
  }
  if (items.empty()) return Status::Ok();

  int threads = num_threads > 0 ? num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Starting a thread costs tens of microseconds; give each one at least ~1M multiply-adds.
  threads = static_cast<int>(std::min<double>({static_cast<double>(threads), static_cast<double>(items.size()),
                                                std::max(1.0, work / 1e6)}));

  const Runner runner(p);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    Scratch sc;
    runner.Prepare(sc, max_rows);
    for (size_t i = next.fetch_add(1); i < items.size(); i = next.fetch_add(1)) runner.Run(items[i], sc);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // could not start another thread: the ones running (and this one) finish the work
    }
  }
  worker();
  for (auto& th : pool) th.join();
  return Status::Ok();
}

}  // namespace fp
