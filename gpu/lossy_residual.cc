// The residual R = (F - B) - lambda * B of a tensor: held whole, or, for a large tensor's whole-tensor
// refit, computed again from the pair's bytes for each block a pass reads (see Work::R).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

#include "gpu/host_parallel.h"
#include "gpu/lossy_internal.h"

namespace deltastore::lossy_detail {
namespace {

// n rows of two tensors' bytes (`a` and `b` point at the first row, w's dtype and columns) as float32, as
// the two halves of w's block scratch (2 x rows-per-block x cols, or n rows, made on first use): valid until
// the next call. One buffer for every block: a pair of 4 MiB blocks each time left the heap growing by about
// 4 MiB a block (the small tensors allocated between them kept their space from being reused), 210 MiB over
// the two passes of PrepareFromBlocks on 4096 x 11008; one 8 MiB allocation a block (mapped, over the
// allocator's threshold) had one such tensor at 128x take 17.4 s against 13.8 s with this buffer
// (bench/lossy_memory, probes included).
torch::Tensor LoadRowsOf(const Work& w, const char* a, const char* b, int64_t n) {
  if (!w.block_scratch.defined() || w.block_scratch.size(1) < n) {
    const int64_t rows = std::max<int64_t>(n, BlockRows(w.rows, w.cols));
    w.block_scratch = torch::empty({2, rows, static_cast<int64_t>(w.cols)}, torch::kFloat32);
  }
  torch::Tensor t = w.block_scratch.narrow(1, 0, n);
  const int64_t count = n * w.cols;
  const size_t es = DTypeSize(w.dtype);
  float *pa = w.block_scratch[0].data_ptr<float>(), *pb = w.block_scratch[1].data_ptr<float>();
  HostParallelFor(w.opt->host_threads, count, int64_t{1} << 18, [&](int64_t first, int64_t last) {
    const auto len = static_cast<size_t>(last - first);
    ToFloat32(w.dtype, a + first * es, len, pa + first);
    ToFloat32(w.dtype, b + first * es, len, pb + first);
  });
  return t.to(TorchDevice());
}

torch::Tensor LoadPairRows(const Work& w, int64_t r0, int64_t n) {
  const uint64_t at = static_cast<uint64_t>(r0) * w.cols * DTypeSize(w.dtype);
  return LoadRowsOf(w, w.pair_base + at, w.pair_finetune + at, n);
}

// Columns [c0, c0 + n) of the pair's bytes, likewise (2 x rows x n).
torch::Tensor LoadPairCols(const Work& w, int64_t c0, int64_t n) {
  auto t = torch::empty({2, static_cast<int64_t>(w.rows), n}, torch::kFloat32);
  const size_t es = DTypeSize(w.dtype);
  float* out = t.data_ptr<float>();
  for (const char* data : {w.pair_base, w.pair_finetune}) {
    for (uint32_t r = 0; r < w.rows; ++r, out += n) {
      ToFloat32(w.dtype, data + (static_cast<uint64_t>(r) * w.cols + c0) * es, static_cast<size_t>(n), out);
    }
  }
  return t.to(TorchDevice());
}

// D - lambda * B from a loaded pair (B, F): D = F - B computed in F's place, R in B's, the float operations
// of the held residual (Prepare) in their order.
torch::Tensor Combine(const torch::Tensor& pair, float lambda) {
  torch::Tensor B = pair[0], F = pair[1];
  F.sub_(B);
  return B.mul_(-lambda).add_(F);
}

}  // namespace

torch::Tensor ResidualRows(const Work& w, int64_t r0, int64_t n) {
  if (w.R.defined()) return w.R.narrow(0, r0, n);
  return Combine(LoadPairRows(w, r0, n), w.lambda);
}

torch::Tensor ResidualCols(const Work& w, int64_t c0, int64_t n) {
  if (w.R.defined()) return w.R.narrow(1, c0, n);
  return Combine(LoadPairCols(w, c0, n), w.lambda);
}

torch::Tensor SourceRows(const Work& w, const LowRank* lr, int64_t r0, int64_t n) {
  if (lr == nullptr || lr->rank == 0) return ResidualRows(w, r0, n);
  if (lr->Res.defined()) return lr->Res.narrow(0, r0, n);
  // R - L as MakeLowRank computes it in R's place (the same rows of A times B), L in the finetune's
  // storage once R is made (a 4 MiB block of its own fragmented the heap as the pair's did).
  torch::Tensor pair = LoadPairRows(w, r0, n), L = pair[1];
  torch::Tensor R = Combine(pair, w.lambda);
  at::matmul_out(L, lr->A.narrow(0, r0, n), lr->B);
  return R.sub_(L);
}

const torch::Tensor& HeldResidual(const Work& w) {
  if (!w.R.defined()) throw std::logic_error("this estimator needs the residual held whole");
  return w.R;
}

torch::Tensor WholeResidual(const Work& w) {
  if (w.R.defined()) return w.R;
  auto R = torch::empty({w.rows, w.cols}, torch::TensorOptions().device(TorchDevice()));
  for (int64_t r = 0, step = BlockRows(w.rows, w.cols); r < w.rows; r += step) {
    const int64_t n = std::min<int64_t>(step, w.rows - r);
    R.narrow(0, r, n).copy_(ResidualRows(w, r, n));
  }
  return R;
}

ResidualSpread Spread(const Work& w) {
  if (w.R.defined()) {
    return {w.R.std().item<double>(), std::max(w.R.max().item<double>(), -w.R.min().item<double>())};
  }
  // Two passes in float64: the mean, then the squared deviations (as torch's std of a whole tensor).
  const int64_t step = BlockRows(w.rows, w.cols);
  double sum = 0, maxabs = 0;
  for (int64_t r = 0; r < w.rows; r += step) {
    auto R = ResidualRows(w, r, std::min<int64_t>(step, w.rows - r));
    sum += R.sum(torch::kFloat64).item<double>();
    maxabs = std::max(maxabs, R.abs().max().item<double>());
  }
  const double count = static_cast<double>(w.rows) * w.cols, mean = sum / count;
  double squares = 0;
  for (int64_t r = 0; r < w.rows; r += step) {
    auto R = ResidualRows(w, r, std::min<int64_t>(step, w.rows - r)).to(torch::kFloat64);
    squares += R.sub_(mean).square_().sum().item<double>();
  }
  return {count > 1 ? std::sqrt(squares / (count - 1)) : 0.0, maxabs};
}

Status PrepareFromBlocks(Work* w, const char* base, const char* finetune, bool hold) {
  w->pair_base = base, w->pair_finetune = finetune;
  const int64_t step = BlockRows(w->rows, w->cols);
  // The base shift's products and the delta's norm, summed in float64 a block at a time; D @ X by rows.
  double db = 0, bb = 0, dd = 0;
  std::vector<torch::Tensor> dx;
  for (int64_t r = 0; r < w->rows; r += step) {
    const int64_t n = std::min<int64_t>(step, w->rows - r);
    torch::Tensor pair = LoadPairRows(*w, r, n);
    if (!torch::isfinite(pair).all().item<bool>()) {
      return NonfiniteLossyWeights();
    }
    torch::Tensor B = pair[0], D = pair[1];
    D.sub_(B);
    dx.push_back(D.matmul(w->X));
    auto B64 = B.to(torch::kFloat64), D64 = D.to(torch::kFloat64);
    db += (D64 * B64).sum().item<double>();
    bb += (B64 * B64).sum().item<double>();
    dd += (D64 * D64).sum().item<double>();
    Tick(*w);
  }
  w->DX = torch::cat(dx, 0);
  w->delta_norm = std::sqrt(dd);
  if (w->opt->dbms) w->lambda = bb > 0 ? static_cast<float>(db / bb) : 0.0f;
  // R @ X by rows, and R itself when held: WholeResidual's blocks, without a pass of its own.
  torch::Tensor R;
  if (hold) R = torch::empty({w->rows, w->cols}, torch::TensorOptions().device(TorchDevice()));
  std::vector<torch::Tensor> rx;
  for (int64_t r = 0; r < w->rows; r += step) {
    const int64_t n = std::min<int64_t>(step, w->rows - r);
    torch::Tensor block = ResidualRows(*w, r, n);
    rx.push_back(block.matmul(w->X));
    if (hold) R.narrow(0, r, n).copy_(block);
    Tick(*w);
  }
  w->RX = torch::cat(rx, 0);
  w->R = R;
  return OkStatus();
}

std::pair<double, torch::Tensor> ErrorOfRows(const Work& w, const char* finetune, const char* rebuilt,
                                             int64_t n) {
  torch::Tensor two = LoadRowsOf(w, finetune, rebuilt, n);
  torch::Tensor err = two[0].sub_(two[1]);
  return {err.to(torch::kFloat64).square_().sum().item<double>(), err.matmul(w.X)};
}

}  // namespace deltastore::lossy_detail
