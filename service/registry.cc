#include "service/registry.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "migrations/schema.h"
#include "service/check.h"

namespace deltastore {

using json = nlohmann::json;
namespace fs = std::filesystem;

Registry::Registry(RegistryOptions options, Stores stores)
    : state_(std::move(options), std::move(stores)),
      catalog_(&state_),
      uploads_(&state_),
      audit_(&state_, &catalog_),
      deletion_(&state_, &catalog_, &audit_),
      creator_(&state_, &catalog_, &uploads_, &audit_, &queue_) {}

namespace {

// This node's name in job records: the host name and a random suffix (a restarted process is a new node).
std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "node");
  return std::string(host) + "-" + NewId().substr(0, 8);
}

}  // namespace

StatusOr<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& given) {
  RegistryOptions options = given;
  if (options.node_id.empty()) options.node_id = DefaultNodeId();
  std::error_code ec;
  fs::create_directories(fs::path(options.data_dir) / "uploads", ec);
  if (ec) return IOError("cannot create data dir " + options.data_dir + ": " + ec.message());
  DS_ASSIGN_OR_RETURN(Stores stores, OpenStores({options.data_dir + "/db", options.sync_writes,
                                                 options.meta_store, options.chunk_store}));
  if (options.wrap_stores) stores = options.wrap_stores(std::move(stores));
  std::unique_ptr<Registry> r(new Registry(options, std::move(stores)));
  DS_RETURN_IF_ERROR(CheckAndMigrate(r->meta(), r->chunks()).status());
  if (!options.recover) return r;
  if (options.file_cache_bytes > 0 || fs::exists(fs::path(options.data_dir) / "file-cache")) {
    // Opened with a budget of 0 once more after it is turned off, to empty it.
    DS_ASSIGN_OR_RETURN(r->state_.file_cache,
                        FileCache::Open(options.data_dir + "/file-cache", options.file_cache_bytes));
    if (options.file_cache_bytes == 0) r->state_.file_cache.reset();
  }
  DS_RETURN_IF_ERROR(r->Recover());
  r->queue_.Start(
      std::max(1, options.workers), [p = r.get()](const std::string& id) { p->creator_.RunJob(id); },
      [p = r.get()] { return p->creator_.Runnable(); }, options.job_poll);
  return r;
}

Registry::~Registry() {
  Shutdown();
}

void Registry::Shutdown() {
  state_.stopping = true;
  queue_.Shutdown();
}

Status Registry::Recover() {
  // Jobs that were queued or running when the process stopped run again from the start. On the
  // embedded store this process is the only node, so its own jobs left running are requeued now; on a
  // shared store a running job may be another node's: it is taken over once its lease has passed.
  const bool only_node = state_.options.meta_store.empty();
  bool interrupted = false;
  std::vector<JobRecord> open;
  DS_RETURN_IF_ERROR(meta()->Scan(ns::kJobs, "", "", [&](std::string_view, std::string_view value) {
    auto j = JobRecord::Parse(value);
    if (j.ok() && (j->state == "running" || j->state == "queued")) open.push_back(std::move(*j));
    return true;
  }));
  for (auto& j : open) {
    MetaBatch batch;
    batch.Put(ns::kOpenJobs, j.id, "");  // stores written before the index had none
    if (j.state == "running" && only_node) {
      interrupted = true;
      j.state = "queued";
      j.restarts += 1;
      j.node.clear();
      j.lease_until_ms = 0;
      batch.Put(ns::kJobs, j.id, j.ToJson().dump());
    }
    DS_RETURN_IF_ERROR(meta()->Commit(batch));
    queue_.Push(j.id);
  }
  // Recounting references is safe only while no other node ingests.
  if (only_node) DS_RETURN_IF_ERROR(deletion_.Recover(interrupted));
  uploads_.RemoveOrphanSpools();
  return OkStatus();
}

StatusOr<json> Registry::CreateUpload() {
  DS_ASSIGN_OR_RETURN(UploadRecord u, uploads_.Create());
  return u.ToJson();
}

StatusOr<json> Registry::GetUpload(const std::string& id) {
  DS_ASSIGN_OR_RETURN(UploadRecord u, uploads_.Get(id));
  return u.ToJson();
}

StatusOr<std::unique_ptr<UploadWriter>> Registry::AppendUpload(const std::string& id,
                                                               std::optional<uint64_t> start) {
  return uploads_.Append(id, start);
}

StatusOr<json> Registry::SealUpload(const std::string& id, const std::string& digest) {
  DS_ASSIGN_OR_RETURN(UploadRecord u, uploads_.Seal(id, digest));
  return u.ToJson();
}

Status Registry::DeleteUpload(const std::string& id) {
  return uploads_.Delete(id);
}

StatusOr<json> Registry::CreateVersion(const std::string& model, const json& request) {
  DS_ASSIGN_OR_RETURN(JobRecord job, creator_.Create(model, request));
  return job.ToJson();
}

StatusOr<json> Registry::GetJob(const std::string& id) {
  DS_ASSIGN_OR_RETURN(JobRecord job, creator_.GetJob(id));
  return job.ToJson();
}

StatusOr<std::pair<json, bool>> Registry::CancelJob(const std::string& id) {
  DS_ASSIGN_OR_RETURN(VersionCreator::Cancellation c, creator_.Cancel(id));
  return std::make_pair(c.job.ToJson(), c.stopping);
}

StatusOr<json> Registry::WaitJob(const std::string& id, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    DS_ASSIGN_OR_RETURN(JobRecord j, creator_.GetJob(id));
    if ((j.state != "queued" && j.state != "running") || std::chrono::steady_clock::now() > deadline)
      return j.ToJson();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

StatusOr<json> Registry::ListModels(const std::string& after, size_t limit) {
  return catalog_.ListModels(after, limit);
}
StatusOr<json> Registry::GetModel(const std::string& model) {
  return catalog_.GetModel(model);
}
StatusOr<json> Registry::ListVersions(const std::string& model, const std::string& after, size_t limit) {
  return catalog_.ListVersions(model, after, limit);
}
StatusOr<VersionRef> Registry::Resolve(const std::string& model, const std::string& ref) {
  return catalog_.Resolve(model, ref);
}
StatusOr<json> Registry::GetVersion(const std::string& model, const std::string& ref, bool with_manifest) {
  return catalog_.GetVersion(model, ref, with_manifest);
}
StatusOr<OpenVersion> Registry::OpenForRead(const std::string& model, const std::string& ref) {
  return catalog_.OpenForRead(model, ref);
}
StatusOr<VersionRef> Registry::NewestVersion(const std::string& model) {
  return catalog_.Newest(model);
}
StatusOr<json> Registry::ListTags(const std::string& model) {
  return catalog_.ListTags(model);
}
StatusOr<json> Registry::Stats() {
  return catalog_.Stats();
}
StatusOr<Manifest> Registry::LoadManifest(const Digest& digest) {
  return catalog_.LoadManifest(digest);
}

Registry::NodeInfo Registry::Node() const {
  const RegistryOptions& o = state_.options;
  return {o.node_id, o.meta_store.empty() ? "embedded" : "postgresql",
          o.chunk_store.empty() ? "embedded" : "s3"};
}

Status Registry::Ready() {
  DS_RETURN_IF_ERROR(meta()->Find(ns::kState, kGenerationKey).status());
  return chunks()->Ping();
}

StatusOr<std::shared_ptr<const AuditReport>> Registry::Audit() {
  return audit_.Report();
}
StatusOr<json> Registry::AuditModel(const std::string& model, const std::string& after, size_t limit) {
  return audit_.Model(model, after, limit);
}
StatusOr<json> Registry::AuditVersion(const std::string& model, const std::string& ref) {
  return audit_.Version(model, ref);
}
StatusOr<json> Registry::AuditHistory(const std::string& after, size_t limit) {
  return audit_.History(after, limit);
}
StatusOr<std::vector<json>> Registry::RecentAuditHistory(size_t n) {
  return audit_.RecentHistory(n);
}

Registry::JobCounts Registry::Jobs() {
  return {queue_.queued(), creator_.running()};
}

Status Registry::SetTag(const std::string& model, const std::string& tag, const std::string& version) {
  return catalog_.SetTag(model, tag, version);
}
Status Registry::DeleteTag(const std::string& model, const std::string& tag) {
  return catalog_.DeleteTag(model, tag);
}
StatusOr<json> Registry::DeleteVersion(const std::string& model, const std::string& ref) {
  if (file_cache() == nullptr) return deletion_.DeleteVersion(model, ref);
  // A deleted version's files leave this node's cache too (other nodes evict them in time).
  std::vector<Digest> files;
  if (auto v = catalog_.OpenForRead(model, ref); v.ok()) {
    for (const auto& f : v->reader->manifest().files) files.push_back(f.sha256);
  }
  auto deleted = deletion_.DeleteVersion(model, ref);
  if (deleted.ok()) {
    for (const auto& d : files) file_cache()->Drop(d);
  }
  return deleted;
}
StatusOr<GcStats> Registry::CollectGarbage() {
  return deletion_.CollectGarbage({{"event", "gc"}});
}
StatusOr<uint64_t> Registry::RecomputeRefcounts() {
  return deletion_.RecomputeRefcounts();
}
StatusOr<json> Registry::Check(bool repair) {
  return CheckStore(&state_, &catalog_, repair);
}

}  // namespace deltastore
