// The catalog: models, versions and tags as clients name them (refs), and the reads behind the
// metadata routes and downloads. Manifests are cached (they are immutable, content addressed).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "codec/manifest.h"
#include "service/reader.h"
#include "service/records.h"
#include "service/registry_state.h"

namespace deltastore {

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

class Catalog {
 public:
  explicit Catalog(RegistryState* state) : s_(state) {}

  // `ref`: a tag or "sha256:<hex>". NAME_INVALID, MODEL_UNKNOWN, TAG_UNKNOWN, VERSION_UNKNOWN.
  StatusOr<VersionRef> Resolve(const std::string& model, const std::string& ref);
  // VERSION_UNKNOWN when the model has no such version.
  StatusOr<VersionRecord> LoadVersion(const std::string& model, const Digest& digest);
  StatusOr<Manifest> LoadManifest(const Digest& digest);
  void ForgetManifest(const Digest& digest);

  StatusOr<nlohmann::json> ListModels(const std::string& after, size_t limit);
  StatusOr<nlohmann::json> GetModel(const std::string& model);
  StatusOr<nlohmann::json> ListVersions(const std::string& model, const std::string& after, size_t limit);
  StatusOr<nlohmann::json> GetVersion(const std::string& model, const std::string& ref, bool with_manifest);
  // The model's version committed last (MODEL_UNKNOWN, or VERSION_UNKNOWN when it has none).
  StatusOr<VersionRef> Newest(const std::string& model);
  StatusOr<OpenVersion> OpenForRead(const std::string& model, const std::string& ref);
  StatusOr<nlohmann::json> ListTags(const std::string& model);
  StatusOr<nlohmann::json> Stats();

  Status SetTag(const std::string& model, const std::string& tag, const std::string& version);
  Status DeleteTag(const std::string& model, const std::string& tag);

 private:
  nlohmann::json Summary(const VersionRecord& rec);
  StatusOr<size_t> CountVersions(const std::string& model);

  RegistryState* s_;
  std::mutex cache_mu_;
  std::map<Digest, Manifest> manifests_;
};

}  // namespace deltastore
