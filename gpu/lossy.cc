// The lossy entry points on libtorch: checks, the tensor's search state, the method's search, the report.
#include "gpu/lossy.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <mutex>
#include <string_view>
#include <tuple>
#include <vector>

#include "codec/lossy_codec.h"
#include "codec/lossy_rows.h"
#include "common/allocator.h"
#include "gpu/device.h"
#include "gpu/host_parallel.h"
#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

Status Validate(DType dtype, uint32_t rows, uint32_t cols, const LossyOptions& o) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return InvalidArgument("lossy compression applies to F32, F16 and BF16 tensors");
  }
  if (rows == 0 || cols == 0) return InvalidArgument("lossy compression needs a non-empty 2-D tensor");
  if (!(o.target_ratio >= kMinLossyRatio && o.target_ratio <= kMaxLossyRatio)) {
    return InvalidArgument("target ratio must be between 1 and 4096");
  }
  if (o.bits < 0 || o.bits > 8) return InvalidArgument("bits must be between 1 and 8");
  if (o.rank < -1 || o.rank > kMaxLossyRank) return InvalidArgument("rank must be between 0 and 256");
  if (o.rank > 0 && o.method != LossyMethod::kDeltaDQ) return InvalidArgument("rank applies to deltadq");
  if (o.group < 0 || o.group > 65535) return InvalidArgument("group must be between 1 and 65535");
  if (o.keep < 0 || (o.group && o.keep > o.group)) return InvalidArgument("keep must be between 1 and group");
  if (o.eval_samples < 1 || o.eval_samples > 4096)
    return InvalidArgument("eval_samples must be between 1 and 4096");
  return OkStatus();
}

// Whether every element of `t` is finite, checked a block of rows at a time (isfinite's temporaries are
// a float32 and a bool tensor of the input's size).
bool AllFinite(const torch::Tensor& t) {
  const int64_t block = BlockRows(static_cast<uint32_t>(t.size(0)), static_cast<uint32_t>(t.size(1)));
  for (int64_t r = 0; r < t.size(0); r += block) {
    if (!torch::isfinite(t.narrow(0, r, std::min(block, t.size(0) - r))).all().item<bool>()) return false;
  }
  return true;
}

// Loads `data` into *t again (after its storage served as scratch).
void Reload(torch::Tensor* t, DType dtype, const char* data) {
  if (t->is_cpu()) {
    ToFloat32(dtype, data, static_cast<size_t>(t->numel()), t->data_ptr<float>());
  } else {
    *t = Load(dtype, data, static_cast<uint32_t>(t->size(0)), static_cast<uint32_t>(t->size(1)));
  }
}

// The seeded evaluation inputs (cols x samples) of a tensor: normal, scaled per input channel by the
// calibration statistics when given (activation-aware).
torch::Tensor Inputs(uint32_t rows, uint32_t cols, uint32_t stream, const float* calib_diag,
                     const LossyOptions& options) {
  auto gen = at::detail::createCPUGenerator(options.seed ^ (static_cast<uint64_t>(stream) << 20));
  // Enough samples that a few-row tensor still has thousands of outputs to average over.
  int64_t samples = std::clamp<int64_t>((8192 + rows - 1) / rows, options.eval_samples, 1024);
  auto X = at::normal(0.0, 1.0, {static_cast<int64_t>(cols), samples}, gen);
  if (calib_diag) {
    auto c = torch::from_blob(const_cast<float*>(calib_diag), {static_cast<int64_t>(cols)}, torch::kFloat32)
                 .clone();
    X = X * c.clamp_min(0).sqrt().unsqueeze(1);
  }
  return X.to(TorchDevice());
}

// Loads the tensor pair and fills the search state every target ratio shares: delta norm, base shift,
// residual and the evaluation inputs with their products. *F receives the finetune unless F is null. The
// search reads only R and the products, so the base, the delta (and the finetune when not kept) are
// dropped here. On a large tensor each is a float32 copy of it: the delta is computed in the finetune's
// place, the base shift's products and the residual in the base's, so at most two are held at once.
// Unless `hold` (F must be null then), the tensor is not loaded whole: the state is filled a block at a
// time (PrepareFromBlocks: the base shift and norms are summed in float64 over blocks, not as float32
// sums of the whole), and the residual is held only up to options.held_residual_bytes (on a GPU,
// device_residual_bytes), else computed again from the bytes where read; held or not, its values are the
// same.
Status Prepare(Work* w, DType dtype, const char* base, const char* finetune, uint32_t rows, uint32_t cols,
               uint32_t stream, const float* calib_diag, const LossyOptions& options, torch::Tensor* F,
               bool hold = true) {
  w->dtype = dtype;
  w->rows = rows;
  w->cols = cols;
  w->stream = stream;
  w->opt = &options;
  if (options.measurements) w->measured = options.measurements;
  if (!hold) {
    w->X = Inputs(rows, cols, stream, calib_diag, options);
    const uint64_t limit =
        TorchDevice().is_cuda() ? options.device_residual_bytes : options.held_residual_bytes;
    return PrepareFromBlocks(w, base, finetune, uint64_t{4} * rows * cols <= limit);
  }
  torch::Tensor B = Load(dtype, base, rows, cols);
  torch::Tensor D = Load(dtype, finetune, rows, cols);
  if (!AllFinite(D) || !AllFinite(B)) {
    return NonfiniteLossyWeights();
  }
  if (F != nullptr) *F = D.clone();
  D.sub_(B);
  Tick(*w);
  if (options.dbms) {
    const double db = B.mul_(D).sum().item<double>();  // (D * B).sum(), in B's place
    Reload(&B, dtype, base);
    const double bb = B.mul_(B).sum().item<double>();
    Reload(&B, dtype, base);
    w->lambda = bb > 0 ? static_cast<float>(db / bb) : 0.0f;
  }
  w->delta_norm = D.norm().item<double>();
  w->R = B.mul_(-w->lambda).add_(D);  // D - lambda * B, the same values
  B = torch::Tensor();
  w->X = Inputs(rows, cols, stream, calib_diag, options);
  w->DX = D.matmul(w->X);
  D = torch::Tensor();
  w->RX = w->R.matmul(w->X);
  Tick(*w);
  return OkStatus();
}

// Points the search at `options` (its target ratio sets the budget).
void SetTarget(Work* w, const LossyOptions& options) {
  w->opt = &options;
  const double dtype_bits = 8.0 * DTypeSize(w->dtype);
  w->budget_bytes = static_cast<double>(w->rows) * w->cols * dtype_bits / options.target_ratio / 8.0;
  w->bits_per_weight = dtype_bits / options.target_ratio;
}

Status Unreachable(const Work& w) {
  return RatioUnreachable(std::string(LossyMethodName(w.opt->method)) + " cannot reach " +
                          std::to_string(w.opt->target_ratio) + "x on a " + std::to_string(w.rows) + "x" +
                          std::to_string(w.cols) + " tensor");
}

// mu: 1 (unbiased) unless calibration statistics allow an output-space fit.
void FitMu(const Work& w, const float* calib_diag, Candidate* best) {
  auto C = DenseEstimate(best->t);
  auto c =
      torch::from_blob(const_cast<float*>(calib_diag), {1, static_cast<int64_t>(w.cols)}, torch::kFloat32)
          .clone()
          .to(TorchDevice());
  double num = (WholeResidual(w) * C * c).sum().item<double>(), den = (C * C * c).sum().item<double>();
  if (den > 0 && std::isfinite(num / den)) {
    best->t.p.mu = static_cast<float>(num / den);
    best->chunk = EncodeLossyChunk(w.dtype, best->t);
  }
}

// The report of a candidate with parameters `p`, `kept` elements and a chunk of `stored` bytes, given its
// errors.
LossyTensorReport Report(const Work& w, const LossyParams& p, double kept, uint64_t stored, bool fits,
                         const std::string& reason, double weight_error, double output_error) {
  LossyTensorReport r;
  r.method = std::string(LossyMethodName(w.opt->method));
  r.lambda = p.lambda;
  r.mu = p.mu;
  r.bits = p.values == ValueKind::kQuant ? p.bits : p.values == ValueKind::kF16 ? 16 : 1;
  r.group = p.group;
  r.keep = p.keep;
  r.rank = p.rank;
  r.shared_scale = p.shared_scale;
  r.keep_fraction = kept / (static_cast<double>(w.rows) * w.cols);
  r.stored_bytes = stored;
  r.within_budget = fits;
  r.delta_bytes = static_cast<uint64_t>(w.rows) * w.cols * DTypeSize(w.dtype);
  r.weight_error = weight_error;
  r.output_error = output_error;
  r.delta_norm = w.delta_norm;
  // Per input vector (RMS over the samples), so that tensors evaluated on different sample counts
  // weigh by their outputs' size, not by how many samples they got, when a report aggregates them.
  r.delta_output_norm = w.DX.norm().item<double>() / std::sqrt(static_cast<double>(w.X.size(1)));
  r.estimator = p.mask == MaskKind::kDense ? "ecsq"
                : kept == 0                ? (p.rank > 0 ? "lowrank" : "none")
                : p.rank > 0               ? "lowrank+dropout"
                                           : "dropout";
  r.reason = reason;
  return r;
}

// Rows [r0, r0 + n) of the tensor rebuilt into `out` from the base's same rows, in pieces on `threads`
// threads: each row on its own, the same bytes. A failure is the first piece's that failed.
Status DecodeBlock(int threads, const LossyRowDecoder& d, uint32_t r0, uint32_t n, const char* base,
                   char* out) {
  const uint64_t rb = d.row_bytes();
  std::mutex mu;
  int64_t failed_at = n;
  Status failed = OkStatus();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / d.params().cols);
  HostParallelFor(threads, n, grain, [&](int64_t a, int64_t b) {
    Status st = d.DecodeRows(r0 + a, r0 + b, std::string_view(base + a * rb, (b - a) * rb), out + a * rb);
    if (st.ok()) return;
    std::lock_guard<std::mutex> lock(mu);
    if (a < failed_at) failed_at = a, failed = std::move(st);
  });
  return failed;
}

// The chunk and the report, measured on the reconstruction downloads produce: the tensor is rebuilt as
// downloads rebuild it (the same bytes as DecodeLossyChunk) a block of rows at a time from `base`, each
// block handed to `rebuilt` in order (null: appended to the result's `reconstructed`), so that a large
// tensor is never held rebuilt whole. F is the finetune in float32, or undefined to load it from
// `finetune` here (after PrepareFromBlocks the error's norm and product with the inputs are then summed
// over the blocks; else F - rebuilt is formed whole, the rebuilt rows loaded a block at a time).
StatusOr<LossyResult> Finish(const Work& w, Candidate best, const char* base, const char* finetune,
                             const torch::Tensor& F, const std::function<void(std::string_view)>& rebuilt) {
  LossyResult result;
  result.chunk = std::move(best.chunk);
  const DType dtype = w.dtype;
  const double dn = w.delta_norm;
  const auto kept = static_cast<double>(best.kept);
  const LossyParams p = best.t.p;
  best.t = LossyTensor();
  const uint64_t row_bytes = static_cast<uint64_t>(w.cols) * DTypeSize(dtype);
  DS_ASSIGN_OR_RETURN(std::unique_ptr<LossyRowDecoder> decoder, LossyRowDecoder::Parse(result.chunk));
  if (decoder->raw_size() != row_bytes * w.rows) return Internal("lossy chunk does not match its tensor");
  const bool over_blocks = w.pair_base != nullptr && !F.defined();
  torch::Tensor err;
  if (!over_blocks) err = F.defined() ? F.clone() : Load(dtype, finetune, w.rows, w.cols);
  if (!rebuilt) result.reconstructed.reserve(row_bytes * w.rows);
  double squares = 0;
  std::vector<torch::Tensor> err_blocks;
  std::string rows;
  const uint32_t block = BlockRows(w.rows, w.cols);
  for (uint32_t r0 = 0; r0 < w.rows; r0 += block) {
    const uint32_t n = std::min(block, w.rows - r0);
    const uint64_t at = r0 * row_bytes;
    rows.resize(n * row_bytes);
    DS_RETURN_IF_ERROR(DecodeBlock(w.opt->host_threads, *decoder, r0, n, base + at, rows.data()));
    if (over_blocks) {
      auto [sq, ex] = ErrorOfRows(w, finetune + at, rows.data(), n);
      squares += sq;
      err_blocks.push_back(std::move(ex));
    } else {
      err.narrow(0, r0, n).sub_(Load(dtype, rows.data(), n, w.cols));
    }
    if (rebuilt) {
      rebuilt(rows);
    } else {
      result.reconstructed += rows;
    }
    Tick(w);
  }
  const double err_norm = over_blocks ? std::sqrt(squares) : err.norm().item<double>();
  const torch::Tensor err_x = over_blocks ? torch::cat(err_blocks, 0) : err.matmul(w.X);
  const double dxn = w.DX.norm().item<double>();
  result.report = Report(w, p, kept, result.chunk.size(), best.fits, best.reason,
                         dn > 0 ? err_norm / dn : 0.0, dxn > 0 ? err_x.norm().item<double>() / dxn : 0.0);
  return result;
}

// Drops what only the search reads (the residual, its SVD, the masks drawn): Finish reads the delta, its
// products and the inputs.
void ReleaseSearch(Work* w) {
  w->R = w->RX = w->U = w->S = w->Vh = torch::Tensor();
  w->masks = MaskCache();
  w->measured.reset();
}

// A search state on every s-th row of a rows x cols tensor (same seed and stream).
Status PrepareSubsample(Work* sub, DType dtype, const char* base, const char* finetune, uint32_t rows,
                        uint32_t cols, uint32_t stream, uint32_t s, const float* calib_diag,
                        const LossyOptions& options, std::string* sub_base, torch::Tensor* sub_F) {
  const uint64_t row_bytes = static_cast<uint64_t>(cols) * DTypeSize(dtype);
  *sub_base = EveryNthRow(base, rows, row_bytes, s);
  std::string ft = EveryNthRow(finetune, rows, row_bytes, s);
  const auto sub_rows = static_cast<uint32_t>(sub_base->size() / row_bytes);
  return Prepare(sub, dtype, sub_base->data(), ft.data(), sub_rows, cols, stream, calib_diag, options, sub_F);
}

// About how many steps (builds of a one-block tensor) a search and a refit take, for the fraction done.
constexpr double kSearchSteps = 100, kRefitBuilds = 6;

// One intra-op thread on the CPU: the search runs thousands of small ops, and libtorch's OpenMP workers
// spin between them (86% of the CPU samples of a faceres f32 run at 128x on a loaded 2-core machine:
// 27.5 s, against 1.6 s on one thread, same bytes). Callers run tensors in parallel instead, and no
// result can depend on a thread count. The setting belongs to the calling thread (OpenMP).
void OneCpuThread() {
  if (!UseCuda() && at::get_num_threads() != 1) at::set_num_threads(1);
}

// Runs `body` with no autograd and one intra-op thread, turning libtorch's (and the standard library's)
// exceptions, and a stop asked through LossyOptions::progress, into Status: the prologue and error mapping
// both entry points share. After work on a tensor of more than one row block (`rows` x `cols`), the
// memory it freed goes back to the system: the allocator keeps the pieces below its mmap threshold (row
// blocks, codes) in the thread's arena, and a server running one large tensor after another otherwise
// holds hundreds of MB between them. A one-block tensor's pieces (every probe of a large tensor is on
// such rows) stay for the next call on the thread to reuse: given back after each call, the kernel
// zeroed them again for the next, 20% of a minilm job's CPU (7.2 of 37 s in the system, 1.6 M page
// faults).
template <typename T, typename F>
StatusOr<T> GuardTorch(uint32_t rows, uint32_t cols, F&& body) {
  struct Trim {
    bool large;
    ~Trim() {
      if (large) ReturnFreeMemory();
    }
  } trim{RowBlocks(rows, cols) > 1};
  try {
    torch::NoGradGuard no_grad;
    OneCpuThread();
    return body();
  } catch (const LossyCancelled&) {
    return Unavailable("lossy compression stopped: its caller cancelled it");
  } catch (const c10::Error& e) {
    return Internal(std::string("libtorch: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Internal(std::string("lossy compression: ") + e.what());
  }
}

}  // namespace

StatusOr<LossyResult> CompressLossyTensor(DType dtype, const char* base, const char* finetune, uint32_t rows,
                                          uint32_t cols, uint32_t stream, const float* calib_diag,
                                          const LossyOptions& options) {
  DS_RETURN_IF_ERROR(Validate(dtype, rows, cols, options));
  return GuardTorch<LossyResult>(rows, cols, [&]() -> StatusOr<LossyResult> {
    Ticker ticker(options.progress);
    Work w;
    w.ticker = &ticker;
    ticker.Phase(0, 0.05, 2);
    // A search on every s-th row leaves the whole tensor only its refit, which reads the residual a block
    // at a time: a large one is not held then (LossyOptions::held_residual_bytes).
    const uint32_t s = LossySearchRowStride(rows, cols, options);
    DS_RETURN_IF_ERROR(Prepare(&w, dtype, base, finetune, rows, cols, stream, calib_diag, options, nullptr,
                               /*hold=*/s <= 1));
    SetTarget(&w, options);
    std::optional<Candidate> best;
    if (s > 1) {
      Work sub;
      sub.ticker = &ticker;
      std::string sub_base;
      torch::Tensor sub_F;
      ticker.Phase(0.05, 0.4, kSearchSteps);
      DS_RETURN_IF_ERROR(PrepareSubsample(&sub, dtype, base, finetune, rows, cols, stream, s, calib_diag,
                                          options, &sub_base, &sub_F));
      SetTarget(&sub, options);
      std::optional<Candidate> choice = RunMethod(sub);
      ReturnFreeMemory();  // the search's freed blocks, before the whole tensor's builds
      if (choice) {
        ticker.Phase(0.4, 0.95, kRefitBuilds * RowBlocks(rows, cols));
        // mu's fit reads the residual after the refit
        best = RefitOnWhole(&w, *choice,
                            "chosen on every " + std::to_string(s) + "th row (" + choice->reason + ")",
                            /*last_use=*/!(calib_diag && options.fit_mu));
      }
    } else {
      ticker.Phase(0.05, 0.95, kSearchSteps * RowBlocks(rows, cols));
      best = RunMethod(w);
    }
    if (!best) return Unreachable(w);
    if (calib_diag && options.fit_mu) FitMu(w, calib_diag, &*best);
    ReleaseSearch(&w);
    ticker.Phase(0.95, 1, 1);
    return Finish(w, std::move(*best), base, finetune, torch::Tensor(), options.rebuilt);
  });
}

StatusOr<std::vector<LossyProbe>> ProbeLossyTensor(DType dtype, const char* base, const char* finetune,
                                                   uint32_t rows, uint32_t cols, uint32_t stream,
                                                   const float* calib_diag, const LossyOptions& options,
                                                   const std::vector<double>& ratios) {
  DS_RETURN_IF_ERROR(Validate(dtype, rows, cols, options));
  for (double ratio : ratios) {
    LossyOptions o = options;
    o.target_ratio = ratio;
    DS_RETURN_IF_ERROR(Validate(dtype, rows, cols, o));
  }
  // A large tensor is given (and probed) on every s-th row; sizes and output norms are scaled back to the
  // whole.
  const uint32_t s = LossySearchRowStride(rows, cols, options);
  const uint32_t given = (rows + s - 1) / s;
  return GuardTorch<std::vector<LossyProbe>>(given, cols, [&]() -> StatusOr<std::vector<LossyProbe>> {
    Ticker ticker(options.progress);
    Work w;
    w.ticker = &ticker;
    torch::Tensor F;
    ticker.Phase(0, 0.05, 2);
    // A float32 tensor is rebuilt as the base plus the candidate's estimate, in float32: the candidate's
    // output error is that of the rebuilt tensor up to float32 rounding, so a probe takes it as it is
    // (decoding and measuring each probe's chunk took a tenth of minilm's probes). A 16-bit tensor's
    // rebuilt weights are rounded to its dtype, which can outweigh the estimate's error at low ratios:
    // those are decoded and measured. Unless mu is fitted (the candidate's error is that of mu = 1).
    const bool exact = dtype == DType::kF32 && !(calib_diag && options.fit_mu);
    DS_RETURN_IF_ERROR(
        Prepare(&w, dtype, base, finetune, given, cols, stream, calib_diag, options, exact ? nullptr : &F));
    const double scale = static_cast<double>(rows) / given;
    std::vector<LossyProbe> out;
    ticker.Phase(0.05, 1, kSearchSteps * static_cast<double>(ratios.size()) * RowBlocks(given, cols));
    for (double ratio : ratios) {
      LossyOptions o = options;
      o.target_ratio = ratio;
      o.quick = true;
      SetTarget(&w, o);
      LossyProbe probe;
      probe.ratio = ratio;
      std::optional<Candidate> best = RunMethod(w);
      if (best) {
        if (calib_diag && o.fit_mu) FitMu(w, calib_diag, &*best);
        probe.reachable = true;
        if (exact) {
          probe.report = Report(w, best->t.p, static_cast<double>(best->kept), best->chunk.size(), best->fits,
                                best->reason, std::nan(""), best->output_error);
        } else {
          DS_ASSIGN_OR_RETURN(LossyResult r,
                              Finish(w, std::move(*best), base, nullptr, F, [](std::string_view) {}));
          probe.report = std::move(r.report);
        }
        if (s > 1) {
          LossyTensorReport& q = probe.report;
          q.stored_bytes = static_cast<uint64_t>(std::llround(static_cast<double>(q.stored_bytes) * scale));
          q.delta_bytes = static_cast<uint64_t>(rows) * cols * DTypeSize(dtype);
          q.delta_norm *= std::sqrt(scale);
          q.delta_output_norm *= std::sqrt(scale);
          q.reason = "on every " + std::to_string(s) + "th row: " + q.reason;
        }
      }
      out.push_back(std::move(probe));
    }
    return out;
  });
}

}  // namespace deltastore

namespace deltastore::lossy_detail {

void Ticker::Phase(double lo, double hi, double expected) {
  lo_ = lo, hi_ = hi, expected_ = std::max(expected, 1.0), steps_ = 0;
}

void Ticker::Step() {
  if (!callback_) return;
  steps_ += 1;
  if (!callback_(lo_ + (hi_ - lo_) * steps_ / (steps_ + expected_))) throw LossyCancelled();
}

}  // namespace deltastore::lossy_detail
