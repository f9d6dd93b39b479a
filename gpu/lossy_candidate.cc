// Building one lossy candidate from its selection (gpu/lossy_select.cc): quantization, encoding and
// output error; the budget search.
#include "gpu/lossy_internal.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "gpu/csr_product.h"
#include "gpu/device.h"
#include "gpu/row_quantize.h"

namespace deltastore::lossy_detail {

torch::Device TorchDevice() {
  static const torch::Device device = UseCuda() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  return device;
}

torch::Tensor Load(DType dtype, const char* data, uint32_t rows, uint32_t cols) {
  auto t = torch::empty({rows, cols}, torch::kFloat32);
  ToFloat32(dtype, data, static_cast<size_t>(rows) * cols, t.data_ptr<float>());
  return t.to(TorchDevice());
}

std::vector<int64_t> ToVector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

namespace {

// Calls f(begin, end, row) for each run of one row's values in a block's selection (on the CPU), in order:
// from its CSR row starts when it has them (rows with none are skipped), else from the row of each value.
template <class F>
void ForEachRowRun(const Selection& s, F&& f) {
  if (s.crow.defined()) {
    const torch::Tensor c = s.crow.contiguous();
    const int64_t* start = c.data_ptr<int64_t>();
    for (int64_t r = 0; r + 1 < c.numel(); ++r) {
      if (start[r + 1] > start[r]) f(start[r], start[r + 1], r);
    }
    return;
  }
  const torch::Tensor rt = s.row.contiguous();
  const int64_t* rows = rt.data_ptr<int64_t>();
  const int64_t n = rt.numel();
  for (int64_t k = 0; k < n;) {
    int64_t end = k + 1;
    while (end < n && rows[end] == rows[k]) ++end;
    f(k, end, rows[k]);
    k = end;
  }
}

// QuantizeRows' codes and dequantized values in one pass on the CPU, a run of one row's values at a time.
torch::Tensor QuantizeOnCpu(LossyTensor* t, const torch::Tensor& values, const Selection& s,
                            const float* zero, const float* scale, int64_t levels) {
  const torch::Tensor v = values.contiguous();
  const float* pv = v.data_ptr<float>();
  const int64_t n = v.numel();
  auto deq = torch::empty({n}, torch::kFloat32);
  float* pd = deq.data_ptr<float>();
  const auto top = static_cast<float>(levels);
  const size_t at = t->codes.size();
  t->codes.resize(at + static_cast<size_t>(n));
  uint16_t* out = t->codes.data() + at;
  ForEachRowRun(s, [&](int64_t k, int64_t end, int64_t row) {
    QuantizeRowRun(pv + k, end - k, zero[row], scale[row], top, out + k, pd + k);
  });
  return deq;
}

// The smallest and largest kept value of each of n rows (+inf and -inf for a row with none): a
// scatter_reduce of `values` by row, which on the CPU is one row's run at a time (FoldRowRange, the
// same floats; libtorch's kernel for it took 8% of a minilm job at 16x).
std::pair<torch::Tensor, torch::Tensor> RowRanges(const torch::Tensor& values, const Selection& s,
                                                  int64_t n) {
  const auto inf = std::numeric_limits<float>::infinity();
  const auto opts = torch::TensorOptions().device(values.device());
  torch::Tensor lo = torch::full({n}, inf, opts), hi = torch::full({n}, -inf, opts);
  if (!values.is_cpu()) {
    return {lo.scatter_reduce(0, s.row, values, "amin"), hi.scatter_reduce(0, s.row, values, "amax")};
  }
  const torch::Tensor v = values.contiguous();
  const float* pv = v.data_ptr<float>();
  float *pl = lo.data_ptr<float>(), *ph = hi.data_ptr<float>();
  ForEachRowRun(
      s, [&](int64_t k, int64_t end, int64_t row) { FoldRowRange(pv + k, end - k, pl + row, ph + row); });
  return {lo, hi};
}

// Appends to t.codes / row_scale / row_zero the uniform asymmetric quantization of `values`, the kept
// values of `n` rows (their selection `s`: the row of each, from 0, or on the CPU its CSR row starts),
// per row or in the shared range [-c, c]; returns the dequantized values (what the codec will rebuild,
// up to rounding).
torch::Tensor QuantizeRows(LossyTensor* t, const torch::Tensor& values, const Selection& s, int64_t n,
                           std::optional<double> shared_c) {
  const int64_t levels = (1 << t->p.bits) - 1;
  auto dev = values.device();
  torch::Tensor lo, hi;
  if (shared_c) {
    lo = torch::full({n}, static_cast<float>(-*shared_c), torch::TensorOptions().device(dev));
    hi = torch::full({n}, static_cast<float>(*shared_c), torch::TensorOptions().device(dev));
  } else {
    std::tie(lo, hi) = RowRanges(values, s, n);
  }
  lo = torch::where(torch::isfinite(lo), lo, torch::zeros_like(lo));
  hi = torch::where(torch::isfinite(hi), hi, torch::zeros_like(hi));
  // Scales and zeros are stored as fp16: quantize against the stored values.
  auto zero = lo.to(torch::kHalf).to(torch::kFloat32);
  auto scale =
      ((hi - zero) / static_cast<float>(levels)).clamp_min(1e-7f).to(torch::kHalf).to(torch::kFloat32);
  scale = torch::where(scale > 0, scale, torch::full_like(scale, 6e-8f));
  auto zc = zero.to(torch::kCPU).contiguous(), sc = scale.to(torch::kCPU).contiguous();
  t->row_zero.insert(t->row_zero.end(), zc.data_ptr<float>(), zc.data_ptr<float>() + zc.numel());
  t->row_scale.insert(t->row_scale.end(), sc.data_ptr<float>(), sc.data_ptr<float>() + sc.numel());
  if (dev.is_cpu()) return QuantizeOnCpu(t, values, s, zc.data_ptr<float>(), sc.data_ptr<float>(), levels);
  const torch::Tensor& rows = s.row;
  auto codes = torch::round((values - zero.index_select(0, rows)) / scale.index_select(0, rows))
                   .clamp(0, static_cast<double>(levels));
  auto c = codes.to(torch::kCPU).to(torch::kInt32).contiguous();
  t->codes.insert(t->codes.end(), c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
  return zero.index_select(0, rows) + scale.index_select(0, rows) * codes;
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> LowRankFactorTensors(const LossyTensor& t) {
  std::vector<float> a, b;
  LowRankFactors(t, &a, &b);
  // copies: the vectors go with this call
  auto A = torch::from_blob(a.data(), {t.p.rows, t.p.rank}, torch::kFloat32).clone().to(TorchDevice());
  auto B = torch::from_blob(b.data(), {t.p.rank, t.p.cols}, torch::kFloat32).clone().to(TorchDevice());
  return {A, B};
}

torch::Tensor LowRankEstimate(const LossyTensor& t) {
  auto [A, B] = LowRankFactorTensors(t);
  return A.matmul(B);
}

// The dense estimate S + L the codec will reconstruct from `t` (before mu).
torch::Tensor DenseEstimate(const LossyTensor& t) {
  std::vector<float> c(static_cast<size_t>(t.p.rows) * t.p.cols, 0.0f);
  size_t i = 0;
  ForEachKept(t.p, t.positions, [&](uint32_t r, uint32_t col) {
    c[static_cast<size_t>(r) * t.p.cols + col] = DequantizeCode(t, r, t.codes[i++]);
  });
  auto C = torch::from_blob(c.data(), {t.p.rows, t.p.cols}, torch::kFloat32).clone().to(TorchDevice());
  if (t.p.rank > 0) C += LowRankEstimate(t);
  return C;
}

namespace {

// S @ X on the CPU for S in CSR form (gpu/csr_product.h): the same floats as libtorch's product gave
// here, without building a sparse tensor; MKL's CSR kernel for a CPU it has no tuned code for took 10% of
// a minilm job.
torch::Tensor CpuCsrTimes(const torch::Tensor& crow, const torch::Tensor& col, const torch::Tensor& val,
                          int64_t rows, const torch::Tensor& X) {
  auto c = crow.to(torch::kInt64).contiguous(), k = col.to(torch::kUInt32).contiguous();
  auto v = val.to(torch::kFloat32).contiguous(), x = X.to(torch::kFloat32).contiguous();
  auto out = torch::empty({rows, x.size(1)}, x.options());
  CsrTimesDense(c.data_ptr<int64_t>(), k.data_ptr<uint32_t>(), v.data_ptr<float>(), rows, x.data_ptr<float>(),
                x.size(1), out.data_ptr<float>());
  return out;
}

// A block's rows of the sparse part S in CSR form: row starts, columns and dequantized values.
struct BlockCsr {
  torch::Tensor crow, col, deq;
  int64_t rows = 0;
};

// The sparse part's kept values of a block of n rows (`s`, with its values) into t's codes (and row
// scales); returns the block's rows of S.
BlockCsr BuildBlock(LossyTensor* t, Selection s, uint32_t n, std::optional<double> shared_c) {
  const LossyParams& p = t->p;
  torch::Tensor values = s.values, deq;
  s.values = torch::Tensor();
  s.scale = torch::Tensor();
  if (p.values == ValueKind::kF16) {
    auto h = values.to(torch::kHalf);
    deq = h.to(torch::kFloat32);
    auto hc = h.to(torch::kCPU).contiguous();
    const uint16_t* bits = reinterpret_cast<const uint16_t*>(hc.data_ptr<at::Half>());
    t->codes.insert(t->codes.end(), bits, bits + hc.numel());
  } else {
    deq = QuantizeRows(t, values, s, n, shared_c);
  }
  values = torch::Tensor();
  // Kept elements come in row-major order, so they form a CSR matrix as they are.
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(deq.device());
  auto crow = s.crow.defined()
                  ? s.crow
                  : torch::cat({torch::zeros({1}, opts), torch::bincount(s.row, {}, n).cumsum(0)});
  auto cols = s.col.defined() ? s.col : torch::remainder(s.index, static_cast<int64_t>(p.cols));
  return {crow, cols, deq, n};
}

// A block's rows of S @ inputs.
torch::Tensor TimesInputs(const BlockCsr& b, uint32_t cols, const torch::Tensor& X) {
  if (b.deq.is_cpu()) return CpuCsrTimes(b.crow, b.col, b.deq, b.rows, X);
  auto S = torch::sparse_csr_tensor(b.crow, b.col, b.deq, {b.rows, static_cast<int64_t>(cols)},
                                    b.deq.options().layout(torch::kSparseCsr));
  return S.matmul(X);
}

}  // namespace

LossyParams BaseParams(const Work& w) {
  LossyParams p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.lambda = w.lambda;
  p.seed = w.opt->seed;
  p.stream = w.stream;
  return p;
}

void SetLowRank(LossyTensor* t, const LowRank& lr) {
  t->p.rank = static_cast<uint16_t>(lr.rank);
  t->p.factor_bits = static_cast<uint8_t>(lr.bits);
  t->factor_scale_a = lr.scale_a;
  t->factor_scale_b = lr.scale_b;
  t->a_codes = lr.a;
  t->b_codes = lr.b;
}

// Blocks of about this many elements bound a build's per-element temporaries (indices, rows, scales,
// values, codes: ~50 bytes a kept element) to a block. Every step of a build is per row, so the blocks
// give the bytes and errors of a whole-tensor pass.
constexpr int64_t kBlockElements = int64_t{1} << 20;

uint32_t BlockRows(uint32_t rows, uint32_t cols) {
  return static_cast<uint32_t>(std::clamp<int64_t>(kBlockElements / cols, 1, rows));
}

bool OneBlock(uint32_t rows, uint32_t cols) {
  return static_cast<int64_t>(rows) * cols <= kBlockElements;
}

int64_t RowBlocks(uint32_t rows, uint32_t cols) {
  const uint32_t n = BlockRows(rows, cols);
  return (rows + n - 1) / n;
}

double RelativeError(const torch::Tensor& rx, const torch::Tensor& dx, const torch::Tensor& lx,
                     const torch::Tensor& sx) {
  auto err = lx.defined() ? rx - lx - sx : rx - sx;
  return (err.norm() / dx.norm().clamp_min(1e-30)).item<double>();
}

Candidate BuildDeferred(const Work& w, LossyParams p, const std::vector<uint32_t>& positions,
                        const LowRank* lr) {
  Candidate c;
  c.t.p = p;
  c.t.positions = positions;
  if (lr && lr->rank > 0) SetLowRank(&c.t, *lr);
  const bool low_rank = lr != nullptr && c.t.p.rank > 0;  // SetLowRank above is what sets the rank
  const torch::Tensor lx = low_rank ? lr->LX : torch::Tensor();
  torch::Tensor SX;               // the sparse part S @ inputs
  std::optional<BlockCsr> whole;  // S of a one-block tensor, whose product waits
  if (p.values == ValueKind::kSign) {
    auto flat = (low_rank ? lr->Res : HeldResidual(w)).flatten();
    auto codes = (flat >= 0).to(torch::kCPU).to(torch::kInt32).contiguous();
    c.t.codes.assign(codes.data_ptr<int32_t>(), codes.data_ptr<int32_t>() + codes.numel());
    c.t.p.sign_scale = flat.abs().mean().item<float>();
    auto S = torch::where(flat >= 0, c.t.p.sign_scale, -c.t.p.sign_scale).view({p.rows, p.cols});
    SX = S.matmul(w.X);
  } else {
    // Row blocks (see kBlockElements), each a step of the work.
    std::optional<double> shared_c;
    std::optional<Selection> held;  // a one-block tensor's, from the shared range
    if (p.values == ValueKind::kQuant && p.shared_scale)
      shared_c = SharedRangeOverBlocks(w, p, positions, low_rank ? lr : nullptr, &held);
    // The codes' final size where the mask fixes it: grown block by block, the vector's doublings held up
    // to three times the codes at once (200 MiB for a group that keeps everything on 4096 x 11008).
    if (p.mask == MaskKind::kGroupK) {
      c.t.codes.reserve(static_cast<size_t>(KeptCount(w, p, positions, low_rank ? lr : nullptr)));
    } else if (p.mask == MaskKind::kPositions) {
      c.t.codes.reserve(positions.size());
    } else if (p.mask == MaskKind::kDense) {
      c.t.codes.reserve(static_cast<size_t>(p.rows) * p.cols);
    }
    const bool one_block = OneBlock(p.rows, p.cols);
    std::vector<torch::Tensor> parts;
    for (uint32_t r0 = 0, n = BlockRows(p.rows, p.cols); r0 < p.rows; r0 += n) {
      n = std::min(n, p.rows - r0);
      Selection s =
          held ? std::move(*held)
               : SelectWithValues(w, p, positions, SourceRows(w, low_rank ? lr : nullptr, r0, n), r0, n);
      BlockCsr b = BuildBlock(&c.t, std::move(s), n, shared_c);
      if (one_block) {
        whole = std::move(b);
      } else {
        parts.push_back(TimesInputs(b, p.cols, w.X));
      }
      Tick(w);
    }
    if (!whole) SX = torch::cat(parts);
  }
  EncodeCandidate(w, &c);
  if (whole) {
    c.deferred_error = [rx = w.RX, dx = w.DX, x = w.X, lx, s = std::move(*whole), cols = p.cols] {
      return RelativeError(rx, dx, lx, TimesInputs(s, cols, x));
    };
  } else {
    c.output_error = RelativeError(w.RX, w.DX, lx, SX);
  }
  return c;
}

Candidate Build(const Work& w, LossyParams p, const std::vector<uint32_t>& positions, const LowRank* lr) {
  Candidate c = BuildDeferred(w, p, positions, lr);
  ResolveError(&c);
  return c;
}

void ResolveError(Candidate* c) {
  if (!c->deferred_error) return;
  c->output_error = c->deferred_error();
  c->deferred_error = nullptr;
}

void EncodeCandidate(const Work& w, Candidate* c, PackedCodes* packed) {
  if (packed == nullptr) {
    c->kept = c->t.codes.size();
    c->chunk =
        w.opt->fit_mu ? EncodeLossyChunk(w.dtype, c->t) : EncodeLossyChunkReleasingCodes(w.dtype, &c->t);
    return;
  }
  c->kept = packed->count;
  if (w.opt->fit_mu) {  // FitMu reads the codes again
    c->t.codes.resize(packed->count);
    packed->Unpack(0, packed->count, c->t.codes.data());
  }
  StatusOr<std::string> chunk = EncodeLossyChunkPacked(w.dtype, c->t, std::move(*packed));
  if (!chunk.ok()) throw std::logic_error(chunk.status().message());
  c->chunk = std::move(*chunk);
}

// Largest integer parameter in [lo, hi] whose candidate fits the budget (sizes grow with it). When
// not even `lo` fits (a tensor too small for its share of bits), the `lo` candidate, marked as over.
// Sizes grow about linearly with the parameter, so the search interpolates the budget between the
// bracket's sizes, then tries the guess's neighbour: about 4 builds where bisection takes 7.
// With a `key` (the candidate family: a pure function of it and the parameter), sizes
// already measured for this tensor (by a probe at another ratio, or by the rate allocation's probes:
// LossyMeasurements) are reused, and only the answer is built again when it came from there.
// With a `hint` (the answer on a subsample of the rows), the bracket is found by stepping 1, 2, 4, ...
// away from it instead of from lo and hi: the same answer while sizes grow with the parameter, in 2
// builds when the hint is right, and the hi candidate (a whole tensor of codes) only when the answer is
// near it.
std::optional<Candidate> FitBudget(const Work& w, int lo, int hi, const std::function<Candidate(int)>& make,
                                   const std::string& key, std::optional<int> hint) {
  struct Point {
    int x = 0;
    double size = 0;
    bool fits = false;
    std::optional<Candidate> full;  // when built here
  };
  auto eval = [&](int x) {
    Point pt;
    pt.x = x;
    auto& points = w.measured->points;
    const auto id = std::make_tuple(w.rows, w.cols, key, x);
    auto it = key.empty() ? points.end() : points.find(id);
    if (it != points.end()) {
      pt.size = it->second;
    } else {
      pt.full = make(x);
      pt.size = static_cast<double>(pt.full->chunk.size());
      if (!key.empty()) points[id] = pt.size;
    }
    pt.fits = pt.size <= w.budget_bytes;
    return pt;
  };
  auto done = [&](Point pt) {
    if (!pt.full) pt.full = make(pt.x);
    pt.full->fits = pt.fits;
    ResolveError(&*pt.full);  // the one error the fit's caller reads
    return std::move(pt.full);
  };
  Point best;        // the largest parameter known to fit
  int a = 0, b = 0;  // a fits, b does not
  double sa = 0, sb = 0;
  if (hint) {
    Point h = eval(std::clamp(*hint, lo, hi));
    if (h.fits) {
      a = h.x, sa = h.size, best = std::move(h);
      for (int step = 1;; step *= 2) {
        if (a == hi) return done(std::move(best));
        Point c = eval(std::min(hi, a + step));
        if (!c.fits) {
          b = c.x, sb = c.size;
          break;
        }
        a = c.x, sa = c.size, best = std::move(c);
      }
    } else {
      b = h.x, sb = h.size;
      for (int step = 1;; step *= 2) {
        if (b == lo) return done(std::move(h));
        Point c = eval(std::max(lo, b - step));
        if (c.fits) {
          a = c.x, sa = c.size, best = std::move(c);
          break;
        }
        b = c.x, sb = c.size, h = std::move(c);
      }
    }
  } else {
    best = eval(lo);
    if (!best.fits || lo == hi) return done(std::move(best));
    Point top = eval(hi);
    if (top.fits) return done(std::move(top));
    a = lo, sa = best.size, b = hi, sb = top.size;
  }
  bool neighbour = false, last_fit = false;
  for (int builds = 0; b - a > 1; ++builds) {
    int x = a + (b - a) / 2;  // bisection after 6 builds, or when sizes do not grow
    if (neighbour) {
      x = last_fit ? a + 1 : b - 1;  // the answer is usually next to an interpolated guess
    } else if (builds < 6 && sb > sa) {
      x = std::clamp(a + static_cast<int>((w.budget_bytes - sa) * (b - a) / (sb - sa)), a + 1, b - 1);
    }
    Point c = eval(x);
    last_fit = c.fits;
    if (c.fits) {
      a = x, sa = c.size;
      best = std::move(c);
    } else {
      b = x, sb = c.size;
    }
    neighbour = !neighbour;
  }
  return done(std::move(best));
}

// Prefers candidates within the budget, then the lower output error; over-budget ones by size.
std::optional<Candidate> Better(std::optional<Candidate> a, std::optional<Candidate> b) {
  if (a) ResolveError(&*a);
  if (b) ResolveError(&*b);
  if (!a) return b;
  if (!b) return a;
  if (a->fits != b->fits) return a->fits ? a : b;
  if (!a->fits) return b->chunk.size() < a->chunk.size() ? b : a;
  return b->output_error < a->output_error ? b : a;
}

}  // namespace deltastore::lossy_detail
