// EnsureSvd's exact branch (gpu/lossy_lowrank.cc): a tall or wide residual of a million elements or more
// takes its leading triplets from the Gram matrix's eigendecomposition. They are linalg_svd's to far below
// a factor's quantization step, and a residual of lower rank than asked gets zero singular values with
// zero vectors, never NaN.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

// The rank-k term U S Vh.
torch::Tensor Term(const torch::Tensor& U, const torch::Tensor& S, const torch::Tensor& Vh, int64_t k) {
  return U.narrow(1, 0, k).mul(S.narrow(0, 0, k).unsqueeze(0)).matmul(Vh.narrow(0, 0, k));
}

double Relative(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

void ExpectLikeLinalgSvd(const torch::Tensor& R, int64_t k) {
  LossyOptions options;
  Work w{};
  w.opt = &options;
  w.rows = static_cast<uint32_t>(R.size(0)), w.cols = static_cast<uint32_t>(R.size(1));
  w.R = R;
  EnsureSvd(w, k);
  auto [U, S, Vh] = torch::linalg_svd(R.to(torch::kFloat64), /*full_matrices=*/false);
  ASSERT_EQ(w.S.size(0), std::min<int64_t>(R.size(0), R.size(1)));  // the exact branch: every triplet
  EXPECT_LT(Relative(w.S.narrow(0, 0, k), S.narrow(0, 0, k)), 1e-12);
  for (int64_t r : {1L, k / 2, k})
    EXPECT_LT(Relative(Term(w.U, w.S, w.Vh, r), Term(U, S, Vh, r)), 1e-10) << r;
  // Orthonormal columns of U, rows of Vh.
  const torch::Tensor I = torch::eye(k, torch::kFloat64);
  EXPECT_LT((w.U.narrow(1, 0, k).t().matmul(w.U.narrow(1, 0, k)) - I).abs().max().item<double>(), 1e-10);
  EXPECT_LT((w.Vh.narrow(0, 0, k).matmul(w.Vh.narrow(0, 0, k).t()) - I).abs().max().item<double>(), 1e-10);
}

TEST(LossySvdTest, TallAndWideResidualsGetLinalgSvdsTriplets) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  // A decaying spectrum, as finetune deltas have: column j scaled by 0.97^j.
  const torch::Tensor decay = torch::pow(0.97, torch::arange(128, torch::kFloat32));
  const torch::Tensor tall = torch::randn({8192, 128}) * decay.unsqueeze(0);
  ExpectLikeLinalgSvd(tall, 100);
  ExpectLikeLinalgSvd(tall.t().contiguous(), 100);
}

TEST(LossySvdTest, DirectionsBeyondTheResidualsRankGetZeros) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(12);
  const torch::Tensor R = torch::randn({8192, 3}).matmul(torch::randn({3, 128}));
  LossyOptions options;
  Work w{};
  w.opt = &options;
  w.rows = 8192, w.cols = 128;
  w.R = R;
  EnsureSvd(w, 100);
  EXPECT_FALSE(w.U.isnan().any().item<bool>() || w.Vh.isnan().any().item<bool>());
  EXPECT_TRUE(torch::all(w.S.narrow(0, 3, 97) == 0).item<bool>());
  EXPECT_EQ(w.U.narrow(1, 3, 97).abs().max().item<double>(), 0.0);
  EXPECT_EQ(w.Vh.narrow(0, 3, 97).abs().max().item<double>(), 0.0);
  EXPECT_LT(Relative(Term(w.U, w.S, w.Vh, 100), R.to(torch::kFloat64)), 1e-6);
}

}  // namespace
}  // namespace deltastore
