// Lossy compression policy of a version: parsing the API's policy object, choosing which tensors are
// stored lossily, running the compressor (gpu/) and summarising the quality report.
#pragma once

#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/safetensors.h"
#include "gpu/lossy.h"
#include "service/ingest.h"

namespace deltastore {

struct LossyPolicy {
  LossyOptions options;
  bool embeddings = false;         // embeddings stay lossless unless asked
  uint64_t min_elements = 4096;    // smaller tensors stay lossless (their headers would dominate)
  std::string calibration_upload;  // optional upload id of per-layer input statistics (safetensors)
  // Model-level rate allocation: each tensor's share of the version's budget is chosen from probes at
  // several ratios (on by default for deltadq with codec-chosen parameters; "allocate": false turns it off).
  bool allocate = true;
};

// Parses {"mode":"lossy","ratio":16,"method":"deltadq","dbms":true,"bits":..,"group":..,"keep":..,
// "seed":..,"embeddings":false,"min_elements":4096,"calibration":"<upload id>"}; clear errors for bad values.
StatusOr<LossyPolicy> ParseLossyPolicy(const nlohmann::json& policy);
nlohmann::json LossyPolicyJson(const LossyPolicy& policy);

// Per-layer input statistics: tensors named like the weight they belong to, holding diag(X^T X). For() may
// be called from several threads (the ingest encodes tensors at once).
class Calibration {
 public:
  static StatusOr<std::shared_ptr<Calibration>> Open(const std::string& path);
  // The statistics for a weight with `cols` input columns, or null.
  const std::vector<float>* For(const std::string& weight_name, uint64_t cols);

 private:
  std::unique_ptr<SafetensorsFile> file_;
  std::mutex mu_;
  std::map<std::string, std::vector<float>> cache_;
};

// Whether the policy stores this tensor lossily (given a base tensor of the same layout).
bool WantsLossy(const LossyPolicy& policy, const TensorInfo& tensor);

// One point of a tensor's rate-distortion curve: stored bytes and squared output error at a budget.
struct RatePoint {
  double multiplier = 1;  // of the tensor's even share of the budget
  uint64_t bytes = 0;
  double err2 = 0;
};

// Chooses one point per curve so that the sum of err2 is least with the sum of bytes within `budget`
// (Lagrangian: the smallest multiplier of bytes, found by bisection, whose choices fit); the smallest
// point of each curve when nothing fits. Returns the chosen index per curve.
std::vector<size_t> AllocateRates(const std::vector<std::vector<RatePoint>>& curves, double budget);

// The factor by which every chosen share grows so that the plan spends the budget: one point a curve
// (steps of about 1.41x) can leave a version of a few tensors well under it (the 1-layer LLM pair at 16x:
// 72% of it, 23.3x). `shares` are the tensors' even shares (delta bytes / ratio), beside `curves`. What
// the picks leave (the budget less their bytes) is added to their shares in proportion to each, but only
// beyond 10% of the budget: within that, 1 (the picks stand, as the carry-over keeps the plan within 5%).
double FillFactor(const std::vector<std::vector<RatePoint>>& curves, const std::vector<size_t>& pick,
                  const std::vector<double>& shares, double budget);

// How far back a planned tensor's carry-over of what the tensors before it left unspent reaches: it counts
// the planned tensors that end at least this many bytes (of the planned tensors, in file order) before it
// begins, and the ingest encodes the others at once (IngestOptions::lossy_reach). A quarter of the planned
// tensors' bytes, where there are 8 or more; else 0 (every tensor before it, as the serial encoding did),
// where each one's unspent bytes weigh most. On minilm the smaller tensors of the first layers then run
// beside its 30522 x 384 embedding (7.8 s of the 22.5 s its encoding took at 16x, one tensor at a time).
uint64_t CarryReach(const std::vector<uint64_t>& planned_sizes);

struct LossyHooks {
  LossyHook encode;
  LossyFilter takes;     // WantsLossy of the policy
  LossyPlanner planner;  // set when the policy allocates rates (its plan gives the reach then)
  uint64_t reach = 0;    // IngestOptions::lossy_reach without a plan
};
// The reach of a version without rate allocation: no tensor's bytes depend on another's.
constexpr uint64_t kIndependentReach = std::numeric_limits<uint64_t>::max();
// The planner probes tensors on `threads` workers (0: one per core); the plan does not depend on it.
LossyHooks MakeLossyHooks(const LossyPolicy& policy, const std::shared_ptr<Calibration>& calibration,
                          size_t threads = 0);

// The version's quality report from the per-tensor reports and the manifest.
nlohmann::json QualityReport(const LossyPolicy& policy, const IngestStats& stats, const Manifest& manifest);

}  // namespace deltastore
