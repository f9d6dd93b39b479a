// Version creation: a checked request becomes a queued job (version_request.h); a worker runs it
// (ingest through service/ingest.h), then commits the version, its indexes and tags in one batch.
//
// A job is marked `succeeded` only after its commit and the audit snapshot that follows it, so a
// client that sees `succeeded` sees the version everywhere (catalog, audit, history).
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/catalog.h"
#include "service/ingest.h"
#include "service/job_leases.h"
#include "service/job_queue.h"
#include "service/registry_audit.h"
#include "service/uploads.h"

namespace deltastore {

class VersionCreator {
 public:
  VersionCreator(RegistryState* state, Catalog* catalog, Uploads* uploads, RegistryAudit* audit,
                 JobQueue* queue)
      : s_(state), catalog_(catalog), uploads_(uploads), audit_(audit), queue_(queue), leases_(state) {}

  // Checks the request, stores a queued job and queues it; returns the job.
  StatusOr<JobRecord> Create(const std::string& model, const nlohmann::json& request);
  // JOB_UNKNOWN when absent.
  StatusOr<JobRecord> GetJob(const std::string& id);
  // DELETE /v1/jobs/{id} (service/job_cancel.cc): a queued job (or one whose node died) ends cancelled
  // at once; a running one is asked to stop (`stopping`: its node ends it at its next check). A job
  // already cancelled is returned as it is; JOB_FINISHED for one that succeeded or failed otherwise.
  struct Cancellation {
    JobRecord job;
    bool stopping = false;
  };
  StatusOr<Cancellation> Cancel(const std::string& id);
  // The worker's entry: runs a queued job to succeeded or failed, or parks it as queued when the
  // registry stops meanwhile (its references are dropped; it runs from the start after the next start).
  void RunJob(const std::string& id);
  // Open jobs this node could run now: queued ones, and running ones whose node's lease has passed.
  std::vector<std::string> Runnable();
  // Jobs in the running state in this process (a job leaves it before its final state is visible).
  uint64_t running() const { return running_.load(); }

 private:
  struct Outcome {
    Manifest manifest;
    IngestStats stats;
    nlohmann::json quality;  // lossy: the version's quality report
  };
  StatusOr<Outcome> Ingest(JobRecord* job);
  // Commits the version (or finds it already stored), with the job still running and its uploads kept.
  Status CommitVersion(JobRecord* job, const Outcome& outcome);
  // One try of it: COMMIT_CONFLICT when another change of the catalog came first.
  Status CommitVersionOnce(JobRecord* job, const Outcome& outcome, bool* keep_references);
  // Marks the job succeeded and consumes its uploads (their bytes are stored content now).
  Status FinishJob(JobRecord* job);
  void Done(bool* counted);

  RegistryState* s_;
  Catalog* catalog_;
  Uploads* uploads_;
  RegistryAudit* audit_;
  JobQueue* queue_;
  std::atomic<uint64_t> running_{0};
  JobLeases leases_;
};

}  // namespace deltastore
