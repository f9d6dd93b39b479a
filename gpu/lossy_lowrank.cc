// The SVD of the residual and the quantized low-rank terms built from it.
#include "gpu/lossy_internal.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>

namespace deltastore::lossy_detail {

namespace {

// f(block) over blocks of w's float32 residual R converted to float64, ~1M elements at a time along `dim`
// (a whole float64 copy of a 4096 x 11008 residual is 344 MiB), the results concatenated along `out_dim`.
// The products below split only dimensions they do not sum over, so each output element is the same dot
// product as with R converted whole.
torch::Tensor OverBlocks(const Work& w, int64_t dim, int64_t out_dim,
                         const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  const uint32_t len = dim == 0 ? w.rows : w.cols, other = dim == 0 ? w.cols : w.rows;
  const int64_t step = BlockRows(len, other);
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < len; i += step) {
    const int64_t n = std::min<int64_t>(step, len - i);
    parts.push_back(f((dim == 0 ? ResidualRows(w, i, n) : ResidualCols(w, i, n)).to(torch::kFloat64)));
  }
  return torch::cat(parts, out_dim);
}

// R @ M (M: cols x c), by blocks of R's rows.
torch::Tensor RTimes(const Work& w, const torch::Tensor& M) {
  return OverBlocks(w, 0, 0, [&](const torch::Tensor& b) { return b.matmul(M); });
}

// R^T @ Q (Q: rows x c), by blocks of R's columns.
torch::Tensor RtTimes(const Work& w, const torch::Tensor& Q) {
  return OverBlocks(w, 1, 0, [&](const torch::Tensor& b) { return b.t().matmul(Q); });
}

// Q^T @ R (Q: rows x c), by blocks of R's columns.
torch::Tensor QtTimesR(const torch::Tensor& Q, const Work& w) {
  return OverBlocks(w, 1, 1, [&](const torch::Tensor& b) { return Q.t().matmul(b); });
}

// A residual at least this many times as long one way as the other, of at least this many elements, takes
// GramSvd.
constexpr int64_t kGramAspect = 4, kGramElements = int64_t{1} << 20;

// The singular triplets of a tall or wide R (float64), as linalg_svd's (all of them, descending), from the
// eigendecomposition of its small Gram matrix G (R^T R, or R R^T for a wide R): S^2 and V are G's
// eigenvalues and eigenvectors, and U = R V / S. minilm's word embedding (30522 x 384): 0.45 s against 0.96 s
// for linalg_svd, singular values within 2.2e-14 of its and the rank-101 term within 1.3e-14 (relative). A
// direction whose eigenvalue is under 1e-12 of the largest (a singular value under 1e-6 of the largest, where
// G's rounding leaves no digits) gets a singular value of 0 and zero vectors.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> GramSvd(const torch::Tensor& R) {
  const bool wide = R.size(1) > R.size(0);
  const torch::Tensor T = wide ? R.t() : R;                      // tall: rows >= cols
  auto [values, vectors] = torch::linalg_eigh(T.t().matmul(T));  // ascending
  const torch::Tensor lambda = values.flip(0), V = vectors.flip(1);
  const torch::Tensor kept = lambda > 1e-12 * lambda[0].clamp_min(0);
  torch::Tensor S = torch::where(kept, lambda.clamp_min(0).sqrt(), torch::zeros_like(lambda));
  torch::Tensor U = T.matmul(V).div_(torch::where(kept, S, torch::ones_like(S)));
  U.mul_(kept.unsqueeze(0));
  const torch::Tensor Vk = V.mul(kept.unsqueeze(0));
  if (wide) return {Vk, S, U.t()};
  return {U, S, Vk.t()};
}

}  // namespace

// The `k` leading singular triplets of R in float64 (so that devices and thread counts agree to far below
// a quantization step): an exact SVD for small matrices, else a seeded randomized range finder with two
// power iterations (Halko, Martinsson and Tropp 2011), its products taken a block of R at a time.
void EnsureSvd(const Work& w, int64_t k) {
  const int64_t m = w.rows, n = w.cols, full = std::min(m, n);
  if (w.S.defined() && w.S.size(0) >= std::min(k, full)) return;
  // The rank sweep asks for growing k: compute ahead, at least doubling, so a sweep costs a few SVDs.
  k = std::min<int64_t>(std::max<int64_t>({k, 16, w.S.defined() ? 2 * w.S.size(0) : 0}), kMaxLossyRank);
  if (k + 8 >= full / 2) {
    torch::Tensor R = WholeResidual(w).to(torch::kFloat64);
    if (std::max(m, n) >= kGramAspect * full && m * n >= kGramElements) {
      std::tie(w.U, w.S, w.Vh) = GramSvd(R);
    } else {
      std::tie(w.U, w.S, w.Vh) = torch::linalg_svd(R, /*full_matrices=*/false);
    }
    return;
  }
  auto gen =
      at::detail::createCPUGenerator(w.opt->seed ^ 0x53564400ull ^ (static_cast<uint64_t>(w.stream) << 20));
  auto G = at::normal(0.0, 1.0, {n, k + 8}, gen).to(torch::kFloat64).to(TorchDevice());
  auto Q = std::get<0>(torch::linalg_qr(RTimes(w, G)));
  Tick(w);
  for (int i = 0; i < 2; ++i) {
    Q = std::get<0>(torch::linalg_qr(RtTimes(w, Q)));
    Q = std::get<0>(torch::linalg_qr(RTimes(w, Q)));
    Tick(w);
  }
  auto [Ub, S, Vh] = torch::linalg_svd(QtTimesR(Q, w), /*full_matrices=*/false);
  k = std::min<int64_t>(k, S.size(0));
  w.U = Q.matmul(Ub).narrow(1, 0, k), w.S = S.narrow(0, 0, k), w.Vh = Vh.narrow(0, 0, k);
}

double LowRankBytes(const Work& w, int rank, int bits) {
  return rank * ((static_cast<double>(w.rows) + w.cols) * bits / 8.0 + 4.0);
}

// Rank-r term with `bits`-bit symmetric factor codes: A = U sqrt(S), B = sqrt(S) Vh, one fp16 scale per
// column of A and per row of B.
LowRank LowRankFactors(const Work& w, int rank, int bits) {
  EnsureSvd(w, rank);
  LowRank lr;
  lr.rank = rank;
  lr.bits = bits;
  lr.svd_width = w.S.size(0);
  const double limit = (1 << (bits - 1)) - 1;
  auto root = w.S.narrow(0, 0, rank).sqrt();
  // f: a temporary the caller gives up, quantized in place. On minilm's word embedding (30522 x 208 in
  // float64) each op's new tensor was 51 MB of fresh pages: 0.26 s a build of the factors, 0.11 s in place.
  auto quantize = [&](const torch::Tensor& f, int64_t dim, std::vector<float>* scales,
                      std::vector<int8_t>* codes) {
    // scale per slice along `dim` (0: per column of A, 1: per row of B), stored as fp16
    auto [lowest, highest] = f.aminmax(dim);
    auto amax = torch::maximum(highest, lowest.neg()).to(torch::kFloat32).to(torch::kCPU).contiguous();
    scales->clear();
    for (int64_t i = 0; i < amax.numel(); ++i) {
      float sc = HalfToFloat(FloatToHalf(static_cast<float>(amax.data_ptr<float>()[i] / limit)));
      scales->push_back(sc > 0 && std::isfinite(sc) ? sc : 0.0f);
    }
    auto sc = torch::tensor(*scales, torch::kFloat64).to(f.device()).unsqueeze(dim);
    f.div_(torch::where(sc > 0, sc, torch::ones_like(sc))).round_().clamp_(-limit, limit);
    f.masked_fill_(sc <= 0, 0.0);
    auto c = f.to(torch::kInt8).to(torch::kCPU).contiguous();
    codes->assign(c.data_ptr<int8_t>(), c.data_ptr<int8_t>() + c.numel());
  };
  quantize(w.U.narrow(1, 0, rank) * root.unsqueeze(0), 0, &lr.scale_a, &lr.a);
  quantize(w.Vh.narrow(0, 0, rank) * root.unsqueeze(1), 1, &lr.scale_b, &lr.b);
  LossyTensor t;
  t.p.rows = w.rows;
  t.p.cols = w.cols;
  SetLowRank(&t, lr);
  std::tie(lr.A, lr.B) = LowRankFactorTensors(t);
  return lr;
}

LowRank MakeLowRank(const Work& w, int rank, int bits, torch::Tensor* residual) {
  LowRank lr = LowRankFactors(w, rank, bits);
  // L = A B a block of rows at a time (the same dot products as whole): its product with the inputs, and
  // Res = R - L, in R's place when the caller gives R up. A residual not held keeps A and B instead:
  // builds compute R - L a block at a time (SourceRows).
  const torch::Tensor A = lr.A, B = lr.B;
  if (!w.R.defined()) {
    std::vector<torch::Tensor> lx;
    for (int64_t r = 0, step = BlockRows(w.rows, w.cols); r < w.rows; r += step) {
      lx.push_back(A.narrow(0, r, std::min<int64_t>(step, w.rows - r)).matmul(B).matmul(w.X));
    }
    lr.LX = torch::cat(lx, 0);
    return lr;
  }
  lr.A = lr.B = torch::Tensor();
  const bool in_place = residual != nullptr;
  torch::Tensor R = w.R;  // a handle
  if (in_place) *residual = torch::Tensor();
  lr.Res = in_place ? R : torch::empty_like(R);
  std::vector<torch::Tensor> lx;
  const int64_t m = w.rows, step = BlockRows(w.rows, w.cols);
  for (int64_t r = 0; r < m; r += step) {
    const int64_t n = std::min(step, m - r);
    torch::Tensor L = A.narrow(0, r, n).matmul(B);
    lx.push_back(L.matmul(w.X));
    if (in_place) {
      lr.Res.narrow(0, r, n).sub_(L);  // R - L: the same values as -L + R
    } else {
      lr.Res.narrow(0, r, n).copy_(L.neg_().add_(R.narrow(0, r, n)));
    }
  }
  lr.LX = torch::cat(lx, 0);
  return lr;
}

}  // namespace deltastore::lossy_detail
