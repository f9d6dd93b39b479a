// Lossy policy: parsing the rank and allocate fields, model-level rate allocation (AllocateRates), and
// a lossy ingest that plans its tensors' shares before encoding them.
#include "service/lossy_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "codec/safetensors.h"
#include "storage/stores.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// Policy parsing

void ExpectPolicyError(const json& policy) {
  auto p = ParseLossyPolicy(policy);
  ASSERT_FALSE(p.ok()) << policy.dump();
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << policy.dump();
  EXPECT_EQ(p.status().reason(), Reason::kPolicyInvalid) << policy.dump();
}

TEST(LossyPolicyTest, RankIsParsedAndChecked) {
  auto p = ParseLossyPolicy({{"mode", "lossy"}});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->options.rank, -1);  // chosen by the codec
  for (int rank : {0, 1, 17, 256}) {
    auto q = ParseLossyPolicy({{"mode", "lossy"}, {"rank", rank}});
    ASSERT_TRUE(q.ok()) << rank << ": " << q.status().ToString();
    EXPECT_EQ(q->options.rank, rank);
  }
  ExpectPolicyError({{"mode", "lossy"}, {"rank", 257}});
  ExpectPolicyError({{"mode", "lossy"}, {"rank", -1}});
  ExpectPolicyError({{"mode", "lossy"}, {"rank", 2.5}});
  ExpectPolicyError({{"mode", "lossy"}, {"rank", "4"}});
  ExpectPolicyError({{"mode", "lossy"}, {"rank", true}});
  for (const char* method : {"dare", "random4", "groupk4", "bitdelta", "topk8", "lowbit"}) {
    ExpectPolicyError({{"mode", "lossy"}, {"method", method}, {"rank", 4}});
  }
  // With explicit dropout parameters.
  auto q = ParseLossyPolicy({{"mode", "lossy"}, {"bits", 2}, {"group", 64}, {"keep", 4}, {"rank", 8}});
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->options.rank, 8);
  EXPECT_EQ(q->options.bits, 2);
}

TEST(LossyPolicyTest, AllocateDefaultsOnOnlyForCodecChosenDeltaDQ) {
  auto allocate = [](const json& policy) {
    auto p = ParseLossyPolicy(policy);
    EXPECT_TRUE(p.ok()) << policy.dump() << ": " << p.status().ToString();
    return p.ok() && p->allocate;
  };
  EXPECT_TRUE(allocate({{"mode", "lossy"}}));
  EXPECT_TRUE(allocate({{"mode", "lossy"}, {"method", "deltadq"}, {"ratio", 64}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"bits", 2}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"group", 64}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"group", 64}, {"keep", 8}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"rank", 4}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"rank", 0}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"method", "dare"}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"method", "topk8"}}));
  // Explicit values.
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"allocate", false}}));
  EXPECT_TRUE(allocate({{"mode", "lossy"}, {"allocate", true}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"bits", 2}, {"allocate", false}}));
  EXPECT_FALSE(allocate({{"mode", "lossy"}, {"rank", 2}, {"allocate", false}}));
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", "yes"}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", 1}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", true}, {"bits", 2}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", true}, {"group", 32}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", true}, {"group", 32}, {"keep", 2}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", true}, {"rank", 4}});
  ExpectPolicyError({{"mode", "lossy"}, {"allocate", true}, {"rank", 0}});
}

TEST(LossyPolicyTest, PolicyJsonParsesBackToTheSamePolicy) {
  for (const json& policy :
       {json{{"mode", "lossy"}}, json{{"mode", "lossy"}, {"allocate", false}},
        json{{"mode", "lossy"}, {"rank", 0}}, json{{"mode", "lossy"}, {"rank", 12}, {"ratio", 32}},
        json{{"mode", "lossy"}, {"bits", 2}, {"group", 64}, {"keep", 4}, {"rank", 3}},
        json{{"mode", "lossy"}, {"method", "dare"}}}) {
    auto p = ParseLossyPolicy(policy);
    ASSERT_TRUE(p.ok()) << policy.dump();
    json j = LossyPolicyJson(*p);
    EXPECT_EQ(j["allocate"], p->allocate) << j.dump();
    if (p->options.rank >= 0) {
      EXPECT_EQ(j["rank"], p->options.rank) << j.dump();
    } else {
      EXPECT_FALSE(j.contains("rank")) << j.dump();
    }
    auto again = ParseLossyPolicy(j);
    ASSERT_TRUE(again.ok()) << j.dump() << ": " << again.status().ToString();
    EXPECT_EQ(LossyPolicyJson(*again), j);
  }
}

// ---------------------------------------------------------------------------------------------------
// AllocateRates

double Bytes(const std::vector<std::vector<RatePoint>>& curves, const std::vector<size_t>& pick) {
  double b = 0;
  for (size_t i = 0; i < curves.size(); ++i) b += static_cast<double>(curves[i][pick[i]].bytes);
  return b;
}
double Err(const std::vector<std::vector<RatePoint>>& curves, const std::vector<size_t>& pick) {
  double e = 0;
  for (size_t i = 0; i < curves.size(); ++i) e += curves[i][pick[i]].err2;
  return e;
}

// Two convex curves (error falls less per byte as bytes grow) and a dominated point on the second.
const std::vector<std::vector<RatePoint>> kCurves = {
    {{0.5, 100, 10.0}, {1.0, 200, 4.0}, {2.0, 400, 1.0}},
    {{0.5, 100, 50.0}, {1.0, 200, 20.0}, {1.41, 300, 25.0}, {2.0, 400, 18.0}},
};

TEST(AllocateRatesTest, ChoosesTheLeastErrorWithinTheBudget) {
  // Budget 400: shares of 200 each (error 24) beat 100 + 300 or any other pair that fits.
  std::vector<size_t> pick = AllocateRates(kCurves, 400);
  EXPECT_EQ(pick, (std::vector<size_t>{1, 1}));
  // Budget 600: the first tensor gains more from its last 200 bytes (3) than the second (2).
  pick = AllocateRates(kCurves, 600);
  EXPECT_EQ(pick, (std::vector<size_t>{2, 1}));
  EXPECT_DOUBLE_EQ(Err(kCurves, pick), 21.0);
  // Budget 300: the second tensor's first 100 extra bytes save 30, the first's 6.
  pick = AllocateRates(kCurves, 300);
  EXPECT_EQ(pick, (std::vector<size_t>{0, 1}));
  // Enough for everything: each curve's least error.
  pick = AllocateRates(kCurves, 800);
  EXPECT_EQ(pick, (std::vector<size_t>{2, 3}));
  EXPECT_EQ(AllocateRates(kCurves, 1e12), pick);

  // Over a sweep of budgets: always within, never the dominated point, error never rising with the
  // budget, and never worse than the best single multiplier shared by both tensors.
  double last_err = std::numeric_limits<double>::infinity();
  for (int step = 0; step <= 28; ++step) {
    const double budget = 200 + 25.0 * step;  // 200 .. 900
    pick = AllocateRates(kCurves, budget);
    ASSERT_EQ(pick.size(), 2u);
    EXPECT_LE(Bytes(kCurves, pick), budget) << budget;
    EXPECT_NE(pick[1], 2u) << budget;
    EXPECT_LE(Err(kCurves, pick), last_err) << budget;
    last_err = Err(kCurves, pick);
    for (size_t even : {0, 1, 3}) {
      const std::vector<size_t> same = {even == 3 ? size_t{2} : even, even};
      if (Bytes(kCurves, same) <= budget) {
        EXPECT_LE(Err(kCurves, pick), Err(kCurves, same)) << budget;
      }
    }
  }
}

TEST(AllocateRatesTest, EqualErrorsPreferFewerBytes) {
  const std::vector<std::vector<RatePoint>> curves = {{{2.0, 500, 2.0}, {1.0, 300, 2.0}, {0.5, 100, 9.0}}};
  EXPECT_EQ(AllocateRates(curves, 1000), (std::vector<size_t>{1}));
}

TEST(AllocateRatesTest, NothingFitsGivesTheSmallestPointOfEachCurve) {
  // The smallest points are not first in their curves.
  const std::vector<std::vector<RatePoint>> curves = {
      {{1.0, 200, 4.0}, {0.25, 60, 30.0}, {0.5, 100, 10.0}},
      {{1.0, 200, 20.0}, {2.0, 400, 18.0}, {0.25, 70, 90.0}},
  };
  EXPECT_EQ(AllocateRates(curves, 100), (std::vector<size_t>{1, 2}));
  EXPECT_EQ(AllocateRates(curves, 0), (std::vector<size_t>{1, 2}));
  // Exactly the smallest points' bytes fits.
  EXPECT_EQ(AllocateRates(curves, 130), (std::vector<size_t>{1, 2}));
}

TEST(FillFactorTest, SpendsWhatTheStepsLeaveBeyondATenthOfTheBudget) {
  // Two tensors with even shares of 100 and 300 (budget 400), at multipliers 1.41 and 0.5 of them, each
  // costing its share: 141 + 150 = 291 bytes, 109 (27%) left. Their chosen shares grow by 109 / 291.
  const std::vector<std::vector<RatePoint>> curves = {{{1.41, 141, 1.0}}, {{0.5, 150, 1.0}}};
  const std::vector<double> shares = {100, 300};
  const double fill = FillFactor(curves, {0, 0}, shares, 400);
  EXPECT_DOUBLE_EQ(fill, 1.0 + 109.0 / 291.0);
  EXPECT_DOUBLE_EQ(141 * fill + 150 * fill, 400);
  // A point that costs more than its share (a probe over it) leaves less to spread: 141 + 200 = 341
  // bytes, 59 left (15% of the budget) over the chosen shares of 291.
  EXPECT_DOUBLE_EQ(FillFactor({{{1.41, 141, 1.0}}, {{0.5, 200, 1.0}}}, {0, 0}, shares, 400),
                   1.0 + 59.0 / 291.0);
  // Within a tenth of the budget the picks stand: 141 + 220 = 361 bytes, 39 left.
  EXPECT_DOUBLE_EQ(FillFactor({{{1.41, 141, 1.0}}, {{0.5, 220, 1.0}}}, {0, 0}, shares, 400), 1.0);
  // Over the budget (nothing fits), or nothing planned: 1.
  EXPECT_DOUBLE_EQ(FillFactor(curves, {0, 0}, shares, 200), 1.0);
  EXPECT_DOUBLE_EQ(FillFactor({}, {}, {}, 400), 1.0);
}

TEST(AllocateRatesTest, EmptyInputGivesAnEmptyChoice) {
  EXPECT_TRUE(AllocateRates({}, 1000).empty());
  EXPECT_TRUE(AllocateRates({}, 0).empty());
}

// ---------------------------------------------------------------------------------------------------
// A lossy ingest with rate allocation

std::string F32Bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

struct Checkpoints {
  std::unique_ptr<TempDir> tmp = std::make_unique<TempDir>();  // removed with the checkpoints
  fs::path dir, base, ft;
  std::set<std::string> lossy_names;
};

// The paths of a base and a finetune checkpoint in a new temporary directory.
Checkpoints CheckpointPaths() {
  Checkpoints c;
  c.dir = c.tmp->path();
  c.base = c.dir / "base.safetensors";
  c.ft = c.dir / "ft.safetensors";
  return c;
}

// A base checkpoint and a finetune with two lossy candidates whose deltas differ (low rank, dense noise),
// a 2-D tensor below min_elements and a 1-D bias (both stay lossless) and an unchanged tensor. With
// `small_first`, the tensor below min_elements comes first in the files.
Checkpoints MakeCheckpoints(bool small_first = false) {
  Checkpoints c = CheckpointPaths();
  std::mt19937 rng(21);
  std::normal_distribution<float> n(0.0f, 1.0f);
  auto random = [&](size_t count, float scale) {
    std::vector<float> v(count);
    for (float& x : v) x = scale * n(rng);
    return v;
  };
  std::vector<TensorSpec> specs = {{"layers.0.attn.weight", DType::kF32, {64, 32}},
                                   {"layers.0.mlp.weight", DType::kF32, {64, 32}},
                                   {"layers.1.mlp.weight", DType::kF32, {16, 32}},
                                   {"layers.1.bias", DType::kF32, {64}},
                                   {"layers.1.norm.weight", DType::kF32, {32, 64}}};
  std::vector<std::string> base, ft;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t count =
        specs[i].shape.size() == 2 ? specs[i].shape[0] * specs[i].shape[1] : specs[i].shape[0];
    std::vector<float> b = random(count, 0.05f), f = b;
    if (i == 0) {  // rank 2 plus a little noise
      const size_t cols = specs[i].shape[1];
      std::vector<float> u = random(specs[i].shape[0] * 2, 1.0f), v = random(2 * cols, 1.0f),
                         e = random(count, 0.0005f);
      for (size_t j = 0; j < count; ++j)
        f[j] += 0.003f * (u[j / cols * 2] * v[j % cols] + u[j / cols * 2 + 1] * v[cols + j % cols]) + e[j];
    } else if (i == 1) {  // dense noise, larger
      std::vector<float> d = random(count, 0.004f);
      for (size_t j = 0; j < count; ++j) f[j] += d[j];
    } else if (i == 2) {  // small
      std::vector<float> d = random(count, 0.0005f);
      for (size_t j = 0; j < count; ++j) f[j] += d[j];
    } else if (i == 3) {
      for (float& x : f) x += 0.01f;
    }
    base.push_back(F32Bytes(b));
    ft.push_back(F32Bytes(f));
  }
  if (small_first) {
    std::rotate(specs.begin(), specs.begin() + 2, specs.begin() + 3);
    std::rotate(base.begin(), base.begin() + 2, base.begin() + 3);
    std::rotate(ft.begin(), ft.begin() + 2, ft.begin() + 3);
  }
  EXPECT_TRUE(WriteSafetensorsFile(c.base.string(), specs, base).ok());
  EXPECT_TRUE(WriteSafetensorsFile(c.ft.string(), specs, ft).ok());
  c.lossy_names = {"layers.0.attn.weight", "layers.0.mlp.weight"};
  return c;
}

struct LossyIngest {
  json quality;
  IngestStats stats;
  std::vector<IngestProgress> progress;
};

// Without `filter`, the ingest offers the hooks every tensor (they still leave out what the policy does).
LossyIngest IngestLossy(const Checkpoints& c, const json& policy_json, size_t probe_threads = 0,
                        bool filter = true) {
  LossyIngest out;
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  IngestStats base_stats;
  auto base = IngestFiles(store.get(), {{c.base.string(), "model.safetensors"}}, nullptr, {}, &base_stats);
  EXPECT_TRUE(base.ok()) << base.status().ToString();
  if (!base.ok()) return out;
  auto policy = ParseLossyPolicy(policy_json);
  EXPECT_TRUE(policy.ok()) << policy.status().ToString();
  if (!policy.ok()) return out;
  policy->min_elements = 1024;
  LossyHooks hooks = MakeLossyHooks(*policy, nullptr, probe_threads);
  IngestOptions options;
  options.lossy = hooks.encode;
  if (filter) options.lossy_takes = hooks.takes;
  options.lossy_planner = hooks.planner;
  VersionReader reader(store.get(), *base,
                       [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); });
  auto m = IngestFiles(store.get(), {{c.ft.string(), "model.safetensors"}}, &reader, options, &out.stats,
                       [&](const IngestProgress& p) { out.progress.push_back(p); });
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return out;
  out.quality = QualityReport(*policy, out.stats, *m);
  return out;
}

TEST(LossyIngestTest, AllocationPlansFirstAndKeepsTheVersionWithinItsRatio) {
  Checkpoints c = MakeCheckpoints();
  const double target = 32;
  LossyIngest r = IngestLossy(c, {{"mode", "lossy"}, {"ratio", target}});
  ASSERT_TRUE(r.quality.is_object());
  EXPECT_TRUE(r.quality["policy"]["allocate"].get<bool>());
  ASSERT_EQ(r.quality["tensors"].size(), c.lossy_names.size()) << r.quality.dump(1);

  // Planning is reported first, for every tensor of the file, then encoding. Within planning the bytes
  // move as the probes of each tensor run (from their threads), never back, so there are more reports
  // than tensors.
  ASSERT_FALSE(r.progress.empty());
  EXPECT_EQ(r.progress.front().phase, "planning");
  EXPECT_EQ(r.progress.back().phase, "encoding");
  size_t planning = 0;
  bool encoding_seen = false;
  IngestProgress last_planning;
  for (const IngestProgress& p : r.progress) {
    if (p.phase == "planning") {
      EXPECT_FALSE(encoding_seen) << "planning reported after encoding began";
      EXPECT_GE(p.bytes_done, last_planning.bytes_done);
      EXPECT_GE(p.tensors_done, last_planning.tensors_done);
      EXPECT_LE(p.bytes_done, p.bytes_total);
      last_planning = p;
      ++planning;
    } else {
      EXPECT_EQ(p.phase, "encoding");
      encoding_seen = true;
    }
    EXPECT_EQ(p.tensors_total, 5u);
  }
  EXPECT_GT(planning, 5u);
  EXPECT_EQ(last_planning.tensors_done, 5u);
  EXPECT_EQ(r.progress.back().tensors_done, 5u);

  // Each tensor's share is one of the probed multipliers of the even share; the version's lossy bytes
  // stay within the target (allowing the tensors that could not reach their share).
  const std::set<double> multipliers = {0.25, 0.5, 0.71, 1.0, 1.41, 2.0, 4.0};
  double stored = 0, delta = 0, over = 0;
  std::set<std::string> names;
  for (const json& t : r.quality["tensors"]) {
    names.insert(t["name"].get<std::string>());
    ASSERT_TRUE(t.contains("target_ratio")) << t.dump();
    const double ratio = t["target_ratio"].get<double>();
    bool probed = false;
    for (double m : multipliers) probed |= std::abs(t["planned_ratio"].get<double>() - target / m) < 1e-9;
    EXPECT_TRUE(probed) << t.dump();
    EXPECT_GE(t["rank"].get<int>(), 0) << t.dump();
    EXPECT_TRUE(t["scale"] == "tensor" || t["scale"] == "row") << t.dump();
    const double bytes = t["stored_bytes"].get<double>(), d = t["delta_bytes"].get<double>();
    stored += bytes;
    delta += d;
    if (!t["within_budget"].get<bool>()) over += std::max(0.0, bytes - d / ratio);
  }
  EXPECT_EQ(names, c.lossy_names);
  EXPECT_LE(stored, delta / target + over) << r.quality.dump(1);
  EXPECT_NEAR(r.quality["lossy_ratio"].get<double>(), delta / stored, 1e-9);
  // Unspent bytes carry over to the tensors encoded later: the version lands within 10% of its ratio.
  EXPECT_NEAR(r.quality["lossy_ratio"].get<double>(), target, 0.1 * target) << r.quality.dump(1);
  EXPECT_EQ(r.quality["ratio_note"], "");
  // The low-rank tensor gets a low-rank term at its share.
  for (const json& t : r.quality["tensors"]) {
    if (t["name"] == "layers.0.attn.weight") {
      EXPECT_GT(t["rank"].get<int>(), 0) << t.dump();
    }
  }
}

// Ratios up to 4096 are valid policies; the planner's probes above the target's multiple must stay within
// the compressor's range (1..4096) instead of failing the ingest.
TEST(LossyIngestTest, ThePlanAndTheBytesDoNotDependOnTheNumberOfProbeWorkers) {
  Checkpoints c = MakeCheckpoints();
  const json policy = {{"mode", "lossy"}, {"ratio", 64}};
  LossyIngest one = IngestLossy(c, policy, 1);
  LossyIngest three = IngestLossy(c, policy, 3);
  ASSERT_TRUE(one.quality.is_object());
  ASSERT_EQ(one.quality["tensors"].size(), c.lossy_names.size());
  EXPECT_EQ(one.quality.dump(), three.quality.dump());  // every tensor's ratio, choice and errors
  EXPECT_EQ(one.stats.encoded_bytes, three.stats.encoded_bytes);
}

// Tensors the policy leaves out are not read whole, but they keep their stream numbers: the masks of the
// tensors after them, so the stored bytes, are those of an ingest that offers the hooks every tensor.
TEST(LossyIngestTest, TensorsThePolicyLeavesOutChangeNoBytesOfTheOthers) {
  Checkpoints c = MakeCheckpoints(/*small_first=*/true);
  for (const json& policy : {json{{"mode", "lossy"}, {"ratio", 32}},
                             json{{"mode", "lossy"}, {"ratio", 32}, {"allocate", false}}}) {
    LossyIngest filtered = IngestLossy(c, policy, 1, true);
    LossyIngest offered = IngestLossy(c, policy, 1, false);
    ASSERT_TRUE(filtered.quality.is_object());
    ASSERT_EQ(filtered.quality["tensors"].size(), c.lossy_names.size());
    EXPECT_EQ(filtered.quality.dump(), offered.quality.dump());
    EXPECT_EQ(filtered.stats.encoded_bytes, offered.stats.encoded_bytes);
    EXPECT_EQ(filtered.stats.tensors_lossy, offered.stats.tensors_lossy);
    EXPECT_EQ(filtered.stats.tensors_delta, offered.stats.tensors_delta);
  }
}

TEST(LossyIngestTest, TheReportSaysWhyEachTensorsCandidateWon) {
  Checkpoints c = MakeCheckpoints();
  LossyIngest r = IngestLossy(c, {{"mode", "lossy"}, {"ratio", 8}});
  ASSERT_TRUE(r.quality.is_object());
  ASSERT_FALSE(r.quality["tensors"].empty());
  for (const json& t : r.quality["tensors"]) {
    const std::string reason = t["reason"].get<std::string>();
    EXPECT_FALSE(reason.empty()) << t.dump();
    // 4 bits a weight: the dense quantizer wins by rule, without the dropout search
    if (t["estimator"] == "ecsq" && t["ratio"].get<double>() < 10) {
      EXPECT_NE(reason.find("ecsq"), std::string::npos);
    }
  }
}

// An embedding is looked up, a linear layer multiplied: the same table under each name, at 512x where the
// dropout is worse than no estimate, gets the low-rank term alone only as the embedding
// (LossyOptions::lookup, set by name).
TEST(LossyIngestTest, OnlyTablesLookedUpTakeTheLowRankTermAlone) {
  Checkpoints c = CheckpointPaths();
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> b(2048 * 128), f(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = 0.05f * n(rng);
    f[i] = b[i] + (i / 128 % 64 == 0 ? 0.01f * n(rng) : 0.0f);  // a few rows moved
  }
  const std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", DType::kF32, {2048, 128}},
                                         {"layers.0.mlp.weight", DType::kF32, {2048, 128}}};
  ASSERT_TRUE(WriteSafetensorsFile(c.base.string(), specs, {F32Bytes(b), F32Bytes(b)}).ok());
  ASSERT_TRUE(WriteSafetensorsFile(c.ft.string(), specs, {F32Bytes(f), F32Bytes(f)}).ok());
  LossyIngest r =
      IngestLossy(c, {{"mode", "lossy"}, {"ratio", 512}, {"allocate", false}, {"embeddings", true}});
  ASSERT_TRUE(r.quality.is_object());
  std::map<std::string, std::string> estimator;
  for (const json& t : r.quality["tensors"]) estimator[t["name"]] = t["estimator"];
  EXPECT_EQ(estimator, (std::map<std::string, std::string>{{"model.embed_tokens.weight", "lowrank"},
                                                           {"layers.0.mlp.weight", "lowrank+dropout"}}));
}

TEST(LossyIngestTest, AllocationNearTheLargestRatioStaysInRange) {
  Checkpoints c = MakeCheckpoints();
  LossyIngest r = IngestLossy(c, {{"mode", "lossy"}, {"ratio", 2048}});
  ASSERT_TRUE(r.quality.is_object());
  ASSERT_EQ(r.quality["tensors"].size(), c.lossy_names.size());
  for (const json& t : r.quality["tensors"]) {
    EXPECT_LE(t["target_ratio"].get<double>(), 4096.0) << t.dump();
    EXPECT_GE(t["target_ratio"].get<double>(), 512.0) << t.dump();
  }
  // 4 bytes a tensor at 2048x: no setting fits, and the report says so.
  EXPECT_LT(r.quality["lossy_ratio"].get<double>(), 2048 * 0.9);
  EXPECT_NE(
      r.quality["ratio_note"].get<std::string>().find("exceed their share even at their method's smallest"),
      std::string::npos)
      << r.quality["ratio_note"];
}

// The note of a version whose tensors could not spend their share: from the reports alone.
TEST(LossyQualityTest, TheRatioNoteNamesTensorsThatLeaveTheirShareUnspent) {
  auto report = [](uint64_t delta, uint64_t stored, double target, bool within) {
    return json{{"weight_error", 0.1},      {"delta_norm", 1.0},      {"output_error", 0.1},
                {"delta_output_norm", 1.0}, {"delta_bytes", delta},   {"stored_bytes", stored},
                {"target_ratio", target},   {"within_budget", within}}
        .dump();
  };
  auto policy = ParseLossyPolicy({{"mode", "lossy"}, {"ratio", 1024}});
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  IngestStats stats;
  // One tensor spends its share (1024x), one stores half of it (2048x): 3 MiB / 2 KiB = 1536x overall.
  stats.lossy_reports = {report(1 << 20, 1024, 1024, true), report(2 << 20, 1024, 1024, true)};
  stats.tensors = stats.tensors_lossy = 2;
  json q = QualityReport(*policy, stats, Manifest());
  EXPECT_NEAR(q["lossy_ratio"].get<double>(), 3.0 * (1 << 20) / 2048, 1e-9);
  EXPECT_EQ(
      q["ratio_note"],
      "lossy tensors at 1536.0x for 1024.0x: 1 tensor(s) (2097152 delta bytes) leave over 10% of their "
      "share unspent: their method's next larger setting (a kept value per group, a keep-probability "
      "step, the next rank) does not fit it, and the tensors encoded after them could not use the rest");
  // Shares that add up to under 90% of the budget (each tensor given 2048x, and spending it): said too.
  stats.lossy_reports = {report(1 << 20, 512, 2048, true), report(1 << 20, 512, 2048, true)};
  EXPECT_EQ(
      QualityReport(*policy, stats, Manifest())["ratio_note"],
      "lossy tensors at 2048.0x for 1024.0x: 0 tensor(s) (0 delta bytes) leave over 10% of their share "
      "unspent: their method's next larger setting (a kept value per group, a keep-probability step, the "
      "next rank) does not fit it, and the tensors encoded after them could not use the rest; the "
      "tensors' shares add up to 50% of the version's budget: the rate allocation chose among each "
      "tensor's probed ratios, and with few tensors those steps are coarse");
  // Within 10% of the target: no note.
  stats.lossy_reports = {report(1 << 20, 1024, 1024, true), report(1 << 20, 1000, 1024, true)};
  EXPECT_EQ(QualityReport(*policy, stats, Manifest())["ratio_note"], "");
}

TEST(LossyIngestTest, WithoutAllocationEveryTensorGetsTheTargetAndNoPlanning) {
  Checkpoints c = MakeCheckpoints();
  LossyIngest r = IngestLossy(c, {{"mode", "lossy"}, {"ratio", 16}, {"allocate", false}});
  ASSERT_TRUE(r.quality.is_object());
  EXPECT_FALSE(r.quality["policy"]["allocate"].get<bool>());
  ASSERT_EQ(r.quality["tensors"].size(), c.lossy_names.size());
  for (const json& t : r.quality["tensors"]) EXPECT_EQ(t["target_ratio"].get<double>(), 16.0) << t.dump();
  // One report as each tensor ends (tensors_done 1..5); the lossless tensors also report their chunks.
  std::vector<uint64_t> ends;
  uint64_t before = 0;
  for (const IngestProgress& p : r.progress) {
    EXPECT_EQ(p.phase, "encoding");
    if (p.tensors_done != before) ends.push_back(p.tensors_done);
    before = p.tensors_done;
  }
  EXPECT_EQ(ends, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

// A large tensor is probed on every s-th row; a NaN in a row its probe is not given still fails the
// version while planning, with the same error as the compressor's, before any tensor is encoded.
TEST(LossyIngestTest, ANanInARowTheProbeIsNotGivenFailsThePlan) {
  TempDir tmp;
  const uint32_t rows = 1100, cols = 1024;  // over 2^20 elements: probed on every other row
  std::mt19937 rng(9);
  std::normal_distribution<float> w(0.0f, 0.05f);
  std::vector<float> b(size_t{rows} * cols), f(b.size());
  for (size_t i = 0; i < b.size(); ++i) b[i] = w(rng), f[i] = b[i] + 0.01f * w(rng);
  // The last row, odd: left out of the probe, and (as the encoding would check it) in the last row block.
  f[size_t{rows - 1} * cols + 5] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<TensorSpec> specs = {{"layers.0.mlp.weight", DType::kF32, {rows, cols}}};
  const fs::path base_path = tmp.path() / "base.safetensors", ft_path = tmp.path() / "ft.safetensors";
  ASSERT_TRUE(WriteSafetensorsFile(base_path.string(), specs, {F32Bytes(b)}).ok());
  ASSERT_TRUE(WriteSafetensorsFile(ft_path.string(), specs, {F32Bytes(f)}).ok());
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  IngestStats stats;
  auto base = IngestFiles(store.get(), {{base_path.string(), "model.safetensors"}}, nullptr, {}, &stats);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  auto policy = ParseLossyPolicy({{"mode", "lossy"}, {"ratio", 16}});
  ASSERT_TRUE(policy.ok());
  LossyHooks hooks = MakeLossyHooks(*policy, nullptr, 1);
  IngestOptions options;
  options.lossy = hooks.encode;
  options.lossy_takes = hooks.takes;
  options.lossy_planner = hooks.planner;
  std::vector<std::string> phases;
  VersionReader reader(store.get(), *base,
                       [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); });
  auto m = IngestFiles(store.get(), {{ft_path.string(), "model.safetensors"}}, &reader, options, &stats,
                       [&](const IngestProgress& p) { phases.push_back(p.phase); });
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().reason(), Reason::kNonfiniteWeights) << m.status().ToString();
  EXPECT_EQ(std::count(phases.begin(), phases.end(), "encoding"), 0);
}

}  // namespace
}  // namespace deltastore
