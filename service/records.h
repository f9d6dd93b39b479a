// The registry's metadata records (docs/metadata_format.md): the MetaStore namespaces, their keys, and
// typed records with checked parsing. A record that does not parse is kCorruption, never an exception:
// every JSON access of a stored record goes through this file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "common/status.h"
#include "storage/meta_store.h"

namespace deltastore {

// Namespaces of the MetaStore (keys: docs/metadata_format.md).
namespace ns {
inline constexpr char kUploads[] = "uploads";     // upload id -> UploadRecord
inline constexpr char kJobs[] = "jobs";           // job id -> JobRecord
inline constexpr char kOpenJobs[] = "open_jobs";  // job id -> "" while the job is queued or running
inline constexpr char kModels[] = "models";       // model -> ModelRecord
inline constexpr char kVersions[] = "versions";   // model \0 digest hex -> VersionRecord
inline constexpr char kDigests[] = "digests";     // digest hex \0 model -> ""
inline constexpr char kTags[] = "tags";           // model \0 tag -> "sha256:<hex>"
inline constexpr char kChildren[] = "children";   // base digest hex \0 model \0 digest hex -> ""
inline constexpr char kReleases[] = "releases";   // digest hex \0 model -> "" (a deletion in progress)
inline constexpr char kAuditHistory[] = "audit_history";  // %020u ns -> audit snapshot JSON
inline constexpr char kState[] = "state";                 // registry-wide counters (kGenerationKey)
}  // namespace ns
// Bumped in the same batch as every change the audit sees (docs/audit.md, read-your-writes).
inline constexpr char kGenerationKey[] = "generation";

// Joins key parts with a NUL byte (names never contain one).
std::string Key(std::string_view a, std::string_view b);

// A random 128-bit id as 32 hex digits (uploads, jobs).
std::string NewId();
uint64_t NowNs();

// Model and tag names: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
bool ValidName(std::string_view name);
// A file path inside a version: relative, '/'-separated, no empty, "." or ".." segment, ≤ 255 bytes.
bool ValidPath(std::string_view path);

// Parses a stored JSON object; kCorruption (naming `what`) when it is not one.
StatusOr<nlohmann::json> ParseRecordJson(std::string_view text, std::string_view what);

struct UploadRecord {
  std::string id;
  uint64_t offset = 0;  // committed bytes
  bool sealed = false;
  std::string digest;  // "sha256:<hex>" once sealed
  uint64_t size = 0;   // once sealed
  std::string created_at, updated_at;

  nlohmann::json ToJson() const;
  static StatusOr<UploadRecord> Parse(std::string_view text);
};

struct BaseRef {
  std::string model;
  std::string digest;  // "sha256:<hex>"
};

struct JobFile {
  std::string path;  // in the version, as the client named it
  std::string upload;
  uint64_t size = 0;
  std::string digest;
};

struct JobProgress {
  std::string phase;  // "planning" or "encoding" (lossy), empty before the first report
  uint64_t tensors_done = 0, tensors_total = 0, bytes_done = 0, bytes_total = 0;
};

struct JobRecord {
  std::string id;
  std::string state;  // queued, running, succeeded, failed (error JOB_CANCELLED: cancelled by DELETE)
  std::string model;
  std::vector<JobFile> files;
  std::optional<BaseRef> base;
  nlohmann::json policy;  // the normalised policy (lossy_policy.h reads it)
  std::vector<std::string> tags;
  JobProgress progress;
  std::string created_at, updated_at, started_at;
  std::string version;  // the version's digest once succeeded
  std::string error_code, error_message;
  uint64_t restarts = 0;
  // The node that holds the job (while running) or ended it, and, while running, until when (Unix ms)
  // it holds it; another node may take the job over once the lease has passed (service/job_leases.h).
  std::string node;
  uint64_t lease_until_ms = 0;
  // DELETE /v1/jobs/{id} asked the running job to stop; the node that runs it sees it at its next
  // conditional write of the record (service/job_leases.h) and ends it failed with JOB_CANCELLED.
  bool cancel_requested = false;

  nlohmann::json ToJson() const;
  static StatusOr<JobRecord> Parse(std::string_view text);
};

struct VersionRecord {
  std::string model;
  Digest digest;
  std::string created_at;
  uint64_t committed_ns = 0;  // orders versions committed within one second (audit)
  std::optional<BaseRef> base;
  std::string mode;
  nlohmann::json stats;    // IngestStats as JSON
  std::string manifest;    // the manifest's canonical JSON (codec/manifest.h)
  nlohmann::json quality;  // lossy versions: the quality report; else null

  nlohmann::json ToJson() const;
  static StatusOr<VersionRecord> Parse(std::string_view text);
};

struct ModelRecord {
  std::string name;
  std::string created_at;

  nlohmann::json ToJson() const;
  static StatusOr<ModelRecord> Parse(std::string_view text);
};

// Get + Parse of one record; kNotFound when absent.
template <typename Record>
StatusOr<Record> LoadRecord(MetaStore* meta, std::string_view ns, std::string_view key) {
  DS_ASSIGN_OR_RETURN(std::string text, meta->Get(ns, key));
  return Record::Parse(text);
}

}  // namespace deltastore
