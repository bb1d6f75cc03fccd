// GGUF typed metadata getters and the in-memory writer (GgufBuilder).
// Getters accept any integer width for integer keys (writers differ: u32 vs u64 vs i32), and say which key
// and which type when they refuse.
#include <cstring>
#include <limits>

#include "fieldprint/gguf.h"

namespace fp {

namespace {

Status Missing(std::string_view key) {
  return InvalidArgument("gguf: metadata key '" + std::string(key) + "' is missing");
}

Status WrongType(std::string_view key, const GgufValue& v, const char* want) {
  std::string have = GgufValueTypeName(v.type);
  if (v.type == GgufValueType::kArray) have += std::string(" of ") + GgufValueTypeName(v.elem_type);
  return InvalidArgument("gguf: metadata '" + std::string(key) + "' is " + have + ", want " + want);
}

bool SignedType(GgufValueType t) {
  return t == GgufValueType::kI8 || t == GgufValueType::kI16 || t == GgufValueType::kI32 ||
         t == GgufValueType::kI64;
}

// Integer value as int64 if representable.
bool AsInt64(const GgufValue& v, int64_t* out) {
  if (!v.is_integer()) return false;
  if (SignedType(v.type)) {
    *out = v.i;
    return true;
  }
  if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = static_cast<int64_t>(v.u);
  return true;
}

}  // namespace

Result<uint64_t> GgufFile::GetUint(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (!v->is_integer()) return WrongType(key, *v, "an unsigned integer");
  if (SignedType(v->type)) {
    if (v->i < 0) return InvalidArgument("gguf: metadata '" + std::string(key) + "' is negative");
    return static_cast<uint64_t>(v->i);
  }
  return v->u;
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  int64_t x = 0;
  if (!AsInt64(*v, &x)) return WrongType(key, *v, "an integer that fits int64");
  return x;
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->is_float()) return v->f;
  int64_t x = 0;
  if (AsInt64(*v, &x)) return static_cast<double>(x);
  return WrongType(key, *v, "a number");
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->type != GgufValueType::kBool) return WrongType(key, *v, "bool");
  return v->u != 0;
}

Result<std::string_view> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->type != GgufValueType::kString) return WrongType(key, *v, "string");
  return v->str;
}

Result<std::vector<std::string_view>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->type != GgufValueType::kArray || v->elem_type != GgufValueType::kString) {
    return WrongType(key, *v, "array of string");
  }
  std::vector<std::string_view> out;
  out.reserve(v->elems.size());
  for (const GgufValue& e : v->elems) out.push_back(e.str);
  return out;
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->type != GgufValueType::kArray || v->raw == nullptr) return WrongType(key, *v, "array of integers");
  std::vector<int64_t> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) {
    if (!AsInt64(v->ScalarAt(k), &out[k])) return WrongType(key, *v, "array of integers");
  }
  return out;
}

Result<std::vector<double>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->type != GgufValueType::kArray || v->raw == nullptr || v->elem_type == GgufValueType::kBool) {
    return WrongType(key, *v, "array of numbers");
  }
  std::vector<double> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) {
    const GgufValue e = v->ScalarAt(k);
    int64_t x = 0;
    if (e.is_float())
      out[k] = e.f;
    else if (AsInt64(e, &x))
      out[k] = static_cast<double>(x);
    else
      out[k] = static_cast<double>(e.u);
  }
  return out;
}

// ---- writer ----

namespace {
template <typename T>
void Put(std::vector<uint8_t>& b, T v) {
  const size_t n = b.size();
  b.resize(n + sizeof(T));
  std::memcpy(b.data() + n, &v, sizeof(T));
}
// resize + memcpy rather than insert(): GCC 12's -Wstringop-overflow misfires on vector<uint8_t>::insert.
void PutBytes(std::vector<uint8_t>& b, const void* p, size_t n) {
  const size_t at = b.size();
  b.resize(at + n);
  if (n) std::memcpy(b.data() + at, p, n);
}
void PutString(std::vector<uint8_t>& b, std::string_view s) {
  Put<uint64_t>(b, s.size());
  PutBytes(b, s.data(), s.size());
}
void PutKey(std::vector<uint8_t>& b, std::string_view key, GgufValueType t) {
  PutString(b, key);
  Put<uint32_t>(b, static_cast<uint32_t>(t));
}
}  // namespace

void GgufBuilder::AddU32(std::string key, uint32_t v) {
  PutKey(kv_bytes_, key, GgufValueType::kU32);
  Put(kv_bytes_, v);
  ++n_kv_;
}
void GgufBuilder::AddI32(std::string key, int32_t v) {
  PutKey(kv_bytes_, key, GgufValueType::kI32);
  Put(kv_bytes_, v);
  ++n_kv_;
}
void GgufBuilder::AddU64(std::string key, uint64_t v) {
  PutKey(kv_bytes_, key, GgufValueType::kU64);
  Put(kv_bytes_, v);
  ++n_kv_;
}
void GgufBuilder::AddF32(std::string key, float v) {
  PutKey(kv_bytes_, key, GgufValueType::kF32);
  Put(kv_bytes_, v);
  ++n_kv_;
}
void GgufBuilder::AddBool(std::string key, bool v) {
  PutKey(kv_bytes_, key, GgufValueType::kBool);
  Put<uint8_t>(kv_bytes_, v ? 1 : 0);
  ++n_kv_;
}
void GgufBuilder::AddString(std::string key, std::string v) {
  PutKey(kv_bytes_, key, GgufValueType::kString);
  PutString(kv_bytes_, v);
  ++n_kv_;
}
void GgufBuilder::AddStringArray(std::string key, const std::vector<std::string>& v) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kString));
  Put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v) PutString(kv_bytes_, s);
  ++n_kv_;
}
void GgufBuilder::AddI32Array(std::string key, const std::vector<int32_t>& v) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kI32));
  Put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v) Put(kv_bytes_, x);
  ++n_kv_;
}
void GgufBuilder::AddF32Array(std::string key, const std::vector<float>& v) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kF32));
  Put<uint64_t>(kv_bytes_, v.size());
  for (float x : v) Put(kv_bytes_, x);
  ++n_kv_;
}

Status GgufBuilder::AddTensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                              std::span<const uint8_t> bytes) {
  auto traits = GgmlTypeInfo(static_cast<uint32_t>(type));
  if (!traits.ok()) return traits.status();
  if (dims.empty() || dims.size() > 4) return InvalidArgument("gguf builder: rank must be 1..4");
  int64_t numel = 1;
  for (int64_t d : dims) {
    if (d <= 0) return InvalidArgument("gguf builder: dimensions must be positive");
    numel *= d;
  }
  if (dims[0] % traits->block_elems != 0)
    return InvalidArgument("gguf builder: row not a whole number of blocks");
  const uint64_t want = static_cast<uint64_t>(numel) / traits->block_elems * traits->block_bytes;
  if (bytes.size() != want) {
    return InvalidArgument("gguf builder: tensor '" + name + "' wants " + std::to_string(want) +
                           " bytes, got " + std::to_string(bytes.size()));
  }
  tensors_.push_back(
      {std::move(name), type, std::move(dims), std::vector<uint8_t>(bytes.begin(), bytes.end())});
  return Status::Ok();
}

std::vector<uint8_t> GgufBuilder::Build() const {
  std::vector<uint8_t> b;
  PutBytes(b, "GGUF", 4);
  Put<uint32_t>(b, 3);
  Put<uint64_t>(b, tensors_.size());
  const bool custom_alignment = alignment_ != 32;
  Put<uint64_t>(b, n_kv_ + (custom_alignment ? 1 : 0));
  PutBytes(b, kv_bytes_.data(), kv_bytes_.size());
  if (custom_alignment) {
    PutKey(b, "general.alignment", GgufValueType::kU32);
    Put<uint32_t>(b, alignment_);
  }
  auto align = [&](uint64_t x) { return x + (alignment_ - x % alignment_) % alignment_; };
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const Tensor& t : tensors_) {
    PutString(b, t.name);
    Put<uint32_t>(b, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(b, static_cast<uint64_t>(d));
    Put<uint32_t>(b, static_cast<uint32_t>(t.type));
    Put<uint64_t>(b, offset);
    offsets.push_back(offset);
    offset = align(offset + t.bytes.size());
  }
  b.resize(align(b.size()), 0);
  const uint64_t data_start = b.size();
  for (size_t k = 0; k < tensors_.size(); ++k) {
    b.resize(data_start + offsets[k], 0);
    PutBytes(b, tensors_[k].bytes.data(), tensors_[k].bytes.size());
  }
  return b;
}

}  // namespace fp
