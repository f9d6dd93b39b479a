// Lossy compression policy of a version: parsing the API's policy object, choosing which tensors are
// stored lossily, running the compressor (gpu/) and summarising the quality report.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "codec/safetensors.h"
#include "gpu/lossy.h"
#include "service/packer.h"

namespace deltastore {

struct LossyPolicy {
  LossyOptions options;
  bool embeddings = false;         // embeddings stay lossless unless asked
  uint64_t min_elements = 4096;    // smaller tensors stay lossless (their headers would dominate)
  std::string calibration_upload;  // optional upload id of per-layer input statistics (safetensors)
};

// Parses {"mode":"lossy","ratio":16,"method":"deltadq","dbms":true,"bits":..,"group":..,"keep":..,
// "seed":..,"embeddings":false,"min_elements":4096,"calibration":"<upload id>"}; clear errors for bad values.
StatusOr<LossyPolicy> ParseLossyPolicy(const nlohmann::json& policy);
nlohmann::json LossyPolicyJson(const LossyPolicy& policy);

// Per-layer input statistics: tensors named like the weight they belong to, holding diag(X^T X).
class Calibration {
 public:
  static StatusOr<std::shared_ptr<Calibration>> Open(const std::string& path);
  // The statistics for a weight with `cols` input columns, or null.
  const std::vector<float>* For(const std::string& weight_name, uint64_t cols);

 private:
  std::unique_ptr<SafetensorsFile> file_;
  std::map<std::string, std::vector<float>> cache_;
};

// Whether the policy stores this tensor lossily (given a base tensor of the same layout).
bool WantsLossy(const LossyPolicy& policy, const TensorInfo& tensor);

LossyHook MakeLossyHook(const LossyPolicy& policy, std::shared_ptr<Calibration> calibration);

// The version's quality report from the per-tensor reports and the manifest.
nlohmann::json QualityReport(const LossyPolicy& policy, const IngestStats& stats, const Manifest& manifest);

}  // namespace deltastore
