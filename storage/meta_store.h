// MetaStore: small ordered key-value namespaces for the registry's records
// (models, versions, tags, uploads, jobs, schema). Values are opaque bytes (JSON by convention).
// Writes go through a batch that commits atomically and durably (synced WAL).
// A batch may carry expectations (conditional commit): the commit applies only when every expected key
// holds the expected value (or is absent, for std::nullopt) at commit time, and fails with
// CommitConflict otherwise, changing nothing. Several writers (threads or nodes) that each read, check
// and write use them to never both win: both set a tag, both seal an upload, both claim a job.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace deltastore {

class MetaBatch {
 public:
  void Put(std::string_view ns, std::string_view key, std::string_view value) {
    ops.push_back({true, std::string(ns), std::string(key), std::string(value)});
  }
  void Delete(std::string_view ns, std::string_view key) {
    ops.push_back({false, std::string(ns), std::string(key), {}});
  }
  // The commit applies only if (ns, key) holds `value` then (std::nullopt: only if it is absent).
  void Expect(std::string_view ns, std::string_view key, std::optional<std::string> value) {
    expects.push_back({std::string(ns), std::string(key), std::move(value)});
  }
  bool empty() const { return ops.empty() && expects.empty(); }

  struct Op {
    bool put;
    std::string ns, key, value;
  };
  struct Expectation {
    std::string ns, key;
    std::optional<std::string> value;
  };
  std::vector<Op> ops;
  std::vector<Expectation> expects;
};

class MetaStore {
 public:
  virtual ~MetaStore() = default;

  // kNotFound when absent.
  virtual StatusOr<std::string> Get(std::string_view ns, std::string_view key) = 0;
  // Applies the batch atomically; CommitConflict (nothing applied) when an expectation does not hold.
  virtual Status Commit(const MetaBatch& batch) = 0;
  // Visits keys of `ns` that start with `prefix`, in key order, starting at `start_after` (exclusive,
  // empty = from the beginning). The visitor returns false to stop.
  virtual Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
                      const std::function<bool(std::string_view key, std::string_view value)>& fn) = 0;

  // Get, with absence as an empty optional rather than an error (what an expectation compares).
  StatusOr<std::optional<std::string>> Find(std::string_view ns, std::string_view key) {
    auto value = Get(ns, key);
    if (value.ok()) return std::optional<std::string>(std::move(*value));
    if (value.status().code() == StatusCode::kNotFound) return std::optional<std::string>();
    return value.status();
  }
  Status Put(std::string_view ns, std::string_view key, std::string_view value) {
    MetaBatch b;
    b.Put(ns, key, value);
    return Commit(b);
  }
  Status Delete(std::string_view ns, std::string_view key) {
    MetaBatch b;
    b.Delete(ns, key);
    return Commit(b);
  }
};

}  // namespace deltastore
