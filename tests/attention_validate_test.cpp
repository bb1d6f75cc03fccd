// ValidateAttention / AttentionCpu on bad inputs: one test per kind of malformed launch, each asserting the
// StatusCode, a fragment of the message, and that the poisoned output was left untouched (nothing ran).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention_oracle.h"
#include "fieldprint/attention.h"

namespace fp {
namespace {

using testing::Case;
using testing::CaseSpec;
using testing::MakeCase;

// A valid f32 problem: 2 sequences, page 8, Hkv 2, G 2, d 16, anchor 5.
Case Valid() {
  CaseSpec s;
  s.page_size = 8;
  s.num_kv_heads = 2;
  s.group = 2;
  s.head_dim = 16;
  s.anchor_len = 5;
  s.use_gamma = true;
  s.num_seqs = 2;
  s.kv_lens = {13, 20};  // 2 and 3 pages; max_blocks_per_seq = 3
  s.q_lens = {2, 3};
  return MakeCase(s, 1234);
}

// AttentionCpu must fail with `code` and a message containing `fragment`, without writing o or lse.
void ExpectRejected(Case& c, StatusCode code, const std::string& fragment) {
  const std::vector<uint8_t> o_before = c.o;
  const Status st = AttentionCpu(c.params, 2);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), code) << st.ToString();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << "message: " << st.message();
  EXPECT_EQ(c.o, o_before) << "o was written despite the error";
  for (float v : c.lse) EXPECT_TRUE(std::isnan(v)) << "lse was written despite the error";
}

TEST(AttentionValidate, ValidCaseRuns) {
  Case c = Valid();
  EXPECT_TRUE(ValidateAttention(c.params, c.params.batch).ok());
  EXPECT_TRUE(AttentionCpu(c.params, 2).ok());
}

TEST(AttentionValidate, BlockIdOutOfRange) {
  Case c = Valid();
  const int64_t nb = c.params.num_blocks();
  c.block_table[1 * 3 + 2] = 99;
  ExpectRejected(c, StatusCode::kOutOfRange, "block_table[1, 2] = 99 is out of range [0, " + std::to_string(nb) + ")");
  Case n = Valid();
  n.block_table[0] = -1;
  ExpectRejected(n, StatusCode::kOutOfRange, "block_table[0, 0] = -1");
}

TEST(AttentionValidate, UnusedTableSlotsAreNotChecked) {
  Case c = Valid();  // sequence 0 uses 2 of 3 slots; the third holds the generator's poison id
  EXPECT_EQ(c.block_table[2], -7);
  EXPECT_TRUE(ValidateAttention(c.params, c.params.batch).ok());
}

TEST(AttentionValidate, KvLenBeyondTableCapacity) {
  Case c = Valid();
  c.kv_lens[0] = 3 * 8 + 1;
  ExpectRejected(c, StatusCode::kOutOfRange, "kv_lens[0] = 25 needs 4 pages");
  Case n = Valid();
  n.kv_lens[1] = -3;
  ExpectRejected(n, StatusCode::kInvalidArgument, "kv_lens[1] = -3");
}

TEST(AttentionValidate, HeadsNotDivisible) {
  Case c = Valid();  // Hq 4, Hkv 2 -> make Hq 3 (views only shrink, buffers stay large enough)
  c.params.q = MakeContiguous(c.q.data(), DType::kF32, {5, 3, 16});
  c.params.o = MakeContiguous(c.o.data(), DType::kF32, {5, 3, 16});
  ExpectRejected(c, StatusCode::kInvalidArgument, "num_q_heads = 3 is not divisible by num_kv_heads = 2");
}

TEST(AttentionValidate, HeadDimOutOfRange) {
  for (int64_t d : {int64_t{0}, int64_t{kMaxHeadDim + 1}}) {
    Case c = Valid();  // never read: validation must fail before touching data
    auto& p = c.params;
    p.q = MakeContiguous(c.q.data(), DType::kF32, {5, 4, d});
    p.o = MakeContiguous(c.o.data(), DType::kF32, {5, 4, d});
    p.k_pool = MakeContiguous(c.k_pool.data(), DType::kF32, {p.num_blocks(), 8, 2, d});
    p.v_pool = MakeContiguous(c.v_pool.data(), DType::kF32, {p.num_blocks(), 8, 2, d});
    p.anchor_k = MakeContiguous(c.anchor_k.data(), DType::kF32, {5, 2, d});
    p.anchor_v = MakeContiguous(c.anchor_v.data(), DType::kF32, {5, 2, d});
    ExpectRejected(c, StatusCode::kInvalidArgument, "head_dim = " + std::to_string(d) + " is out of range [1, 256]");
  }
}

TEST(AttentionValidate, BadScale) {
  for (float s : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 0.f}) {
    Case c = Valid();
    c.params.scale = s;
    ExpectRejected(c, StatusCode::kInvalidArgument, "scale = ");
  }
}

TEST(AttentionValidate, NullBuffers) {
  {
    Case c = Valid();
    c.params.q.data = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "q: null data");
  }
  {
    Case c = Valid();
    c.params.o.data = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "o: null data");
  }
  {
    Case c = Valid();
    c.params.v_pool.data = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "v_pool: null data");
  }
  {
    Case c = Valid();
    c.params.anchor_k.data = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "anchor_k: null data");
  }
  {
    Case c = Valid();
    c.params.batch.kv_lens = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "kv_lens is null");
  }
  {
    Case c = Valid();
    c.params.batch.q_indptr = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "q_indptr is null");
  }
  {
    Case c = Valid();
    c.params.batch.block_table = nullptr;
    ExpectRejected(c, StatusCode::kInvalidArgument, "block_table is null");
  }
}

TEST(AttentionValidate, QIndptrMalformed) {
  {
    Case c = Valid();  // {0, 2, 5} -> {0, 4, 5}? still monotone; make it decrease
    c.q_indptr = {0, 6, 5};
    ExpectRejected(c, StatusCode::kInvalidArgument, "q_indptr is not monotone: q_indptr[2] = 5 < q_indptr[1] = 6");
  }
  {
    Case c = Valid();
    c.q_indptr = {0, 2, 4};
    ExpectRejected(c, StatusCode::kInvalidArgument, "q_indptr[2] = 4, expected num_tokens = 5");
  }
  {
    Case c = Valid();
    c.q_indptr = {1, 2, 5};
    ExpectRejected(c, StatusCode::kInvalidArgument, "q_indptr[0] = 1, expected 0");
  }
  {
    Case c = Valid();
    c.params.batch.num_seqs = -1;
    ExpectRejected(c, StatusCode::kInvalidArgument, "num_seqs = -1");
  }
}

TEST(AttentionValidate, MoreQueriesThanKeysUnderCausal) {
  Case c = Valid();
  c.kv_lens[1] = 2;  // 3 query rows
  ExpectRejected(c, StatusCode::kInvalidArgument, "n_q = 3 query rows but kv_len = 2");
  // The same batch is fine without causal masking.
  Case n = Valid();
  n.kv_lens[1] = 2;
  n.params.causal = false;
  EXPECT_TRUE(AttentionCpu(n.params, 1).ok());
}

TEST(AttentionValidate, DtypeMismatch) {
  Case c = Valid();
  c.params.k_pool.dtype = DType::kBF16;
  ExpectRejected(c, StatusCode::kInvalidArgument, "dtype mismatch: k_pool is bf16 but q is f32");
  Case a = Valid();
  a.params.anchor_v.dtype = DType::kF16;
  ExpectRejected(a, StatusCode::kInvalidArgument, "dtype mismatch: anchor_v is f16");
}

TEST(AttentionValidate, AnchorShapeMismatch) {
  {
    Case c = Valid();
    c.params.anchor_v = MakeContiguous(c.anchor_v.data(), DType::kF32, {4, 2, 16});
    ExpectRejected(c, StatusCode::kInvalidArgument, "anchor shape mismatch: anchor_v dim 0 = 4 but anchor_k dim 0 = 5");
  }
  {
    Case c = Valid();
    c.params.anchor_k = MakeContiguous(c.anchor_k.data(), DType::kF32, {5, 1, 16});
    c.params.anchor_v = MakeContiguous(c.anchor_v.data(), DType::kF32, {5, 1, 16});
    ExpectRejected(c, StatusCode::kInvalidArgument, "anchor num_kv_heads mismatch");
  }
  {
    Case c = Valid();
    c.params.anchor_k = MakeContiguous(c.anchor_k.data(), DType::kF32, {5, 2, 8});
    c.params.anchor_v = MakeContiguous(c.anchor_v.data(), DType::kF32, {5, 2, 8});
    ExpectRejected(c, StatusCode::kInvalidArgument, "anchor head_dim mismatch");
  }
  {
    Case c = Valid();  // one absent (rank 0), the other present
    c.params.anchor_v = TensorView{};
    ExpectRejected(c, StatusCode::kInvalidArgument, "anchor_v: expected rank 3");
  }
}

TEST(AttentionValidate, ShapeRankContiguityPage) {
  {
    Case c = Valid();
    c.params.o = MakeContiguous(c.o.data(), DType::kF32, {5, 4, 8});
    ExpectRejected(c, StatusCode::kInvalidArgument, "shape mismatch: o dim 2 = 8");
  }
  {
    Case c = Valid();
    c.params.k_pool.rank = 3;
    ExpectRejected(c, StatusCode::kInvalidArgument, "k_pool: expected rank 4");
  }
  {
    Case c = Valid();
    std::swap(c.params.q.strides[0], c.params.q.strides[1]);
    ExpectRejected(c, StatusCode::kInvalidArgument, "q: must be contiguous");
  }
  {
    Case c = Valid();
    auto& p = c.params;
    p.k_pool = MakeContiguous(c.k_pool.data(), DType::kF32, {p.num_blocks(), 0, 2, 16});
    p.v_pool = p.k_pool;
    p.v_pool.data = c.v_pool.data();
    ExpectRejected(c, StatusCode::kInvalidArgument, "page_size = 0");
  }
  {
    Case c = Valid();  // element count overflows int64
    c.params.k_pool.shape = {int64_t{1} << 40, int64_t{1} << 20, 2, 16};
    ExpectRejected(c, StatusCode::kInvalidArgument, "overflow");
  }
}

TEST(AttentionValidate, CudaTensorsRejectedByCpuPath) {
  Case c = Valid();
  for (TensorView* t : {&c.params.q, &c.params.k_pool, &c.params.v_pool, &c.params.anchor_k, &c.params.anchor_v,
                        &c.params.o}) {
    t->device = Device::kCuda;
  }
  // Validation itself accepts an all-CUDA launch (its batch arrays here are host-readable).
  EXPECT_TRUE(ValidateAttention(c.params, c.params.batch).ok());
  ExpectRejected(c, StatusCode::kInvalidArgument, "AttentionCpu needs host tensors, but q is [5, 4, 16] f32 cuda");
  Case m = Valid();
  m.params.v_pool.device = Device::kCuda;
  ExpectRejected(m, StatusCode::kInvalidArgument, "v_pool is");
  EXPECT_NE(ValidateAttention(m.params, m.params.batch).message().find("device mismatch"), std::string::npos);
}

TEST(AttentionValidate, HostBatchMustDescribeLaunch) {
  Case c = Valid();
  AttentionBatch hb = c.params.batch;
  hb.max_blocks_per_seq = 2;
  const Status st = ValidateAttention(c.params, hb);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("does not describe p.batch"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace fp
