#include "service/job_leases.h"

#include <algorithm>
#include <utility>

#include "common/clock.h"

namespace deltastore {

namespace {

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

JobLeases::JobLeases(RegistryState* state) : s_(state), heartbeat_([this] { HeartbeatLoop(); }) {}

JobLeases::~JobLeases() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  heartbeat_.join();
}

bool JobLeases::Expired(const JobRecord& job) {
  return job.state == "running" && job.lease_until_ms < NowMs();
}

void JobLeases::MarkCancelled(JobRecord* job) {
  const Status cancelled = JobCancelled("cancelled by DELETE /v1/jobs/" + job->id);
  job->state = "failed";
  job->error_code = std::string(cancelled.wire_code());
  job->error_message = cancelled.message();
  job->updated_at = NowIso();
}

bool JobLeases::IsCancelled(const JobRecord& job) {
  return job.state == "failed" && job.error_code == Describe(Reason::kJobCancelled).wire;
}

StatusOr<std::optional<JobRecord>> JobLeases::Claim(const std::string& id) {
  DS_ASSIGN_OR_RETURN(std::optional<std::string> raw, s_->meta()->Find(ns::kJobs, id));
  if (!raw) return std::optional<JobRecord>();
  DS_ASSIGN_OR_RETURN(JobRecord job, JobRecord::Parse(*raw));
  const bool taking_over = Expired(job);
  if (job.state != "queued" && !taking_over) return std::optional<JobRecord>();
  std::lock_guard<std::mutex> lock(mu_);
  if (held_.count(id)) return std::optional<JobRecord>();  // this node runs it already
  if (taking_over) ++job.restarts;
  if (job.cancel_requested) {  // its node died after the request: end it here instead of running it
    MarkCancelled(&job);
    Held ending{*raw, job, false};
    Status s = WriteLocked(&ending, job, MetaBatch());
    if (s.reason() == Reason::kJobLeaseLost) return std::optional<JobRecord>();
    DS_RETURN_IF_ERROR(s);
    return std::optional<JobRecord>();
  }
  job.state = "running";
  job.started_at = NowIso();
  job.updated_at = job.started_at;
  Held held{*raw, job, false};
  Status s = WriteLocked(&held, job, MetaBatch());
  if (s.reason() == Reason::kJobLeaseLost) return std::optional<JobRecord>();  // another node was first
  DS_RETURN_IF_ERROR(s);
  held_.emplace(id, held);
  return std::optional<JobRecord>(held.job);
}

Status JobLeases::Write(const JobRecord& job, MetaBatch batch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(job.id);
  if (it == held_.end()) return JobLeaseLost("job " + job.id + " is not held by this node");
  return WriteLocked(&it->second, job, std::move(batch));
}

Status JobLeases::WriteLocked(Held* held, JobRecord job, MetaBatch batch) {
  if (held->lost) return JobLeaseLost("job " + job.id + " was taken over by another node");
  const bool running = job.state == "running";
  const bool open = running || job.state == "queued";  // queued: parked by a stopping node
  job.cancel_requested = job.cancel_requested || held->job.cancel_requested;
  if (job.cancel_requested && running && !batch.ops.empty())
    return JobCancelled("job " + job.id + " was cancelled before its version was committed");
  job.node = s_->options.node_id;  // running: the holder; ended: the node that ended it
  job.lease_until_ms = running ? NowMs() + static_cast<uint64_t>(s_->options.job_lease.count()) : 0;
  std::string raw = job.ToJson().dump();
  MetaBatch original = batch;  // to go again after adopting a cancel request
  batch.Expect(ns::kJobs, job.id, held->raw);
  batch.Put(ns::kJobs, job.id, raw);
  if (open) {
    batch.Put(ns::kOpenJobs, job.id, "");
  } else {
    batch.Delete(ns::kOpenJobs, job.id);
  }
  Status s = s_->meta()->Commit(batch);
  if (s.reason() == Reason::kCommitConflict) {
    // Which expectation failed: the job's own (another node has it now, or a DELETE asked it to stop)
    // or another of the batch's?
    DS_ASSIGN_OR_RETURN(std::optional<std::string> now, s_->meta()->Find(ns::kJobs, job.id));
    DS_ASSIGN_OR_RETURN(bool adopted, AdoptCancel(held, now));
    if (adopted) return WriteLocked(held, std::move(job), std::move(original));
    if (now != held->raw) {
      held->lost = true;
      return JobLeaseLost("job " + job.id + " was taken over by another node");
    }
    return s;
  }
  DS_RETURN_IF_ERROR(s);
  held->raw = std::move(raw);
  held->job = std::move(job);
  return OkStatus();
}

StatusOr<bool> JobLeases::AdoptCancel(Held* held, const std::optional<std::string>& now) {
  if (!now || *now == held->raw || held->job.cancel_requested) return false;
  DS_ASSIGN_OR_RETURN(JobRecord stored, JobRecord::Parse(*now));
  if (!stored.cancel_requested) return false;
  stored.cancel_requested = false;
  if (stored.ToJson().dump() != held->raw) return false;  // changed otherwise: another node's now
  held->raw = *now;
  held->job.cancel_requested = true;
  return true;
}

bool JobLeases::CancelRequested(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(id);
  return it != held_.end() && it->second.job.cancel_requested;
}

bool JobLeases::Lost(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(id);
  return it == held_.end() || it->second.lost;
}

void JobLeases::Release(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  held_.erase(id);
}

void JobLeases::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto every = std::max(std::chrono::milliseconds(50), s_->options.job_lease / 4);
  while (!stop_cv_.wait_for(lock, every, [this] { return stopping_; })) {
    for (auto& [id, held] : held_) {
      // A failure to renew (the store is down) is retried at the next beat; a lost job stays lost.
      if (!held.lost && held.job.state == "running") (void)WriteLocked(&held, held.job, MetaBatch());
    }
  }
}

}  // namespace deltastore
