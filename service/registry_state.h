// What the registry's rooms (uploads, job queue, version creation, catalog, deletion, check, audit)
// share: the options, the stores and the lock that orders read-check-write changes of the metadata.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>

#include "storage/stores.h"

namespace deltastore {

struct RegistryOptions {
  std::string data_dir;
  int workers = 1;                 // compression job threads
  size_t max_open_uploads = 1000;  // open (unsealed) upload sessions
  bool sync_writes = true;
  bool recover = true;  // requeue interrupted jobs and repair after a crash; off for `check`
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
  // Version commits, tag changes and deletes: each reads the metadata, checks, then commits a batch.
  std::mutex commit_mu;
  std::atomic<bool> stopping{false};
};

}  // namespace deltastore
