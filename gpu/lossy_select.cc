// A candidate's kept elements: the masks drawn (group shuffle orders, element by element, positions), a
// row block's selection with its values, and the shared scale's range over them.
#include "gpu/lossy_internal.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "gpu/host_parallel.h"
#include "gpu/mask_select.h"

namespace deltastore::lossy_detail {
namespace {

// Largest group size whose shuffle steps fit the uint8 order tensor.
constexpr uint32_t kMaxOrderedGroup = 255;

// The shuffle step at which each element of the k-of-g mask's groups is picked (see MaskCache::orders).
// A step of w's work every row block; the rows of a block are shuffled on the options' host threads, each
// row on its own.
torch::Tensor GroupOrder(const Work& w, const LossyParams& p) {
  auto order = torch::empty({p.rows, p.cols}, torch::kUInt8);
  uint8_t* out = order.data_ptr<uint8_t>();
  const uint32_t ngroups = (p.cols + p.group - 1) / p.group;
  const uint32_t block = BlockRows(p.rows, p.cols);
  for (uint32_t r0 = 0; r0 < p.rows; r0 += block) {
    const uint32_t end = std::min(p.rows, r0 + block);
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / p.cols);
    HostParallelFor(w.opt->host_threads, end - r0, grain, [&](int64_t first, int64_t last) {
      std::vector<uint32_t> slots;
      for (auto row = static_cast<uint32_t>(r0 + first); row < r0 + last; ++row) {
        for (uint32_t j = 0; j < ngroups; ++j) {
          uint32_t start = j * p.group, len = std::min<uint32_t>(p.group, p.cols - start);
          ShuffleGroup(p, row, j, len, len, &slots);
          for (uint32_t i = 0; i < len; ++i)
            out[static_cast<size_t>(row) * p.cols + start + slots[i]] = static_cast<uint8_t>(i);
        }
      }
    });
    if (end - r0 == block) Tick(w);
  }
  return order;
}

// The k-of-g mask from the group size's shuffle order: elements picked before their group's k. With `src`
// (the block's rows of the source, row-major on the CPU, as `order`): the CSR row starts, the column of
// each kept element (uint32) and its value times its scale, what BlockValues and a bincount would give,
// without rows or indices. Without: the index, row, column and scale of each, found where `order` is (the
// compute device's memory), in the same row-major order.
Selection SelectFromOrder(const LossyParams& p, const torch::Tensor& order, const float* src) {
  std::vector<uint8_t> keep(p.cols);
  std::vector<float> col_scale(p.cols);
  for (uint32_t c = 0; c < p.cols; ++c) {
    uint32_t start = c / p.group * p.group, len = std::min<uint32_t>(p.group, p.cols - start);
    keep[c] = static_cast<uint8_t>(GroupKeep(p, len));
    col_scale[c] = static_cast<float>(len) / static_cast<float>(keep[c]);
  }
  const int64_t rows = order.size(0), cols = p.cols;
  Selection s;
  if (src == nullptr) {
    const auto dev = order.device();
    const auto keep_t = torch::from_blob(keep.data(), {cols}, torch::kUInt8).to(dev, false, /*copy=*/true);
    const auto scale_t =
        torch::from_blob(col_scale.data(), {cols}, torch::kFloat32).to(dev, false, /*copy=*/true);
    s.index = order.lt(keep_t).flatten().nonzero().squeeze(1);
    s.row = torch::div(s.index, cols, "floor");
    s.col = torch::remainder(s.index, cols);
    s.scale = scale_t.index_select(0, s.col);
    return s;
  }
  const torch::Tensor ord = order.contiguous();
  const uint8_t* o = ord.data_ptr<uint8_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) count += CountBelow(o + r * cols, keep.data(), cols);
  s.col = torch::empty({count + kSelectSlack}, torch::kUInt32);
  s.values = torch::empty({count + kSelectSlack}, torch::kFloat32);
  s.crow = torch::empty({rows + 1}, torch::kInt64);
  auto* pc = s.col.data_ptr<uint32_t>();
  float* pv = s.values.data_ptr<float>();
  int64_t* pcrow = s.crow.data_ptr<int64_t>();
  int64_t k = 0;
  for (int64_t r = 0; r < rows; ++r) {
    pcrow[r] = k;
    k += SelectBelow(o + r * cols, keep.data(), src + r * cols, col_scale.data(), cols, pc + k, pv + k);
  }
  pcrow[rows] = k;  // == count: CountBelow and SelectBelow test the same bytes
  s.col = s.col.narrow(0, 0, count), s.values = s.values.narrow(0, 0, count);
  return s;
}

// The kept elements of rows [r0, r0 + n) of a mask drawn element by element (Bernoulli, or groups wider
// than kMaxOrderedGroup), row by row as the codec draws them: indices and rows counted from the block's
// first, in row-major order, with the unbiasing scale of each.
Selection SelectMaskRows(const LossyParams& p, uint32_t r0, uint32_t n) {
  std::vector<int64_t> idx;
  std::vector<float> scale;
  std::vector<int64_t> row;
  std::vector<uint32_t> cols;
  for (uint32_t r = r0; r < r0 + n; ++r) {
    KeptColumns(p, r, &cols);
    for (uint32_t c : cols) {
      idx.push_back(static_cast<int64_t>(r - r0) * p.cols + c);
      row.push_back(r - r0);
      float s = 1.0f;
      if (p.mask == MaskKind::kGroupK) {
        uint32_t start = c / p.group * p.group, len = std::min<uint32_t>(p.group, p.cols - start);
        s = static_cast<float>(len) / static_cast<float>(GroupKeep(p, len));
      } else if (p.mask == MaskKind::kBernoulli) {
        s = 1.0f / p.keep_prob;
      }
      scale.push_back(s);
    }
  }
  auto dev = TorchDevice();
  Selection s;
  s.index = torch::tensor(idx, torch::kInt64).to(dev);
  s.scale = torch::tensor(scale, torch::kFloat32).to(dev);
  s.row = torch::tensor(row, torch::kInt64).to(dev);
  return s;
}

// The symmetric range [-c, c] of a scale shared by the tensor: c = `max_abs`, the largest magnitude of the
// tensor's kept values, or, when `clip`, the clip (a multiple of the values' RMS, or the largest
// magnitude) with the least squared error on `sample`, every n-th kept value. Clipping biases the largest
// survivors; it is allowed below half a bit per weight, where the extremes of a few kept values per row would
// leave a 2-bit code's middle levels far from most of them. Measured (bench/lossy_bench.py, deltadq):
// clipping at every rate kept 98.6% / 98.2% of the MLP pair's gain at 16x / 32x against 99.9% / 99.1%
// without, and 94.0% of the tfm pair's at 128x against 84.5%. The clip is chosen on at most ~65536 of the
// values (deterministic).
// With `unshrunk` (1 bit in the grid, see UsualGroupsFit) the levels -c and c take c = sum v^2 / sum |v|
// instead, so that the codes' projection on the values is the values' own squared norm (sum c sign(v) v =
// sum v^2) and the unbiased dropout's estimate keeps its size along the residual. The least-squares level
// (mean |v|, 0.8 x RMS on Gaussian values) shrinks it by a third, which costs task accuracy as a scale
// mu < 1 does: with it, 1-bit values won minilm's grid at 128x and lowered the output error from 1.83 to
// 1.18, but kept 94.2% of the gain (dense measure, mean of five mask seeds) against 96.3% with 2 bits;
// with this level, 99.0% (three seeds, the same three 96.7% before; output error 1.69).
// bench/results/lossy_seed_spread_issue17.md.
double SharedRange(const torch::Tensor& sample, double max_abs, int bits, bool clip, bool unshrunk) {
  const int64_t levels = (1 << bits) - 1;
  if (unshrunk) {
    const double l1 = sample.abs().sum().item<double>();
    return l1 > 0 ? sample.square().sum().item<double>() / l1 : max_abs;
  }
  const double rms = sample.square().mean().sqrt().item<double>();
  double best_c = max_abs, best_err = std::numeric_limits<double>::infinity();
  std::vector<double> clips = {best_c};
  if (clip) {
    for (int i = 4; i <= 16; ++i) clips.push_back(rms * i / 4.0);
  }
  for (double c : clips) {
    if (!(c > 0)) continue;
    const float z = HalfToFloat(FloatToHalf(static_cast<float>(-c)));
    const float st = HalfToFloat(FloatToHalf(static_cast<float>(2 * c / levels)));
    if (!(st > 0)) continue;
    auto q = torch::round((sample - z) / st).clamp(0, static_cast<double>(levels)) * st + z;
    const double err = (q - sample).square().sum().item<double>();
    if (err < best_err) best_err = err, best_c = c;
  }
  return best_c;
}

// The shuffle order of p's group size (drawn once per tensor, held on the compute device).
const torch::Tensor& CachedOrder(const Work& w, const LossyParams& p) {
  auto& orders = w.masks.orders;
  auto it = std::find_if(orders.begin(), orders.end(), [&](const auto& o) { return o.first == p.group; });
  if (it == orders.end()) {
    it = orders.insert(orders.end(), {static_cast<int>(p.group), GroupOrder(w, p).to(TorchDevice())});
  }
  return it->second;
}

// The kept elements of rows [r0, r0 + n), indices and rows counted from the block's start (scale
// undefined: 1 for every element). A group mask with the block's rows of the source (`block`) on the CPU
// comes with its values and CSR row starts instead of indices and scales (SelectFromOrder).
Selection BlockSelection(const Work& w, const LossyParams& p, const std::vector<uint32_t>& positions,
                         const torch::Tensor& block, uint32_t r0, uint32_t n) {
  const int64_t begin = static_cast<int64_t>(r0) * p.cols, end = begin + static_cast<int64_t>(n) * p.cols;
  if (p.mask == MaskKind::kGroupK && p.group <= kMaxOrderedGroup) {
    const torch::Tensor order = CachedOrder(w, p).narrow(0, r0, n);
    const bool on_cpu = block.device().is_cpu() && order.device().is_cpu() &&
                        block.scalar_type() == torch::kFloat32 && block.is_contiguous();
    return SelectFromOrder(p, order, on_cpu ? block.data_ptr<float>() : nullptr);
  }
  Selection s;
  if (p.mask == MaskKind::kPositions) {
    auto lo = std::lower_bound(positions.begin(), positions.end(), static_cast<uint64_t>(begin));
    auto hi = std::lower_bound(lo, positions.end(), static_cast<uint64_t>(end));
    std::vector<int64_t> idx(lo, hi);
    for (int64_t& i : idx) i -= begin;
    s.index = torch::tensor(idx, torch::kInt64).to(TorchDevice());
    s.row = torch::div(s.index, static_cast<int64_t>(p.cols), "floor");
    return s;
  }
  return SelectMaskRows(p, r0, n);
}

// The kept values of a block: the elements of its rows of the source (`block`) at `s`, unbiased.
torch::Tensor BlockValues(const torch::Tensor& block, const Selection& s) {
  if (s.values.defined()) return s.values;
  auto values = block.flatten().index_select(0, s.index);
  return s.scale.defined() ? values * s.scale : values;
}

}  // namespace

// How many elements p's mask keeps: a fixed count per row for group masks, else counted block by block.
int64_t KeptCount(const Work& w, const LossyParams& p, const std::vector<uint32_t>& positions,
                  const LowRank* lr) {
  int64_t count = 0;
  if (p.mask == MaskKind::kGroupK) {
    for (uint32_t start = 0; start < p.cols; start += p.group)
      count += GroupKeep(p, std::min<uint32_t>(p.group, p.cols - start));
    return count * p.rows;
  }
  for (uint32_t r0 = 0, n = BlockRows(p.rows, p.cols); r0 < p.rows; r0 += n) {
    n = std::min(n, p.rows - r0);
    torch::Tensor block = SourceRows(w, lr, r0, n);
    count += BlockValues(block, BlockSelection(w, p, positions, block, r0, n)).numel();
  }
  return count;
}

// A block's selection with its values (Selection::values), from the block's rows of the source.
Selection SelectWithValues(const Work& w, const LossyParams& p, const std::vector<uint32_t>& positions,
                           const torch::Tensor& block, uint32_t r0, uint32_t n) {
  Selection s = BlockSelection(w, p, positions, block, r0, n);
  s.values = BlockValues(block, s);
  return s;
}

// The shared scale's range over the kept values of every block (none when nothing is kept), a block's
// values at a time (all of them are a float32 copy of the tensor when a group keeps everything):
// SharedRange gets their largest magnitude and every n-th of them (at most ~65536, mask order), the
// same values as when they were gathered whole. A tensor of one block leaves its selection in *held for
// the build (selecting again took half the selection time at 128x on minilm); the build of a larger one
// selects each block again, holding one block's at a time.
std::optional<double> SharedRangeOverBlocks(const Work& w, const LossyParams& p,
                                            const std::vector<uint32_t>& positions, const LowRank* lr,
                                            std::optional<Selection>* held) {
  const int64_t stride = std::max<int64_t>(1, KeptCount(w, p, positions, lr) / 65536);
  std::vector<torch::Tensor> sample;
  double max_abs = 0;
  int64_t seen = 0;  // kept values before the block
  for (uint32_t r0 = 0, n = BlockRows(p.rows, p.cols); r0 < p.rows; r0 += n) {
    n = std::min(n, p.rows - r0);
    Selection s = SelectWithValues(w, p, positions, SourceRows(w, lr, r0, n), r0, n);
    const torch::Tensor values = s.values;
    if (n == p.rows) *held = std::move(s);
    if (values.numel() == 0) continue;
    max_abs = std::max(max_abs, values.abs().max().item<double>());
    const int64_t first = (stride - seen % stride) % stride;  // the block's first sampled value
    if (first < values.numel()) sample.push_back(values.slice(0, first, values.numel(), stride).contiguous());
    seen += values.numel();
  }
  if (seen == 0) return std::nullopt;
  return SharedRange(torch::cat(sample), max_abs, p.bits, w.bits_per_weight < 0.5,
                     p.bits == 1 && UsualGroupsFit(w, 1));
}

}  // namespace deltastore::lossy_detail
