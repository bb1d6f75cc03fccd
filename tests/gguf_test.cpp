// GGUF reader: builder round trip, every kind of malformed header (each must give a Status naming the
// problem), a mutation smoke test (every truncation + thousands of byte flips: error or valid parse, never a
// crash), and the real SmolLM2 file when present.
#include "fieldprint/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fieldprint/hparams.h"
#include "model_test_util.h"

namespace fp {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A small valid file with every metadata type the builder writes and three tensors.
std::vector<uint8_t> SmallValidFile(std::mt19937& rng,
                                    std::vector<std::vector<uint8_t>>* payloads = nullptr) {
  GgufBuilder b;
  b.AddString("general.architecture", "llama");
  b.AddU32("llama.block_count", 2);
  b.AddI32("some.signed", -7);
  b.AddU64("some.u64", 1ull << 40);
  b.AddF32("llama.rope.freq_base", 10000.f);
  b.AddBool("flag", true);
  b.AddStringArray("tokenizer.ggml.tokens", {"a", "bc", "", "d"});
  b.AddI32Array("tokenizer.ggml.token_type", {1, 3, 1, 1});
  b.AddF32Array("floats", {0.5f, -1.f});
  std::vector<std::vector<uint8_t>> p = {RandomBytes(4 * 8 * 3, rng), RandomBytes(34 * 2, rng),
                                         RandomBytes(20, rng)};
  EXPECT_TRUE(b.AddTensor("w.f32", GgmlType::kF32, {8, 3}, p[0]).ok());
  EXPECT_TRUE(b.AddTensor("w.q8", GgmlType::kQ8_0, {32, 2}, p[1]).ok());
  EXPECT_TRUE(b.AddTensor("w.q41", GgmlType::kQ4_1, {32}, p[2]).ok());
  if (payloads) *payloads = p;
  return b.Build();
}

TEST(Gguf, BuilderRoundTrip) {
  std::mt19937 rng(1234);
  std::vector<std::vector<uint8_t>> payloads;
  const std::vector<uint8_t> img = SmallValidFile(rng, &payloads);
  auto f = GgufFile::FromBuffer(img);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->metadata().size(), 9u);
  EXPECT_EQ(testing::V(f->GetString("general.architecture")), "llama");
  EXPECT_EQ(testing::V(f->GetUint("llama.block_count")), 2u);
  EXPECT_EQ(testing::V(f->GetInt("some.signed")), -7);
  EXPECT_FALSE(f->GetUint("some.signed").ok());  // negative
  EXPECT_EQ(testing::V(f->GetUint("some.u64")), 1ull << 40);
  EXPECT_EQ(testing::V(f->GetFloat("llama.rope.freq_base")), 10000.0);
  EXPECT_TRUE(testing::V(f->GetBool("flag")));
  auto toks = f->GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(toks.ok());
  EXPECT_EQ(*toks, (std::vector<std::string_view>{"a", "bc", "", "d"}));
  EXPECT_EQ(testing::V(f->GetIntArray("tokenizer.ggml.token_type")), (std::vector<int64_t>{1, 3, 1, 1}));
  EXPECT_EQ(testing::V(f->GetFloatArray("floats")), (std::vector<double>{0.5, -1.0}));
  // Wrong types and missing keys are errors that name the key.
  auto bad = f->GetString("llama.block_count");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("llama.block_count"), std::string::npos);
  EXPECT_FALSE(f->GetBool("nope").ok());
  EXPECT_FALSE(f->GetIntArray("tokenizer.ggml.tokens").ok());
  EXPECT_FALSE(f->GetStringArray("floats").ok());

  ASSERT_EQ(f->tensors().size(), 3u);
  const char* names[] = {"w.f32", "w.q8", "w.q41"};
  for (int k = 0; k < 3; ++k) {
    const GgufTensor* t = f->FindTensor(names[k]);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->nbytes, payloads[k].size());
    EXPECT_EQ(std::memcmp(t->data, payloads[k].data(), t->nbytes), 0);
    EXPECT_EQ((t->data - img.data() - f->data_offset()) % f->alignment(), 0u);
  }
  EXPECT_EQ(f->FindTensor("w.f32")->rows(), 3);
  EXPECT_EQ(f->FindTensor("w.f32")->ShapeString(), "[8, 3]");
  EXPECT_EQ(f->FindTensor("absent"), nullptr);
  EXPECT_FALSE(f->GetTensor("absent").ok());
}

TEST(Gguf, CustomAlignment) {
  GgufBuilder b(64);
  std::vector<uint8_t> a(4 * 3), c(4 * 5);
  ASSERT_TRUE(b.AddTensor("a", GgmlType::kF32, {3}, a).ok());
  ASSERT_TRUE(b.AddTensor("c", GgmlType::kF32, {5}, c).ok());
  const auto img = b.Build();
  auto f = GgufFile::FromBuffer(img);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->FindTensor("c")->offset, 64u);
}

TEST(Gguf, BuilderRejectsWrongSizes) {
  GgufBuilder b;
  std::vector<uint8_t> bytes(10);
  EXPECT_FALSE(b.AddTensor("x", GgmlType::kQ8_0, {32}, bytes).ok());  // wants 34
  EXPECT_FALSE(b.AddTensor("x", GgmlType::kQ8_0, {16}, bytes).ok());  // not whole blocks
  EXPECT_FALSE(b.AddTensor("x", GgmlType::kF32, {1, 1, 1, 1, 1}, bytes).ok());
}

// ---- hand-made malformed files ----

struct Raw {
  std::vector<uint8_t> b;
  template <typename T>
  Raw& put(T v) {
    const size_t n = b.size();
    b.resize(n + sizeof(T));
    std::memcpy(b.data() + n, &v, sizeof(T));
    return *this;
  }
  Raw& str(std::string_view s) {
    put<uint64_t>(s.size());
    for (char c : s) b.push_back(static_cast<uint8_t>(c));
    return *this;
  }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b = {'G', 'G', 'U', 'F'};
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  Raw& pad(size_t to) {
    b.resize(b.size() + (to - b.size() % to) % to, 0);
    return *this;
  }
  // One tensor info (f32 unless type given).
  Raw& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type = 0, uint64_t offset = 0) {
    str(name).put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
};

void ExpectError(const std::vector<uint8_t>& img, std::string_view needle) {
  auto f = GgufFile::FromBuffer(img);
  ASSERT_FALSE(f.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status().ToString();
}

TEST(Gguf, RejectsBadHeaders) {
  ExpectError({}, "truncated");
  ExpectError({'G', 'G', 'U', 'X', 3, 0, 0, 0}, "magic");
  ExpectError(Raw().header(0, 0, 1).b, "version 1");
  ExpectError(Raw().header(0, 0, 4).b, "version 4");
  ExpectError(Raw().header(0, 0, 0x03000000u).b, "big-endian");
  ExpectError(Raw().header(0, 1ull << 60).b, "metadata count");
  ExpectError(Raw().header(1ull << 40, 0).b, "tensor count");
  EXPECT_TRUE(GgufFile::FromBuffer(Raw().header(0, 0).b).ok());  // an empty model is valid
  EXPECT_TRUE(GgufFile::FromBuffer(Raw().header(0, 0, 2).b).ok());
}

TEST(Gguf, RejectsBadMetadata) {
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(4).b, "truncated");  // u32 missing
  ExpectError(Raw().header(0, 1).put<uint64_t>(1000).put<uint32_t>(0).put<uint32_t>(0).b,
              "past the end");  // key
  ExpectError(Raw().header(0, 1).str("").put<uint32_t>(4).put<uint32_t>(1).b, "empty key");
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(13).put<uint64_t>(0).b,
              "unknown metadata value type");
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(1ull << 62).b, "past the end");
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(0).b,
              "unknown array element type");
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 62).b,
              "runs past the end");
  ExpectError(Raw().header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 40).b,
              "cannot fit");
  // Arrays of arrays: two levels fine, five too deep.
  Raw nested = Raw().header(0, 1).str("k").put<uint32_t>(9);
  nested.put<uint32_t>(9).put<uint64_t>(1).put<uint32_t>(4).put<uint64_t>(2).put<uint32_t>(7).put<uint32_t>(
      8);
  auto ok = GgufFile::FromBuffer(nested.b);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->Find("k")->elems.at(0).ScalarAt(1).u, 8u);
  Raw deep = Raw().header(0, 1).str("k").put<uint32_t>(9);
  for (int d = 0; d < 5; ++d) deep.put<uint32_t>(9).put<uint64_t>(1);
  deep.put<uint32_t>(0).put<uint64_t>(0);
  ExpectError(deep.b, "nested deeper");
  // Duplicate keys; alignment of the wrong type or not a power of two.
  ExpectError(Raw()
                  .header(0, 2)
                  .str("k")
                  .put<uint32_t>(4)
                  .put<uint32_t>(1)
                  .str("k")
                  .put<uint32_t>(4)
                  .put<uint32_t>(1)
                  .b,
              "duplicate metadata key");
  ExpectError(Raw().header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(24).b,
              "power of two");
  ExpectError(Raw().header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(0).b,
              "power of two");
  ExpectError(Raw().header(0, 1).str("general.alignment").put<uint32_t>(10).put<uint64_t>(32).b,
              "must be a u32");
}

TEST(Gguf, RejectsBadTensors) {
  auto with = [](Raw r, size_t data_bytes) {
    r.pad(32);
    r.b.resize(r.b.size() + data_bytes, 0);
    return r.b;
  };
  EXPECT_TRUE(GgufFile::FromBuffer(with(Raw().header(1, 0).tensor("t", {4}), 16)).ok());
  ExpectError(with(Raw().header(1, 0).tensor("t", {}), 16), "rank 0");
  ExpectError(with(Raw().header(1, 0).tensor("t", {1, 1, 1, 1, 1}), 16), "rank 5");
  ExpectError(with(Raw().header(1, 0).tensor("t", {4, 0}), 16), "dimension 1 is 0");
  ExpectError(with(Raw().header(1, 0).tensor("t", {1ull << 63}), 16), "dimension 0");
  ExpectError(with(Raw().header(1, 0).tensor("t", {1ull << 32, 1ull << 32}), 16), "overflows");
  ExpectError(with(Raw().header(1, 0).tensor("t", {1ull << 61, 2}, 0), 16), "overflows");
  ExpectError(with(Raw().header(1, 0).tensor("t", {4}, 4), 16), "not supported");  // removed Q4_2
  ExpectError(with(Raw().header(1, 0).tensor("t", {4}, 99), 16), "not supported");
  ExpectError(with(Raw().header(1, 0).tensor("t", {48}, 8), 64), "not a multiple");  // Q8_0 rows of 48
  ExpectError(with(Raw().header(1, 0).tensor("t", {4}, 0, 8), 64), "not aligned");
  ExpectError(with(Raw().header(1, 0).tensor("t", {4}, 0, 32), 40), "run past the data section");
  ExpectError(with(Raw().header(1, 0).tensor("t", {4}, 0, 1ull << 63), 40), "run past the data section");
  ExpectError(with(Raw().header(1, 0).tensor("t", {32}), 64), "run past the data section");  // 128 bytes
  ExpectError(with(Raw().header(2, 0).tensor("t", {4}).tensor("t", {4}, 0, 32), 64), "duplicate tensor");
  ExpectError(Raw().header(1, 0).tensor("t", {4}).b, "past the end of the file");  // no data section at all
  ExpectError(Raw().header(1, 0).str("t").put<uint32_t>(1).b, "tensor count");  // rejected before reading it
  ExpectError(
      Raw().header(1, 0).str(std::string(40, 't')).put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).b,
      "truncated: tensor offset");
}

TEST(Gguf, OpenReportsIoErrors) {
  auto missing = GgufFile::Open("/nonexistent/fieldprint/model.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kIo);
  EXPECT_FALSE(GgufFile::Open("/").ok());  // a directory
}

// Touches every byte the parse exposes, so an out-of-bounds view would show up under ASan.
uint64_t TouchEverything(const GgufFile& f) {
  uint64_t h = 0;
  for (const GgufKv& kv : f.metadata()) {
    h += kv.key.size() + kv.value.Summary(16).size();
    for (const GgufValue& e : kv.value.elems) h += e.str.size() ? static_cast<uint8_t>(e.str.back()) : 0;
  }
  for (const GgufTensor& t : f.tensors()) {
    if (t.nbytes) h += t.data[0] + t.data[t.nbytes - 1];
  }
  return h;
}

TEST(Gguf, MutationSmoke) {
  std::mt19937 rng(99);
  const std::vector<uint8_t> img = SmallValidFile(rng);
  ASSERT_TRUE(GgufFile::FromBuffer(img).ok());
  size_t ok = 0, bad = 0;
  // Every truncation: the buffer is a fresh heap copy so reads past its end are caught by sanitizers.
  for (size_t n = 0; n < img.size(); ++n) {
    std::vector<uint8_t> cut(img.begin(), img.begin() + static_cast<std::ptrdiff_t>(n));
    auto f = GgufFile::FromBuffer(cut);
    if (f.ok()) {
      ++ok;
      TouchEverything(*f);
    } else {
      ++bad;
      EXPECT_FALSE(f.status().message().empty());
    }
  }
  // Header truncations must all fail (the tensor data is at the end; cutting it drops tensors out of range).
  EXPECT_EQ(ok, 0u);
  // Random byte flips, 1-4 per case, biased to the header where the structure is.
  const size_t header_end = img.size() - 32 * 7;
  for (int c = 0; c < 6000; ++c) {
    std::vector<uint8_t> m = img;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % (c % 4 == 0 ? m.size() : header_end);
      m[at] = static_cast<uint8_t>(c % 3 == 0 ? rng() : m[at] ^ (1u << (rng() % 8)));
    }
    auto f = GgufFile::FromBuffer(m);
    if (f.ok()) {
      ++ok;
      TouchEverything(*f);
    } else {
      ++bad;
    }
  }
  EXPECT_GT(bad, 1000u);
  EXPECT_GT(ok, 0u);  // flips in string bytes and tensor data leave the file valid
}

TEST(Gguf, RealSmolLM2) {
  FP_REQUIRE_SMOLLM2(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->tensors().size(), 272u);  // 30 layers x 9 + token_embd + output_norm
  size_t q41 = 0, q80 = 0, f32 = 0;
  for (const GgufTensor& t : f->tensors()) {
    q41 += t.type == GgmlType::kQ4_1;
    q80 += t.type == GgmlType::kQ8_0;
    f32 += t.type == GgmlType::kF32;
  }
  EXPECT_EQ(q41 + q80 + f32, 272u) << "a tensor type the engine may not handle";
  auto hp = ReadLlamaHParams(*f);
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(hp->n_layers, 30);
  EXPECT_EQ(hp->hidden, 576);
  EXPECT_EQ(hp->n_heads, 9);
  EXPECT_EQ(hp->n_kv_heads, 3);
  EXPECT_EQ(hp->head_dim, 64);
  EXPECT_EQ(hp->ffn, 1536);
  EXPECT_EQ(hp->vocab, 49152);
  EXPECT_TRUE(hp->tied_embeddings);
  EXPECT_EQ(hp->rope_theta, 100000.0);
  const GgufTensor* emb = f->FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, GgmlType::kQ8_0);
  EXPECT_EQ(emb->nbytes, 49152u / 32 * 34 * 576);
  // The last tensor ends inside the file.
  for (const GgufTensor& t : f->tensors()) EXPECT_LE(f->data_offset() + t.offset + t.nbytes, f->file_size());
}

TEST(Gguf, HParamsRejectInconsistentShapes) {
  GgufBuilder b;
  b.AddString("general.architecture", "llama");
  b.AddU32("llama.block_count", 1);
  b.AddU32("llama.embedding_length", 64);
  b.AddU32("llama.attention.head_count", 4);
  b.AddU32("llama.attention.head_count_kv", 3);  // does not divide 4
  b.AddU32("llama.feed_forward_length", 128);
  std::vector<uint8_t> emb(64 * 10 * 4);
  ASSERT_TRUE(b.AddTensor("token_embd.weight", GgmlType::kF32, {64, 10}, emb).ok());
  const auto img = b.Build();
  auto f = GgufFile::FromBuffer(img);
  ASSERT_TRUE(f.ok());
  auto hp = ReadLlamaHParams(*f);
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("kv head"), std::string::npos);
}

}  // namespace
}  // namespace fp
