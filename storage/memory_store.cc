// In-memory ChunkStore and MetaStore (std::map + mutex) with the same semantics as the RocksDB ones.

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "storage/stores.h"

namespace deltastore {
namespace {

class MemoryChunkStore final : public ChunkStore {
 public:
  StatusOr<PutResult> Put(std::string_view bytes) override {
    PutResult result;
    result.digest = Sha256::Of(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chunks_.find(result.digest);
    if (it != chunks_.end()) {
      ++it->second.refcount;
      // Same digest, other bytes: what is stored is damaged (a torn write). Heal it.
      if (it->second.bytes != bytes) {
        bytes_ = bytes_ - it->second.bytes.size() + bytes.size();
        it->second.bytes = std::string(bytes);
      }
      return result;
    }
    chunks_.emplace(result.digest, Entry{std::string(bytes), 1});
    bytes_ += bytes.size();
    result.inserted = true;
    result.stored_bytes = bytes.size();
    return result;
  }

  Status PutUnverified(const Digest& digest, std::string_view bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chunks_.find(digest);
    if (it == chunks_.end()) {
      chunks_.emplace(digest, Entry{std::string(bytes), 1});
      bytes_ += bytes.size();
    } else {
      bytes_ = bytes_ - it->second.bytes.size() + bytes.size();
      it->second.bytes = std::string(bytes);
    }
    return OkStatus();
  }

  StatusOr<std::string> Get(const Digest& digest) override {
    std::string value;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = chunks_.find(digest);
      if (it == chunks_.end()) return NotFound("chunk " + digest.ToString());
      value = it->second.bytes;
    }
    if (Sha256::Of(value) != digest) {
      return Corruption("chunk " + digest.ToString() + ": stored bytes do not match their digest");
    }
    return value;
  }

  StatusOr<bool> Has(const Digest& digest) override {
    std::lock_guard<std::mutex> lock(mu_);
    return chunks_.count(digest) > 0;
  }

  Status Ref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("ref count must be >= 0");
    return Add(digest, count);
  }

  Status Unref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("unref count must be >= 0");
    return Add(digest, -count);
  }

  StatusOr<int64_t> RefCount(const Digest& digest) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chunks_.find(digest);
    if (it == chunks_.end()) return NotFound("chunk " + digest.ToString());
    return it->second.refcount;
  }

  StatusOr<GcStats> Gc() override {
    std::lock_guard<std::mutex> lock(mu_);
    GcStats stats;
    for (auto it = chunks_.begin(); it != chunks_.end();) {
      if (it->second.refcount <= 0) {
        ++stats.chunks_deleted;
        stats.bytes_freed += it->second.bytes.size();
        bytes_ -= it->second.bytes.size();
        it = chunks_.erase(it);
      } else {
        ++it;
      }
    }
    return stats;
  }

  StatusOr<ChunkStoreStats> Stats() override {
    std::lock_guard<std::mutex> lock(mu_);
    return ChunkStoreStats{chunks_.size(), bytes_};
  }

  Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) override {
    // Copy the listing out so the visitor may call back into the store.
    std::vector<std::tuple<Digest, int64_t, uint64_t>> listing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      listing.reserve(chunks_.size());
      for (const auto& [digest, entry] : chunks_)
        listing.emplace_back(digest, entry.refcount, entry.bytes.size());
    }
    for (const auto& [digest, refcount, size] : listing) DS_RETURN_IF_ERROR(fn(digest, refcount, size));
    return OkStatus();
  }

  Status SetRefCount(const Digest& digest, int64_t count) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chunks_.find(digest);
    if (it == chunks_.end()) return NotFound("chunk " + digest.ToString());
    it->second.refcount = count;
    return OkStatus();
  }

 private:
  struct Entry {
    std::string bytes;
    int64_t refcount = 0;
  };

  Status Add(const Digest& digest, int64_t delta) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chunks_.find(digest);
    if (it == chunks_.end()) return NotFound("chunk " + digest.ToString());
    it->second.refcount += delta;
    return OkStatus();
  }

  std::mutex mu_;
  std::map<Digest, Entry> chunks_;
  uint64_t bytes_ = 0;
};

class MemoryMetaStore final : public MetaStore {
 public:
  StatusOr<std::string> Get(std::string_view ns, std::string_view key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto n = data_.find(ns);
    if (n != data_.end()) {
      auto it = n->second.find(key);
      if (it != n->second.end()) return it->second;
    }
    return NotFound(std::string(ns) + "/" + std::string(key));
  }

  Status Commit(const MetaBatch& batch) override {
    for (const auto& op : batch.ops) {
      if (op.ns.find('\0') != std::string::npos) return InvalidArgument("namespace contains a NUL byte");
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : batch.expects) {
      std::optional<std::string> now;
      auto n = data_.find(e.ns);
      if (n != data_.end()) {
        auto it = n->second.find(e.key);
        if (it != n->second.end()) now = it->second;
      }
      if (now != e.value) return CommitConflict(e.ns + "/" + e.key + " changed");
    }
    for (const auto& op : batch.ops) {
      if (op.put) {
        data_[op.ns][op.key] = op.value;
      } else {
        auto n = data_.find(op.ns);
        if (n != data_.end()) n->second.erase(op.key);
      }
    }
    return OkStatus();
  }

  Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) override {
    // Copy the matching range out so the visitor may call back into the store.
    std::vector<std::pair<std::string, std::string>> rows;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto n = data_.find(ns);
      if (n == data_.end()) return OkStatus();
      const auto& m = n->second;
      auto it = (!start_after.empty() && start_after >= prefix) ? m.upper_bound(start_after)
                                                                : m.lower_bound(prefix);
      for (; it != m.end() && std::string_view(it->first).starts_with(prefix); ++it) rows.push_back(*it);
    }
    for (const auto& [k, v] : rows) {
      if (!fn(k, v)) break;
    }
    return OkStatus();
  }

 private:
  using Map = std::map<std::string, std::string, std::less<>>;
  std::mutex mu_;
  std::map<std::string, Map, std::less<>> data_;
};

}  // namespace

std::unique_ptr<ChunkStore> NewMemoryChunkStore() {
  return std::make_unique<MemoryChunkStore>();
}
std::unique_ptr<MetaStore> NewMemoryMetaStore() {
  return std::make_unique<MemoryMetaStore>();
}

}  // namespace deltastore
