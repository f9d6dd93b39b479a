// The registry's storage audit (docs/audit.md): the report over every stored manifest, cached until
// the store changes, and the history of totals recorded after each ingest, deletion and GC.
//
// Read-your-writes: every change the audit sees bumps a generation counter in the MetaStore in the
// same batch as the change itself, and a cached report is served only while the stored counter still
// equals the one it was computed at. A client that saw its change committed (a job `succeeded`, a
// delete answered) therefore never gets a report from before it, whichever node computed the cache.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/audit.h"
#include "service/catalog.h"
#include "service/registry_state.h"

namespace deltastore {

class RegistryAudit {
 public:
  RegistryAudit(RegistryState* state, Catalog* catalog) : s_(state), catalog_(catalog) {}

  // Adds the generation bump to `batch`, conditional on the generation read now. Every change of the
  // catalog (versions, tags, deletes, GC) bumps it, so two changes, on one node or on several, never
  // both commit from the same reading: the later one gets COMMIT_CONFLICT and runs again
  // (RetryOnConflict). Call it first, before the reads that decide the change.
  static Status BumpGeneration(MetaStore* meta, MetaBatch* batch);

  StatusOr<std::shared_ptr<const AuditReport>> Report();
  // One model's figures and its versions' (in commit order), paginated by version digest.
  StatusOr<nlohmann::json> Model(const std::string& model, const std::string& after, size_t limit);
  StatusOr<nlohmann::json> Version(const std::string& model, const std::string& ref);
  // Snapshots of the totals, oldest first; `after` is a snapshot id.
  StatusOr<nlohmann::json> History(const std::string& after, size_t limit);
  // The newest `n` snapshots, oldest first (memory bounded by n; time by the history's length).
  StatusOr<std::vector<nlohmann::json>> RecentHistory(size_t n);
  // Records the totals after a change (`event`: what happened). The change is committed already, so a
  // failure here is not the change's: it is dropped.
  void RecordSnapshot(nlohmann::json event);

 private:
  StatusOr<uint64_t> StoredGeneration();
  StatusOr<std::shared_ptr<const AuditReport>> Compute();

  RegistryState* s_;
  Catalog* catalog_;
  std::mutex mu_;  // one computation at a time; guards the cache
  std::shared_ptr<const AuditReport> cache_;
  uint64_t cache_generation_ = 0;
  std::mutex history_mu_;
  uint64_t last_history_ns_ = 0;
};

}  // namespace deltastore
