// Upload bytes on the object store, for nodes that share no disk (`--chunk-store s3://…`). Each
// committed range of an upload is stored as objects `uploads/<id>/<start>-<end>-<nonce>` of at most
// 64 MiB (a nonce: two nodes racing to write the same range never overwrite each other's objects), and
// listed in namespace `upload_parts` (key: id `\0` start, 20 digits; value: the object key) in the same
// conditional commit that moves the upload's offset. A node that needs an upload it did not receive
// (another node's PATCH, seal or job) fetches the ranges its spool file lacks. On the embedded store
// the spool file alone is the upload and nothing here runs.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "service/registry_state.h"
#include "storage/meta_store.h"
#include "storage/s3_client.h"

namespace deltastore {

class UploadParts {
 public:
  explicit UploadParts(RegistryState* state) : s_(state) {}
  bool enabled() const { return s_->stores.objects != nullptr; }

  // Stores bytes [from, to) of the spool file at `path` as objects and adds their entries to `batch`
  // (the commit that moves the offset to `to`).
  Status Store(const std::string& id, const std::string& path, uint64_t from, uint64_t to, MetaBatch* batch);
  // Makes the spool file at `path` hold exactly the upload's first `offset` bytes, fetching what it
  // lacks (DATA_LOSS when a listed object is gone).
  Status Fetch(const std::string& id, const std::string& path, uint64_t offset);
  // Deletes the upload's objects and adds the removal of their entries to `batch`.
  Status Remove(const std::string& id, MetaBatch* batch);

 private:
  RegistryState* s_;
  std::mutex fetch_mu_;  // one fetch at a time on this node (two requests may need the same upload)
};

}  // namespace deltastore
