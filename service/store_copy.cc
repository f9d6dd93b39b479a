#include "service/store_copy.h"

#include <string>
#include <vector>

#include "service/records.h"

namespace deltastore {

namespace {

// The namespaces a stopped registry's state lives in (docs/metadata_format.md). Not copied: uploads
// (their bytes are spool files of the old data dir), open_jobs and releases (refused below when not
// empty) and chunk_refs (the destination's chunk store writes its own).
constexpr const char* kCopied[] = {"schema",      ns::kModels,       ns::kVersions, ns::kDigests, ns::kTags,
                                   ns::kChildren, ns::kAuditHistory, ns::kState,    "tokens",     ns::kJobs};

StatusOr<bool> Empty(MetaStore* meta, const char* name) {
  bool empty = true;
  DS_RETURN_IF_ERROR(meta->Scan(name, "", "", [&](std::string_view, std::string_view) {
    empty = false;
    return false;
  }));
  return empty;
}

Status CopyChunks(const Stores& from, const Stores& to, CopyStats* stats,
                  const std::function<void(const CopyStats&)>& progress) {
  return from.chunks->ForEach([&](const Digest& d, int64_t refs, uint64_t) -> Status {
    if (refs <= 0) return OkStatus();  // garbage
    DS_ASSIGN_OR_RETURN(std::string bytes, from.chunks->Get(d));
    DS_ASSIGN_OR_RETURN(PutResult put, to.chunks->Put(bytes));
    if (put.digest != d) return Internal("chunk " + d.ToString() + " changed digest in the copy");
    DS_RETURN_IF_ERROR(to.chunks->SetRefCount(d, refs));
    ++stats->chunks;
    stats->chunk_bytes += bytes.size();
    if (stats->chunks % 256 == 0) progress(*stats);
    return OkStatus();
  });
}

Status CopyNamespace(MetaStore* from, MetaStore* to, const char* name, CopyStats* stats) {
  MetaBatch batch;
  Status bad;
  auto flush = [&]() -> Status {
    if (batch.empty()) return OkStatus();
    Status s = to->Commit(batch);
    batch = MetaBatch();
    return s;
  };
  DS_RETURN_IF_ERROR(from->Scan(name, "", "", [&](std::string_view key, std::string_view value) {
    if (std::string_view(name) == ns::kJobs) {
      auto job = JobRecord::Parse(value);
      if (job.ok() && (job->state == "queued" || job->state == "running")) {
        bad = FailedPrecondition("job " + job->id + " is " + job->state +
                                 ": start deltastored on the source once to finish it, stop it, then copy");
        return false;
      }
    }
    batch.Put(name, key, value);
    ++stats->records;
    if (batch.ops.size() >= 512) bad = flush();
    return bad.ok();
  }));
  DS_RETURN_IF_ERROR(bad);
  return flush();
}

}  // namespace

StatusOr<CopyStats> CopyStores(const Stores& from, const Stores& to,
                               const std::function<void(const CopyStats&)>& progress) {
  DS_ASSIGN_OR_RETURN(bool empty_to, Empty(to.meta.get(), ns::kVersions));
  if (!empty_to) return FailedPrecondition("the destination already holds versions; copy into empty stores");
  for (const char* busy : {ns::kOpenJobs, ns::kReleases}) {
    DS_ASSIGN_OR_RETURN(bool idle, Empty(from.meta.get(), busy));
    if (!idle) {
      return FailedPrecondition(std::string("the source has ") +
                                (busy == ns::kOpenJobs ? "queued or running jobs" : "a deletion cut short") +
                                ": start deltastored on it once to finish them, stop it, then copy");
    }
  }
  CopyStats stats;
  DS_RETURN_IF_ERROR(CopyChunks(from, to, &stats, progress));
  for (const char* name : kCopied)
    DS_RETURN_IF_ERROR(CopyNamespace(from.meta.get(), to.meta.get(), name, &stats));
  progress(stats);
  return stats;
}

}  // namespace deltastore
