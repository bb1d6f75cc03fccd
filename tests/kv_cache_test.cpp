// Unit tests of the paged KV cache: block pool, metadata operations, copy-on-write, the anchor, host storage,
// batches; and one test per kind of bad input (each checks the error code and that nothing changed).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "fieldprint/kv_cache.h"
#include "result_test_util.h"

namespace fp {
namespace {

using testing::Val;

KvLayout SmallLayout(DType dtype = DType::kF32, int32_t blocks = 8) {
  KvLayout l;
  l.num_layers = 3;
  l.num_blocks = blocks;
  l.page_size = 4;
  l.num_kv_heads = 2;
  l.head_dim = 5;
  l.dtype = dtype;
  return l;
}

KvCache MakeCache(const KvLayout& l) {
  auto c = KvCache::Create(l, Device::kCpu);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::move(c).value();
}

// Random float rows [n, Hkv, d] stored as f32; fresh values each call.
std::vector<float> RandomRows(int64_t n, const KvLayout& l, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<float> v(static_cast<size_t>(n * l.num_kv_heads * l.head_dim));
  for (float& x : v) x = u(rng);
  return v;
}

// Appends n random tokens to every layer; returns the K rows written per layer.
std::vector<std::vector<float>> AppendRandom(KvCache& c, SeqId s, int n, std::mt19937& rng) {
  const KvLayout& l = c.layout();
  std::vector<std::vector<float>> k, v;
  std::vector<TensorView> kt, vt;
  for (int i = 0; i < l.num_layers; ++i) {
    k.push_back(RandomRows(n, l, rng));
    v.push_back(RandomRows(n, l, rng));
  }
  for (int i = 0; i < l.num_layers; ++i) {
    kt.push_back(MakeContiguous(k[i].data(), DType::kF32, {n, l.num_kv_heads, l.head_dim}));
    vt.push_back(MakeContiguous(v[i].data(), DType::kF32, {n, l.num_kv_heads, l.head_dim}));
  }
  Status st = c.Append(s, kt, vt);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return k;
}

// Token `pos` of layer `layer` of seq s, read through its block table.
std::vector<float> ReadK(const KvCache& c, SeqId s, int layer, int32_t pos) {
  const KvLayout& l = c.layout();
  const KvSlot slot = Val(c.meta().SlotOf(s, pos));
  const float* base = static_cast<const float*>(c.storage().LayerK(layer)->data);
  const size_t row = static_cast<size_t>(l.num_kv_heads * l.head_dim);
  const float* p = base + (static_cast<size_t>(slot.block) * l.page_size + slot.offset) * row;
  return {p, p + row};
}

TEST(BlockPool, AllocateRefcountAndErrors) {
  BlockPool pool(3);
  EXPECT_EQ(Val(pool.Allocate()), 0);
  EXPECT_EQ(Val(pool.Allocate()), 1);
  EXPECT_EQ(Val(pool.Allocate()), 2);
  EXPECT_EQ(pool.Allocate().status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(pool.Incref(1).ok());
  EXPECT_EQ(Val(pool.RefCount(1)), 2);
  EXPECT_TRUE(pool.Decref(1).ok());
  EXPECT_TRUE(pool.Decref(1).ok());
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.Decref(1).code(), StatusCode::kFailedPrecondition);  // already free
  EXPECT_EQ(pool.Incref(1).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.Incref(3).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(pool.Decref(-1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(pool.RefCount(99).status().code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(pool.CheckInvariants().ok());
  EXPECT_EQ(Val(pool.Allocate()), 1);  // LIFO: the page just freed comes back first
}

TEST(KvLayout, RejectsBadGeometry) {
  KvLayout l = SmallLayout();
  EXPECT_TRUE(l.Validate().ok());
  for (int field = 0; field < 5; ++field) {
    KvLayout b = l;
    int32_t* f[] = {&b.num_layers, &b.num_blocks, &b.page_size, &b.num_kv_heads, &b.head_dim};
    *f[field] = 0;
    EXPECT_EQ(KvCache::Create(b, Device::kCpu).status().code(), StatusCode::kInvalidArgument) << field;
  }
  KvLayout big = l;
  big.head_dim = kMaxHeadDim + 1;
  EXPECT_FALSE(big.Validate().ok());
  KvLayout huge = l;
  huge.num_blocks = huge.page_size = huge.num_kv_heads = 1 << 30;
  EXPECT_EQ(huge.Validate().code(), StatusCode::kInvalidArgument);
}

TEST(KvMetadata, ReserveSlotsFollowPages) {
  auto m = Val(KvMetadata::Create(SmallLayout()));
  const SeqId s = m.CreateSequence();
  auto r = m.Reserve(s, 6);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, 0);
  ASSERT_EQ(r->slots.size(), 6u);
  EXPECT_TRUE(r->copies.empty());
  auto table = Val(m.BlockTable(s));
  ASSERT_EQ(table.size(), 2u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r->slots[i], (KvSlot{table[i / 4], i % 4}));
  auto r2 = m.Reserve(s, 2);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->start, 6);
  EXPECT_EQ(m.BlockTable(s)->size(), 2u);  // fills page 2 exactly
  EXPECT_EQ(Val(m.Length(s)), 8);
  EXPECT_TRUE(m.Reserve(s, 0)->slots.empty());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvMetadata, TruncateFreesWholePagesOnly) {
  auto m = Val(KvMetadata::Create(SmallLayout()));
  const SeqId s = m.CreateSequence();
  ASSERT_TRUE(m.Reserve(s, 10).ok());  // 3 pages
  EXPECT_EQ(m.num_free_blocks(), 5);
  ASSERT_TRUE(m.Truncate(s, 5).ok());  // 2 pages
  EXPECT_EQ(m.num_free_blocks(), 6);
  ASSERT_TRUE(m.Truncate(s, 4).ok());  // 1 page
  EXPECT_EQ(m.num_free_blocks(), 7);
  ASSERT_TRUE(m.Truncate(s, 0).ok());
  EXPECT_EQ(m.num_free_blocks(), 8);
  EXPECT_TRUE(m.BlockTable(s)->empty());
}

TEST(KvCache, ForkCopiesOnWriteOfSharedPartialPage) {
  KvCache c = MakeCache(SmallLayout());
  std::mt19937 rng(7);
  const SeqId a = c.meta().CreateSequence();
  auto a_rows = AppendRandom(c, a, 6, rng);  // page 0 full, page 1 half
  const SeqId b = Val(c.meta().Fork(a));
  const auto ta = std::vector<int32_t>(c.meta().BlockTable(a)->begin(), c.meta().BlockTable(a)->end());
  EXPECT_EQ(Val(c.meta().RefCount(ta[0])), 2);
  EXPECT_EQ(Val(c.meta().RefCount(ta[1])), 2);
  // b writes into the shared half page: it must get its own copy, a keeps its bytes.
  auto r = c.Reserve(b, 1);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->copies.size(), 1u);
  EXPECT_EQ(r->copies[0].src, ta[1]);
  const int32_t fresh = r->copies[0].dst;
  EXPECT_EQ(c.meta().BlockTable(b)->back(), fresh);
  EXPECT_EQ(Val(c.meta().RefCount(ta[1])), 1);
  EXPECT_EQ(Val(c.meta().RefCount(ta[0])), 2);  // the full page stays shared
  for (int l = 0; l < 3; ++l) {
    auto k = RandomRows(1, c.layout(), rng);
    TensorView kt = MakeContiguous(k.data(), DType::kF32, {1, 2, 5});
    ASSERT_TRUE(c.WriteLayer(l, *r, kt, kt).ok());
    for (int pos = 0; pos < 6; ++pos) {
      const auto want = std::vector<float>(a_rows[l].begin() + pos * 10, a_rows[l].begin() + pos * 10 + 10);
      EXPECT_EQ(ReadK(c, a, l, pos), want) << "parent pos " << pos;
      EXPECT_EQ(ReadK(c, b, l, pos), want) << "child pos " << pos << " (copied page)";
    }
    EXPECT_EQ(ReadK(c, b, l, 6), k);
  }
  // Writing a again after b left: page ta[1] is a's alone now, no copy.
  EXPECT_TRUE(c.Reserve(a, 1)->copies.empty());
  // A fork at a page boundary needs no copy either.
  ASSERT_TRUE(c.meta().Truncate(a, 4).ok());
  const SeqId d = Val(c.meta().Fork(a));
  EXPECT_TRUE(c.Reserve(d, 2)->copies.empty());
  EXPECT_TRUE(c.meta().CheckInvariants().ok());
}

TEST(KvCache, UnknownSequenceIdIsRejectedEverywhere) {
  KvCache c = MakeCache(SmallLayout());
  const SeqId s = c.meta().CreateSequence();
  ASSERT_TRUE(c.meta().Reserve(s, 3).ok());
  const SeqId bad = s + 100;
  EXPECT_EQ(c.meta().FreeSequence(bad).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().Reserve(bad, 1).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().Truncate(bad, 0).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().Fork(bad).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().Length(bad).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().BlockTable(bad).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().SlotOf(bad, 0).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.meta().Anchor(bad).status().code(), StatusCode::kOutOfRange);
  const SeqId ids[] = {s, bad};
  const int32_t q[] = {1, 1};
  EXPECT_EQ(c.meta().BuildBatch(ids, q).status().code(), StatusCode::kOutOfRange);
  std::vector<TensorView> none(3, MakeContiguous(nullptr, DType::kF32, {0, 2, 5}));
  EXPECT_EQ(c.Append(bad, none, none).code(), StatusCode::kOutOfRange);
  // A freed id stays unknown (ids are never reused).
  ASSERT_TRUE(c.meta().FreeSequence(s).ok());
  EXPECT_EQ(c.meta().FreeSequence(s).code(), StatusCode::kOutOfRange);
  EXPECT_NE(c.meta().CreateSequence(), s);
  EXPECT_EQ(c.meta().num_free_blocks(), 8);
}

TEST(KvCache, TruncateBeyondLengthAndBadCountsChangeNothing) {
  auto m = Val(KvMetadata::Create(SmallLayout()));
  const SeqId s = m.CreateSequence();
  ASSERT_TRUE(m.Reserve(s, 5).ok());
  const auto table = std::vector<int32_t>(m.BlockTable(s)->begin(), m.BlockTable(s)->end());
  EXPECT_EQ(m.Truncate(s, 6).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(m.Truncate(s, -1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(m.Reserve(s, -2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.SlotOf(s, 5).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(m.SlotOf(s, -1).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(Val(m.Length(s)), 5);
  EXPECT_EQ(std::vector<int32_t>(m.BlockTable(s)->begin(), m.BlockTable(s)->end()), table);
  EXPECT_EQ(m.num_free_blocks(), 6);
}

TEST(KvCache, ExhaustionIsAllOrNothing) {
  KvCache c = MakeCache(SmallLayout(DType::kF32, 4));
  std::mt19937 rng(3);
  const SeqId a = c.meta().CreateSequence();
  AppendRandom(c, a, 10, rng);  // 3 of 4 pages
  const SeqId b = Val(c.meta().Fork(a));
  const auto free_before = c.meta().pool().free_list();
  const auto rc_before = c.meta().pool().refcounts();
  // b needs a copy of the shared half page plus 1 new page: 2 > 1 free.
  auto r = c.meta().Reserve(b, 3);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(Val(c.meta().Length(b)), 10);
  EXPECT_EQ(c.meta().pool().free_list(), free_before);
  EXPECT_EQ(c.meta().pool().refcounts(), rc_before);
  EXPECT_EQ(c.meta().Reserve(a, 1 << 30).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(c.meta().Reserve(a, 0x7fffffff).status().code(), StatusCode::kOutOfRange);  // length overflow
  // A write that fits (the copy only) succeeds.
  EXPECT_TRUE(c.meta().Reserve(b, 2).ok());
  EXPECT_EQ(c.meta().num_free_blocks(), 0);
  EXPECT_TRUE(c.meta().CheckInvariants().ok());
}

TEST(KvStorage, WriteRejectsDtypeShapeDeviceAndSlotMismatches) {
  const KvLayout l = SmallLayout(DType::kBF16);
  auto st = Val(KvStorage::Create(l, Device::kCpu));
  std::vector<Bf16> buf(2 * 2 * 5 * 4, Bf16{0x3f80});
  const KvSlot slots[] = {{1, 0}, {1, 1}};
  auto ok = MakeContiguous(buf.data(), DType::kBF16, {2, 2, 5});
  const auto before = std::vector<std::byte>(static_cast<std::byte*>(st.LayerK(0)->data),
                                             static_cast<std::byte*>(st.LayerK(0)->data) + st.LayerK(0)->nbytes());
  auto code = [&](const TensorView& k, const TensorView& v, std::span<const KvSlot> s, int layer = 0) {
    return st.Write(layer, s, k, v).code();
  };
  EXPECT_EQ(code(MakeContiguous(buf.data(), DType::kF16, {2, 2, 5}), ok, slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(ok, MakeContiguous(buf.data(), DType::kF32, {2, 2, 5}), slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeContiguous(buf.data(), DType::kBF16, {2, 1, 5}), ok, slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeContiguous(buf.data(), DType::kBF16, {2, 2, 4}), ok, slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeContiguous(buf.data(), DType::kBF16, {2, 10}), ok, slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeContiguous(buf.data(), DType::kBF16, {3, 2, 5}), ok, slots), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(ok, ok, std::span<const KvSlot>(slots, 1)), StatusCode::kInvalidArgument);  // 1 slot, 2 rows
  EXPECT_EQ(code(MakeContiguous(nullptr, DType::kBF16, {2, 2, 5}), ok, slots), StatusCode::kInvalidArgument);
  TensorView transposed = ok;  // rows not contiguous
  std::swap(transposed.strides[1], transposed.strides[2]);
  transposed.shape = {2, 2, 5};
  EXPECT_EQ(code(transposed, ok, slots), StatusCode::kInvalidArgument);
  TensorView overlapping = ok;
  overlapping.strides[0] = 3;
  EXPECT_EQ(code(overlapping, ok, slots), StatusCode::kInvalidArgument);
  TensorView on_gpu = ok;
  on_gpu.device = Device::kCuda;
  EXPECT_EQ(code(on_gpu, ok, slots), StatusCode::kInvalidArgument);
  const KvSlot bad_block[] = {{1, 0}, {8, 0}};
  const KvSlot bad_offset[] = {{1, 0}, {0, 4}};
  const KvSlot negative[] = {{-1, 0}, {0, 0}};
  EXPECT_EQ(code(ok, ok, bad_block), StatusCode::kOutOfRange);
  EXPECT_EQ(code(ok, ok, bad_offset), StatusCode::kOutOfRange);
  EXPECT_EQ(code(ok, ok, negative), StatusCode::kOutOfRange);
  EXPECT_EQ(code(ok, ok, slots, 3), StatusCode::kOutOfRange);
  EXPECT_EQ(code(ok, ok, slots, -1), StatusCode::kOutOfRange);
  const auto after = std::vector<std::byte>(static_cast<std::byte*>(st.LayerK(0)->data),
                                            static_cast<std::byte*>(st.LayerK(0)->data) + st.LayerK(0)->nbytes());
  EXPECT_EQ(before, after);
  EXPECT_TRUE(st.Write(0, slots, ok, ok).ok());
  EXPECT_EQ(st.CopyPage(1, 1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.CopyPage(1, 8).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.CopyPage(-1, 2).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.LayerK(3).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.LayerV(-1).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.PageBytesK(0, 8).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.PageBytesV(0, 0, 5).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(st.PageBytesV(3, 0).status().code(), StatusCode::kOutOfRange);
#ifndef FIELDPRINT_HAVE_CUDA
  EXPECT_EQ(KvStorage::Create(l, Device::kCuda).status().code(), StatusCode::kUnimplemented);
#endif
}

TEST(KvStorage, StridedRowsPageBytesAndCopy) {
  const KvLayout l = SmallLayout(DType::kF16);
  auto st = Val(KvStorage::Create(l, Device::kCpu));
  // k and v inside one fused [n, 3 * Hkv, d] buffer (q-less qkv): token stride 3 * Hkv * d.
  std::mt19937 rng(11);
  std::vector<F16> fused(3 * 6 * 10);
  for (auto& x : fused) x = FloatToF16(std::uniform_real_distribution<float>(-1, 1)(rng));
  TensorView k = MakeContiguous(fused.data(), DType::kF16, {3, 2, 5});
  k.strides[0] = 30;
  TensorView v = k;
  v.data = fused.data() + 10;
  const KvSlot slots[] = {{2, 3}, {5, 0}, {5, 1}};
  ASSERT_TRUE(st.Write(1, slots, k, v).ok());
  auto page5 = Val(st.PageBytesK(1, 5, 2));
  ASSERT_EQ(page5.size(), 2 * l.token_bytes());
  EXPECT_EQ(std::memcmp(page5.data(), fused.data() + 30, 20), 0);
  EXPECT_EQ(std::memcmp(page5.data() + 20, fused.data() + 60, 20), 0);
  auto v23 = Val(st.PageBytesV(1, 2));
  ASSERT_EQ(v23.size(), l.page_bytes());
  EXPECT_EQ(std::memcmp(v23.data() + 3 * 20, fused.data() + 10, 20), 0);
  ASSERT_TRUE(st.CopyPage(5, 0).ok());
  for (int layer = 0; layer < 3; ++layer) {
    for (bool isv : {false, true}) {
      auto a = isv ? Val(st.PageBytesV(layer, 5)) : Val(st.PageBytesK(layer, 5));
      auto b = isv ? Val(st.PageBytesV(layer, 0)) : Val(st.PageBytesK(layer, 0));
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
    }
  }
  EXPECT_EQ(std::memcmp(st.PageBytesV(1, 0)->data(), fused.data() + 40, 20), 0);
}

TEST(AnchorSegment, SealedAnchorRefusesWritesAndCountsAttachments) {
  const KvLayout l = SmallLayout();
  auto a = Val(AnchorSegment::Create(3, 4, 2, 5, DType::kF32, Device::kCpu));
  std::mt19937 rng(5);
  auto rows = RandomRows(3, l, rng);
  TensorView t = MakeContiguous(rows.data(), DType::kF32, {3, 2, 5});
  ASSERT_TRUE(a->Write(2, 1, t, t).ok());
  EXPECT_EQ(std::memcmp(static_cast<float*>(a->K(2)->data) + 10, rows.data(), 30 * 4), 0);
  EXPECT_EQ(a->Write(2, 2, t, t).code(), StatusCode::kOutOfRange);  // rows [2, 5) past length 4
  EXPECT_EQ(a->Write(3, 0, t, t).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(a->Write(0, 0, MakeContiguous(rows.data(), DType::kBF16, {3, 2, 5}), t).code(),
            StatusCode::kInvalidArgument);
  auto m = Val(KvMetadata::Create(l));
  const SeqId s = m.CreateSequence();
  EXPECT_EQ(m.AttachAnchor(s, a).code(), StatusCode::kFailedPrecondition);  // not sealed
  a->Seal();
  EXPECT_EQ(a->Write(0, 0, t, t).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(a->attached(), 0);
  ASSERT_TRUE(m.AttachAnchor(s, a).ok());
  EXPECT_EQ(m.AttachAnchor(s, a).code(), StatusCode::kFailedPrecondition);  // already attached
  const SeqId f = Val(m.Fork(s));
  EXPECT_EQ(a->attached(), 2);
  EXPECT_EQ(m.Anchor(f)->get(), a.get());
  const SeqId busy = m.CreateSequence();
  ASSERT_TRUE(m.Reserve(busy, 1).ok());
  EXPECT_EQ(m.AttachAnchor(busy, a).code(), StatusCode::kFailedPrecondition);  // not empty
  auto other = Val(AnchorSegment::Create(3, 4, 2, 6, DType::kF32, Device::kCpu));
  other->Seal();
  EXPECT_EQ(m.AttachAnchor(m.CreateSequence(), other).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.AttachAnchor(m.CreateSequence(), nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a->attached(), 2);
  ASSERT_TRUE(m.FreeSequence(s).ok());
  EXPECT_EQ(a->attached(), 1);
  { KvMetadata gone = std::move(m); }  // destroying the metadata detaches the rest
  EXPECT_EQ(a->attached(), 0);
  EXPECT_EQ(a->K(3).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(a->VBytes(0)->size(), 4u * 10 * 4);
  EXPECT_EQ(AnchorSegment::Create(0, 4, 2, 5, DType::kF32, Device::kCpu).status().code(), StatusCode::kInvalidArgument);
  auto empty = Val(AnchorSegment::Create(3, 0, 2, 5, DType::kF32, Device::kCpu));
  EXPECT_EQ(empty->K(0)->shape[0], 0);
}

TEST(KvCache, BuildBatchAndBindLayer) {
  KvCache c = MakeCache(SmallLayout(DType::kF32, 16));
  auto anchor = Val(AnchorSegment::Create(3, 2, 2, 5, DType::kF32, Device::kCpu));
  anchor->Seal();
  const SeqId a = c.meta().CreateSequence(), b = c.meta().CreateSequence(), plain = c.meta().CreateSequence();
  ASSERT_TRUE(c.AttachAnchor(a, anchor).ok());
  ASSERT_TRUE(c.AttachAnchor(b, anchor).ok());
  ASSERT_TRUE(c.meta().Reserve(a, 9).ok());
  ASSERT_TRUE(c.meta().Reserve(b, 2).ok());
  ASSERT_TRUE(c.meta().Reserve(plain, 1).ok());
  const SeqId ids[] = {a, b};
  const int32_t q[] = {3, 1};
  auto batch = c.meta().BuildBatch(ids, q);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(batch->q_indptr, (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(batch->kv_lens, (std::vector<int32_t>{9, 2}));
  EXPECT_EQ(batch->max_blocks_per_seq, 3);
  const auto ta = Val(c.meta().BlockTable(a));
  const auto tb = Val(c.meta().BlockTable(b));
  EXPECT_EQ(batch->block_table, (std::vector<int32_t>{ta[0], ta[1], ta[2], tb[0], 0, 0}));
  EXPECT_EQ(batch->anchor, anchor);
  const AttentionBatch v = batch->view();
  EXPECT_EQ(v.num_seqs, 2);
  EXPECT_EQ(v.block_table[3], tb[0]);
  AttentionParams p;
  ASSERT_TRUE(c.BindLayer(1, *batch, &p).ok());
  EXPECT_EQ(p.k_pool.data, c.storage().LayerK(1)->data);
  EXPECT_EQ(p.k_pool.shape[0], 16);
  EXPECT_EQ(p.anchor_v.data, anchor->V(1)->data);
  EXPECT_EQ(p.anchor_len(), 2);
  EXPECT_EQ(c.BindLayer(3, *batch, &p).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.BindLayer(0, *batch, nullptr).code(), StatusCode::kInvalidArgument);
  // Mixed anchors, bad query counts, size mismatch.
  const SeqId mixed[] = {a, plain};
  const int32_t q2[] = {1, 1};
  EXPECT_EQ(c.meta().BuildBatch(mixed, q2).status().code(), StatusCode::kInvalidArgument);
  const int32_t too_many[] = {10, 1};
  EXPECT_EQ(c.meta().BuildBatch(ids, too_many).status().code(), StatusCode::kInvalidArgument);
  const int32_t negative[] = {-1, 1};
  EXPECT_EQ(c.meta().BuildBatch(ids, negative).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.meta().BuildBatch(ids, std::span<const int32_t>(q, 1)).status().code(), StatusCode::kInvalidArgument);
  const SeqId alone[] = {plain};
  const int32_t one[] = {1};
  auto pb = c.meta().BuildBatch(alone, one);
  ASSERT_TRUE(pb.ok());
  ASSERT_TRUE(c.BindLayer(0, *pb, &p).ok());
  EXPECT_EQ(p.anchor_len(), 0);
  auto empty = c.meta().BuildBatch({}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->q_indptr, std::vector<int32_t>{0});
}

}  // namespace
}  // namespace fp
