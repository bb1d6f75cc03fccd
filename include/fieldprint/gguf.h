// fieldprint/gguf.h — a validating, memory-mapped GGUF (v2/v3) reader and a small in-memory writer.
// defines: GgmlType, GgmlTypeName, GgmlTypeTraits, GgufValueType, GgufValue, GgufTensor, GgufFile,
// GgufBuilder
//
// Design: the file is mmap'ed once (RAII) and parsed eagerly; every length, count, offset and size is checked
// against the bytes that exist before it is used, so a hostile file yields a Status, never an out-of-bounds
// read. Strings and tensor bytes are views into the mapping (zero copy): they live as long as the GgufFile.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fieldprint/status.h"

namespace fp {

// ggml tensor types (the on-disk numbering). Only types whose block layout we know are accepted by the
// reader.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  const char* name;
  uint32_t block_elems;  // elements per block (1 for plain types)
  uint32_t block_bytes;  // bytes per block
};
// Traits of a raw type id; an unknown id returns an error (the reader rejects such tensors).
Result<GgmlTypeTraits> GgmlTypeInfo(uint32_t raw_type);
const char* GgmlTypeName(GgmlType t);

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* GgufValueTypeName(GgufValueType t);

// One metadata value. Scalars are widened on parse; arrays keep their element type and children.
struct GgufValue {
  GgufValueType type = GgufValueType::kU8;
  uint64_t u = 0;                                // unsigned ints and bool
  int64_t i = 0;                                 // signed ints
  double f = 0.0;                                // floats
  std::string_view str;                          // kString (view into the mapping)
  GgufValueType elem_type = GgufValueType::kU8;  // kArray only
  uint64_t count = 0;                            // kArray only: number of elements
  const uint8_t* raw = nullptr;                  // kArray of scalars: [count * elem size] little-endian bytes
  std::vector<GgufValue> elems;                  // kArray of strings or arrays: [count] (scalars stay raw)

  // Element i of a scalar array, widened like a scalar value (i < count, scalar elem_type).
  GgufValue ScalarAt(uint64_t i) const;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::kF32 || type == GgufValueType::kF64; }
  // A short human form: scalars in full, strings quoted (cut at max_chars), arrays as "[u32 x 3] {1, 2, 3}".
  std::string Summary(size_t max_chars = 80) const;
};

struct GgufKv {
  std::string_view key;
  GgufValue value;
};

// A tensor: ne[0] is the innermost (contiguous) dimension, as in ggml. A 2-D weight [rows, cols] has
// ne = {cols, rows}; row r's bytes start at data + r * row_bytes.
struct GgufTensor {
  std::string_view name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 0;
  std::array<int64_t, 4> ne{1, 1, 1, 1};
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // [nbytes], inside the mapping

  int64_t numel() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const { return nbytes / static_cast<uint64_t>(rows() > 0 ? rows() : 1); }
  // "[576, 49152]" in ggml order (innermost first).
  std::string ShapeString() const;
};

// Owns a read-only mapping of a file (or borrows a caller's buffer). Move-only.
class GgufFile {
 public:
  // Maps and validates the file.
  static Result<GgufFile> Open(const std::string& path);
  // Parses a caller-owned buffer (tests, fuzzing); the buffer must outlive the GgufFile.
  static Result<GgufFile> FromBuffer(std::span<const uint8_t> bytes);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::vector<GgufKv>& metadata() const { return kvs_; }
  const GgufValue* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed getters: NotFound-style errors name the key; type errors name the key and both types.
  Result<uint64_t> GetUint(std::string_view key) const;  // any integer type, must be >= 0
  Result<int64_t> GetInt(std::string_view key) const;    // any integer type, must fit int64
  Result<double> GetFloat(std::string_view key) const;   // f32/f64 (and integers, converted)
  Result<bool> GetBool(std::string_view key) const;
  Result<std::string_view> GetString(std::string_view key) const;
  Result<std::vector<std::string_view>> GetStringArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  Result<std::vector<double>> GetFloatArray(std::string_view key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(std::string_view name) const;
  // Like FindTensor, with an error naming the missing tensor.
  Result<const GgufTensor*> GetTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  Status Parse();

  struct Mapping;  // mmap RAII
  std::unique_ptr<Mapping> map_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> kv_index_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

// Writes a GGUF v3 image in memory: tests, fuzz seeds and tiny synthetic models for engine tests.
class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t alignment = 32) : alignment_(alignment) {}
  void AddU32(std::string key, uint32_t v);
  void AddI32(std::string key, int32_t v);
  void AddU64(std::string key, uint64_t v);
  void AddF32(std::string key, float v);
  void AddBool(std::string key, bool v);
  void AddString(std::string key, std::string v);
  void AddStringArray(std::string key, const std::vector<std::string>& v);
  void AddI32Array(std::string key, const std::vector<int32_t>& v);
  void AddF32Array(std::string key, const std::vector<float>& v);
  // dims in ggml order (innermost first); bytes must be exactly the tensor's size for its type.
  Status AddTensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                   std::span<const uint8_t> bytes);
  std::vector<uint8_t> Build() const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<uint8_t> kv_bytes_;  // serialised key/value pairs
  std::vector<Tensor> tensors_;
};

}  // namespace fp
