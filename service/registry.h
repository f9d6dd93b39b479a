// The registry: models, versions, tags, resumable uploads and the compression job queue, over the
// chunk and metadata stores. Handlers in api/ call one function here per request.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/audit.h"
#include "service/container.h"
#include "service/packer.h"
#include "service/tokens.h"
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

// Appends the body of one PATCH to an upload's spool file; Commit makes the bytes durable and moves
// the committed offset. Destroying an uncommitted writer commits what arrived (a dropped connection
// keeps its bytes, so the client can resume from the offset).
class UploadWriter {
 public:
  virtual ~UploadWriter() = default;
  virtual Status Write(std::string_view piece) = 0;
  virtual StatusOr<nlohmann::json> Commit() = 0;
};

struct VersionRef {
  std::string model;
  Digest digest;
};

// A version opened for reading (downloads).
struct OpenVersion {
  std::string model;
  Digest digest;
  std::shared_ptr<VersionReader> reader;
  std::optional<Manifest> base_manifest;
};

class Registry {
 public:
  static StatusOr<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  ~Registry();
  // Stops taking jobs, lets running jobs finish (or parks them as queued for the next start).
  void Shutdown();

  ChunkStore* chunks() { return stores_.chunks.get(); }
  MetaStore* meta() { return stores_.meta.get(); }
  TokenStore tokens() { return TokenStore(meta()); }

  // Uploads.
  StatusOr<nlohmann::json> CreateUpload();
  StatusOr<nlohmann::json> GetUpload(const std::string& id);
  // `start`: the Content-Range start the client claims (must equal the committed offset).
  StatusOr<std::unique_ptr<UploadWriter>> AppendUpload(const std::string& id, std::optional<uint64_t> start);
  StatusOr<nlohmann::json> SealUpload(const std::string& id, const std::string& digest);
  Status DeleteUpload(const std::string& id);

  // Versions and jobs. `request` is the POST body of docs/http_api.md.
  StatusOr<nlohmann::json> CreateVersion(const std::string& model, const nlohmann::json& request);
  StatusOr<nlohmann::json> GetJob(const std::string& id);
  // Blocks until the job leaves queued/running or the timeout passes (tests and the CLI).
  StatusOr<nlohmann::json> WaitJob(const std::string& id, double timeout_s);

  // Reading.
  StatusOr<nlohmann::json> ListModels(const std::string& after, size_t limit);
  StatusOr<nlohmann::json> GetModel(const std::string& model);
  StatusOr<nlohmann::json> ListVersions(const std::string& model, const std::string& after, size_t limit);
  StatusOr<VersionRef> Resolve(const std::string& model, const std::string& ref);
  StatusOr<nlohmann::json> GetVersion(const std::string& model, const std::string& ref, bool with_manifest);
  StatusOr<OpenVersion> OpenForRead(const std::string& model, const std::string& ref);
  StatusOr<nlohmann::json> ListTags(const std::string& model);
  StatusOr<nlohmann::json> Stats();

  // The storage-savings audit (docs/audit.md). The report is computed from every manifest once after
  // each change of the store (ingest, deletion, GC) and shared until the next one.
  StatusOr<std::shared_ptr<const AuditReport>> Audit();
  // One model's figures and its versions' (in commit order), paginated by version digest.
  StatusOr<nlohmann::json> AuditModel(const std::string& model, const std::string& after, size_t limit);
  StatusOr<nlohmann::json> AuditVersion(const std::string& model, const std::string& ref);
  // Snapshots of the totals recorded at each ingest and GC, oldest first; `after` is a snapshot id.
  StatusOr<nlohmann::json> AuditHistory(const std::string& after, size_t limit);
  // The newest `n` snapshots, oldest first (memory bounded by n; time by the history's length).
  StatusOr<std::vector<nlohmann::json>> RecentAuditHistory(size_t n);

  struct JobCounts {
    uint64_t queued = 0;
    uint64_t running = 0;
  };
  JobCounts Jobs();

  // Changing.
  Status SetTag(const std::string& model, const std::string& tag, const std::string& version);
  Status DeleteTag(const std::string& model, const std::string& tag);
  StatusOr<nlohmann::json> DeleteVersion(const std::string& model, const std::string& ref);
  StatusOr<GcStats> CollectGarbage();

  // Recomputes every chunk's reference count from the stored manifests (after a crash left a job's
  // references behind); returns how many counts changed.
  StatusOr<uint64_t> RecomputeRefcounts();

  StatusOr<Manifest> LoadManifest(const Digest& digest);

  // Verifies every stored chunk against its digest, every manifest reference against the store, every
  // reference count against the manifests, and the metadata indexes (digest and child entries, model
  // records, tags) against the version records; reports problems. Changes nothing unless `repair`,
  // which rewrites reference counts and the indexes from the version records (what a half-applied
  // metadata batch leaves); unreadable or missing data cannot be repaired here.
  StatusOr<nlohmann::json> Check(bool repair);

 private:
  explicit Registry(RegistryOptions options, Stores stores);
  Status Recover();
  // The metadata part of Check: appends problems, repairs them when asked; returns the entries fixed.
  StatusOr<uint64_t> CheckIndexes(bool repair, nlohmann::json* problems);
  void WorkerLoop();
  void RunJob(const std::string& id);
  Status ExecuteJob(const std::string& id, nlohmann::json* job);
  Status UpdateJob(const nlohmann::json& job);
  std::string SpoolPath(const std::string& upload_id) const;
  StatusOr<nlohmann::json> VersionRecord(const std::string& model, const Digest& digest);
  nlohmann::json Summary(const nlohmann::json& record);
  StatusOr<GcStats> CollectGarbage(nlohmann::json event);
  // Records the audit totals after a change (`event`: what happened). Failures are not the change's:
  // the change is committed, so they are dropped.
  void RecordAuditSnapshot(nlohmann::json event);

  RegistryOptions options_;
  Stores stores_;
  std::mutex mu_;  // uploads being written, job queue
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::set<std::string> writing_;  // uploads with an active writer
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
  std::mutex commit_mu_;  // version commits and deletes (read-check-write on metadata)
  std::mutex manifest_cache_mu_;
  std::map<Digest, Manifest> manifest_cache_;
  std::atomic<uint64_t> running_jobs_{0};
  std::atomic<uint64_t> generation_{1};  // bumped by every change the audit sees
  std::mutex audit_mu_;                  // one audit computation at a time
  std::shared_ptr<const AuditReport> audit_cache_;
  uint64_t audit_generation_ = 0;
  std::mutex history_mu_;
  uint64_t last_history_ns_ = 0;

  friend class SpoolWriter;
};

bool ValidName(std::string_view name);

}  // namespace deltastore
