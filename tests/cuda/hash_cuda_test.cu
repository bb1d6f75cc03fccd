// hash_cuda_test.cu — the GPU SHA-256 and tree hasher against the host (OpenSSL) ones, bit for bit.
// Every size class from 0 bytes to 1 GiB (1 GiB once), odd lengths, start pointers off 16-byte alignment,
// multi-segment batches, pinned and device outputs (poisoned first), hasher reuse, and bad input.
// Skips every test when no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "fieldprint/tree_hash.h"
#include "fieldprint/tree_hash_cuda.h"
#include "cuda_test_util.h"

namespace fp {
namespace {

#define ASSERT_CUDA(x) ASSERT_EQ((x), cudaSuccess) << #x

// A device buffer freed on scope exit.
struct DevBuf {
  uint8_t* p = nullptr;
  explicit DevBuf(size_t n) { EXPECT_EQ(cudaMalloc(&p, n > 0 ? n : 1), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
};

void FillRandom(std::vector<uint8_t>& v, std::mt19937_64& rng) {
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  for (; i < v.size(); ++i) v[i] = static_cast<uint8_t>(rng());
}

Digest Poison() {
  Digest d;
  d.bytes.fill(0xAB);
  return d;
}

TEST(HashCuda, PlainSha256MatchesOpenSslEverySizeAndAlignment) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 200; ++n) sizes.push_back(n);  // every padding case
  for (size_t n : {255, 256, 1000, 1023, 1024, 1025, 4095, 4096, 4097, 65537, (1 << 20) + 3}) sizes.push_back(n);
  const size_t cap = (1 << 20) + 3 + 16;
  std::vector<uint8_t> host(cap);
  FillRandom(host, rng);
  DevBuf dev(cap);
  ASSERT_CUDA(cudaMemcpy(dev.p, host.data(), cap, cudaMemcpyHostToDevice));
  Digest* out = nullptr;
  ASSERT_CUDA(cudaMallocHost(&out, 32));
  for (size_t n : sizes) {
    for (size_t shift : {size_t{0}, size_t{1}, size_t{3}, size_t{4}, size_t{13}}) {
      *out = Poison();
      // chunk = n: one message of n bytes (for n = 0 there is no chunk and nothing is written).
      ASSERT_TRUE(Sha256ChunksGpu(dev.p + shift, n, n > 0 ? n : 1, out, nullptr).ok());
      ASSERT_CUDA(cudaDeviceSynchronize());
      if (n == 0) {
        EXPECT_EQ(*out, Poison());
        continue;
      }
      ASSERT_EQ(*out, Sha256(host.data() + shift, n)) << "n=" << n << " shift=" << shift;
    }
  }
  cudaFreeHost(out);
}

TEST(HashCuda, PlainChunksMatchOpenSsl) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  for (size_t chunk : {size_t{1000}, size_t{1024}, size_t{4096}}) {
    const size_t n = 300 * chunk + rng() % chunk;
    std::vector<uint8_t> host(n + 7);
    FillRandom(host, rng);
    DevBuf dev(n + 7);
    ASSERT_CUDA(cudaMemcpy(dev.p, host.data(), n + 7, cudaMemcpyHostToDevice));
    const size_t chunks = (n + chunk - 1) / chunk;
    DevBuf out(chunks * 32);
    ASSERT_CUDA(cudaMemset(out.p, 0xAB, chunks * 32));
    ASSERT_TRUE(Sha256ChunksGpu(dev.p + 7, n, chunk, reinterpret_cast<Digest*>(out.p), nullptr).ok());
    std::vector<Digest> got(chunks);
    ASSERT_CUDA(cudaMemcpy(got.data(), out.p, chunks * 32, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < chunks; ++i) {
      const size_t len = std::min(chunk, n - i * chunk);
      ASSERT_EQ(got[i], Sha256(host.data() + 7 + i * chunk, len)) << "chunk " << i << " of " << chunk;
    }
  }
}

// Random items of random segments (some empty, some unaligned) hashed in one batch.
void CheckBatch(GpuTreeHasher& h, std::mt19937_64& rng, int num_items, size_t max_seg, bool pinned_out) {
  const size_t chunk = h.chunk_bytes();
  std::vector<std::vector<uint8_t>> host;
  std::vector<std::vector<ByteSegment>> host_segs(num_items), dev_segs(num_items);
  std::vector<size_t> shifts;
  size_t total = 0;
  std::vector<std::pair<int, size_t>> layout;  // (item, host buffer index)
  for (int i = 0; i < num_items; ++i) {
    const int nseg = static_cast<int>(rng() % 6);  // 0 segments: an empty item
    for (int s = 0; s < nseg; ++s) {
      const size_t sz = rng() % 5 == 0 ? 0 : rng() % max_seg;
      host.emplace_back(sz);
      FillRandom(host.back(), rng);
      shifts.push_back(rng() % 3 == 0 ? rng() % 16 : 0);
      layout.push_back({i, host.size() - 1});
      total += sz + 16;
    }
  }
  DevBuf dev(total);
  size_t off = 0;
  for (auto [item, k] : layout) {
    uint8_t* d = dev.p + off + shifts[k];
    if (!host[k].empty()) ASSERT_CUDA(cudaMemcpy(d, host[k].data(), host[k].size(), cudaMemcpyHostToDevice));
    dev_segs[item].push_back({d, host[k].size()});
    host_segs[item].push_back({host[k].data(), host[k].size()});
    off += host[k].size() + 16;
  }
  std::vector<GpuHashItem> items(num_items);
  for (int i = 0; i < num_items; ++i) items[i].segments = dev_segs[i];
  ASSERT_TRUE(h.Plan(items).ok());
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  Digest* out = nullptr;
  if (pinned_out) {
    ASSERT_CUDA(cudaMallocHost(&out, num_items * 32));
  } else {
    ASSERT_CUDA(cudaMalloc(&out, num_items * 32));
  }
  std::vector<Digest> got(num_items, Poison());
  ASSERT_CUDA(cudaMemcpy(out, got.data(), num_items * 32, cudaMemcpyDefault));
  ASSERT_TRUE(h.Run(stream, out).ok());
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ASSERT_CUDA(cudaMemcpy(got.data(), out, num_items * 32, cudaMemcpyDefault));
  for (int i = 0; i < num_items; ++i) {
    auto want = TreeHashCpu(host_segs[i], chunk, 1);
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(got[i], want.value()) << "item " << i << " of " << num_items << ", " << host_segs[i].size()
                                    << " segments, chunk " << chunk;
  }
  if (pinned_out) cudaFreeHost(out); else cudaFree(out);
  cudaStreamDestroy(stream);
}

TEST(HashCuda, TreeRootsMatchCpuOnRandomMultiSegmentBatches) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  for (size_t chunk : {size_t{1000}, size_t{1024}, size_t{4096}}) {
    auto h = GpuTreeHasher::Create(chunk);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    CheckBatch(**h, rng, 1, 40 * chunk, true);
    CheckBatch(**h, rng, 300, 20 * chunk, false);  // grows the workspace
    CheckBatch(**h, rng, 7, 300 * chunk, true);    // > kLeafGroup leaves per item: several passes
    CheckBatch(**h, rng, 50, 3 * chunk, false);    // reuse with a smaller plan
  }
}

// One item of one segment of n bytes at a given shift; GPU root vs CPU root (all cores).
void CheckOne(size_t n, size_t shift, size_t chunk, std::mt19937_64& rng) {
  std::vector<uint8_t> host(n);
  FillRandom(host, rng);
  DevBuf dev(n + shift);
  if (n > 0) ASSERT_CUDA(cudaMemcpy(dev.p + shift, host.data(), n, cudaMemcpyHostToDevice));
  ByteSegment ds{dev.p + shift, n}, hs{host.data(), n};
  GpuHashItem item{{&ds, 1}};
  auto got = TreeHashGpuSync({&item, 1}, chunk);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  auto want = TreeHashCpu({&hs, 1}, chunk, 0);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(got.value()[0], want.value()) << "n=" << n << " shift=" << shift << " chunk=" << chunk;
}

TEST(HashCuda, TreeRootsEverySizeClassTo256MiB) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  const size_t c = 4096;
  // Around the pass boundaries: 128 leaves (leaf CTA group) and 128 * 512 leaves (one reduce CTA).
  std::vector<size_t> sizes = {0, 1, 63, 64, c - 1, c, c + 1, 128 * c - 1, 128 * c, 128 * c + 1, 129 * c,
                               (size_t{1} << 20) + 5, 65536 * c, 65536 * c + 1, 65537 * c + 77};
  for (size_t n = 4096; n <= (size_t{256} << 20); n *= 4) sizes.push_back(n + rng() % 1000);
  for (size_t n : sizes) CheckOne(n, rng() % 2 == 0 ? 0 : 1 + rng() % 15, c, rng);
  CheckOne(3 * 1024 * 1024 + 11, 5, 1024, rng);
}

// Items of k*S-1, k*S, k*S+1 leaves for the leaf-CTA subtree S = 128, k from 1 to 129: k <= 128 groups end
// in the fused last-CTA finish, k = 128 * 128 + 1 leaves is the first that needs a reduce pass. One batch
// mixes both (and an empty item), run twice on one hasher: the second run checks the counters were reset.
TEST(HashCuda, TreeRootsAroundCtaSubtreeBoundaries) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  const size_t chunk = 256, S = 128;
  std::vector<size_t> leaves = {0};
  for (size_t k : {1, 2, 3, 127, 128, 129}) {
    for (size_t d : {k * S - 1, k * S, k * S + 1}) leaves.push_back(d);
  }
  std::vector<std::vector<uint8_t>> host(leaves.size());
  std::vector<ByteSegment> dev_segs(leaves.size()), host_segs(leaves.size());
  std::vector<std::unique_ptr<DevBuf>> bufs;
  for (size_t i = 0; i < leaves.size(); ++i) {
    // Last chunk short by a random amount (still one leaf).
    const size_t n = leaves[i] == 0 ? 0 : leaves[i] * chunk - rng() % chunk;
    host[i].resize(n);
    FillRandom(host[i], rng);
    bufs.push_back(std::make_unique<DevBuf>(n));
    if (n > 0) ASSERT_CUDA(cudaMemcpy(bufs.back()->p, host[i].data(), n, cudaMemcpyHostToDevice));
    dev_segs[i] = {bufs.back()->p, n};
    host_segs[i] = {host[i].data(), n};
  }
  std::vector<GpuHashItem> items(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) items[i].segments = {&dev_segs[i], 1};
  auto h = GpuTreeHasher::Create(chunk);
  ASSERT_TRUE(h.ok());
  Digest* out = nullptr;
  ASSERT_CUDA(cudaMallocHost(&out, items.size() * 32));
  for (int run = 0; run < 2; ++run) {
    for (size_t i = 0; i < items.size(); ++i) out[i] = Poison();
    ASSERT_TRUE((*h)->Plan(items).ok());
    ASSERT_TRUE((*h)->Run(nullptr, out).ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    for (size_t i = 0; i < items.size(); ++i) {
      auto want = TreeHashCpu({&host_segs[i], 1}, chunk, 0);
      ASSERT_TRUE(want.ok());
      ASSERT_EQ(out[i], want.value()) << "run " << run << " leaves " << leaves[i];
    }
  }
  cudaFreeHost(out);
}

TEST(HashCuda, TreeRootOneGiB) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  CheckOne(size_t{1} << 30, 0, kDefaultChunkBytes, rng);
}

TEST(HashCuda, BadInputIsAnError) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(GpuTreeHasher::Create(0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuTreeHasher::Create(kMaxChunkBytes + 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuTreeHasher::Create(4096, 1 << 20).status().code(), StatusCode::kInvalidArgument);
  auto h = GpuTreeHasher::Create(4096);
  ASSERT_TRUE(h.ok());
  Digest* out = nullptr;
  ASSERT_CUDA(cudaMalloc(&out, 32));
  EXPECT_EQ((*h)->Run(nullptr, out).code(), StatusCode::kFailedPrecondition);  // no plan yet
  ByteSegment bad{nullptr, 100};
  GpuHashItem item{{&bad, 1}};
  EXPECT_EQ((*h)->Plan({&item, 1}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*h)->Run(nullptr, out).code(), StatusCode::kFailedPrecondition);  // a failed plan is no plan
  EXPECT_EQ(Sha256ChunksGpu(nullptr, 10, 4, out, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Sha256ChunksGpu(out, 10, 0, out, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Sha256ChunksGpu(out, 10, 4, reinterpret_cast<Digest*>(reinterpret_cast<uint8_t*>(out) + 1), nullptr)
                .code(),
            StatusCode::kInvalidArgument);
  cudaFree(out);
}

}  // namespace
}  // namespace fp
