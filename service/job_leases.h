// Job leases: how several registry nodes sharing one store run each job once. A node claims a job by a
// conditional commit of its record (queued → running, with its node id and a lease end); it renews the
// lease from a heartbeat thread while it works, and every later write of the record (progress, the
// version commit, the final state) is conditional on the record being as this node last wrote it. A
// node that dies stops renewing; once the lease has passed, another node claims the job (`restarts`
// goes up) and runs it from the start. A node that finds its record changed by another has lost the
// job: its writes fail with JOB_LEASE_LOST and its ingest is cancelled, so it never commits.
//
// The one change another node may make to a record it does not hold is setting `cancel_requested`
// (DELETE /v1/jobs/{id}, service/job_cancel.cc). The holder notices it when its next conditional write
// (the heartbeat's, or progress) fails: a record that differs from its own only by that flag is adopted,
// not lost; from then on the job reads as cancel-requested here, and the version commit is refused with
// JOB_CANCELLED.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "service/records.h"
#include "service/registry_state.h"

namespace deltastore {

class JobLeases {
 public:
  explicit JobLeases(RegistryState* state);
  ~JobLeases();
  JobLeases(const JobLeases&) = delete;
  JobLeases& operator=(const JobLeases&) = delete;

  // Claims job `id` when it is queued, or running under a lease that has passed; nullopt when it is
  // not this node's to run (another node holds it, it ended, or another node claimed it first).
  StatusOr<std::optional<JobRecord>> Claim(const std::string& id);
  // Writes `job` (renewing the lease) with `batch`'s other changes, if this node still holds it:
  // JOB_LEASE_LOST when another node took it over; COMMIT_CONFLICT when another of `batch`'s
  // expectations failed (the caller may run again); JOB_CANCELLED for a running-state write with
  // other changes (the version commit) once a cancel was requested. A job in a final state (or parked as
  // queued) leaves the open-jobs index and this node's leases.
  Status Write(const JobRecord& job, MetaBatch batch = {});
  // True once this node lost the job (its ingest stops at its next check).
  bool Lost(const std::string& id);
  // True once this node has seen the job's cancel request (its ingest stops at its next check).
  bool CancelRequested(const std::string& id);
  // Forgets a job this node no longer runs (after its last Write).
  void Release(const std::string& id);

  // A record in the running state whose lease has passed (or that has none, written before leases).
  static bool Expired(const JobRecord& job);
  // Ends `job` as cancelled: failed with JOB_CANCELLED (the caller writes it).
  static void MarkCancelled(JobRecord* job);
  static bool IsCancelled(const JobRecord& job);

 private:
  struct Held {
    std::string raw;  // the record as this node last committed it
    JobRecord job;
    bool lost = false;
  };
  Status WriteLocked(Held* held, JobRecord job, MetaBatch batch);
  // After a failed commit: true when the stored record is `held`'s with `cancel_requested` set, which
  // it then adopts (so the write can go again).
  StatusOr<bool> AdoptCancel(Held* held, const std::optional<std::string>& now);
  void HeartbeatLoop();

  RegistryState* s_;
  std::mutex mu_;  // held_, and every write of a held record
  std::map<std::string, Held> held_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread heartbeat_;
};

}  // namespace deltastore
