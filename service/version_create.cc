#include "service/version_create.h"

#include <chrono>
#include <filesystem>

#include "common/clock.h"
#include "service/lossy_policy.h"
#include "service/version_request.h"

namespace deltastore {

using json = nlohmann::json;

namespace {

json StatsJson(const IngestStats& stats) {
  return {{"new_bytes", stats.new_bytes},
          {"encoded_bytes", stats.encoded_bytes},
          {"logical_bytes", stats.logical_bytes},
          {"chunks", stats.chunks},
          {"new_chunks", stats.new_chunks},
          {"tensors", stats.tensors},
          {"tensors_delta", stats.tensors_delta},
          {"tensors_same", stats.tensors_same},
          {"tensors_standalone", stats.tensors_standalone},
          {"tensors_lossy", stats.tensors_lossy}};
}

}  // namespace

StatusOr<JobRecord> VersionCreator::GetJob(const std::string& id) {
  auto j = LoadRecord<JobRecord>(s_->meta(), ns::kJobs, id);
  if (!j.ok() && j.status().code() == StatusCode::kNotFound) return JobUnknown("job " + id + " not found");
  return j;
}

StatusOr<JobRecord> VersionCreator::Create(const std::string& model, const json& request) {
  DS_ASSIGN_OR_RETURN(JobRecord job, PlanVersion(model, request, uploads_, catalog_));
  MetaBatch batch;
  batch.Expect(ns::kJobs, job.id, std::nullopt);
  batch.Put(ns::kJobs, job.id, job.ToJson().dump());
  batch.Put(ns::kOpenJobs, job.id, "");
  DS_RETURN_IF_ERROR(s_->meta()->Commit(batch));
  queue_->Push(job.id);
  return job;
}

std::vector<std::string> VersionCreator::Runnable() {
  std::vector<std::string> open, runnable;
  // A store that does not answer now is asked again at the next poll.
  (void)s_->meta()->Scan(ns::kOpenJobs, "", "", [&](std::string_view id, std::string_view) {
    open.emplace_back(id);
    return true;
  });
  for (const auto& id : open) {
    auto job = GetJob(id);
    if (job.ok() && (job->state == "queued" || JobLeases::Expired(*job))) runnable.push_back(id);
  }
  return runnable;
}

void VersionCreator::Done(bool* counted) {
  if (*counted) --running_;
  *counted = false;
}

void VersionCreator::RunJob(const std::string& id) {
  auto claimed = leases_.Claim(id);
  if (!claimed.ok() || !*claimed) return;  // another node runs it, or it ended
  JobRecord job = std::move(**claimed);
  ++running_;
  bool counted = true;
  auto outcome = Ingest(&job);
  Status s = outcome.ok() ? CommitVersion(&job, *outcome) : outcome.status();
  if (s.ok()) {
    audit_->RecordSnapshot({{"event", "ingest"}, {"model", job.model}, {"version", job.version}});
    Done(&counted);
    s = FinishJob(&job);
    if (s.ok()) {
      leases_.Release(id);
      return;
    }
  }
  Done(&counted);
  if (s.reason() != Reason::kJobLeaseLost) {  // else the job is another node's now: leave its record be
    job.updated_at = NowIso();
    if (s.reason() == Reason::kJobCancelled || leases_.CancelRequested(id)) {
      JobLeases::MarkCancelled(&job);  // nothing committed; its references are dropped, its uploads kept
    } else if (s_->stopping && s.code() == StatusCode::kUnavailable) {
      job.state = "queued";  // parked
    } else {
      job.state = "failed";
      job.error_code = std::string(s.wire_code());
      job.error_message = s.message();
    }
    (void)leases_.Write(job);
  }
  leases_.Release(id);
}

StatusOr<VersionCreator::Outcome> VersionCreator::Ingest(JobRecord* job) {
  std::unique_ptr<VersionReader> base_reader;
  if (job->base) {
    DS_ASSIGN_OR_RETURN(Digest bd, Digest::Parse(job->base->digest));
    DS_ASSIGN_OR_RETURN(Manifest bm, catalog_->LoadManifest(bd));
    base_reader = std::make_unique<VersionReader>(
        s_->chunks(), std::move(bm), [this](const Digest& d) { return catalog_->LoadManifest(d); });
  }
  std::vector<IngestFile> files;
  for (const auto& f : job->files) {
    auto u = uploads_->Get(f.upload);
    if (!u.ok() || !u->sealed || u->digest != f.digest)
      return UploadNotSealed("upload " + f.upload + " changed or was deleted");
    DS_ASSIGN_OR_RETURN(std::string spool, uploads_->Spool(*u));
    files.push_back({spool, f.path});
  }
  IngestOptions options;
  // Job records written before the level existed have none: the default coder.
  if (job->policy.is_object() && job->policy.value("level", "fast") == "max")
    options.encode.level = EncodeLevel::kMax;
  std::optional<LossyPolicy> lossy;
  const auto mode = job->policy.is_object() ? job->policy.find("mode") : job->policy.end();
  if (mode != job->policy.end() && mode->is_string() && mode->get<std::string>() == "lossy") {
    json p = job->policy;
    p.erase("allow_mismatched_shapes");
    p.erase("level");
    DS_ASSIGN_OR_RETURN(lossy, ParseLossyPolicy(p));
    std::shared_ptr<Calibration> calib;
    if (!lossy->calibration_upload.empty()) {
      DS_ASSIGN_OR_RETURN(UploadRecord cu,
                          uploads_->GetSealed(lossy->calibration_upload, "calibration upload"));
      DS_ASSIGN_OR_RETURN(std::string spool, uploads_->Spool(cu));
      DS_ASSIGN_OR_RETURN(calib, Calibration::Open(spool));
    }
    LossyHooks hooks = MakeLossyHooks(*lossy, calib);
    options.lossy = std::move(hooks.encode);
    options.lossy_takes = std::move(hooks.takes);
    options.lossy_planner = std::move(hooks.planner);
    options.lossy_reach = hooks.reach;
  }
  options.file_cache = s_->file_cache.get();
  options.cancelled = [this, id = job->id] {
    return s_->stopping.load() || leases_.Lost(id) || leases_.CancelRequested(id);
  };
  auto last = std::chrono::steady_clock::now();
  ProgressFn progress = [&](const IngestProgress& p) {
    auto now = std::chrono::steady_clock::now();
    if (p.tensors_done != p.tensors_total && now - last < std::chrono::milliseconds(250)) return;
    last = now;
    job->progress = {p.phase, p.tensors_done, p.tensors_total, p.bytes_done, p.bytes_total};
    job->updated_at = NowIso();
    (void)leases_.Write(*job);  // a lost lease cancels the ingest (options.cancelled)
  };
  Outcome out;
  DS_ASSIGN_OR_RETURN(out.manifest,
                      IngestFiles(s_->chunks(), files, base_reader.get(), options, &out.stats, progress));
  if (lossy) {
    out.manifest.mode = "lossy";
    out.quality = QualityReport(*lossy, out.stats, out.manifest);
  }
  return out;
}

Status VersionCreator::CommitVersion(JobRecord* job, const Outcome& outcome) {
  std::lock_guard<std::mutex> lock(s_->commit_mu);
  bool keep_references = false;
  Status s = RetryOnConflict([&] { return CommitVersionOnce(job, outcome, &keep_references); });
  // The same content already a version of this model keeps one set of references.
  if (!keep_references) (void)ReleaseManifest(s_->chunks(), outcome.manifest);
  return s;
}

Status VersionCreator::CommitVersionOnce(JobRecord* job, const Outcome& outcome, bool* keep_references) {
  const Manifest& m = outcome.manifest;
  const Digest digest = ManifestDigest(m);
  MetaBatch generation;  // read first (the checks below depend on it); its bump goes in after the records
  DS_RETURN_IF_ERROR(RegistryAudit::BumpGeneration(s_->meta(), &generation));
  MetaBatch batch;
  if (job->base) {
    auto bd = Digest::Parse(job->base->digest);
    if (!bd.ok() || !catalog_->LoadVersion(job->base->model, *bd).ok())
      return BaseDeleted("the base version was deleted while the job ran");
  }
  auto existing = catalog_->LoadVersion(job->model, digest);
  const std::string now = NowIso();
  if (!existing.ok()) {
    VersionRecord rec{
        job->model,           digest,         now, NowNs(), job->base, m.mode, StatsJson(outcome.stats),
        SerializeManifest(m), outcome.quality};
    batch.Put(ns::kVersions, Key(job->model, digest.Hex()), rec.ToJson().dump());
  }
  // The index entries go in every time: a re-run after a crash that half-applied this batch puts back
  // what is missing (the version record may have made it without them).
  if (!s_->meta()->Get(ns::kModels, job->model).ok())
    batch.Put(ns::kModels, job->model, ModelRecord{job->model, now}.ToJson().dump());
  batch.Put(ns::kDigests, Key(digest.Hex(), job->model), "");
  if (job->base) {
    DS_ASSIGN_OR_RETURN(Digest bd, Digest::Parse(job->base->digest));
    batch.Put(ns::kChildren, Key(bd.Hex(), Key(job->model, digest.Hex())), "");
  }
  for (const auto& t : job->tags) batch.Put(ns::kTags, Key(job->model, t), digest.ToString());
  batch.ops.insert(batch.ops.end(), generation.ops.begin(), generation.ops.end());
  batch.expects.insert(batch.expects.end(), generation.expects.begin(), generation.expects.end());
  job->version = digest.ToString();
  job->updated_at = now;
  DS_RETURN_IF_ERROR(leases_.Write(*job, std::move(batch)));  // only while this node holds the job
  *keep_references = !existing.ok();
  return OkStatus();
}

Status VersionCreator::FinishJob(JobRecord* job) {
  std::vector<std::string> consumed;
  for (const auto& f : job->files) consumed.push_back(f.upload);
  const auto calibration = job->policy.is_object() ? job->policy.find("calibration") : job->policy.end();
  if (calibration != job->policy.end() && calibration->is_string())
    consumed.push_back(calibration->get<std::string>());
  job->state = "succeeded";
  job->updated_at = NowIso();
  job->progress.tensors_done = job->progress.tensors_total;
  job->progress.bytes_done = job->progress.bytes_total;
  MetaBatch batch;
  for (const auto& u : consumed) DS_RETURN_IF_ERROR(uploads_->Consume(u, &batch));
  DS_RETURN_IF_ERROR(leases_.Write(*job, std::move(batch)));
  std::error_code ec;
  for (const auto& u : consumed) std::filesystem::remove(s_->SpoolPath(u), ec);
  return OkStatus();
}

}  // namespace deltastore
