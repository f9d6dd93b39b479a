// Deleting versions, garbage collection and reference counts. A chunk's reference count is the number
// of manifest references to it; CountReferences is the one place that derives the expected counts
// from the stored manifests (recovery, `check` and its repair all use it).
#pragma once

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "service/catalog.h"
#include "service/registry_audit.h"
#include "service/registry_state.h"

namespace deltastore {

// Calls `on_bad(key, status)` for a version record or manifest that does not parse and `on_manifest`
// for each one that does; without `on_bad`, the first bad record fails the count.
using BadRecordFn = std::function<void(std::string_view key, const Status& status)>;
using ManifestFn = std::function<void(std::string_view key, const Manifest& manifest)>;
StatusOr<std::map<Digest, int64_t>> CountReferences(MetaStore* meta, const BadRecordFn& on_bad = {},
                                                    const ManifestFn& on_manifest = {});

class Deletion {
 public:
  Deletion(RegistryState* state, Catalog* catalog, RegistryAudit* audit)
      : s_(state), catalog_(catalog), audit_(audit) {}

  // Deletes a version that no other version uses as its base (VERSION_IN_USE), drops its references and
  // collects garbage. Returns {deleted, model, freed_bytes}.
  StatusOr<nlohmann::json> DeleteVersion(const std::string& model, const std::string& ref);
  // Deletes unreferenced chunks; `event` is recorded in the audit history.
  StatusOr<GcStats> CollectGarbage(nlohmann::json event);
  // Sets every chunk's count to what the manifests say; returns how many changed.
  StatusOr<uint64_t> RecomputeRefcounts();
  // After a crash: recounts when a job was interrupted or a deletion was cut short, and clears the
  // deletions' markers.
  Status Recover(bool job_interrupted);

 private:
  // One try of DeleteVersion's commit (COMMIT_CONFLICT when another change of the catalog came first):
  // the version's records go, its release marker is written; returns what the release needs.
  Status CommitDelete(const std::string& model, const std::string& ref, Digest* deleted, Manifest* m,
                      std::string* release_key);

  RegistryState* s_;
  Catalog* catalog_;
  RegistryAudit* audit_;
};

}  // namespace deltastore
