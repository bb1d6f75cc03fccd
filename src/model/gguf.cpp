// GGUF reader: mmap + an eager, bounds-checked parse of the header, metadata and tensor table.
// Every read goes through Cursor, which checks the bytes exist first; counts are checked against the bytes
// left before anything is reserved, so a hostile header cannot make us allocate more than a small multiple of
// the file.
#include "fieldprint/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

namespace fp {

namespace {

constexpr uint64_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 4;  // nested arrays deeper than this are rejected (no unbounded recursion)

// Size on disk of a scalar GGUF value type; 0 for string/array/unknown.
uint64_t ScalarSize(uint32_t t) {
  switch (static_cast<GgufValueType>(t)) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kF64); }

// Decodes a little-endian scalar of type t at p (p has ScalarSize(t) bytes). x86/ARM hosts are little-endian.
GgufValue DecodeScalar(GgufValueType t, const uint8_t* p) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufValueType::kU8:
      v.u = p[0];
      break;
    case GgufValueType::kBool:
      v.u = p[0] != 0;
      break;
    case GgufValueType::kI8:
      v.i = static_cast<int8_t>(p[0]);
      break;
    case GgufValueType::kU16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      v.u = x;
      break;
    }
    case GgufValueType::kI16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      v.i = x;
      break;
    }
    case GgufValueType::kU32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      v.u = x;
      break;
    }
    case GgufValueType::kI32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      v.i = x;
      break;
    }
    case GgufValueType::kF32: {
      float x;
      std::memcpy(&x, p, 4);
      v.f = x;
      break;
    }
    case GgufValueType::kU64: {
      std::memcpy(&v.u, p, 8);
      break;
    }
    case GgufValueType::kI64: {
      std::memcpy(&v.i, p, 8);
      break;
    }
    case GgufValueType::kF64: {
      std::memcpy(&v.f, p, 8);
      break;
    }
    default:
      break;
  }
  return v;
}

class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  Status Need(uint64_t n, const char* what) const {
    if (n > left()) {
      return InvalidArgument("gguf: truncated: " + std::string(what) + " needs " + std::to_string(n) +
                             " bytes at offset " + std::to_string(pos_) + " but the file has " +
                             std::to_string(size_));
    }
    return Status::Ok();
  }
  template <typename T>
  Status Read(T* out, const char* what) {
    FP_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }
  const uint8_t* Take(uint64_t n) {  // caller checked Need(n)
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }
  Status ReadString(std::string_view* out, const char* what) {
    uint64_t len = 0;
    FP_RETURN_IF_ERROR(Read(&len, what));
    if (len > left()) {
      return InvalidArgument("gguf: " + std::string(what) + " length " + std::to_string(len) + " at offset " +
                             std::to_string(pos_ - 8) + " runs past the end of the file (" +
                             std::to_string(left()) + " bytes left)");
    }
    *out = std::string_view(reinterpret_cast<const char*>(Take(len)), len);
    return Status::Ok();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

Status ParseValue(Cursor& c, uint32_t type, int depth, GgufValue* out);

Status ParseArray(Cursor& c, int depth, GgufValue* out) {
  if (depth >= kMaxArrayDepth) {
    return InvalidArgument("gguf: arrays nested deeper than " + std::to_string(kMaxArrayDepth) + " levels");
  }
  uint32_t et = 0;
  uint64_t count = 0;
  FP_RETURN_IF_ERROR(c.Read(&et, "array element type"));
  FP_RETURN_IF_ERROR(c.Read(&count, "array length"));
  if (!KnownValueType(et)) return InvalidArgument("gguf: unknown array element type " + std::to_string(et));
  out->type = GgufValueType::kArray;
  out->elem_type = static_cast<GgufValueType>(et);
  out->count = count;
  const uint64_t es = ScalarSize(et);
  if (es != 0) {
    if (count > c.left() / es) {
      return InvalidArgument("gguf: array of " + std::to_string(count) + " " +
                             GgufValueTypeName(out->elem_type) + " at offset " + std::to_string(c.pos()) +
                             " runs past the end of the file");
    }
    out->raw = c.Take(count * es);
    return Status::Ok();
  }
  // Strings and arrays take at least 8 (length) or 12 (type + length) bytes each: bound before reserving.
  const uint64_t min_elem = et == static_cast<uint32_t>(GgufValueType::kString) ? 8 : 12;
  if (count > c.left() / min_elem) {
    return InvalidArgument("gguf: array of " + std::to_string(count) + " " +
                           GgufValueTypeName(out->elem_type) + " cannot fit in the " +
                           std::to_string(c.left()) + " bytes left");
  }
  out->elems.resize(count);
  for (uint64_t i = 0; i < count; ++i) FP_RETURN_IF_ERROR(ParseValue(c, et, depth + 1, &out->elems[i]));
  return Status::Ok();
}

Status ParseValue(Cursor& c, uint32_t type, int depth, GgufValue* out) {
  if (!KnownValueType(type))
    return InvalidArgument("gguf: unknown metadata value type " + std::to_string(type));
  const auto t = static_cast<GgufValueType>(type);
  if (t == GgufValueType::kString) {
    out->type = t;
    return c.ReadString(&out->str, "string value");
  }
  if (t == GgufValueType::kArray) return ParseArray(c, depth, out);
  const uint64_t n = ScalarSize(type);
  FP_RETURN_IF_ERROR(c.Need(n, GgufValueTypeName(t)));
  *out = DecodeScalar(t, c.Take(n));
  return Status::Ok();
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

// ---- type tables ----

Result<GgmlTypeTraits> GgmlTypeInfo(uint32_t raw) {
  switch (static_cast<GgmlType>(raw)) {
    case GgmlType::kF32:
      return GgmlTypeTraits{"F32", 1, 4};
    case GgmlType::kF16:
      return GgmlTypeTraits{"F16", 1, 2};
    case GgmlType::kQ4_0:
      return GgmlTypeTraits{"Q4_0", 32, 18};
    case GgmlType::kQ4_1:
      return GgmlTypeTraits{"Q4_1", 32, 20};
    case GgmlType::kQ5_0:
      return GgmlTypeTraits{"Q5_0", 32, 22};
    case GgmlType::kQ5_1:
      return GgmlTypeTraits{"Q5_1", 32, 24};
    case GgmlType::kQ8_0:
      return GgmlTypeTraits{"Q8_0", 32, 34};
    case GgmlType::kQ8_1:
      return GgmlTypeTraits{"Q8_1", 32, 36};
    case GgmlType::kQ2_K:
      return GgmlTypeTraits{"Q2_K", 256, 84};
    case GgmlType::kQ3_K:
      return GgmlTypeTraits{"Q3_K", 256, 110};
    case GgmlType::kQ4_K:
      return GgmlTypeTraits{"Q4_K", 256, 144};
    case GgmlType::kQ5_K:
      return GgmlTypeTraits{"Q5_K", 256, 176};
    case GgmlType::kQ6_K:
      return GgmlTypeTraits{"Q6_K", 256, 210};
    case GgmlType::kQ8_K:
      return GgmlTypeTraits{"Q8_K", 256, 292};
    case GgmlType::kI8:
      return GgmlTypeTraits{"I8", 1, 1};
    case GgmlType::kI16:
      return GgmlTypeTraits{"I16", 1, 2};
    case GgmlType::kI32:
      return GgmlTypeTraits{"I32", 1, 4};
    case GgmlType::kI64:
      return GgmlTypeTraits{"I64", 1, 8};
    case GgmlType::kF64:
      return GgmlTypeTraits{"F64", 1, 8};
    case GgmlType::kBF16:
      return GgmlTypeTraits{"BF16", 1, 2};
  }
  return Unimplemented("gguf: tensor type " + std::to_string(raw) +
                       " is not supported (unknown or an IQ/ternary format)");
}

const char* GgmlTypeName(GgmlType t) {
  auto r = GgmlTypeInfo(static_cast<uint32_t>(t));
  return r.ok() ? r->name : "?";
}

const char* GgufValueTypeName(GgufValueType t) {
  static constexpr const char* kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "?";
}

// ---- values ----

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
      return true;
    default:
      return false;
  }
}

GgufValue GgufValue::ScalarAt(uint64_t idx) const {
  const uint64_t es = ScalarSize(static_cast<uint32_t>(elem_type));
  if (type != GgufValueType::kArray || es == 0 || idx >= count || raw == nullptr) return GgufValue{};
  return DecodeScalar(elem_type, raw + idx * es);
}

namespace {
bool IsSigned(GgufValueType t) {
  return t == GgufValueType::kI8 || t == GgufValueType::kI16 || t == GgufValueType::kI32 ||
         t == GgufValueType::kI64;
}
std::string ScalarText(const GgufValue& v) {
  if (v.type == GgufValueType::kBool) return v.u ? "true" : "false";
  if (v.is_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v.f);
    return buf;
  }
  return IsSigned(v.type) ? std::to_string(v.i) : std::to_string(v.u);
}
std::string Quote(std::string_view s, size_t max_chars) {
  std::string out = "\"";
  for (size_t k = 0; k < s.size() && k < max_chars; ++k) {
    const unsigned char ch = static_cast<unsigned char>(s[k]);
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\t')
      out += "\\t";
    else if (ch < 0x20)
      out += "\\x" + std::string(1, "0123456789abcdef"[ch >> 4]) + "0123456789abcdef"[ch & 15];
    else
      out += static_cast<char>(ch);
  }
  out += s.size() > max_chars ? "\"..." : "\"";
  return out;
}
}  // namespace

std::string GgufValue::Summary(size_t max_chars) const {
  if (type == GgufValueType::kString) return Quote(str, max_chars);
  if (type != GgufValueType::kArray) return ScalarText(*this);
  std::string out = "[" + std::string(GgufValueTypeName(elem_type)) + " x " + std::to_string(count) + "] {";
  const uint64_t shown = count < 4 ? count : 4;
  for (uint64_t k = 0; k < shown; ++k) {
    if (k) out += ", ";
    if (raw)
      out += ScalarText(ScalarAt(k));
    else
      out += elems[k].Summary(24);
  }
  out += count > shown ? ", ...}" : "}";
  return out;
}

std::string GgufTensor::ShapeString() const {
  std::string s = "[";
  for (int d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

// ---- the file ----

struct GgufFile::Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr) munmap(addr, len);
  }
};

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

Result<GgufFile> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("gguf: cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return IoError("gguf: '" + path + "' is not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    return InvalidArgument("gguf: '" + path + "' is empty");
  }
  void* addr = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (addr == MAP_FAILED) return IoError("gguf: mmap of '" + path + "' failed: " + std::strerror(mmap_errno));
  GgufFile f;
  f.map_ = std::make_unique<Mapping>();
  f.map_->addr = addr;
  f.map_->len = static_cast<size_t>(st.st_size);
  f.base_ = static_cast<const uint8_t*>(addr);
  f.size_ = static_cast<uint64_t>(st.st_size);
  Status s = f.Parse();
  if (!s.ok()) return Status(s.code(), s.message() + " ('" + path + "')");
  return f;
}

Result<GgufFile> GgufFile::FromBuffer(std::span<const uint8_t> bytes) {
  GgufFile f;
  f.base_ = bytes.data();
  f.size_ = bytes.size();
  FP_RETURN_IF_ERROR(f.Parse());
  return f;
}

Status GgufFile::Parse() {
  Cursor c(base_, size_);
  char magic[4];
  FP_RETURN_IF_ERROR(c.Read(&magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) return InvalidArgument("gguf: bad magic (not a GGUF file)");
  FP_RETURN_IF_ERROR(c.Read(&version_, "version"));
  // v2 and v3 share the 64-bit layout (v3 only added big-endian files, which carry a byte-swapped version).
  if (version_ != 2 && version_ != 3) {
    return Unimplemented("gguf: version " + std::to_string(version_) + " is not supported (want 2 or 3" +
                         (version_ == 0x03000000u ? "; this looks like a big-endian file)" : ")"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  FP_RETURN_IF_ERROR(c.Read(&n_tensors, "tensor count"));
  FP_RETURN_IF_ERROR(c.Read(&n_kv, "metadata count"));
  // Smallest kv: 8 (key len) + 4 (type) + 1 (u8); smallest tensor info: 8 + 4 + 8 (one dim) + 4 + 8.
  if (n_kv > c.left() / 13) {
    return InvalidArgument("gguf: metadata count " + std::to_string(n_kv) + " cannot fit in a " +
                           std::to_string(size_) + "-byte file");
  }
  if (n_tensors > c.left() / 32) {
    return InvalidArgument("gguf: tensor count " + std::to_string(n_tensors) + " cannot fit in a " +
                           std::to_string(size_) + "-byte file");
  }

  kvs_.resize(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    GgufKv& kv = kvs_[k];
    FP_RETURN_IF_ERROR(c.ReadString(&kv.key, "metadata key"));
    if (kv.key.empty())
      return InvalidArgument("gguf: metadata entry " + std::to_string(k) + " has an empty key");
    uint32_t type = 0;
    FP_RETURN_IF_ERROR(c.Read(&type, "metadata value type"));
    Status s = ParseValue(c, type, 0, &kv.value);
    if (!s.ok()) return Status(s.code(), s.message() + " (in metadata '" + std::string(kv.key) + "')");
    if (!kv_index_.emplace(kv.key, k).second) {
      return InvalidArgument("gguf: duplicate metadata key '" + std::string(kv.key) + "'");
    }
  }

  if (const GgufValue* a = Find("general.alignment")) {
    if (a->type != GgufValueType::kU32) return InvalidArgument("gguf: general.alignment must be a u32");
    if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
      return InvalidArgument("gguf: general.alignment " + std::to_string(a->u) + " is not a power of two");
    }
    alignment_ = a->u;
  }

  tensors_.resize(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor& t = tensors_[k];
    FP_RETURN_IF_ERROR(c.ReadString(&t.name, "tensor name"));
    const std::string tname = "tensor '" + std::string(t.name) + "'";
    uint32_t n_dims = 0;
    FP_RETURN_IF_ERROR(c.Read(&n_dims, "tensor rank"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return InvalidArgument("gguf: " + tname + " has rank " + std::to_string(n_dims) + " (want 1..4)");
    }
    t.n_dims = static_cast<int>(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      FP_RETURN_IF_ERROR(c.Read(&ne, "tensor dimension"));
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return InvalidArgument("gguf: " + tname + " dimension " + std::to_string(d) + " is " +
                               std::to_string(ne));
      }
      if (MulOverflows(numel, ne, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return InvalidArgument("gguf: " + tname + " element count overflows");
      }
      t.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t raw_type = 0;
    FP_RETURN_IF_ERROR(c.Read(&raw_type, "tensor type"));
    auto traits = GgmlTypeInfo(raw_type);
    if (!traits.ok()) return Status(traits.status().code(), traits.status().message() + " (" + tname + ")");
    t.type = static_cast<GgmlType>(raw_type);
    if (t.ne[0] % traits->block_elems != 0) {
      return InvalidArgument("gguf: " + tname + " row length " + std::to_string(t.ne[0]) +
                             " is not a multiple of the " + traits->name + " block (" +
                             std::to_string(traits->block_elems) + ")");
    }
    if (MulOverflows(numel / traits->block_elems, traits->block_bytes, &t.nbytes)) {
      return InvalidArgument("gguf: " + tname + " byte size overflows");
    }
    FP_RETURN_IF_ERROR(c.Read(&t.offset, "tensor offset"));
    if (t.offset % alignment_ != 0) {
      return InvalidArgument("gguf: " + tname + " offset " + std::to_string(t.offset) +
                             " is not aligned to " + std::to_string(alignment_));
    }
    if (!tensor_index_.emplace(t.name, k).second) {
      return InvalidArgument("gguf: duplicate tensor name '" + std::string(t.name) + "'");
    }
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t pos = c.pos();
  data_offset_ = pos + (alignment_ - pos % alignment_) % alignment_;
  if (n_tensors > 0 && data_offset_ > size_) {
    return InvalidArgument("gguf: data section would start at " + std::to_string(data_offset_) +
                           ", past the end of the file (" + std::to_string(size_) + " bytes)");
  }
  const uint64_t data_bytes = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset) {
      return InvalidArgument("gguf: tensor '" + std::string(t.name) + "' bytes [" + std::to_string(t.offset) +
                             ", +" + std::to_string(t.nbytes) + ") run past the data section (" +
                             std::to_string(data_bytes) + " bytes)");
    }
    t.data = base_ + data_offset_ + t.offset;
  }
  return Status::Ok();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<const GgufTensor*> GgufFile::GetTensor(std::string_view name) const {
  const GgufTensor* t = FindTensor(name);
  if (!t) return InvalidArgument("gguf: no tensor named '" + std::string(name) + "'");
  return t;
}

}  // namespace fp
