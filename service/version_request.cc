#include "service/version_request.h"

#include <map>
#include <set>
#include <vector>

#include "codec/safetensors.h"
#include "common/clock.h"
#include "service/lossy_policy.h"

namespace deltastore {

using json = nlohmann::json;

namespace {

StatusOr<std::vector<JobFile>> ParseFiles(const json& request, Uploads* uploads) {
  auto it = request.find("files");
  if (it == request.end() || !it->is_array() || it->empty())
    return BodyInvalid("files must be a non-empty array of {path, upload}");
  std::vector<JobFile> files;
  std::set<std::string> paths;
  for (const auto& f : *it) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("upload") ||
        !f["upload"].is_string()) {
      return BodyInvalid("each file must be {\"path\": string, \"upload\": upload id}");
    }
    std::string path = f["path"], upload = f["upload"];
    if (!ValidPath(path)) return NameInvalid("invalid file path '" + path + "'");
    if (!paths.insert(path).second) return BodyInvalid("file " + path + " appears twice");
    DS_ASSIGN_OR_RETURN(UploadRecord u, uploads->GetSealed(upload, "upload"));
    files.push_back({path, upload, u.size, u.digest});
  }
  return files;
}

// The normalised policy record the job carries.
StatusOr<json> ParsePolicy(const json& request, Uploads* uploads) {
  json policy = request.contains("policy") ? request["policy"] : json::object();
  if (!policy.is_object()) return PolicyInvalid("policy must be an object");
  if (policy.contains("mode") && !policy["mode"].is_string())
    return PolicyInvalid("policy.mode must be a string");
  std::string mode = policy.contains("mode") ? policy["mode"].get<std::string>() : "lossless";
  if (mode != "lossless" && mode != "lossy") return PolicyInvalid("policy.mode must be lossless or lossy");
  bool allow_mismatch = false;
  if (policy.contains("allow_mismatched_shapes")) {
    if (!policy["allow_mismatched_shapes"].is_boolean())
      return PolicyInvalid("policy.allow_mismatched_shapes must be true or false");
    allow_mismatch = policy["allow_mismatched_shapes"].get<bool>();
  }
  // The lossless float coder: "fast" (table-driven, codec 0x04) or "max" (adaptive, codec 0x03).
  std::string level = "fast";
  if (policy.contains("level")) {
    if (!policy["level"].is_string()) return PolicyInvalid("policy.level must be fast or max");
    level = policy["level"].get<std::string>();
    if (level != "fast" && level != "max") return PolicyInvalid("policy.level must be fast or max");
    policy.erase("level");
  }
  if (mode == "lossless") {
    for (auto it = policy.begin(); it != policy.end(); ++it) {
      if (it.key() != "mode" && it.key() != "allow_mismatched_shapes")
        return PolicyInvalid("policy field '" + it.key() + "' applies to lossy mode only");
    }
    return json{{"mode", mode}, {"allow_mismatched_shapes", allow_mismatch}, {"level", level}};
  }
  if (!request.contains("base") || request["base"].is_null())
    return PolicyInvalid("lossy mode stores a delta: give a base");
  DS_ASSIGN_OR_RETURN(LossyPolicy lp, ParseLossyPolicy(policy));
  if (!lp.calibration_upload.empty()) {
    DS_ASSIGN_OR_RETURN(UploadRecord cu, uploads->GetSealed(lp.calibration_upload, "calibration upload"));
    DS_ASSIGN_OR_RETURN(std::string spool, uploads->Spool(cu));
    DS_RETURN_IF_ERROR(Calibration::Open(spool).status());
  }
  json record = LossyPolicyJson(lp);
  record["allow_mismatched_shapes"] = allow_mismatch;
  record["level"] = level;
  return record;
}

StatusOr<std::vector<std::string>> ParseTags(const json& request) {
  std::vector<std::string> tags;
  if (!request.contains("tags")) return tags;
  if (!request["tags"].is_array()) return BodyInvalid("tags must be an array of names");
  for (const auto& t : request["tags"]) {
    if (!t.is_string() || !ValidName(t.get<std::string>())) return NameInvalid("invalid tag " + t.dump());
    tags.push_back(t.get<std::string>());
  }
  return tags;
}

StatusOr<std::optional<VersionRef>> ParseBase(const json& request, Catalog* catalog) {
  if (!request.contains("base") || request["base"].is_null()) return std::optional<VersionRef>();
  const json& b = request["base"];
  if (!b.is_object() || !b.contains("model") || !b["model"].is_string())
    return BodyInvalid("base must be {\"model\": name, \"version\": tag or digest}");
  std::string ref =
      b.contains("version") && b["version"].is_string() ? b["version"].get<std::string>() : "latest";
  DS_ASSIGN_OR_RETURN(VersionRef r, catalog->Resolve(b["model"].get<std::string>(), ref));
  return std::optional<VersionRef>(r);
}

// Headers parse, and tensors shared with the base match it in dtype and shape.
Status CheckCheckpoints(const std::vector<JobFile>& files, const Manifest* base, bool allow_mismatch,
                        Uploads* uploads) {
  std::map<std::string, const TensorEntry*> base_tensors;
  if (base != nullptr) {
    for (const auto& f : base->files)
      for (const auto& t : f.tensors) base_tensors[t.name] = &t;
  }
  size_t shared = 0, total = 0;
  std::vector<std::string> mismatched;
  for (const auto& f : files) {
    if (!IsSafetensorsPath(f.path)) continue;
    DS_ASSIGN_OR_RETURN(UploadRecord u, uploads->Get(f.upload));
    DS_ASSIGN_OR_RETURN(std::string spool, uploads->Spool(u));
    auto st = SafetensorsFile::Open(spool);
    if (!st.ok()) return st.status().Annotate(f.path);  // the client's name, never the spool path
    for (const auto& t : (*st)->header().tensors) {
      ++total;
      auto it = base_tensors.find(t.name);
      if (it == base_tensors.end()) continue;
      ++shared;
      if (it->second->dtype != t.dtype || it->second->shape != t.shape) mismatched.push_back(t.name);
    }
  }
  if (base != nullptr && total > 0 && shared == 0)
    return BaseMismatch("the checkpoint shares no tensor name with the base");
  if (!mismatched.empty() && !allow_mismatch) {
    std::string names;
    for (size_t i = 0; i < mismatched.size() && i < 5; ++i) names += (i ? ", " : "") + mismatched[i];
    return BaseMismatch(std::to_string(mismatched.size()) +
                        " tensors differ in dtype or shape from the base (" + names +
                        "); set policy.allow_mismatched_shapes to store them standalone");
  }
  return OkStatus();
}

}  // namespace

StatusOr<JobRecord> PlanVersion(const std::string& model, const json& request, Uploads* uploads,
                                Catalog* catalog) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  if (!request.is_object()) return BodyInvalid("body must be a JSON object");
  JobRecord job;
  DS_ASSIGN_OR_RETURN(job.files, ParseFiles(request, uploads));
  DS_ASSIGN_OR_RETURN(job.policy, ParsePolicy(request, uploads));
  DS_ASSIGN_OR_RETURN(job.tags, ParseTags(request));
  DS_ASSIGN_OR_RETURN(std::optional<VersionRef> base, ParseBase(request, catalog));
  std::optional<Manifest> base_manifest;
  if (base) {
    job.base = BaseRef{base->model, base->digest.ToString()};
    DS_ASSIGN_OR_RETURN(base_manifest, catalog->LoadManifest(base->digest));
  }
  DS_RETURN_IF_ERROR(CheckCheckpoints(job.files, base_manifest ? &*base_manifest : nullptr,
                                      job.policy["allow_mismatched_shapes"].get<bool>(), uploads));
  job.id = NewId();
  job.state = "queued";
  job.model = model;
  job.created_at = job.updated_at = NowIso();
  return job;
}

}  // namespace deltastore
