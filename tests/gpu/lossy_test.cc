#include "gpu/lossy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include <ATen/Parallel.h>

#include "codec/chunk_codec.h"
#include "codec/lossy_codec.h"

namespace deltastore {
namespace {

// A base matrix and a finetune = base * (1 - 0.01) + small noise, as float32 bytes.
struct Pair {
  std::string base, ft;
  uint32_t rows, cols;
};

Pair MakePair(uint32_t rows, uint32_t cols, uint32_t seed, DType dtype = DType::kF32) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.05f), d(0.0f, 0.002f);
  std::vector<float> b(rows * cols), f(rows * cols);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = w(rng);
    f[i] = b[i] * 0.99f + d(rng);
  }
  Pair p{std::string(b.size() * DTypeSize(dtype), '\0'), std::string(b.size() * DTypeSize(dtype), '\0'), rows,
         cols};
  FromFloat32(dtype, b.data(), b.size(), p.base.data());
  FromFloat32(dtype, f.data(), f.size(), p.ft.data());
  return p;
}

// A base matrix and a finetune whose delta is rank `rank` plus noise of relative size `noise`, as float32
// bytes: the case the low-rank term is for.
Pair MakeLowRankPair(uint32_t rows, uint32_t cols, uint32_t rank, float noise, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(rows * rank), v(rank * cols), b(rows * cols), f(rows * cols);
  for (float& x : u) x = n(rng);
  for (float& x : v) x = n(rng);
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t r = i / cols, c = i % cols;
    float d = 0.0f;
    for (uint32_t k = 0; k < rank; ++k) d += u[r * rank + k] * v[k * cols + c];
    b[i] = 0.05f * n(rng);
    f[i] = b[i] + 0.002f * d + 0.002f * noise * n(rng);
  }
  Pair p{std::string(b.size() * 4, '\0'), std::string(b.size() * 4, '\0'), rows, cols};
  FromFloat32(DType::kF32, b.data(), b.size(), p.base.data());
  FromFloat32(DType::kF32, f.data(), f.size(), p.ft.data());
  return p;
}

TEST(LossyTest, EveryMethodRoundTripsThroughTheChunkCodecAndFitsItsBudget) {
  Pair pair = MakePair(64, 256, 1);
  for (auto m : {LossyMethod::kDeltaDQ, LossyMethod::kDare, LossyMethod::kRandom4, LossyMethod::kGroupK4,
                 LossyMethod::kBitDelta, LossyMethod::kTopK8, LossyMethod::kLowBit}) {
    LossyOptions o;
    o.method = m;
    o.target_ratio = m == LossyMethod::kBitDelta ? 16 : 8;
    auto r = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 0,
                                 nullptr, o);
    ASSERT_TRUE(r.ok()) << LossyMethodName(m) << ": " << r.status().ToString();
    EXPECT_TRUE(r->report.within_budget) << LossyMethodName(m);
    EXPECT_LE(r->chunk.size(), pair.base.size() / o.target_ratio + 1) << LossyMethodName(m);
    // Downloads decode through the generic chunk path: same bytes as the compressor reported.
    auto dec = DecodeChunk(r->chunk, pair.base, pair.base.size());
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    EXPECT_EQ(*dec, r->reconstructed) << LossyMethodName(m);
    EXPECT_GT(r->report.weight_error, 0.0);
    EXPECT_LT(r->report.weight_error, 2.0) << LossyMethodName(m);
  }
}

TEST(LossyTest, OursBeatsBaselinesInWeightErrorAtEqualSize) {
  Pair pair = MakePair(128, 512, 2);
  auto err = [&](LossyMethod m, double ratio) {
    LossyOptions o;
    o.method = m;
    o.target_ratio = ratio;
    auto r = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 0,
                                 nullptr, o);
    EXPECT_TRUE(r.ok());
    return r->report.weight_error;
  };
  double ours = err(LossyMethod::kDeltaDQ, 16);
  EXPECT_LT(ours, err(LossyMethod::kLowBit, 16));
  EXPECT_LT(ours, err(LossyMethod::kDare, 16));
  EXPECT_LT(ours, err(LossyMethod::kGroupK4, 16));
  // DBMS removes the base-proportional part of this delta (finetune = 0.99 * base + noise).
  LossyOptions o;
  o.target_ratio = 16;
  auto r =
      CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 0, nullptr, o);
  EXPECT_NEAR(r->report.lambda, -0.01, 0.002);
}

TEST(LossyTest, DeterministicAcrossRunsAndThreadCounts) {
  Pair pair = MakePair(96, 320, 3, DType::kBF16);
  LossyOptions o;
  o.target_ratio = 32;
  auto a = CompressLossyTensor(DType::kBF16, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 7,
                               nullptr, o);
  std::string chunk_other_thread;
  std::thread t([&] {
    auto b = CompressLossyTensor(DType::kBF16, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 7,
                                 nullptr, o);
    chunk_other_thread = b.ok() ? b->chunk : "";
  });
  t.join();
  auto c = CompressLossyTensor(DType::kBF16, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 7,
                               nullptr, o);
  ASSERT_TRUE(a.ok() && c.ok());
  EXPECT_EQ(a->chunk, c->chunk);
  EXPECT_EQ(a->chunk, chunk_other_thread);
}

TEST(LossyTest, CalibrationStatisticsFitMuAndWeightTheOutputError) {
  Pair pair = MakePair(64, 128, 4);
  std::vector<float> diag(128, 1.0f);
  for (size_t i = 0; i < 16; ++i) diag[i] = 100.0f;  // a few busy input channels
  LossyOptions o;
  o.target_ratio = 32;
  o.method = LossyMethod::kGroupK4;
  o.fit_mu = true;  // opt-in (off by default)
  auto plain = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 64, 128, 0, nullptr, o);
  auto calib = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 64, 128, 0, diag.data(), o);
  ASSERT_TRUE(plain.ok() && calib.ok());
  EXPECT_EQ(plain->report.mu, 1.0);
  EXPECT_NE(calib->report.mu, 1.0);
  o.fit_mu = false;
  auto no_fit =
      CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 64, 128, 0, diag.data(), o);
  EXPECT_EQ(no_fit->report.mu, 1.0);
}

TEST(LossyTest, BadParametersAreRejectedClearly) {
  Pair pair = MakePair(8, 16, 5);
  auto run = [&](const LossyOptions& o, DType dtype = DType::kF32) {
    return CompressLossyTensor(dtype, pair.base.data(), pair.ft.data(), 8, 16, 0, nullptr, o).status();
  };
  LossyOptions o;
  o.target_ratio = 0.5;
  EXPECT_EQ(run(o).code(), StatusCode::kInvalidArgument);
  o = {};
  o.bits = 9;
  EXPECT_EQ(run(o).code(), StatusCode::kInvalidArgument);
  o = {};
  o.group = 8;
  o.keep = 9;
  EXPECT_EQ(run(o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run({}, DType::kI32).code(), StatusCode::kInvalidArgument);
  std::string nan_ft = pair.ft;
  float nan = std::nanf("");
  std::memcpy(nan_ft.data(), &nan, 4);
  auto s =
      CompressLossyTensor(DType::kF32, pair.base.data(), nan_ft.data(), 8, 16, 0, nullptr, LossyOptions{});
  EXPECT_EQ(s.status().reason(), Reason::kNonfiniteWeights);
}

TEST(LossyTest, CorruptLossyChunksAreRejected) {
  Pair pair = MakePair(16, 64, 6);
  auto r =
      CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 16, 64, 0, nullptr, LossyOptions{});
  ASSERT_TRUE(r.ok());
  for (size_t cut = 0; cut < r->chunk.size(); cut += 7) {
    EXPECT_FALSE(DecodeChunk(r->chunk.substr(0, cut), pair.base, pair.base.size()).ok()) << cut;
  }
  std::string bad = r->chunk;
  bad[12] = 99;  // lossy format version
  EXPECT_FALSE(DecodeChunk(bad, pair.base, pair.base.size()).ok());
}

TEST(LossyLowRankTest, LowRankDeltaGetsARankThatFitsAndBeatsDropoutAlone) {
  // 128 x 256: on a 64 x 160 tensor (a 640-byte budget at 64x) the factors, one int8 byte a code in a
  // section too small for zstd to entropy-code, cost more than they save and rank 0 wins.
  Pair pair = MakeLowRankPair(128, 256, 2, 0.2f, 11);
  auto run = [&](int rank) {
    LossyOptions o;
    o.target_ratio = 64;
    o.rank = rank;
    return CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 0,
                               nullptr, o);
  };
  auto automatic = run(-1), none = run(0);
  ASSERT_TRUE(automatic.ok()) << automatic.status().ToString();
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  const double budget = pair.base.size() / 64.0;
  EXPECT_GT(automatic->report.rank, 0);
  EXPECT_EQ(automatic->report.estimator, "lowrank+dropout");
  EXPECT_TRUE(automatic->report.within_budget);
  EXPECT_LE(static_cast<double>(automatic->chunk.size()), budget);
  EXPECT_EQ(automatic->report.stored_bytes, automatic->chunk.size());
  EXPECT_EQ(none->report.rank, 0);
  EXPECT_TRUE(none->report.within_budget);
  EXPECT_LE(static_cast<double>(none->chunk.size()), budget);
  EXPECT_LT(automatic->report.weight_error, none->report.weight_error);
  EXPECT_LT(automatic->report.output_error, none->report.output_error);
  // The chunk carries the term (format version 2) and decodes to what the compressor reported.
  EXPECT_EQ(static_cast<uint8_t>(automatic->chunk[12]), 2);
  DType dtype;
  auto parsed = ParseLossyChunk(automatic->chunk, &dtype);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->p.rank, automatic->report.rank);
  EXPECT_EQ(parsed->p.shared_scale, automatic->report.shared_scale);
  auto dec = DecodeChunk(automatic->chunk, pair.base, pair.base.size());
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(*dec, automatic->reconstructed);
}

// A table whose finetune moved a few rows (an embedding's tokens seen in training): at 512x on f32 the
// dropout keeps too few of each group, and its unbiased estimate is worse than none.
TEST(LossyLookupTest, ALookupWhoseDropoutIsWorseThanNothingTakesTheLowRankTermAlone) {
  const uint32_t rows = 2048, cols = 128;
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> b(rows * cols), f(rows * cols);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = 0.05f * n(rng);
    f[i] = b[i] + (i / cols % 64 == 0 ? 0.01f * n(rng) : 0.0f);
  }
  Pair pair{std::string(b.size() * 4, '\0'), std::string(f.size() * 4, '\0'), rows, cols};
  std::memcpy(pair.base.data(), b.data(), pair.base.size());
  std::memcpy(pair.ft.data(), f.data(), pair.ft.size());
  auto run = [&](bool lookup) {
    LossyOptions o;
    o.target_ratio = 512;
    o.lookup = lookup;
    return CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), rows, cols, 0, nullptr, o);
  };
  auto table = run(true), layer = run(false);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  // Not a lookup: the unbiased dropout stays, worse than no estimate (an output error over 1).
  EXPECT_EQ(layer->report.estimator, "lowrank+dropout");
  EXPECT_GT(layer->report.output_error, 1.0);
  // A lookup: the low-rank term alone, within the budget, better than nothing and than the dropout.
  EXPECT_EQ(table->report.estimator, "lowrank");
  EXPECT_GT(table->report.rank, 0);
  EXPECT_EQ(table->report.keep_fraction, 0.0);
  EXPECT_TRUE(table->report.within_budget);
  EXPECT_LE(static_cast<double>(table->chunk.size()), pair.base.size() / 512.0);
  EXPECT_LT(table->report.output_error, 1.0);
  EXPECT_LT(table->report.weight_error, layer->report.weight_error);
  // Its chunk keeps no element (a positions mask with none) and decodes to what the compressor rebuilt.
  DType dtype;
  auto parsed = ParseLossyChunk(table->chunk, &dtype);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->p.mask, MaskKind::kPositions);
  EXPECT_TRUE(parsed->positions.empty());
  EXPECT_TRUE(parsed->codes.empty());
  EXPECT_EQ(parsed->p.rank, table->report.rank);
  auto dec = DecodeChunk(table->chunk, pair.base, pair.base.size());
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(*dec, table->reconstructed);
}

TEST(LossyLowRankTest, ExplicitRankIsHonoured) {
  Pair pair = MakeLowRankPair(48, 96, 4, 0.2f, 12);
  auto run = [&](const LossyOptions& o) {
    return CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 0,
                               nullptr, o);
  };
  LossyOptions o;
  o.target_ratio = 32;
  o.rank = 3;
  auto r = run(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.rank, 3);
  DType dtype;
  auto parsed = ParseLossyChunk(r->chunk, &dtype);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->p.rank, 3);
  EXPECT_EQ(parsed->a_codes.size(), 48u * 3);
  EXPECT_EQ(parsed->b_codes.size(), 3u * 96);
  // With explicit dropout parameters too.
  o.bits = 2;
  o.group = 32;
  o.keep = 4;
  o.rank = 2;
  r = run(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.rank, 2);
  EXPECT_EQ(r->report.bits, 2);
  EXPECT_EQ(r->report.group, 32);
  EXPECT_EQ(r->report.keep, 4);
  // Explicit dropout parameters without a rank mean no low-rank term.
  o.rank = -1;
  r = run(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.rank, 0);
  EXPECT_EQ(r->report.estimator, "dropout");
}

TEST(LossyLowRankTest, RankOutOfRangeOrForOtherMethodsIsRejected) {
  Pair pair = MakePair(8, 16, 13);
  auto run = [&](const LossyOptions& o) {
    return CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 8, 16, 0, nullptr, o).status();
  };
  LossyOptions o;
  for (int rank : {-2, 257, 100000}) {
    o.rank = rank;
    EXPECT_EQ(run(o).code(), StatusCode::kInvalidArgument) << rank;
  }
  for (auto m : {LossyMethod::kDare, LossyMethod::kRandom4, LossyMethod::kGroupK4, LossyMethod::kBitDelta,
                 LossyMethod::kTopK8, LossyMethod::kLowBit}) {
    o = {};
    o.method = m;
    o.rank = 2;
    EXPECT_EQ(run(o).code(), StatusCode::kInvalidArgument) << LossyMethodName(m);
  }
  o = {};
  o.target_ratio = 4;
  o.rank = 256;  // in range; more than this 8 x 16 tensor holds, so no term
  auto r = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), 8, 16, 0, nullptr, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LE(r->report.rank, 8);
}

TEST(LossyLowRankTest, LowRankChunksAreIdenticalAcrossRunsAndThreadCounts) {
  Pair pair = MakeLowRankPair(32, 64, 2, 0.2f, 14);
  LossyOptions o;
  o.target_ratio = 32;
  auto compress = [&] {
    auto r = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 9,
                                 nullptr, o);
    return r.ok() ? r->chunk : "error: " + r.status().ToString();
  };
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const std::string one = compress();
  at::set_num_threads(2);
  const std::string two = compress();
  std::string other_thread;
  std::thread t([&] { other_thread = compress(); });
  t.join();
  at::set_num_threads(threads);
  DType dtype;
  auto parsed = ParseLossyChunk(one, &dtype);
  ASSERT_TRUE(parsed.ok()) << one.substr(0, 200);
  EXPECT_GT(parsed->p.rank, 0);  // the case exercises the low-rank term
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, other_thread);
}

TEST(LossyProbeTest, ProbesAtSeveralRatiosAreReportedInOrderAndDoNotDependOnTheThread) {
  Pair pair = MakePair(64, 256, 5);
  LossyOptions o;
  const std::vector<double> ratios = {8, 32, 128};
  auto probe = [&] {
    return ProbeLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4, nullptr,
                            o, ratios);
  };
  auto a = probe();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->size(), ratios.size());
  uint64_t previous = ~uint64_t{0};
  for (size_t i = 0; i < ratios.size(); ++i) {
    const LossyProbe& p = (*a)[i];
    EXPECT_EQ(p.ratio, ratios[i]);
    ASSERT_TRUE(p.reachable);
    EXPECT_LT(p.report.stored_bytes, previous);  // higher ratios store less
    previous = p.report.stored_bytes;
    EXPECT_FALSE(p.report.reason.empty());
  }
  // 4 bits a weight: the dense quantizer by rule; 0.25 bits: the quick dropout search
  EXPECT_EQ((*a)[0].report.estimator, "ecsq");
  EXPECT_NE((*a)[2].report.reason.find("quick probe"), std::string::npos) << (*a)[2].report.reason;
  StatusOr<std::vector<LossyProbe>> b = InvalidArgument("not run");
  std::thread t([&] { b = probe(); });
  t.join();
  ASSERT_TRUE(b.ok());
  for (size_t i = 0; i < ratios.size(); ++i) {
    EXPECT_EQ((*a)[i].report.stored_bytes, (*b)[i].report.stored_bytes);
    EXPECT_EQ((*a)[i].report.output_error, (*b)[i].report.output_error);
  }
  auto bad = ProbeLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4, nullptr,
                              o, {16, 5000});
  EXPECT_FALSE(bad.ok());
}

// A float32 tensor's probe reports its candidate's own output error, without decoding the chunk: the
// error the same candidate has once compressed with its parameters and rebuilt as downloads rebuild it.
TEST(LossyProbeTest, AFloat32ProbesErrorIsThatOfItsRebuiltCandidate) {
  const Pair pair = MakePair(64, 1024, 5);
  LossyOptions o;
  auto probes = ProbeLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4,
                                 nullptr, o, {32});
  ASSERT_TRUE(probes.ok()) << probes.status().ToString();
  const LossyTensorReport& q = (*probes)[0].report;
  ASSERT_EQ(q.estimator, "dropout");  // explicit parameters below rebuild the same candidate
  ASSERT_FALSE(q.shared_scale);
  EXPECT_TRUE(std::isnan(q.weight_error));
  o.target_ratio = 32;
  o.bits = q.bits, o.group = q.group, o.keep = q.keep, o.rank = 0;
  auto r =
      CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4, nullptr, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.stored_bytes, q.stored_bytes);
  EXPECT_NEAR(r->report.output_error, q.output_error, 1e-5 * q.output_error);
}

TEST(LossyProbeTest, ALargeTensorIsProbedOnTheRowsItIsGiven) {
  // Over 2^20 elements: the caller gives every other row, and the probes are those of the tensor made of
  // those rows alone (small enough to be probed whole), sizes and norms scaled to the whole tensor.
  const Pair pair = MakePair(1100, 1024, 6);
  const std::vector<double> ratios = {16, 64};
  LossyOptions o;
  const uint32_t s = LossySearchRowStride(pair.rows, pair.cols, o);
  ASSERT_EQ(s, 2u);
  const uint64_t row_bytes = uint64_t{pair.cols} * 4;
  const std::string base = EveryNthRow(pair.base.data(), pair.rows, row_bytes, s);
  const std::string ft = EveryNthRow(pair.ft.data(), pair.rows, row_bytes, s);
  const auto given = static_cast<uint32_t>(base.size() / row_bytes);
  ASSERT_EQ(LossySearchRowStride(given, pair.cols, o), 1u);
  auto large =
      ProbeLossyTensor(DType::kF32, base.data(), ft.data(), pair.rows, pair.cols, 4, nullptr, o, ratios);
  ASSERT_TRUE(large.ok()) << large.status().ToString();
  auto rows = ProbeLossyTensor(DType::kF32, base.data(), ft.data(), given, pair.cols, 4, nullptr, o, ratios);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(large->size(), ratios.size());
  for (size_t i = 0; i < ratios.size(); ++i) {
    const LossyTensorReport &a = (*large)[i].report, &b = (*rows)[i].report;
    ASSERT_TRUE((*large)[i].reachable && (*rows)[i].reachable);
    EXPECT_EQ(a.stored_bytes, 2 * b.stored_bytes);
    EXPECT_EQ(a.delta_bytes, uint64_t{pair.rows} * pair.cols * 4);
    // Equal on the CPU; cuBLAS picks its kernel by a product's shape, and on cuda:0 (an H200) the two
    // errors differed in the seventh digit.
    EXPECT_NEAR(a.output_error, b.output_error, 1e-6 * b.output_error);
    EXPECT_DOUBLE_EQ(a.delta_norm, b.delta_norm * std::sqrt(2.0));
    EXPECT_EQ(a.reason, "on every 2th row: " + b.reason);
  }
}

// Once the dense quantizer beat the dropout search at a probe's budget, the probes at larger budgets skip
// the dropout search, and choose what a probe at their ratio alone (which runs it) chooses.
TEST(LossyProbeTest, ProbesAfterTheDenseQuantizerWonSkipTheDropoutSearchAndChooseAsAFullProbe) {
  const Pair pair = MakePair(64, 256, 5);
  LossyOptions o;
  auto probe = [&](const std::vector<double>& rs) {
    return ProbeLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4, nullptr,
                            o, rs);
  };
  auto both = probe({16, 12});  // 2 and 2.67 bits a weight: both below the 3 of the dense-only rule
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  const LossyTensorReport &first = (*both)[0].report, &second = (*both)[1].report;
  ASSERT_EQ(first.estimator, "ecsq");
  EXPECT_EQ(first.reason.find("no dropout search"), std::string::npos) << first.reason;
  EXPECT_NE(second.reason.find("at a smaller budget (2 bits a weight; no dropout search)"), std::string::npos)
      << second.reason;
  auto alone = probe({12});
  ASSERT_TRUE(alone.ok());
  const LossyTensorReport& full = (*alone)[0].report;
  EXPECT_NE(full.reason.find("least output error of the reference dropout setting"), std::string::npos)
      << full.reason;
  EXPECT_EQ(second.estimator, full.estimator);
  EXPECT_EQ(second.stored_bytes, full.stored_bytes);
  EXPECT_EQ(second.output_error, full.output_error);
}

// Where the dense quantizer's output error is under 0.9 times the reference dropout setting's, the bits x
// group grid is not searched: none of its settings comes near (each fitted alone here, without a rank).
TEST(LossyTest, TheGridIsSkippedWhereTheDenseQuantizerIsFarAheadOfEverySettingInIt) {
  const Pair pair = MakePair(64, 256, 5);
  LossyOptions o;
  o.target_ratio = 16;
  auto compress = [&] {
    return CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 4,
                               nullptr, o);
  };
  auto chosen = compress();
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  EXPECT_EQ(chosen->report.estimator, "ecsq");
  EXPECT_NE(chosen->report.reason.find("no grid search"), std::string::npos) << chosen->report.reason;
  for (int bits : {2, 4}) {
    for (int group : {32, 64, 128}) {
      o.bits = bits, o.group = group;
      auto setting = compress();
      ASSERT_TRUE(setting.ok()) << setting.status().ToString();
      EXPECT_GT(0.9 * setting->report.output_error, chosen->report.output_error) << bits << " " << group;
    }
  }
}

// At high ratios the fit spends its budget: within 10% of the target, not the half that k = 1 of a
// 128-group (deltadq) or keep-probability steps of 1/1024 (dare) used to leave unspent.
TEST(LossyTest, HighRatiosLandWithinTenPercentOfTheTarget) {
  Pair pair = MakePair(256, 768, 21);
  for (auto m : {LossyMethod::kDeltaDQ, LossyMethod::kDare}) {
    for (double ratio : {512.0, 1024.0}) {
      LossyOptions o;
      o.method = m;
      o.target_ratio = ratio;
      auto r = CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 3,
                                   nullptr, o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      const double achieved = static_cast<double>(r->report.delta_bytes) / r->report.stored_bytes;
      EXPECT_TRUE(r->report.within_budget) << LossyMethodName(m) << " " << ratio;
      EXPECT_GE(achieved, ratio * 0.9) << LossyMethodName(m) << " " << r->report.reason;
      EXPECT_LE(achieved, ratio * 1.1) << LossyMethodName(m) << " " << r->report.reason;
    }
  }
}

// From 1/16 to 2 bits per weight the grid offers 1-bit values with the tensor-wide level c = sum v^2 / sum
// |v| over the kept values v (docs/lossy_format.md, step 3): the codes' projection on the kept values is
// their own squared norm. The least-squares level (mean |v|) would give (sum |v|)^2 / (n sum v^2), about 0.64
// on this Gaussian delta.
TEST(LossyTest, OneBitValuesAreNotShrunkAlongTheKeptValues) {
  Pair pair = MakePair(256, 768, 5);
  LossyOptions o;
  o.target_ratio = 128;
  auto r =
      CompressLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 3, nullptr, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const LossyTensorReport& q = r->report;
  ASSERT_EQ(q.bits, 1) << q.reason;
  ASSERT_TRUE(q.shared_scale);
  ASSERT_EQ(q.rank, 0);
  ASSERT_EQ(q.mu, 1.0);
  ASSERT_EQ(pair.cols % q.group, 0u);
  const auto* b = reinterpret_cast<const float*>(pair.base.data());
  const auto* f = reinterpret_cast<const float*>(pair.ft.data());
  const auto* w = reinterpret_cast<const float*>(r->reconstructed.data());
  const float shift = static_cast<float>(1.0 + q.lambda);
  const double scale = static_cast<double>(q.group) / q.keep;  // survivors' g/k
  double code_dot_value = 0, value_sq = 0, abs_sum = 0;
  int64_t kept = 0;
  for (size_t i = 0; i < pair.base.size() / 4; ++i) {
    const double s = static_cast<double>(w[i]) - static_cast<double>(shift * b[i]);  // S: 0 where dropped
    if (std::abs(s) < 1e-6) continue;
    const double v = scale * ((static_cast<double>(f[i]) - b[i]) - q.lambda * b[i]);
    code_dot_value += s * v, value_sq += v * v, abs_sum += std::abs(v), ++kept;
  }
  EXPECT_EQ(kept, static_cast<int64_t>(pair.rows) * (pair.cols / q.group) * q.keep);
  EXPECT_NEAR(code_dot_value / value_sq, 1.0, 0.01);
  EXPECT_LT(abs_sum * abs_sum / (kept * value_sq), 0.7);  // what the least-squares level would give
}

// Probes at growing budgets start their rank sweep at the rank the previous budget chose: on a delta
// that is nearly low rank they choose the same ranks as probes run one ratio at a time.
TEST(LossyProbeTest, ARankSweepStartedAtThePreviousProbesRankChoosesTheSameRanks) {
  Pair pair = MakeLowRankPair(96, 192, 6, 0.3f, 22);
  LossyOptions o;
  const std::vector<double> ratios = {256, 128, 64, 32};
  auto probe = [&](const std::vector<double>& rs) {
    return ProbeLossyTensor(DType::kF32, pair.base.data(), pair.ft.data(), pair.rows, pair.cols, 6, nullptr,
                            o, rs);
  };
  auto all = probe(ratios);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  int previous = 0;
  for (size_t i = 0; i < ratios.size(); ++i) {
    auto one = probe({ratios[i]});
    ASSERT_TRUE(one.ok());
    EXPECT_EQ((*all)[i].report.rank, (*one)[0].report.rank) << ratios[i];
    EXPECT_GE((*all)[i].report.rank, previous) << ratios[i];
    previous = (*all)[i].report.rank;
  }
  EXPECT_GT(previous, 0);  // the case exercises the low-rank term
}

}  // namespace
}  // namespace deltastore
