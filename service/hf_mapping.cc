#include "service/hf_mapping.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "service/audit.h"
#include "service/registry.h"

namespace deltastore::hf {

using json = nlohmann::json;

namespace {

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string RepoId(const std::string& model) {
  return std::string(kHfNamespace) + "/" + model;
}

// A string member of a JSON object, or "" (never throws).
std::string Str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string Sha1Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), md, &n, EVP_sha1(), nullptr) != 1) return std::string(40, '0');
  return HexEncode(std::string_view(reinterpret_cast<const char*>(md), n));
}

// The version behind a digest that the registry knows under `model`, as an HfRevision; kNotFound
// (kRevisionUnknown) when it does not, other failures as they are.
StatusOr<HfRevision> Existing(Registry* reg, const std::string& model, const std::string& digest,
                              const Status& unknown) {
  auto r = reg->Resolve(model, digest);
  if (!r.ok()) return r.status().code() == StatusCode::kNotFound ? unknown : r.status();
  return HfRevision{model, r->digest, CommitId(r->digest)};
}

// The model's version committed last.
StatusOr<HfRevision> Newest(Registry* reg, const std::string& model, const Status& unknown) {
  auto r = reg->NewestVersion(model);
  if (!r.ok()) return r.status().code() == StatusCode::kNotFound ? unknown : r.status();
  return HfRevision{model, r->digest, CommitId(r->digest)};
}

// The version whose digest starts with the 40-hex commit id.
StatusOr<HfRevision> ByCommit(Registry* reg, const std::string& model, const std::string& commit,
                              const Status& unknown) {
  // Versions are listed in digest order after `after` (exclusive): the lowest digest with this prefix is
  // checked on its own, then the first one above it.
  std::string lowest = "sha256:" + commit + std::string(64 - kCommitIdLength, '0');
  auto exact = Existing(reg, model, lowest, unknown);
  if (exact.ok() || exact.status().code() != StatusCode::kNotFound) return exact;
  DS_ASSIGN_OR_RETURN(json page, reg->ListVersions(model, lowest, 1));
  const json& versions = page["versions"];
  if (!versions.is_array() || versions.empty()) return unknown;
  std::string digest = Str(versions[0], "digest");
  if (digest.rfind("sha256:" + commit, 0) != 0) return unknown;
  return Existing(reg, model, digest, unknown);
}

json FileEntryJson(const FileEntry& f) {
  std::string pointer = LfsPointer(f.sha256, f.size);
  return json{{"type", "file"},
              {"oid", GitBlobId(pointer)},
              {"size", f.size},
              {"path", f.path},
              {"lfs", {{"oid", f.sha256.Hex()}, {"size", f.size}, {"pointerSize", pointer.size()}}}};
}

json FolderEntryJson(const HfRevision& rev, const std::string& path) {
  return json{{"type", "directory"}, {"oid", Sha1Hex(rev.commit + ":" + path)}, {"size", 0}, {"path", path}};
}

std::string RatioText(double r) {
  if (std::floor(r) == r && r < 1e15) return std::to_string(static_cast<int64_t>(r));
  return json(r).dump();
}

// tags and cardData: the lineage (base model, mode, policy, quality summary) of a version summary.
void AddLineage(const json& version, json* info) {
  json tags = json::array({"deltastore"});
  std::string mode = Str(version, "mode");
  tags.push_back("deltastore:" + (mode.empty() ? std::string("lossless") : mode));
  json card = json::object();
  json ds = {{"model", Str(version, "model")}, {"version", Str(version, "digest")}, {"mode", mode}};
  const json base = version.is_object() && version.contains("base") ? version["base"] : json(nullptr);
  std::string base_model = Str(base, "model");
  if (!base_model.empty()) {
    card["base_model"] = RepoId(base_model);
    card["base_model_relation"] = "finetune";
    tags.push_back("base_model:" + RepoId(base_model));
    tags.push_back("base_model:finetune:" + RepoId(base_model));
    ds["base"] = {{"model", base_model}, {"repo_id", RepoId(base_model)}, {"version", Str(base, "digest")}};
  } else {
    ds["base"] = nullptr;
  }
  const json quality =
      version.is_object() && version.contains("quality") ? version["quality"] : json(nullptr);
  json summary = AuditReport::QualitySummary(quality);
  ds["quality"] = summary;
  if (summary.is_object() && summary.contains("policy") && summary["policy"].is_object()) {
    const json& policy = summary["policy"];
    ds["policy"] = policy;
    if (policy.contains("ratio") && policy["ratio"].is_number())
      tags.push_back("deltastore:lossy-ratio:" + RatioText(policy["ratio"].get<double>()));
    std::string method = Str(policy, "method");
    if (!method.empty()) tags.push_back("deltastore:lossy-method:" + method);
  } else {
    ds["policy"] = {{"mode", mode.empty() ? std::string("lossless") : mode}};
  }
  ds["tags"] = version.is_object() && version.contains("tags") ? version["tags"] : json::array();
  card["tags"] = tags;
  card["deltastore"] = ds;
  (*info)["tags"] = tags;
  (*info)["cardData"] = card;
}

}  // namespace

std::string CommitId(const Digest& version) {
  return version.Hex().substr(0, kCommitIdLength);
}

StatusOr<std::string> ModelForRepo(Registry* reg, std::string_view ns, std::string_view name) {
  std::string repo = std::string(ns.substr(0, 300)) + "/" + std::string(name.substr(0, 300));
  Status unknown = RepoUnknown("repository " + repo + " not found");
  if (ns != kHfNamespace || !ValidName(name)) return unknown;
  std::string model(name);
  auto m = reg->GetModel(model);
  if (!m.ok()) return m.status().code() == StatusCode::kNotFound ? unknown : m.status();
  return model;
}

StatusOr<HfRevision> ResolveRevision(Registry* reg, const std::string& model, const std::string& revision) {
  Status unknown =
      RevisionUnknown("repository " + RepoId(model) + " has no revision '" + revision.substr(0, 300) + "'");
  if (revision.empty() || revision.size() > kMaxRevisionLength) return unknown;
  if (ValidName(revision)) {
    DS_ASSIGN_OR_RETURN(json tags, reg->ListTags(model));
    const json& t = tags["tags"];
    if (t.is_object() && t.contains(revision) && t[revision].is_string()) {
      return Existing(reg, model, t[revision].get<std::string>(), unknown);
    }
  }
  if (revision == "main") return Newest(reg, model, unknown);
  std::string hex = revision.rfind("sha256:", 0) == 0 ? revision.substr(7) : revision;
  if (hex.size() == 64 && Digest::Parse(hex).ok()) return Existing(reg, model, "sha256:" + hex, unknown);
  if (hex.size() == kCommitIdLength && hex == revision && IsLowerHex(hex)) {
    return ByCommit(reg, model, hex, unknown);
  }
  return unknown;
}

Status CheckRepoPath(std::string_view path) {
  auto bad = [&](const std::string& why) {
    return PathInvalid("invalid path '" + std::string(path.substr(0, 300)) + "': " + why);
  };
  if (path.empty()) return bad("empty");
  if (path.size() > kMaxRepoPathLength)
    return bad("longer than " + std::to_string(kMaxRepoPathLength) + " bytes");
  for (char c : path) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\\') return bad("control character or backslash");
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view seg = path.substr(start, slash - start);
    if (seg.empty()) return bad("empty segment");
    if (seg == "." || seg == "..") return bad("'.' or '..' segment");
    start = slash + 1;
  }
  return OkStatus();
}

std::string LfsPointer(const Digest& sha256, uint64_t size) {
  return "version https://git-lfs.github.com/spec/v1\noid sha256:" + sha256.Hex() + "\nsize " +
         std::to_string(size) + "\n";
}

std::string GitBlobId(std::string_view content) {
  std::string blob = "blob " + std::to_string(content.size()) + std::string(1, '\0');
  blob.append(content);
  return Sha1Hex(blob);
}

StatusOr<json> RepoInfo(Registry* reg, const HfRevision& rev) {
  DS_ASSIGN_OR_RETURN(json version, reg->GetVersion(rev.model, rev.digest.ToString(), false));
  DS_ASSIGN_OR_RETURN(json model, reg->GetModel(rev.model));
  DS_ASSIGN_OR_RETURN(Manifest m, reg->LoadManifest(rev.digest));
  std::vector<const FileEntry*> files;
  for (const auto& f : m.files) files.push_back(&f);
  std::sort(files.begin(), files.end(),
            [](const FileEntry* a, const FileEntry* b) { return a->path < b->path; });
  json siblings = json::array();
  std::map<std::string, uint64_t> params;
  uint64_t total = 0;
  for (const FileEntry* f : files) {
    std::string pointer = LfsPointer(f->sha256, f->size);
    siblings.push_back(
        {{"rfilename", f->path},
         {"size", f->size},
         {"blobId", GitBlobId(pointer)},
         {"lfs", {{"sha256", f->sha256.Hex()}, {"size", f->size}, {"pointerSize", pointer.size()}}}});
    for (const auto& t : f->tensors) {
      uint64_t n = 1;
      for (uint64_t d : t.shape) n *= d;
      params[std::string(DTypeName(t.dtype))] += n;
      total += n;
    }
  }
  const json stored =
      version.is_object() && version.contains("stored_bytes") ? version["stored_bytes"] : json();
  json info = {{"_id", rev.digest.Hex()},
               {"id", RepoId(rev.model)},
               {"modelId", RepoId(rev.model)},
               {"author", std::string(kHfNamespace)},
               {"sha", rev.commit},
               {"lastModified", Str(version, "created_at")},
               {"createdAt", Str(model, "created_at")},
               {"private", false},
               {"gated", false},
               {"disabled", false},
               {"downloads", 0},
               {"likes", 0},
               {"usedStorage", stored.is_number_unsigned() ? stored.get<uint64_t>() : uint64_t{0}},
               {"siblings", siblings}};
  if (total > 0) info["safetensors"] = {{"parameters", params}, {"total", total}};
  AddLineage(version, &info);
  return info;
}

StatusOr<json> TreeEntries(const Manifest& manifest, const HfRevision& rev, std::string_view dir,
                           bool recursive) {
  std::string prefix;
  if (!dir.empty()) {
    DS_RETURN_IF_ERROR(CheckRepoPath(dir));
    prefix = std::string(dir) + "/";
  }
  std::map<std::string, json> entries;  // path -> entry, in path order
  bool found = dir.empty();
  for (const auto& f : manifest.files) {
    if (f.path.compare(0, prefix.size(), prefix) != 0) continue;
    found = true;
    std::string rel = f.path.substr(prefix.size());
    size_t slash = rel.find('/');
    while (slash != std::string::npos) {
      std::string folder = prefix + rel.substr(0, slash);
      entries.emplace(folder, FolderEntryJson(rev, folder));
      if (!recursive) break;
      slash = rel.find('/', slash + 1);
    }
    if (recursive || rel.find('/') == std::string::npos) entries.emplace(f.path, FileEntryJson(f));
  }
  if (!found) {
    return EntryUnknown("revision " + rev.commit + " has no folder '" + std::string(dir.substr(0, 300)) +
                        "'");
  }
  json out = json::array();
  for (auto& [path, e] : entries) out.push_back(std::move(e));
  return out;
}

}  // namespace deltastore::hf
