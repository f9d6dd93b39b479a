#include "service/catalog.h"

#include <tuple>

#include "service/registry_audit.h"

namespace deltastore {

using json = nlohmann::json;

namespace {

json Page(const char* field, json items, const std::string& next) {
  return json{{field, std::move(items)}, {"next", next.empty() ? json(nullptr) : json(next)}};
}

}  // namespace

StatusOr<VersionRecord> Catalog::LoadVersion(const std::string& model, const Digest& digest) {
  auto rec = LoadRecord<VersionRecord>(s_->meta(), ns::kVersions, Key(model, digest.Hex()));
  if (!rec.ok() && rec.status().code() == StatusCode::kNotFound)
    return VersionUnknown("model " + model + " has no version " + digest.ToString());
  return rec;
}

StatusOr<Manifest> Catalog::LoadManifest(const Digest& digest) {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = manifests_.find(digest);
    if (it != manifests_.end()) return it->second;
  }
  std::string model;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kDigests, Key(digest.Hex(), ""), "", [&](std::string_view key, std::string_view) {
        model = std::string(key.substr(65));
        return false;
      }));
  if (model.empty()) return VersionUnknown("version " + digest.ToString() + " not found");
  DS_ASSIGN_OR_RETURN(VersionRecord rec, LoadVersion(model, digest));
  DS_ASSIGN_OR_RETURN(Manifest m, ParseManifest(rec.manifest));
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (manifests_.size() > 256) manifests_.clear();
  manifests_[digest] = m;
  return m;
}

void Catalog::ForgetManifest(const Digest& digest) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  manifests_.erase(digest);
}

StatusOr<VersionRef> Catalog::Resolve(const std::string& model, const std::string& ref) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  auto m = s_->meta()->Get(ns::kModels, model);
  if (!m.ok()) {
    if (m.status().code() == StatusCode::kNotFound) return ModelUnknown("model " + model + " not found");
    return m.status();
  }
  Digest d;
  if (ref.rfind("sha256:", 0) == 0) {
    auto parsed = Digest::Parse(ref);
    if (!parsed.ok()) return DigestInvalid("malformed digest " + ref);
    d = *parsed;
  } else {
    auto tag = s_->meta()->Get(ns::kTags, Key(model, ref));
    if (!tag.ok()) {
      if (tag.status().code() == StatusCode::kNotFound)
        return TagUnknown("model " + model + " has no tag " + ref);
      return tag.status();
    }
    auto parsed = Digest::Parse(*tag);
    if (!parsed.ok()) return Corruption("tag " + ref + " of model " + model + " holds no digest");
    d = *parsed;
  }
  DS_RETURN_IF_ERROR(LoadVersion(model, d).status());
  return VersionRef{model, d};
}

json Catalog::Summary(const VersionRecord& rec) {
  json base = rec.base ? json{{"model", rec.base->model}, {"digest", rec.base->digest}} : json(nullptr);
  json out = {{"model", rec.model},
              {"digest", rec.digest.ToString()},
              {"created_at", rec.created_at},
              {"base", base},
              {"mode", rec.mode},
              {"stats", rec.stats}};
  if (!rec.quality.is_null()) out["quality"] = rec.quality;
  auto m = ParseManifest(rec.manifest);
  if (m.ok()) {
    out["logical_bytes"] = m->LogicalBytes();
    out["stored_bytes"] = m->EncodedBytes();
    json files = json::array();
    for (const auto& f : m->files) {
      files.push_back({{"path", f.path},
                       {"kind", f.kind == FileKind::kSafetensors ? "safetensors" : "blob"},
                       {"size", f.size},
                       {"sha256", f.sha256.ToString()}});
    }
    out["files"] = files;
  }
  json tags = json::array();
  const std::string digest = rec.digest.ToString();
  (void)s_->meta()->Scan(ns::kTags, Key(rec.model, ""), "",
                         [&](std::string_view key, std::string_view value) {
                           if (value == digest) tags.push_back(std::string(key.substr(rec.model.size() + 1)));
                           return true;
                         });
  out["tags"] = tags;
  return out;
}

StatusOr<size_t> Catalog::CountVersions(const std::string& model) {
  size_t n = 0;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kVersions, Key(model, ""), "", [&](std::string_view, std::string_view) {
        ++n;
        return true;
      }));
  return n;
}

StatusOr<json> Catalog::ListModels(const std::string& after, size_t limit) {
  json models = json::array();
  std::string next;
  Status bad;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kModels, "", after, [&](std::string_view key, std::string_view value) {
        if (models.size() == limit) {
          next = models.back()["name"];
          return false;
        }
        auto rec = ModelRecord::Parse(value);
        auto n = CountVersions(std::string(key));
        if (!rec.ok() || !n.ok()) {
          bad = rec.ok() ? n.status() : rec.status();
          return false;
        }
        models.push_back({{"name", rec->name}, {"created_at", rec->created_at}, {"versions", *n}});
        return true;
      }));
  DS_RETURN_IF_ERROR(bad);
  return Page("models", std::move(models), next);
}

StatusOr<json> Catalog::GetModel(const std::string& model) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  auto rec = LoadRecord<ModelRecord>(s_->meta(), ns::kModels, model);
  if (!rec.ok()) {
    if (rec.status().code() == StatusCode::kNotFound) return ModelUnknown("model " + model + " not found");
    return rec.status();
  }
  DS_ASSIGN_OR_RETURN(size_t n, CountVersions(model));
  DS_ASSIGN_OR_RETURN(json tags, ListTags(model));
  return json{{"name", model}, {"created_at", rec->created_at}, {"versions", n}, {"tags", tags["tags"]}};
}

StatusOr<json> Catalog::ListVersions(const std::string& model, const std::string& after, size_t limit) {
  DS_RETURN_IF_ERROR(GetModel(model).status());
  std::string start;
  if (!after.empty()) {
    auto d = Digest::Parse(after);
    if (!d.ok()) return BadRequest("after must be a version digest");
    start = Key(model, d->Hex());
  }
  json versions = json::array();
  std::string next;
  Status bad;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kVersions, Key(model, ""), start, [&](std::string_view, std::string_view value) {
        if (versions.size() == limit) {
          next = versions.back()["digest"];
          return false;
        }
        auto rec = VersionRecord::Parse(value);
        if (!rec.ok()) {
          bad = rec.status();
          return false;
        }
        versions.push_back(Summary(*rec));
        return true;
      }));
  DS_RETURN_IF_ERROR(bad);
  return Page("versions", std::move(versions), next);
}

StatusOr<json> Catalog::GetVersion(const std::string& model, const std::string& ref, bool with_manifest) {
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(VersionRecord rec, LoadVersion(r.model, r.digest));
  json out = Summary(rec);
  if (with_manifest) {
    json m = json::parse(rec.manifest, nullptr, false);
    if (m.is_discarded()) return Corruption("manifest of " + r.digest.ToString() + " is not JSON");
    out["manifest"] = std::move(m);
  }
  return out;
}

StatusOr<VersionRef> Catalog::Newest(const std::string& model) {
  DS_RETURN_IF_ERROR(GetModel(model).status());
  std::optional<std::tuple<std::string, uint64_t, Digest>> best;  // commit order, as the audit's
  Status bad;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kVersions, Key(model, ""), "", [&](std::string_view, std::string_view value) {
        auto rec = VersionRecord::Parse(value);
        if (!rec.ok()) {
          bad = rec.status();
          return false;
        }
        auto key = std::make_tuple(rec->created_at, rec->committed_ns, rec->digest);
        if (!best || *best < key) best = key;
        return true;
      }));
  DS_RETURN_IF_ERROR(bad);
  if (!best) return VersionUnknown("model " + model + " has no version");
  return VersionRef{model, std::get<2>(*best)};
}

StatusOr<OpenVersion> Catalog::OpenForRead(const std::string& model, const std::string& ref) {
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(Manifest m, LoadManifest(r.digest));
  OpenVersion v{r.model, r.digest, nullptr, std::nullopt};
  if (m.base) {
    DS_ASSIGN_OR_RETURN(Manifest bm, LoadManifest(*m.base));
    v.base_manifest = std::move(bm);
  }
  v.reader = std::make_shared<VersionReader>(s_->chunks(), std::move(m),
                                             [this](const Digest& d) { return LoadManifest(d); });
  return v;
}

StatusOr<json> Catalog::ListTags(const std::string& model) {
  json tags = json::object();
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(ns::kTags, Key(model, ""), "", [&](std::string_view key, std::string_view value) {
        tags[std::string(key.substr(model.size() + 1))] = std::string(value);
        return true;
      }));
  return json{{"tags", tags}};
}

StatusOr<json> Catalog::Stats() {
  DS_ASSIGN_OR_RETURN(ChunkStoreStats cs, s_->chunks()->Stats());
  size_t models = 0, versions = 0;
  auto count = [](size_t* n) {
    return [n](std::string_view, std::string_view) {
      ++*n;
      return true;
    };
  };
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kModels, "", "", count(&models)));
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kVersions, "", "", count(&versions)));
  return json{{"chunks", cs.chunks}, {"stored_bytes", cs.bytes}, {"models", models}, {"versions", versions}};
}

Status Catalog::SetTag(const std::string& model, const std::string& tag, const std::string& version) {
  if (!ValidName(tag)) return NameInvalid("invalid tag '" + tag + "'");
  if (version.rfind("sha256:", 0) != 0) return BodyInvalid("version must be a digest sha256:<hex>");
  std::lock_guard<std::mutex> lock(s_->commit_mu);
  return RetryOnConflict([&]() -> Status {
    MetaBatch batch;
    DS_RETURN_IF_ERROR(RegistryAudit::BumpGeneration(s_->meta(), &batch));
    DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, version));
    batch.Put(ns::kTags, Key(model, tag), r.digest.ToString());
    return s_->meta()->Commit(batch);
  });
}

Status Catalog::DeleteTag(const std::string& model, const std::string& tag) {
  std::lock_guard<std::mutex> lock(s_->commit_mu);
  return RetryOnConflict([&]() -> Status {
    MetaBatch batch;
    DS_RETURN_IF_ERROR(RegistryAudit::BumpGeneration(s_->meta(), &batch));
    DS_RETURN_IF_ERROR(Resolve(model, tag).status());
    batch.Delete(ns::kTags, Key(model, tag));
    return s_->meta()->Commit(batch);
  });
}

}  // namespace deltastore
