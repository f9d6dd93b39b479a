// MetaStore: small ordered key-value namespaces for the registry's records
// (models, versions, tags, uploads, jobs, schema). Values are opaque bytes (JSON by convention).
// Writes go through a batch that commits atomically and durably (synced WAL).
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
  bool empty() const { return ops.empty(); }

  struct Op {
    bool put;
    std::string ns, key, value;
  };
  std::vector<Op> ops;
};

class MetaStore {
 public:
  virtual ~MetaStore() = default;

  // kNotFound when absent.
  virtual StatusOr<std::string> Get(std::string_view ns, std::string_view key) = 0;
  virtual Status Commit(const MetaBatch& batch) = 0;
  // Visits keys of `ns` that start with `prefix`, in key order, starting at `start_after` (exclusive,
  // empty = from the beginning). The visitor returns false to stop.
  virtual Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
                      const std::function<bool(std::string_view key, std::string_view value)>& fn) = 0;

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
