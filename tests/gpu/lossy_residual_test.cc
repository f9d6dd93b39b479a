// The residual a large tensor's refit does not hold (gpu/lossy_residual.cc): its rows, columns and
// low-rank remainder computed again from the pair's bytes are the held residual's values, bit for bit,
// and a compression gives the same results either way.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "codec/lossy_codec.h"
#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

struct Pair {
  std::string base, ft;
};

// bf16 base ~ N(0, 0.05) and a finetune = 0.99 base + a rank-4 delta + noise.
Pair MakePair(uint32_t rows, uint32_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(rows * 4), v(4 * cols), b(static_cast<size_t>(rows) * cols), f(b.size());
  for (float& x : u) x = n(rng);
  for (float& x : v) x = n(rng);
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t r = i / cols, c = i % cols;
    float d = 0.0f;
    for (size_t k = 0; k < 4; ++k) d += u[r * 4 + k] * v[k * cols + c];
    b[i] = 0.05f * n(rng);
    f[i] = 0.99f * b[i] + 0.002f * d + 0.001f * n(rng);
  }
  Pair p{std::string(b.size() * 2, '\0'), std::string(b.size() * 2, '\0')};
  FromFloat32(DType::kBF16, b.data(), b.size(), p.base.data());
  FromFloat32(DType::kBF16, f.data(), f.size(), p.ft.data());
  return p;
}

// Two search states of one pair: `held` with R computed whole as Prepare computes it, `bytes` reading it
// from the pair (same lambda and inputs).
struct States {
  LossyOptions options;
  Work held, bytes;
};

void Fill(States* s, const Pair& p, uint32_t rows, uint32_t cols, float lambda) {
  for (Work* w : {&s->held, &s->bytes}) {
    w->dtype = DType::kBF16;
    w->rows = rows, w->cols = cols, w->stream = 3;
    w->opt = &s->options;
    w->lambda = lambda;
    w->X = torch::randn({cols, 16}, torch::kFloat32).to(TorchDevice());  // where Prepare puts it
  }
  s->bytes.X = s->held.X;
  s->bytes.pair_base = p.base.data(), s->bytes.pair_finetune = p.ft.data();
  torch::Tensor B = Load(DType::kBF16, p.base.data(), rows, cols),
                D = Load(DType::kBF16, p.ft.data(), rows, cols);
  D.sub_(B);
  s->held.R = B.mul_(-lambda).add_(D);
}

TEST(LossyResidualTest, RowsAndColumnsFromTheBytesAreTheHeldResidualsValues) {
  torch::NoGradGuard no_grad;
  const uint32_t rows = 700, cols = 3000;  // row blocks of 349 rows, column blocks of 1497 columns
  const Pair p = MakePair(rows, cols, 5);
  States s;
  Fill(&s, p, rows, cols, 0.37f);
  for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, 349}, {349, 349}, {698, 2}, {0, 700}}) {
    EXPECT_TRUE(torch::equal(ResidualRows(s.bytes, r0, n), ResidualRows(s.held, r0, n))) << r0;
  }
  for (auto [c0, n] : {std::pair<int64_t, int64_t>{0, 1497}, {1497, 1497}, {2994, 6}}) {
    EXPECT_TRUE(torch::equal(ResidualCols(s.bytes, c0, n), ResidualCols(s.held, c0, n))) << c0;
  }
  EXPECT_TRUE(torch::equal(WholeResidual(s.bytes), s.held.R));
  // The pair's bytes widened in pieces on three host threads: the same.
  s.options.host_threads = 3;
  EXPECT_TRUE(torch::equal(ResidualRows(s.bytes, 0, 700), ResidualRows(s.held, 0, 700)));
  EXPECT_TRUE(torch::equal(ResidualRows(s.bytes, 349, 349), ResidualRows(s.held, 349, 349)));
  EXPECT_THROW(HeldResidual(s.bytes), std::logic_error);
  // The spread over blocks in float64 against torch's whole-tensor reductions: the same largest magnitude,
  // a standard deviation within float32 rounding.
  const ResidualSpread a = Spread(s.bytes), b = Spread(s.held);
  EXPECT_EQ(a.max_abs, b.max_abs);
  EXPECT_NEAR(a.sigma, b.sigma, 1e-6 * b.sigma);
}

TEST(LossyResidualTest, LowRankRemainderFromTheBytesIsTheHeldOnes) {
  torch::NoGradGuard no_grad;
  const uint32_t rows = 700, cols = 3000;
  const Pair p = MakePair(rows, cols, 6);
  States s;
  Fill(&s, p, rows, cols, 0.01f);
  const LowRank held = MakeLowRank(s.held, 4, kFactorBits), bytes = MakeLowRank(s.bytes, 4, kFactorBits);
  ASSERT_EQ(held.a, bytes.a);
  ASSERT_EQ(held.b, bytes.b);
  EXPECT_FALSE(bytes.Res.defined());
  EXPECT_TRUE(torch::equal(held.LX, bytes.LX));
  for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, 349}, {349, 349}, {698, 2}}) {
    EXPECT_TRUE(torch::equal(SourceRows(s.bytes, &bytes, r0, n), SourceRows(s.held, &held, r0, n))) << r0;
  }
}

// A tensor over 2^20 elements is searched on a subsample and refitted on the whole: with its residual
// held (the default for this size) or computed again from the bytes for every block, and with the host's
// loops on one thread or four, the chunk, the rebuilt bytes and the report are the same, the chunk rebuilds
// the reported bytes within the budget, and the reported weight error is that of the rebuilt tensor.
TEST(LossyResidualTest, ARefitGivesTheSameResultsWithItsResidualHeldOrNot) {
  const uint32_t rows = 1100, cols = 1024;
  const Pair p = MakePair(rows, cols, 7);
  for (double ratio : {4.0, 32.0}) {  // the dense quantizer, then dropout with a low-rank term
    LossyOptions o;
    o.target_ratio = ratio;
    auto r = CompressLossyTensor(DType::kBF16, p.base.data(), p.ft.data(), rows, cols, 2, nullptr, o);
    ASSERT_TRUE(r.ok()) << ratio << " " << r.status().ToString();
    o.held_residual_bytes = o.device_residual_bytes = 0;  // on either device
    for (int threads : {1, 4}) {  // and the loops on the host on four threads: the same results
      o.host_threads = threads;
      auto q = CompressLossyTensor(DType::kBF16, p.base.data(), p.ft.data(), rows, cols, 2, nullptr, o);
      ASSERT_TRUE(q.ok()) << ratio << " " << q.status().ToString();
      EXPECT_TRUE(r->chunk == q->chunk) << ratio << " " << threads;
      EXPECT_TRUE(r->reconstructed == q->reconstructed) << ratio << " " << threads;
      EXPECT_EQ(r->report.weight_error, q->report.weight_error);
      EXPECT_EQ(r->report.output_error, q->report.output_error);
      EXPECT_EQ(r->report.delta_norm, q->report.delta_norm);
      EXPECT_EQ(r->report.reason, q->report.reason);
    }
    EXPECT_NE(r->report.reason.find("fitted on the whole tensor"), std::string::npos) << r->report.reason;
    EXPECT_EQ(r->report.estimator, ratio < 8 ? "ecsq" : "lowrank+dropout");
    EXPECT_TRUE(r->report.within_budget);
    EXPECT_LE(static_cast<double>(r->chunk.size()), 2.0 * rows * cols / ratio);
    std::string whole;
    ASSERT_TRUE(DecodeLossyChunk(r->chunk, p.base, &whole).ok());
    EXPECT_TRUE(whole == r->reconstructed);
    torch::NoGradGuard no_grad;
    const auto F = Load(DType::kBF16, p.ft.data(), rows, cols),
               B = Load(DType::kBF16, p.base.data(), rows, cols);
    const auto W = Load(DType::kBF16, whole.data(), rows, cols);
    const double err = (F - W).to(torch::kFloat64).norm().item<double>();
    EXPECT_NEAR(r->report.weight_error, err / (F - B).to(torch::kFloat64).norm().item<double>(),
                1e-9 * r->report.weight_error);
  }
}

}  // namespace
}  // namespace deltastore
