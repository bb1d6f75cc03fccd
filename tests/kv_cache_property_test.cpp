// Property test of the paged KV cache: thousands of random create / append / truncate / fork / free / bad-input
// steps on a small pool (so exhaustion and copy-on-write happen all the time) against a plain model (per
// sequence, the list of token ids it should hold). After EVERY step: refcounts equal the block-table references,
// the free list is exactly the refcount-0 pages, every sequence reads back its tokens' bytes through its block
// table, anchor attachment counts match, and every failed step left metadata and bytes exactly as they were.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "fieldprint/kv_cache.h"
#include "result_test_util.h"

namespace fp {
namespace {

using testing::Val;

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The bytes token `uid` has in layer `layer` for K (kv = 0) or V (kv = 1): a pure function, the model's content.
void TokenBytes(uint64_t uid, int layer, int kv, std::byte* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<std::byte>(Mix(uid * 1315423911ull + static_cast<uint64_t>(layer) * 7919 + kv * 104729 + i));
  }
}

struct Snapshot {
  std::vector<SeqId> ids;
  std::vector<int32_t> lens;
  std::vector<std::vector<int32_t>> tables;
  std::vector<int32_t> refcounts;
  std::vector<int32_t> free_list;
  std::vector<std::byte> bytes;  // every layer's K and V pool
  bool operator==(const Snapshot&) const = default;
};

Snapshot Take(const KvCache& c) {
  Snapshot s;
  s.ids = c.meta().SequenceIds();
  for (SeqId id : s.ids) {
    s.lens.push_back(Val(c.meta().Length(id)));
    auto t = Val(c.meta().BlockTable(id));
    s.tables.emplace_back(t.begin(), t.end());
  }
  s.refcounts = c.meta().pool().refcounts();
  s.free_list = c.meta().pool().free_list();
  for (int l = 0; l < c.layout().num_layers; ++l) {
    for (const auto& view : {Val(c.storage().LayerK(l)), Val(c.storage().LayerV(l))}) {
      const auto* p = static_cast<const std::byte*>(view.data);
      s.bytes.insert(s.bytes.end(), p, p + view.nbytes());
    }
  }
  return s;
}

class KvCacheProperty : public ::testing::TestWithParam<std::tuple<DType, uint32_t>> {};

TEST_P(KvCacheProperty, RandomOpsMatchModel) {
  const auto [dtype, seed] = GetParam();
  KvLayout layout;
  layout.num_layers = 2;
  layout.num_blocks = 10;
  layout.page_size = 4;
  layout.num_kv_heads = 2;
  layout.head_dim = 3;  // odd on purpose
  layout.dtype = dtype;
  auto made = KvCache::Create(layout, Device::kCpu);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  KvCache cache = std::move(made).value();
  const size_t row = layout.token_bytes();
  const int P = layout.page_size;

  auto anchor = Val(AnchorSegment::Create(layout.num_layers, 3, layout.num_kv_heads, layout.head_dim, dtype, Device::kCpu));
  anchor->Seal();

  std::mt19937 rng(seed);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::map<SeqId, std::vector<uint64_t>> model;  // the tokens each sequence holds
  std::set<SeqId> with_anchor;
  uint64_t next_uid = 1;
  int successes = 0, failures = 0, exhaustions = 0, cows = 0;

  auto pick = [&]() -> SeqId {
    if (model.empty() || uni(0, 19) == 0) return 1000000 + uni(0, 5);  // unknown id
    auto it = model.begin();
    std::advance(it, uni(0, static_cast<int>(model.size()) - 1));
    return it->first;
  };

  for (int step = 0; step < 2500; ++step) {
    const Snapshot before = Take(cache);
    const int op = uni(0, 99);
    Status st;
    bool expect_ok = true;
    if (op < 12) {  // create
      if (model.size() >= 6) continue;
      const SeqId id = cache.meta().CreateSequence();
      EXPECT_FALSE(model.count(id));
      model[id] = {};
      if (uni(0, 1)) {
        st = cache.AttachAnchor(id, anchor);
        with_anchor.insert(id);
      }
    } else if (op < 55) {  // append n tokens, every layer
      const SeqId id = pick();
      const int n = uni(0, 7);
      const bool bad_dtype = uni(0, 24) == 0;
      std::vector<std::vector<std::byte>> kb(layout.num_layers), vb(layout.num_layers);
      std::vector<TensorView> ks, vs;
      std::vector<uint64_t> uids;
      for (int i = 0; i < n; ++i) uids.push_back(next_uid++);
      for (int l = 0; l < layout.num_layers; ++l) {
        kb[l].resize(std::max<size_t>(1, n * row));
        vb[l].resize(std::max<size_t>(1, n * row));
        for (int i = 0; i < n; ++i) {
          TokenBytes(uids[i], l, 0, kb[l].data() + i * row, row);
          TokenBytes(uids[i], l, 1, vb[l].data() + i * row, row);
        }
        const DType td = bad_dtype && l == 1 ? (dtype == DType::kF32 ? DType::kF16 : DType::kF32) : dtype;
        ks.push_back(MakeContiguous(kb[l].data(), td, {n, layout.num_kv_heads, layout.head_dim}));
        vs.push_back(MakeContiguous(vb[l].data(), td, {n, layout.num_kv_heads, layout.head_dim}));
      }
      // The model's own account of what this needs.
      bool cow = false;
      int64_t need = 0;
      if (model.count(id)) {
        const int64_t L = static_cast<int64_t>(model[id].size());
        const auto table = Val(cache.meta().BlockTable(id));
        cow = n > 0 && L % P != 0 && Val(cache.meta().RefCount(table.back())) > 1;
        need = (L + n + P - 1) / P - (L + P - 1) / P + (cow ? 1 : 0);
      }
      expect_ok = model.count(id) && !bad_dtype && need <= cache.meta().num_free_blocks();
      if (model.count(id) && !bad_dtype && !expect_ok) ++exhaustions;
      st = cache.Append(id, ks, vs);
      if (st.ok() && model.count(id)) {
        model[id].insert(model[id].end(), uids.begin(), uids.end());
        cows += cow;
      }
      if (!st.ok() && model.count(id) && !bad_dtype) {
        EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
      }
      if (bad_dtype && model.count(id)) {
        EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      }
    } else if (op < 72) {  // truncate (sometimes past the end)
      const SeqId id = pick();
      const int len = model.count(id) ? static_cast<int>(model[id].size()) : 0;
      const int new_len = uni(0, 4) == 0 ? len + uni(1, 3) : uni(0, len);
      expect_ok = model.count(id) && new_len <= len;
      st = cache.meta().Truncate(id, new_len);
      if (st.ok()) model[id].resize(static_cast<size_t>(new_len));
      if (!st.ok()) {
        EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
      }
    } else if (op < 85) {  // fork
      const SeqId id = pick();
      if (model.size() >= 6 && model.count(id)) continue;
      expect_ok = model.count(id) != 0;
      auto r = cache.meta().Fork(id);
      st = r.status();
      if (r.ok()) {
        EXPECT_FALSE(model.count(*r));
        model[*r] = model[id];
        if (with_anchor.count(id)) with_anchor.insert(*r);
      }
    } else if (op < 97) {  // free
      const SeqId id = pick();
      expect_ok = model.count(id) != 0;
      st = cache.meta().FreeSequence(id);
      if (st.ok()) {
        model.erase(id);
        with_anchor.erase(id);
      }
    } else {  // a reserve of a negative count: always refused
      st = cache.meta().Reserve(pick(), -uni(1, 5)).status();
      expect_ok = false;
    }
    ASSERT_EQ(st.ok(), expect_ok) << "step " << step << " op " << op << ": " << st.ToString();
    if (st.ok()) {
      ++successes;
    } else {
      ++failures;
      ASSERT_TRUE(Take(cache) == before) << "step " << step << ": a failed op changed the state";
    }

    // Invariants, from the public accessors only.
    const auto& rc = cache.meta().pool().refcounts();
    std::vector<int32_t> refs(layout.num_blocks, 0);
    ASSERT_EQ(cache.meta().SequenceIds().size(), model.size());
    for (const auto& [id, toks] : model) {
      ASSERT_EQ(Val(cache.meta().Length(id)), static_cast<int32_t>(toks.size()));
      const auto table = Val(cache.meta().BlockTable(id));
      ASSERT_EQ(table.size(), (toks.size() + P - 1) / P);
      for (int32_t b : table) {
        ASSERT_TRUE(b >= 0 && b < layout.num_blocks);
        ++refs[b];
      }
      for (int l = 0; l < layout.num_layers; ++l) {
        const auto* kp = static_cast<const std::byte*>(cache.storage().LayerK(l)->data);
        const auto* vp = static_cast<const std::byte*>(cache.storage().LayerV(l)->data);
        std::vector<std::byte> want(row);
        for (size_t pos = 0; pos < toks.size(); ++pos) {
          const size_t off = (static_cast<size_t>(table[pos / P]) * P + pos % P) * row;
          TokenBytes(toks[pos], l, 0, want.data(), row);
          ASSERT_EQ(std::memcmp(kp + off, want.data(), row), 0) << "K of seq " << id << " pos " << pos;
          TokenBytes(toks[pos], l, 1, want.data(), row);
          ASSERT_EQ(std::memcmp(vp + off, want.data(), row), 0) << "V of seq " << id << " pos " << pos;
        }
      }
    }
    ASSERT_EQ(refs, rc) << "step " << step;
    std::vector<int32_t> free_sorted = cache.meta().pool().free_list();
    std::sort(free_sorted.begin(), free_sorted.end());
    std::vector<int32_t> zero;
    for (int32_t b = 0; b < layout.num_blocks; ++b) {
      if (rc[b] == 0) zero.push_back(b);
    }
    ASSERT_EQ(free_sorted, zero) << "step " << step << ": free list != refcount-0 pages (or duplicates)";
    ASSERT_EQ(cache.meta().num_free_blocks(), static_cast<int32_t>(zero.size()));
    ASSERT_EQ(anchor->attached(), static_cast<int32_t>(with_anchor.size()));
    for (const auto& [id, toks] : model) {
      ASSERT_EQ(cache.meta().Anchor(id)->get() != nullptr, with_anchor.count(id) == 1);
    }
    ASSERT_TRUE(cache.meta().CheckInvariants().ok()) << cache.meta().CheckInvariants().ToString();
  }
  // The run must have exercised every path it claims to.
  EXPECT_GT(successes, 1000);
  EXPECT_GT(failures, 100);
  EXPECT_GT(exhaustions, 20);
  EXPECT_GT(cows, 20);
}

INSTANTIATE_TEST_SUITE_P(Seeds, KvCacheProperty,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(1u, 2u, 3u, 4u)),
                         [](const auto& info) {
                           return std::string(DTypeName(std::get<0>(info.param))) + "_seed" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace fp
