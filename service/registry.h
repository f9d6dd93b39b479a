// The registry: models, versions, tags, resumable uploads and the compression job queue, over the
// chunk and metadata stores. Handlers in api/ call one function here per request.
//
// This is a thin front over the rooms that do the work, each in its own file: records (the metadata
// format), uploads, job_queue, version_request + version_create, catalog (refs and reads), deletion
// (deletes, GC, reference counts), check, and registry_audit.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/audit.h"
#include "service/catalog.h"
#include "service/deletion.h"
#include "service/file_cache.h"
#include "service/job_queue.h"
#include "service/registry_audit.h"
#include "service/registry_state.h"
#include "service/tokens.h"
#include "service/uploads.h"
#include "service/version_create.h"

namespace deltastore {

class Registry {
 public:
  static StatusOr<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  ~Registry();
  // Stops taking jobs, lets running jobs finish (or parks them as queued for the next start).
  void Shutdown();

  ChunkStore* chunks() { return state_.chunks(); }
  MetaStore* meta() { return state_.meta(); }
  // This node's cache of rebuilt files (null when off).
  FileCache* file_cache() { return state_.file_cache.get(); }
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
  // DELETE /v1/jobs/{id}: the job as it is now and whether it is still stopping (a running job asked to
  // stop) rather than ended (VersionCreator::Cancel).
  StatusOr<std::pair<nlohmann::json, bool>> CancelJob(const std::string& id);
  // Blocks until the job leaves queued/running or the timeout passes (tests and the CLI).
  StatusOr<nlohmann::json> WaitJob(const std::string& id, double timeout_s);

  // Reading.
  StatusOr<nlohmann::json> ListModels(const std::string& after, size_t limit);
  StatusOr<nlohmann::json> GetModel(const std::string& model);
  StatusOr<nlohmann::json> ListVersions(const std::string& model, const std::string& after, size_t limit);
  StatusOr<VersionRef> Resolve(const std::string& model, const std::string& ref);
  StatusOr<nlohmann::json> GetVersion(const std::string& model, const std::string& ref, bool with_manifest);
  StatusOr<OpenVersion> OpenForRead(const std::string& model, const std::string& ref);
  StatusOr<VersionRef> NewestVersion(const std::string& model);
  StatusOr<nlohmann::json> ListTags(const std::string& model);
  StatusOr<nlohmann::json> Stats();
  StatusOr<Manifest> LoadManifest(const Digest& digest);

  // The storage-savings audit (docs/audit.md), computed from every manifest once after each change of
  // the store and shared until the next one; read-your-writes (registry_audit.h).
  StatusOr<std::shared_ptr<const AuditReport>> Audit();
  StatusOr<nlohmann::json> AuditModel(const std::string& model, const std::string& after, size_t limit);
  StatusOr<nlohmann::json> AuditVersion(const std::string& model, const std::string& ref);
  StatusOr<nlohmann::json> AuditHistory(const std::string& after, size_t limit);
  StatusOr<std::vector<nlohmann::json>> RecentAuditHistory(size_t n);

  struct JobCounts {
    uint64_t queued = 0;
    uint64_t running = 0;
  };
  JobCounts Jobs();
  // This node and where its stores are, for /readyz and /metrics.
  struct NodeInfo {
    std::string node, meta_store, chunk_store;  // stores: "embedded", "postgresql", "s3"
  };
  NodeInfo Node() const;
  // Asks both stores something cheap: STORE_UNAVAILABLE (or another error) when one cannot serve.
  Status Ready();

  // Changing.
  Status SetTag(const std::string& model, const std::string& tag, const std::string& version);
  Status DeleteTag(const std::string& model, const std::string& tag);
  StatusOr<nlohmann::json> DeleteVersion(const std::string& model, const std::string& ref);
  StatusOr<GcStats> CollectGarbage();
  // Recomputes every chunk's reference count from the stored manifests; returns how many changed.
  StatusOr<uint64_t> RecomputeRefcounts();

  // `deltastored check` (service/check.h).
  StatusOr<nlohmann::json> Check(bool repair);

 private:
  Registry(RegistryOptions options, Stores stores);
  // Requeues interrupted jobs, completes cut-short deletions, removes orphan spool files.
  Status Recover();

  RegistryState state_;
  Catalog catalog_;
  Uploads uploads_;
  JobQueue queue_;
  RegistryAudit audit_;
  Deletion deletion_;
  VersionCreator creator_;
};

}  // namespace deltastore
