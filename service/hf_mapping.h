// The Hugging Face view of the registry (docs/http_api.md, "Hugging Face–compatible read API"): which
// model a repo id names, which version a revision names, and the repository info and file tree that
// huggingface_hub reads, built from the registry's public reads. api/hf_routes.cc serves them.
//
// Mapping:
//  - repo id "deltastore/<model>" <-> our model <model> (model names are one path segment; the
//    namespace is the fixed kHfNamespace, any other is an unknown repository);
//  - revision "main" <-> the model's tag "main" when it has one, else its newest version (the one
//    committed last); any other revision is first a tag of that name, else a version digest given as
//    "sha256:<64 hex>", "<64 hex>" or the 40-hex commit id below;
//  - commit id (the "sha" and X-Repo-Commit clients see) <-> the first 40 hex digits of the version
//    digest, the length huggingface_hub takes for an immutable commit hash;
//  - every file is presented as an LFS file: its LFS oid is the sha256 of the file as served, its git
//    blob id the sha1 of its LFS pointer, so clients verify downloads by sha256.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "codec/manifest.h"
#include "common/sha256.h"
#include "common/status.h"

namespace deltastore {
class Registry;
}

namespace deltastore::hf {

inline constexpr std::string_view kHfNamespace = "deltastore";
inline constexpr size_t kCommitIdLength = 40;
inline constexpr size_t kMaxRepoPathLength = 1024;
inline constexpr size_t kMaxRevisionLength = 256;

// Reasons (Status::reason) the HF routes turn into huggingface_hub's X-Error-Code values.

// The model of repo "<ns>/<name>"; kNotFound (RepoUnknown) for another namespace, an invalid name or a
// model that does not exist.
StatusOr<std::string> ModelForRepo(Registry* registry, std::string_view ns, std::string_view name);

struct HfRevision {
  std::string model;
  Digest digest;       // the version
  std::string commit;  // CommitId(digest)
};

std::string CommitId(const Digest& version);

// The version `revision` names (see the mapping above); kNotFound (RevisionUnknown) when none.
StatusOr<HfRevision> ResolveRevision(Registry* registry, const std::string& model,
                                     const std::string& revision);

// A path inside a repository: non-empty '/'-separated segments, none "." or "..", no control bytes or
// backslashes, at most kMaxRepoPathLength bytes; kInvalidArgument (PathInvalid) otherwise.
Status CheckRepoPath(std::string_view path);

// The git blob id (sha1 of "blob <n>\0" + content) of the LFS pointer of a file, and that pointer.
std::string LfsPointer(const Digest& sha256, uint64_t size);
std::string GitBlobId(std::string_view content);

// GET /api/models/{repo_id}[/revision/{rev}]: id, sha, siblings (with sizes and LFS sha256), tags and
// cardData (base model, policy, quality summary of lossy versions), safetensors parameter counts.
StatusOr<nlohmann::json> RepoInfo(Registry* registry, const HfRevision& rev);

// GET /api/models/{repo_id}/tree/{rev}[/{dir}]: the files and folders under `dir` ("" for the root),
// all of them below it when `recursive`, in path order; kNotFound (EntryUnknown) when `dir` is neither
// a folder nor a file of the version.
StatusOr<nlohmann::json> TreeEntries(const Manifest& manifest, const HfRevision& rev, std::string_view dir,
                                     bool recursive);

}  // namespace deltastore::hf
