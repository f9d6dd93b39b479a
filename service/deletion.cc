#include "service/deletion.h"

#include <vector>

#include "service/ingest.h"

namespace deltastore {

using json = nlohmann::json;

StatusOr<std::map<Digest, int64_t>> CountReferences(MetaStore* meta, const BadRecordFn& on_bad,
                                                    const ManifestFn& on_manifest) {
  std::map<Digest, int64_t> expected;
  Status first_bad;
  DS_RETURN_IF_ERROR(meta->Scan(ns::kVersions, "", "", [&](std::string_view key, std::string_view value) {
    auto rec = VersionRecord::Parse(value);
    StatusOr<Manifest> m = rec.ok() ? ParseManifest(rec->manifest) : StatusOr<Manifest>(rec.status());
    if (!m.ok()) {
      if (!on_bad) {
        first_bad = m.status();
        return false;
      }
      on_bad(key, m.status());
      return true;
    }
    if (on_manifest) on_manifest(key, *m);
    for (const auto& d : m->ChunkDigests()) expected[d]++;
    return true;
  }));
  DS_RETURN_IF_ERROR(first_bad);
  return expected;
}

StatusOr<uint64_t> Deletion::RecomputeRefcounts() {
  DS_ASSIGN_OR_RETURN(auto expected, CountReferences(s_->meta()));
  std::vector<std::pair<Digest, int64_t>> fixes;
  DS_RETURN_IF_ERROR(s_->chunks()->ForEach([&](const Digest& d, int64_t count, uint64_t) {
    auto it = expected.find(d);
    int64_t want = it == expected.end() ? 0 : it->second;
    if (want != count) fixes.emplace_back(d, want);
    return OkStatus();
  }));
  for (const auto& [d, n] : fixes) DS_RETURN_IF_ERROR(s_->chunks()->SetRefCount(d, n));
  return fixes.size();
}

Status Deletion::Recover(bool job_interrupted) {
  std::vector<std::string> releases;
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kReleases, "", "", [&](std::string_view key, std::string_view) {
    releases.emplace_back(key);
    return true;
  }));
  if (!job_interrupted && releases.empty()) return OkStatus();
  // An interrupted ingest or deletion leaves reference counts off: recount from the manifests.
  DS_RETURN_IF_ERROR(RecomputeRefcounts().status());
  MetaBatch done;
  for (const auto& k : releases) done.Delete(ns::kReleases, k);
  if (!done.empty()) DS_RETURN_IF_ERROR(s_->meta()->Commit(done));
  return OkStatus();
}

StatusOr<json> Deletion::DeleteVersion(const std::string& model, const std::string& ref) {
  std::unique_lock<std::mutex> lock(s_->commit_mu);
  Digest deleted;
  Manifest m;
  std::string release_key;
  DS_RETURN_IF_ERROR(RetryOnConflict([&] { return CommitDelete(model, ref, &deleted, &m, &release_key); }));
  catalog_->ForgetManifest(deleted);
  DS_RETURN_IF_ERROR(ReleaseManifest(s_->chunks(), m));
  DS_RETURN_IF_ERROR(s_->meta()->Delete(ns::kReleases, release_key));
  lock.unlock();
  DS_ASSIGN_OR_RETURN(
      GcStats gc, CollectGarbage({{"event", "delete"}, {"model", model}, {"version", deleted.ToString()}}));
  return json{{"deleted", deleted.ToString()}, {"model", model}, {"freed_bytes", gc.bytes_freed}};
}

Status Deletion::CommitDelete(const std::string& model, const std::string& ref, Digest* deleted, Manifest* m,
                              std::string* release_key) {
  MetaBatch batch;
  DS_RETURN_IF_ERROR(RegistryAudit::BumpGeneration(s_->meta(), &batch));
  DS_ASSIGN_OR_RETURN(VersionRef r, catalog_->Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(VersionRecord rec, catalog_->LoadVersion(r.model, r.digest));
  std::string child;
  DS_RETURN_IF_ERROR(s_->meta()->Scan(
      ns::kChildren, Key(r.digest.Hex(), ""), "", [&](std::string_view key, std::string_view) {
        std::string_view rest = key.substr(65);
        size_t z = rest.find('\0');
        child = std::string(rest.substr(0, z)) + "@sha256:" + std::string(rest.substr(z + 1));
        return false;
      }));
  if (!child.empty()) return VersionInUse("version is the base of " + child + "; delete that first");
  DS_ASSIGN_OR_RETURN(*m, ParseManifest(rec.manifest));
  const std::string hex = r.digest.Hex();
  batch.Delete(ns::kVersions, Key(model, hex));
  batch.Delete(ns::kDigests, Key(hex, model));
  if (rec.base) {
    auto bd = Digest::Parse(rec.base->digest);
    if (bd.ok()) batch.Delete(ns::kChildren, Key(bd->Hex(), Key(model, hex)));
  }
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kTags, Key(model, ""), "", [&](std::string_view key, std::string_view value) {
        if (value == r.digest.ToString()) batch.Delete(ns::kTags, key);
        return true;
      }));
  size_t remaining = 0;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kVersions, Key(model, ""), "", [&](std::string_view, std::string_view) {
        ++remaining;
        return true;
      }));
  if (remaining <= 1) batch.Delete(ns::kModels, model);
  *release_key = Key(hex, model);
  batch.Put(ns::kReleases, *release_key, "");
  DS_RETURN_IF_ERROR(s_->meta()->Commit(batch));
  *deleted = r.digest;
  return OkStatus();
}

StatusOr<GcStats> Deletion::CollectGarbage(json event) {
  DS_ASSIGN_OR_RETURN(GcStats gc, s_->chunks()->Gc());
  {
    std::lock_guard<std::mutex> lock(s_->commit_mu);
    DS_RETURN_IF_ERROR(RetryOnConflict([&]() -> Status {
      MetaBatch bump;
      DS_RETURN_IF_ERROR(RegistryAudit::BumpGeneration(s_->meta(), &bump));
      return s_->meta()->Commit(bump);
    }));
  }
  event["chunks_deleted"] = gc.chunks_deleted;
  event["bytes_freed"] = gc.bytes_freed;
  audit_->RecordSnapshot(std::move(event));
  return gc;
}

}  // namespace deltastore
