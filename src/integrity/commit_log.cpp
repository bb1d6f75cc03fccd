// commit_log.cpp — validation, tree cross-check and the checksummed binary form of a commit log.
#include "fieldprint/commit_log.h"

#include <cstring>
#include <string>

namespace fp {
namespace {

constexpr uint8_t kMagic[4] = {'F', 'P', 'C', 'L'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4 + 4 + 4 + 8;
constexpr size_t kEntryBytes = 4 + 8 + 32 + 32;
static_assert(sizeof(Digest) == 32);

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}
template <typename T>
T Get(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace

Status CommitLog::Append(const CommitEntry& e) {
  if (page_size_ <= 0) return InvalidArgument("commit log: page_size must be positive");
  const std::string at = "commit " + std::to_string(entries_.size()) + ": ";
  if (e.position <= last_position()) {
    return InvalidArgument(at + "position " + std::to_string(e.position) + " does not exceed the previous " +
                           std::to_string(last_position()));
  }
  const uint64_t pages = (static_cast<uint64_t>(e.position) + page_size_ - 1) / page_size_;
  if (e.tree_size != pages) {
    return InvalidArgument(at + "tree size " + std::to_string(e.tree_size) + " != ceil(" +
                           std::to_string(e.position) + " / " + std::to_string(page_size_) + ")");
  }
  entries_.push_back(e);
  return Status::Ok();
}

Status CommitLog::TruncateTo(size_t n) {
  if (n > entries_.size()) return OutOfRange("commit log truncate to " + std::to_string(n));
  entries_.resize(n);
  return Status::Ok();
}

int64_t CommitLog::LastAtOrBefore(int32_t pos) const {
  for (int64_t i = static_cast<int64_t>(entries_.size()) - 1; i >= 0; --i) {
    if (entries_[i].position <= pos) return i;
  }
  return -1;
}

Status CommitLog::CheckAgainst(const MerkleTree& tree) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    const CommitEntry& e = entries_[i];
    const std::string at = "commit " + std::to_string(i) + " (position " + std::to_string(e.position) + "): ";
    if (e.tree_size > tree.size())
      return DataLoss(at + "tree holds only " + std::to_string(tree.size()) + " pages");
    const bool provisional = e.position % page_size_ != 0;
    if (!provisional && !(tree.Entry(e.tree_size - 1).value() == e.last_entry)) {
      return DataLoss(at + "last page digest differs from the tree");
    }
    auto root = tree.RootAtWithLast(e.tree_size, e.last_entry);
    FP_RETURN_IF_ERROR(root.status());
    if (!(*root == e.root))
      return DataLoss(at + "root " + e.root.Hex() + " not reproduced (got " + root->Hex() + ")");
  }
  return Status::Ok();
}

std::vector<uint8_t> CommitLog::Serialize() const {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  Put<uint32_t>(out, kVersion);
  Put<uint32_t>(out, static_cast<uint32_t>(page_size_));
  Put<uint64_t>(out, entries_.size());
  for (const CommitEntry& e : entries_) {
    Put<uint32_t>(out, static_cast<uint32_t>(e.position));
    Put<uint64_t>(out, e.tree_size);
    out.insert(out.end(), e.root.bytes.begin(), e.root.bytes.end());
    out.insert(out.end(), e.last_entry.bytes.begin(), e.last_entry.bytes.end());
  }
  Digest sum = Sha256(out.data(), out.size());
  out.insert(out.end(), sum.bytes.begin(), sum.bytes.end());
  return out;
}

Result<CommitLog> CommitLog::Parse(std::span<const uint8_t> b) {
  if (b.size() < kHeaderBytes + 32)
    return DataLoss("commit log: " + std::to_string(b.size()) + " bytes, truncated");
  if (std::memcmp(b.data(), kMagic, 4) != 0) return InvalidArgument("commit log: bad magic");
  if (Get<uint32_t>(b.data() + 4) != kVersion) return InvalidArgument("commit log: unknown version");
  const uint32_t page = Get<uint32_t>(b.data() + 8);
  const uint64_t count = Get<uint64_t>(b.data() + 12);
  // Compare in the division form so a huge count cannot overflow.
  if (count > (b.size() - kHeaderBytes - 32) / kEntryBytes ||
      kHeaderBytes + count * kEntryBytes + 32 != b.size()) {
    return DataLoss("commit log: " + std::to_string(b.size()) + " bytes do not hold " +
                    std::to_string(count) + " entries (truncated or padded)");
  }
  Digest sum;
  std::memcpy(sum.bytes.data(), b.data() + b.size() - 32, 32);
  if (!(Sha256(b.data(), b.size() - 32) == sum)) return DataLoss("commit log: checksum mismatch");
  if (page == 0 || page > (1u << 30)) return InvalidArgument("commit log: page size " + std::to_string(page));
  CommitLog log(static_cast<int32_t>(page));
  const uint8_t* p = b.data() + kHeaderBytes;
  for (uint64_t i = 0; i < count; ++i, p += kEntryBytes) {
    CommitEntry e;
    const uint32_t pos = Get<uint32_t>(p);
    if (pos > 0x7fffffffu) return InvalidArgument("commit log: position out of range");
    e.position = static_cast<int32_t>(pos);
    e.tree_size = Get<uint64_t>(p + 4);
    std::memcpy(e.root.bytes.data(), p + 12, 32);
    std::memcpy(e.last_entry.bytes.data(), p + 44, 32);
    FP_RETURN_IF_ERROR(log.Append(e));
  }
  return log;
}

}  // namespace fp
