// LossyOptions::progress: called between steps inside one tensor's work (candidates, row blocks), with a
// growing fraction below 1; returning false stops the work with kUnavailable. It changes nothing chosen,
// nor do LossyOptions::measurements, a tensor's probes' measurements that its compression reuses.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "codec/lossy_codec.h"
#include "gpu/lossy.h"

namespace deltastore {
namespace {

struct Pair {
  std::string base, ft;
  uint32_t rows, cols;
};

Pair MakePair(uint32_t rows, uint32_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.05f), d(0.0f, 0.002f);
  std::vector<float> b(static_cast<size_t>(rows) * cols), f(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = w(rng);
    f[i] = b[i] * 0.99f + d(rng);
  }
  Pair p{std::string(b.size() * 2, '\0'), std::string(b.size() * 2, '\0'), rows, cols};
  FromFloat32(DType::kBF16, b.data(), b.size(), p.base.data());
  FromFloat32(DType::kBF16, f.data(), f.size(), p.ft.data());
  return p;
}

StatusOr<LossyResult> Compress(const Pair& p, const LossyOptions& o) {
  return CompressLossyTensor(DType::kBF16, p.base.data(), p.ft.data(), p.rows, p.cols, 0, nullptr, o);
}

TEST(LossyProgressTest, ProgressMovesInsideATensorAndChangesNothing) {
  // Over 2^20 elements: the parameters are chosen on a subsample, then refitted on the whole tensor in
  // row blocks.
  const Pair p = MakePair(1100, 1024, 1);
  LossyOptions o;
  o.target_ratio = 16;
  auto plain = Compress(p, o);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  std::vector<double> seen;
  o.progress = [&](double f) {
    seen.push_back(f);
    return true;
  };
  auto reported = Compress(p, o);
  ASSERT_TRUE(reported.ok()) << reported.status().ToString();
  EXPECT_EQ(reported->chunk, plain->chunk);
  EXPECT_EQ(reported->reconstructed, plain->reconstructed);
  EXPECT_EQ(reported->report.reason, plain->report.reason);
  EXPECT_EQ(reported->report.output_error, plain->report.output_error);
  ASSERT_GE(seen.size(), 20u);  // builds of the search and row blocks of the refit
  EXPECT_GT(seen.front(), 0.0);
  EXPECT_LT(seen.back(), 1.0);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i], seen[i - 1]) << i;
  EXPECT_GT(seen.back(), 0.9);
}

TEST(LossyProgressTest, FalseFromTheCallbackStopsTheTensorWithUnavailable) {
  const Pair p = MakePair(1100, 1024, 2);
  for (int stop_at : {1, 5, 40}) {
    LossyOptions o;
    o.target_ratio = 16;
    int calls = 0;
    o.progress = [&](double) { return ++calls < stop_at; };
    auto r = Compress(p, o);
    ASSERT_FALSE(r.ok()) << stop_at;
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
    EXPECT_EQ(calls, stop_at);  // not called again once it said stop
  }
}

TEST(LossyProgressTest, ProbesReportAndStopToo) {
  const Pair p = MakePair(300, 256, 3);
  LossyOptions o;
  int calls = 0;
  o.progress = [&](double f) {
    EXPECT_GE(f, 0.0);
    EXPECT_LT(f, 1.0);
    return ++calls < 1000000;
  };
  auto probes =
      ProbeLossyTensor(DType::kBF16, p.base.data(), p.ft.data(), p.rows, p.cols, 0, nullptr, o, {32.0, 16.0});
  ASSERT_TRUE(probes.ok()) << probes.status().ToString();
  EXPECT_GE(calls, 4);
  o.progress = [](double) { return false; };
  probes = ProbeLossyTensor(DType::kBF16, p.base.data(), p.ft.data(), p.rows, p.cols, 0, nullptr, o, {16.0});
  ASSERT_FALSE(probes.ok());
  EXPECT_EQ(probes.status().code(), StatusCode::kUnavailable);
}

// Given the measurements its probes left, a compression builds fewer candidates (fewer progress steps)
// and gives the same chunk, rebuilt tensor and report: for a tensor searched whole and for one searched
// on every other row, then refitted whole.
TEST(LossyMeasurementsTest, ACompressionReusingItsProbesMeasurementsGivesTheSameResult) {
  for (const Pair& p : {MakePair(96, 512, 4), MakePair(1100, 1024, 5)}) {
    const std::string what = std::to_string(p.rows) + "x" + std::to_string(p.cols);
    LossyOptions o;
    o.target_ratio = 16;
    int steps = 0;
    o.progress = [&](double) { return ++steps > 0; };
    auto plain = Compress(p, o);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    const int plain_steps = steps;
    o.measurements = std::make_shared<LossyMeasurements>();
    // The probes take every s-th row, as the rate allocation gives them.
    const uint32_t s = LossySearchRowStride(p.rows, p.cols, o);
    const std::string base = EveryNthRow(p.base.data(), p.rows, uint64_t{p.cols} * 2, s);
    const std::string ft = EveryNthRow(p.ft.data(), p.rows, uint64_t{p.cols} * 2, s);
    auto probes = ProbeLossyTensor(DType::kBF16, base.data(), ft.data(), p.rows, p.cols, 0, nullptr, o,
                                   {32.0, 16.0, 8.0});
    ASSERT_TRUE(probes.ok()) << probes.status().ToString();
    const size_t probed = o.measurements->points.size();
    EXPECT_GT(probed, 0u) << what;
    steps = 0;
    auto reused = Compress(p, o);
    ASSERT_TRUE(reused.ok()) << reused.status().ToString();
    EXPECT_LT(steps, plain_steps) << what;
    EXPECT_GT(o.measurements->points.size(), probed) << what;  // the full search tries more families
    EXPECT_EQ(reused->chunk, plain->chunk) << what;
    EXPECT_EQ(reused->reconstructed, plain->reconstructed) << what;
    EXPECT_EQ(reused->report.reason, plain->report.reason) << what;
    EXPECT_EQ(reused->report.output_error, plain->report.output_error) << what;
  }
}

}  // namespace
}  // namespace deltastore
