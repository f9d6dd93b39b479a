// What the registry's rooms (uploads, job queue, version creation, catalog, deletion, check, audit)
// share: the options, the stores and the lock that orders read-check-write changes of the metadata.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "common/backoff.h"
#include "service/file_cache.h"
#include "storage/stores.h"

namespace deltastore {

struct RegistryOptions {
  std::string data_dir;
  int workers = 1;                 // compression job threads
  size_t max_open_uploads = 1000;  // open (unsealed) upload sessions
  bool sync_writes = true;
  std::string meta_store;   // postgresql://... for metadata on PostgreSQL; empty: the embedded RocksDB
  std::string chunk_store;  // s3://bucket/prefix?endpoint=... for chunks on S3; empty: the embedded RocksDB
  // Several nodes on one store (service/job_leases.h): this node's name in job records (empty: the
  // host name and a random suffix), how long a claimed job stays this node's without a renewal, and
  // how often a node looks for jobs queued elsewhere or left behind by a dead node.
  std::string node_id;
  std::chrono::milliseconds job_lease{30000};
  std::chrono::milliseconds job_poll{1000};
  bool recover = true;  // requeue interrupted jobs and repair after a crash; off for `check`
  // Rebuilt files kept under data_dir/file-cache for repeated downloads (service/file_cache.h); 0: off.
  uint64_t file_cache_bytes = 0;
  // Decorates the stores once opened (tests: fault injection, see storage/stores.h).
  std::function<Stores(Stores)> wrap_stores;
};

struct RegistryState {
  RegistryState(RegistryOptions o, Stores s) : options(std::move(o)), stores(std::move(s)) {}

  ChunkStore* chunks() const { return stores.chunks.get(); }
  MetaStore* meta() const { return stores.meta.get(); }
  // Where the bytes of an upload are spooled until its version is committed.
  std::string SpoolPath(const std::string& upload_id) const {
    return options.data_dir + "/uploads/" + upload_id;
  }

  const RegistryOptions options;
  const Stores stores;
  // Version commits, tag changes and deletes: each reads the metadata, checks, then commits a batch
  // conditional on the generation (RegistryAudit::BumpGeneration). The lock keeps this node's own
  // changes from conflicting with each other; other nodes' are caught by the condition.
  std::mutex commit_mu;
  std::atomic<bool> stopping{false};
  // --file-cache-gb: set by Registry::Open before the workers start, else null.
  std::unique_ptr<FileCache> file_cache;
};

// Runs `attempt` again while it fails with COMMIT_CONFLICT (another node's commit came between its reads
// and its commit), up to a bound, with a short random pause between tries.
inline Status RetryOnConflict(const std::function<Status()>& attempt) {
  constexpr int kAttempts = 50;
  Status s;
  for (int i = 0; i < kAttempts; ++i) {
    s = attempt();
    if (s.reason() != Reason::kCommitConflict) return s;
    if (i + 1 < kAttempts)
      PauseBeforeRetry(i, std::chrono::microseconds(500), std::chrono::microseconds(1000));
  }
  return s;
}

}  // namespace deltastore
