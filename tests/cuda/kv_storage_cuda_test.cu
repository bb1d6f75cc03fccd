// The CUDA KV storage against the host storage: the same random create / append / truncate / fork / free steps
// drive a host KvCache and a CUDA KvCache (the metadata is deterministic, so both hand out the same slots and
// copy-on-write copies); after every step both pools must hold the same bytes. Covers the scatter kernel's unit
// widths (odd rows -> 2/4-byte units, d = 64 bf16 -> 16-byte units), strided token rows, a non-default stream,
// page bytes for hashing, and the CUDA anchor; slot-list uploads from pinned staging are asynchronous (Write
// returns while the stream is still busy) and a staging slot is never overwritten while its copy is in flight
// (many Writes queued behind a busy stream, the caller reusing its slot vector, must still land right). Every
// test skips when no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <tuple>
#include <random>
#include <stdexcept>
#include <vector>

#include "fieldprint/kv_cache.h"
#include "cuda_test_util.h"
#include "result_test_util.h"

namespace fp {
namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

using testing::Val;

// A cudaMalloc'd byte buffer owned by the test.
struct DevBytes {
  void* p = nullptr;
  explicit DevBytes(size_t n) {
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) throw std::runtime_error("cudaMalloc");
  }
  ~DevBytes() { cudaFree(p); }
  DevBytes(const DevBytes&) = delete;
  DevBytes& operator=(const DevBytes&) = delete;
};

std::vector<std::byte> ToHost(const void* dev, size_t n) {
  std::vector<std::byte> h(n);
  if (n && cudaMemcpy(h.data(), dev, n, cudaMemcpyDeviceToHost) != cudaSuccess) throw std::runtime_error("D2H");
  return h;
}

void ExpectSamePools(const KvCache& host, const KvCache& dev, int step) {
  for (int l = 0; l < host.layout().num_layers; ++l) {
    for (bool v : {false, true}) {
      const TensorView h = v ? Val(host.storage().LayerV(l)) : Val(host.storage().LayerK(l));
      const TensorView d = v ? Val(dev.storage().LayerV(l)) : Val(dev.storage().LayerK(l));
      ASSERT_EQ(d.device, Device::kCuda);
      ASSERT_EQ(h.nbytes(), d.nbytes());
      const auto got = ToHost(d.data, d.nbytes());
      ASSERT_EQ(std::memcmp(got.data(), h.data, h.nbytes()), 0)
          << "step " << step << " layer " << l << (v ? " V" : " K") << " pool differs from the host storage";
    }
  }
}

struct Case {
  DType dtype;
  int32_t kv_heads, head_dim, page, blocks;
};

class KvStorageCuda : public ::testing::TestWithParam<Case> {};

TEST_P(KvStorageCuda, RandomOpsMatchHostStorage) {
  SKIP_WITHOUT_GPU();
  const Case cs = GetParam();
  KvLayout layout{3, cs.blocks, cs.page, cs.kv_heads, cs.head_dim, cs.dtype};
  KvCache host = Val(KvCache::Create(layout, Device::kCpu));
  KvCache dev = Val(KvCache::Create(layout, Device::kCuda));
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t row = layout.token_bytes();
  const int64_t row_elems = static_cast<int64_t>(cs.kv_heads) * cs.head_dim;
  const size_t esize = DTypeSize(cs.dtype);
  std::mt19937 rng(1234 + cs.head_dim);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<SeqId> live;
  int appends = 0, cows = 0;
  ExpectSamePools(host, dev, -1);  // both zero-filled

  for (int step = 0; step < 300; ++step) {
    const int op = uni(0, 9);
    const SeqId id = live.empty() ? -1 : live[static_cast<size_t>(uni(0, static_cast<int>(live.size()) - 1))];
    if (live.empty() || (op == 0 && live.size() < 5)) {
      const SeqId a = host.meta().CreateSequence();
      ASSERT_EQ(dev.meta().CreateSequence(), a);
      live.push_back(a);
    } else if (op <= 5) {
      // n tokens for every layer; rows sometimes strided inside a wider buffer (a fused qkv output).
      const int n = uni(1, 9);
      const int64_t stride = uni(0, 1) ? row_elems : row_elems * 3 + 8 / static_cast<int64_t>(esize);
      const size_t buf_bytes = static_cast<size_t>(n * stride) * esize;
      std::vector<std::vector<std::byte>> hk(3), hv(3);
      std::vector<std::unique_ptr<DevBytes>> dk, dv;
      std::vector<TensorView> htk, htv, dtk, dtv;
      for (int l = 0; l < 3; ++l) {
        hk[l].resize(buf_bytes);
        hv[l].resize(buf_bytes);
        for (auto& b : hk[l]) b = static_cast<std::byte>(uni(0, 255));
        for (auto& b : hv[l]) b = static_cast<std::byte>(uni(0, 255));
        dk.push_back(std::make_unique<DevBytes>(buf_bytes));
        dv.push_back(std::make_unique<DevBytes>(buf_bytes));
        CUDA_OK(cudaMemcpy(dk[l]->p, hk[l].data(), buf_bytes, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(dv[l]->p, hv[l].data(), buf_bytes, cudaMemcpyHostToDevice));
        for (auto [vec, data, device] :
             {std::tuple{&htk, static_cast<void*>(hk[l].data()), Device::kCpu},
              std::tuple{&htv, static_cast<void*>(hv[l].data()), Device::kCpu},
              std::tuple{&dtk, dk[l]->p, Device::kCuda}, std::tuple{&dtv, dv[l]->p, Device::kCuda}}) {
          TensorView t = MakeContiguous(data, cs.dtype, {n, cs.kv_heads, cs.head_dim}, device);
          t.strides[0] = stride;
          vec->push_back(t);
        }
      }
      // A host tensor cannot be written into the device pool.
      EXPECT_EQ(dev.Append(id, htk, htv, stream).code(), StatusCode::kInvalidArgument);
      const Status hs = host.Append(id, htk, htv);
      const Status ds = dev.Append(id, dtk, dtv, stream);
      ASSERT_EQ(hs.code(), ds.code()) << hs.ToString() << " vs " << ds.ToString();
      appends += hs.ok();
      CUDA_OK(cudaStreamSynchronize(stream));  // the device inputs die at the end of this scope
    } else if (op <= 7) {
      const int32_t len = Val(host.meta().Length(id));
      const int32_t to = uni(0, len);
      ASSERT_TRUE(host.meta().Truncate(id, to).ok());
      ASSERT_TRUE(dev.meta().Truncate(id, to).ok());
    } else if (op == 8 && live.size() < 5) {
      const SeqId f = Val(host.meta().Fork(id));
      ASSERT_EQ(Val(dev.meta().Fork(id)), f);
      live.push_back(f);
      // Write one token into the child through Reserve + WriteLayer: exercises the CoW copy on the stream.
      auto hr = host.Reserve(f, 1);
      auto dr = dev.Reserve(f, 1, stream);
      ASSERT_EQ(hr.ok(), dr.ok());
      if (hr.ok()) {
        ASSERT_EQ(hr->slots, dr->slots);
        ASSERT_EQ(hr->copies, dr->copies);
        cows += !hr->copies.empty();
        std::vector<std::byte> hbuf(row);
        for (auto& b : hbuf) b = static_cast<std::byte>(uni(0, 255));
        DevBytes dbuf(row);
        CUDA_OK(cudaMemcpy(dbuf.p, hbuf.data(), row, cudaMemcpyHostToDevice));
        for (int l = 0; l < 3; ++l) {
          const TensorView ht = MakeContiguous(hbuf.data(), cs.dtype, {1, cs.kv_heads, cs.head_dim});
          const TensorView dt = MakeContiguous(dbuf.p, cs.dtype, {1, cs.kv_heads, cs.head_dim}, Device::kCuda);
          ASSERT_TRUE(host.WriteLayer(l, *hr, ht, ht).ok());
          ASSERT_TRUE(dev.WriteLayer(l, *dr, dt, dt, stream).ok());
        }
        CUDA_OK(cudaStreamSynchronize(stream));  // dbuf dies at the end of this scope
      }
    } else {
      ASSERT_TRUE(host.meta().FreeSequence(id).ok());
      ASSERT_TRUE(dev.meta().FreeSequence(id).ok());
      live.erase(std::find(live.begin(), live.end(), id));
    }
    CUDA_OK(cudaStreamSynchronize(stream));
    ASSERT_EQ(host.meta().pool().refcounts(), dev.meta().pool().refcounts());
    ASSERT_NO_FATAL_FAILURE(ExpectSamePools(host, dev, step));
  }
  EXPECT_GT(appends, 50);
  EXPECT_GT(cows, 3);

  // Page bytes for hashing point at device memory with the same contents as the host's.
  for (int32_t p = 0; p < layout.num_blocks; ++p) {
    const auto h = Val(host.storage().PageBytesV(2, p, layout.page_size - 1));
    const auto d = Val(dev.storage().PageBytesV(2, p, layout.page_size - 1));
    ASSERT_EQ(h.size(), d.size());
    EXPECT_EQ(std::memcmp(ToHost(d.data(), d.size()).data(), h.data(), h.size()), 0) << "page " << p;
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvStorageCuda,
                         ::testing::Values(Case{DType::kBF16, 2, 5, 4, 10},    // 20-byte rows: 4-byte units
                                           Case{DType::kF16, 1, 3, 4, 10},     // 6-byte rows: 2-byte units
                                           Case{DType::kBF16, 2, 64, 16, 8},   // 256-byte rows: 16-byte units
                                           Case{DType::kF32, 2, 128, 8, 12}));  // 1 KiB rows

// Keeps the stream busy so uploads queued behind it stay in flight while the host goes on.
__global__ void SpinKernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

TEST(KvStorageCudaStaging, UploadsAreAsyncAndStagingIsNotOverwrittenInFlight) {
  SKIP_WITHOUT_GPU();
  const KvLayout layout{2, 64, 4, 2, 64, DType::kBF16};  // 256 slots of 256-byte rows
  KvStorage host = Val(KvStorage::Create(layout, Device::kCpu));
  KvStorage dev = Val(KvStorage::Create(layout, Device::kCuda));
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int writes = 40, n = 6;  // far more uploads than staging slots; n * writes <= 256 distinct slots
  const size_t row = layout.token_bytes();
  std::mt19937 rng(77);
  std::vector<std::byte> hk(static_cast<size_t>(writes * n) * row), hv(hk.size());  // [writes, n, Hkv, d]
  for (auto& b : hk) b = static_cast<std::byte>(rng());
  for (auto& b : hv) b = static_cast<std::byte>(rng());
  DevBytes dk(hk.size()), dv(hv.size());
  CUDA_OK(cudaMemcpy(dk.p, hk.data(), hk.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dv.p, hv.data(), hv.size(), cudaMemcpyHostToDevice));
  std::vector<KvSlot> all;  // a random order of every slot: each write gets its own
  for (int32_t b = 0; b < layout.num_blocks; ++b) {
    for (int32_t o = 0; o < layout.page_size; ++o) all.push_back({b, o});
  }
  std::shuffle(all.begin(), all.end(), rng);

  std::vector<KvSlot> slots(static_cast<size_t>(n));  // the caller's buffer, rewritten right after each Write
  // Warm-up: one write per ring slot allocates the pinned buffers first (cudaHostAlloc may synchronise the
  // device, which would drain the spin kernel below and hide the waits this test looks for).
  for (int w = 0; w < 4; ++w) {
    std::copy(all.begin() + w * n, all.begin() + (w + 1) * n, slots.begin());
    const size_t off = static_cast<size_t>(w * n) * row;
    const TensorView k = MakeContiguous(static_cast<std::byte*>(dk.p) + off, DType::kBF16, {n, 2, 64}, Device::kCuda);
    const TensorView v = MakeContiguous(static_cast<std::byte*>(dv.p) + off, DType::kBF16, {n, 2, 64}, Device::kCuda);
    ASSERT_TRUE(dev.Write(0, slots, k, v, stream).ok());
  }
  CUDA_OK(cudaStreamSynchronize(stream));
  const uint64_t uploads0 = dev.slot_uploads(), waits0 = dev.staging_waits();
  SpinKernel<<<1, 1, 0, stream>>>(200'000'000);  // ~0.1 s: every upload below waits behind it
  CUDA_OK(cudaGetLastError());
  for (int w = 0; w < writes; ++w) {
    std::copy(all.begin() + w * n, all.begin() + (w + 1) * n, slots.begin());
    const size_t off = static_cast<size_t>(w * n) * row;
    for (int l = 0; l < layout.num_layers; ++l) {
      const TensorView k =
          MakeContiguous(static_cast<std::byte*>(dk.p) + off, DType::kBF16, {n, 2, 64}, Device::kCuda);
      const TensorView v =
          MakeContiguous(static_cast<std::byte*>(dv.p) + off, DType::kBF16, {n, 2, 64}, Device::kCuda);
      ASSERT_TRUE(dev.Write(l, slots, k, v, stream).ok());
      ASSERT_TRUE(host.Write(l, slots, MakeContiguous(hk.data() + off, DType::kBF16, {n, 2, 64}),
                             MakeContiguous(hv.data() + off, DType::kBF16, {n, 2, 64}))
                      .ok());
    }
    if (w == 0) {
      EXPECT_EQ(cudaStreamQuery(stream), cudaErrorNotReady)
          << "Write waited for the stream: the upload is not async";
    }
    std::fill(slots.begin(), slots.end(), KvSlot{0, 0});  // the caller reuses its buffer at once
  }
  EXPECT_EQ(dev.slot_uploads() - uploads0, static_cast<uint64_t>(writes)) << "one upload per step: layer 1 reuses layer 0's";
  EXPECT_GT(dev.staging_waits() - waits0, 0u) << "uploads queued behind the busy stream must wait for a free staging slot";
  CUDA_OK(cudaStreamSynchronize(stream));
  for (int l = 0; l < layout.num_layers; ++l) {
    for (bool v : {false, true}) {
      const TensorView h = v ? Val(host.LayerV(l)) : Val(host.LayerK(l));
      const TensorView d = v ? Val(dev.LayerV(l)) : Val(dev.LayerK(l));
      const auto got = ToHost(d.data, d.nbytes());
      EXPECT_EQ(std::memcmp(got.data(), h.data, h.nbytes()), 0) << "layer " << l << (v ? " V" : " K");
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST(KvStorageCudaErrors, BadInputsLeaveDevicePoolsUnchanged) {
  SKIP_WITHOUT_GPU();
  KvLayout layout{2, 4, 4, 2, 8, DType::kBF16};
  KvStorage st = Val(KvStorage::Create(layout, Device::kCuda));
  DevBytes buf(2 * layout.token_bytes());
  CUDA_OK(cudaMemset(buf.p, 0x5a, 2 * layout.token_bytes()));
  const KvSlot slots[] = {{1, 0}, {3, 3}};
  const TensorView ok = MakeContiguous(buf.p, DType::kBF16, {2, 2, 8}, Device::kCuda);
  const TensorView wrong_dtype = MakeContiguous(buf.p, DType::kF16, {2, 2, 8}, Device::kCuda);
  const TensorView wrong_shape = MakeContiguous(buf.p, DType::kBF16, {2, 1, 16}, Device::kCuda);
  const KvSlot bad[] = {{1, 0}, {4, 0}};
  EXPECT_EQ(st.Write(0, slots, wrong_dtype, ok).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.Write(0, slots, ok, wrong_shape).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.Write(0, bad, ok, ok).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.Write(2, slots, ok, ok).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.CopyPage(0, 4).code(), StatusCode::kOutOfRange);
  CUDA_OK(cudaDeviceSynchronize());
  const auto k0 = ToHost(Val(st.LayerK(0)).data, layout.pool_bytes());
  EXPECT_EQ(k0, std::vector<std::byte>(layout.pool_bytes(), std::byte{0}));
  ASSERT_TRUE(st.Write(0, slots, ok, ok).ok());
  CUDA_OK(cudaDeviceSynchronize());
  const auto page3 = ToHost(Val(st.PageBytesK(0, 3)).data(), layout.page_bytes());
  EXPECT_EQ(page3[3 * layout.token_bytes()], std::byte{0x5a});
  EXPECT_EQ(page3[0], std::byte{0});
}

TEST(AnchorSegmentCuda, WritesFromHostAndDeviceThenSeals) {
  SKIP_WITHOUT_GPU();
  const int32_t len = 6, hkv = 2, d = 16;
  auto host = Val(AnchorSegment::Create(2, len, hkv, d, DType::kBF16, Device::kCpu));
  auto dev = Val(AnchorSegment::Create(2, len, hkv, d, DType::kBF16, Device::kCuda));
  std::mt19937 rng(9);
  const size_t row = static_cast<size_t>(hkv * d) * 2;
  std::vector<std::byte> k(len * row), v(len * row);
  for (auto& b : k) b = static_cast<std::byte>(rng());
  for (auto& b : v) b = static_cast<std::byte>(rng());
  DevBytes dk(len * row), dv(len * row);
  CUDA_OK(cudaMemcpy(dk.p, k.data(), k.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dv.p, v.data(), v.size(), cudaMemcpyHostToDevice));
  for (int l = 0; l < 2; ++l) {
    ASSERT_TRUE(host->Write(l, 0, MakeContiguous(k.data(), DType::kBF16, {len, hkv, d}),
                            MakeContiguous(v.data(), DType::kBF16, {len, hkv, d})).ok());
    // Layer 0 from device memory in two pieces, layer 1 straight from host memory.
    if (l == 0) {
      ASSERT_TRUE(dev->Write(0, 0, MakeContiguous(dk.p, DType::kBF16, {2, hkv, d}, Device::kCuda),
                             MakeContiguous(dv.p, DType::kBF16, {2, hkv, d}, Device::kCuda)).ok());
      ASSERT_TRUE(dev->Write(0, 2, MakeContiguous(static_cast<std::byte*>(dk.p) + 2 * row, DType::kBF16,
                                                  {len - 2, hkv, d}, Device::kCuda),
                             MakeContiguous(static_cast<std::byte*>(dv.p) + 2 * row, DType::kBF16,
                                            {len - 2, hkv, d}, Device::kCuda)).ok());
    } else {
      ASSERT_TRUE(dev->Write(1, 0, MakeContiguous(k.data(), DType::kBF16, {len, hkv, d}),
                             MakeContiguous(v.data(), DType::kBF16, {len, hkv, d})).ok());
    }
  }
  CUDA_OK(cudaDeviceSynchronize());
  dev->Seal();
  EXPECT_EQ(dev->Write(0, 0, MakeContiguous(dk.p, DType::kBF16, {1, hkv, d}, Device::kCuda),
                       MakeContiguous(dv.p, DType::kBF16, {1, hkv, d}, Device::kCuda)).code(),
            StatusCode::kFailedPrecondition);
  for (int l = 0; l < 2; ++l) {
    const auto hk = Val(host->KBytes(l));
    const auto hv = Val(host->VBytes(l));
    EXPECT_EQ(ToHost(Val(dev->KBytes(l)).data(), hk.size()), std::vector<std::byte>(hk.begin(), hk.end()));
    EXPECT_EQ(ToHost(Val(dev->VBytes(l)).data(), hv.size()), std::vector<std::byte>(hv.begin(), hv.end()));
  }
  // A CUDA cache takes the CUDA anchor, not the host one.
  KvCache cache = Val(KvCache::Create(KvLayout{2, 4, 4, hkv, d, DType::kBF16}, Device::kCuda));
  host->Seal();
  const SeqId s = cache.meta().CreateSequence();
  EXPECT_EQ(cache.AttachAnchor(s, host).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache.AttachAnchor(s, dev).ok());
  EXPECT_EQ(dev->attached(), 1);
}

}  // namespace
}  // namespace fp
