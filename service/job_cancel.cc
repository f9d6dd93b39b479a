// Cancelling a version-creation job (DELETE /v1/jobs/{id}). The request may reach any node: it only
// writes the job's record, conditionally. A job nobody runs (queued, or running under a lease that
// has passed) ends at once; a running job gets `cancel_requested`, which the node that runs it adopts
// at its next conditional write (service/job_leases.h) and obeys at its next cancellation check.
#include "service/version_create.h"

namespace deltastore {

namespace {

// One try: COMMIT_CONFLICT when the record changed between the read and the commit.
Status CancelOnce(RegistryState* s, const std::string& id, VersionCreator::Cancellation* out) {
  DS_ASSIGN_OR_RETURN(std::optional<std::string> raw, s->meta()->Find(ns::kJobs, id));
  if (!raw) return JobUnknown("job " + id + " not found");
  DS_ASSIGN_OR_RETURN(JobRecord job, JobRecord::Parse(*raw));
  out->job = job;
  out->stopping = false;
  if (JobLeases::IsCancelled(job)) return OkStatus();  // asked twice: the same answer
  if (job.state != "queued" && job.state != "running")
    return JobFinished("job " + id + " has " + job.state + " already");
  MetaBatch batch;
  batch.Expect(ns::kJobs, id, *raw);
  if (job.state == "running" && !JobLeases::Expired(job)) {
    out->stopping = true;
    if (job.cancel_requested) return OkStatus();
    // Only the flag changes, so the node that runs the job can tell this write from a takeover.
    job.cancel_requested = true;
  } else {
    JobLeases::MarkCancelled(&job);
    job.node = s->options.node_id;
    job.lease_until_ms = 0;
    batch.Delete(ns::kOpenJobs, id);
  }
  batch.Put(ns::kJobs, id, job.ToJson().dump());
  DS_RETURN_IF_ERROR(s->meta()->Commit(batch));
  out->job = std::move(job);
  return OkStatus();
}

}  // namespace

StatusOr<VersionCreator::Cancellation> VersionCreator::Cancel(const std::string& id) {
  Cancellation out;
  DS_RETURN_IF_ERROR(RetryOnConflict([&] { return CancelOnce(s_, id, &out); }));
  return out;
}

}  // namespace deltastore
