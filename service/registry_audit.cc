#include "service/registry_audit.h"

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

#include "common/clock.h"

namespace deltastore {

using json = nlohmann::json;

Status RegistryAudit::BumpGeneration(MetaStore* meta, MetaBatch* batch) {
  DS_ASSIGN_OR_RETURN(std::optional<std::string> text, meta->Find(ns::kState, kGenerationKey));
  const uint64_t g = text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
  batch->Expect(ns::kState, kGenerationKey, text);
  batch->Put(ns::kState, kGenerationKey, std::to_string(g + 1));
  return OkStatus();
}

StatusOr<uint64_t> RegistryAudit::StoredGeneration() {
  DS_ASSIGN_OR_RETURN(std::optional<std::string> text, s_->meta()->Find(ns::kState, kGenerationKey));
  return text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

StatusOr<std::shared_ptr<const AuditReport>> RegistryAudit::Report() {
  std::lock_guard<std::mutex> lock(mu_);
  // Read before computing: a change committed meanwhile leaves the stored counter ahead of the cache.
  DS_ASSIGN_OR_RETURN(uint64_t generation, StoredGeneration());
  if (cache_ && cache_generation_ == generation) return cache_;
  DS_ASSIGN_OR_RETURN(cache_, Compute());
  cache_generation_ = generation;
  return cache_;
}

StatusOr<std::shared_ptr<const AuditReport>> RegistryAudit::Compute() {
  // Pass 1: the commit order of every version (records hold their manifests, so keep only the keys).
  struct Entry {
    std::string created_at;
    uint64_t committed_ns;
    std::string key;
  };
  std::vector<Entry> order;
  Status bad;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kVersions, "", "", [&](std::string_view key, std::string_view value) {
        auto rec = VersionRecord::Parse(value);
        if (!rec.ok()) {
          bad = rec.status();
          return false;
        }
        order.push_back({rec->created_at, rec->committed_ns, std::string(key)});
        return true;
      }));
  DS_RETURN_IF_ERROR(bad);
  std::sort(order.begin(), order.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.created_at, a.committed_ns, a.key) < std::tie(b.created_at, b.committed_ns, b.key);
  });
  std::map<std::string, std::vector<std::string>> tags;  // model '\0' digest hex -> tags
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kTags, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    auto d = Digest::Parse(value);
    if (z != std::string_view::npos && d.ok())
      tags[Key(key.substr(0, z), d->Hex())].emplace_back(key.substr(z + 1));
    return true;
  }));
  // Pass 2: each manifest in that order.
  AuditBuilder builder;
  for (const auto& e : order) {
    auto rec = LoadRecord<VersionRecord>(s_->meta(), ns::kVersions, e.key);
    if (!rec.ok() && rec.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
    DS_RETURN_IF_ERROR(rec.status());
    DS_ASSIGN_OR_RETURN(Manifest m, ParseManifest(rec->manifest));
    AuditVersionInfo info;
    info.model = rec->model;
    info.digest = rec->digest;
    info.created_at = rec->created_at;
    info.mode = m.mode;
    if (auto it = tags.find(e.key); it != tags.end()) info.tags = it->second;
    info.quality = rec->quality;
    builder.Add(info, m);
  }
  DS_ASSIGN_OR_RETURN(ChunkStoreStats cs, s_->chunks()->Stats());
  return std::make_shared<const AuditReport>(builder.Finish(NowIso(), cs.bytes, cs.chunks));
}

StatusOr<json> RegistryAudit::Model(const std::string& model, const std::string& after, size_t limit) {
  DS_RETURN_IF_ERROR(catalog_->GetModel(model).status());
  if (!after.empty() && !Digest::Parse(after).ok()) return BadRequest("after must be a version digest");
  DS_ASSIGN_OR_RETURN(auto report, Report());
  json versions = json::array();
  std::string next;
  bool started = after.empty();
  for (const auto& v : report->versions) {
    if (v.info.model != model) continue;
    if (!started) {
      started = v.info.digest.ToString() == after;
      continue;
    }
    if (versions.size() == limit) {
      next = versions.back()["digest"];
      break;
    }
    versions.push_back(report->VersionJson(v));
  }
  auto it = report->models.find(model);
  AuditFigures figures = it == report->models.end() ? AuditFigures{} : it->second;
  return json{{"model", model},
              {"generated_at", report->generated_at},
              {"figures", figures.ToJson()},
              {"versions", versions},
              {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<json> RegistryAudit::Version(const std::string& model, const std::string& ref) {
  DS_ASSIGN_OR_RETURN(VersionRef r, catalog_->Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(auto report, Report());
  for (const auto& v : report->versions) {
    if (v.info.model == r.model && v.info.digest == r.digest) {
      json out = report->VersionJson(v);
      out["generated_at"] = report->generated_at;
      return out;
    }
  }
  return VersionUnknown("model " + model + " has no version " + r.digest.ToString());
}

StatusOr<json> RegistryAudit::History(const std::string& after, size_t limit) {
  json snapshots = json::array();
  std::string next;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kAuditHistory, "", after, [&](std::string_view key, std::string_view value) {
        if (snapshots.size() == limit) {
          next = snapshots.back()["id"];
          return false;
        }
        auto j = ParseRecordJson(value, "audit snapshot");
        if (j.ok()) {
          (*j)["id"] = std::string(key);
          snapshots.push_back(std::move(*j));
        }
        return true;
      }));
  return json{{"snapshots", snapshots}, {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<std::vector<json>> RegistryAudit::RecentHistory(size_t n) {
  std::deque<std::string> keys;
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kAuditHistory, "", "", [&](std::string_view key, std::string_view) {
    keys.emplace_back(key);
    if (keys.size() > n) keys.pop_front();
    return true;
  }));
  std::vector<json> out;
  for (const auto& k : keys) {
    auto text = s_->meta()->Get(ns::kAuditHistory, k);
    if (!text.ok()) continue;
    auto j = ParseRecordJson(*text, "audit snapshot");
    if (!j.ok()) continue;
    (*j)["id"] = k;
    out.push_back(std::move(*j));
  }
  return out;
}

void RegistryAudit::RecordSnapshot(json event) {
  auto report = Report();
  if (!report.ok()) return;
  json snap = (*report)->TotalsJson();
  snap["at"] = NowIso();
  snap["event"] = std::move(event);
  uint64_t ns;
  {
    std::lock_guard<std::mutex> lock(history_mu_);
    ns = std::max(NowNs(), last_history_ns_ + 1);
    last_history_ns_ = ns;
  }
  char key[24];
  std::snprintf(key, sizeof(key), "%020llu", static_cast<unsigned long long>(ns));
  (void)s_->meta()->Put(ns::kAuditHistory, key, snap.dump());
}

}  // namespace deltastore
