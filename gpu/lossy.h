// Lossy delta compression on libtorch (CUDA when present, else CPU; same code, a device argument).
// Plain C++ interface: no torch types cross this header.
//
// Per 2-D float tensor: DBMS base shift (lambda by projection of the delta on the base tensor), then a
// method turns the residual into a LossyTensor (codec/lossy_codec.h) that fits a bit budget; mu scales
// the estimate (1 unless calibration statistics allow an output-space fit). See docs/lossy_format.md
// and ../shared/ALGORITHMS.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "codec/dtype.h"
#include "common/status.h"

namespace deltastore {

// Methods: ours ("deltadq": group k-of-g dropout + separate quantization, parameters chosen per tensor)
// and the baselines measured beside it.
enum class LossyMethod { kDeltaDQ, kDare, kRandom4, kGroupK4, kBitDelta, kTopK8, kLowBit };

inline std::string_view LossyMethodName(LossyMethod m) {
  switch (m) {
    case LossyMethod::kDeltaDQ: return "deltadq";
    case LossyMethod::kDare: return "dare";
    case LossyMethod::kRandom4: return "random4";
    case LossyMethod::kGroupK4: return "groupk4";
    case LossyMethod::kBitDelta: return "bitdelta";
    case LossyMethod::kTopK8: return "topk8";
    case LossyMethod::kLowBit: return "lowbit";
  }
  return "?";
}

inline std::optional<LossyMethod> ParseLossyMethod(std::string_view name) {
  for (auto m : {LossyMethod::kDeltaDQ, LossyMethod::kDare, LossyMethod::kRandom4, LossyMethod::kGroupK4,
                 LossyMethod::kBitDelta, LossyMethod::kTopK8, LossyMethod::kLowBit}) {
    if (LossyMethodName(m) == name) return m;
  }
  return std::nullopt;
}

// The range of target ratios the compressor accepts.
inline constexpr double kMinLossyRatio = 1.0, kMaxLossyRatio = 4096.0;

// Chunk sizes of the candidates searches built for one tensor, by the searched rows
// and columns (a large tensor's search runs on every s-th row), candidate family and parameter. The
// rate allocation's probes of a tensor fill it; the tensor's compression, given the same one, then
// builds again only the candidates it keeps (about two thirds of its builds were already measured on
// minilm at 16x). Each entry is a pure function of the tensor, its stream and the options other than
// target_ratio, quick and progress, so the results are the same with or without it. Used by one call at
// a time.
struct LossyMeasurements {
  std::map<std::tuple<uint32_t, uint32_t, std::string, int>, double> points;
};

struct LossyOptions {
  LossyMethod method = LossyMethod::kDeltaDQ;
  bool dbms = true;            // base shift lambda, fitted per tensor
  double target_ratio = 16.0;  // dtype bits per weight / stored bits per weight, for this tensor
  // Explicit parameters (0 = chosen by the codec): bits per code, group size, kept per group.
  int bits = 0;
  int group = 0;
  int keep = 0;
  // Rank of the low-rank term (format version 2): -1 chosen by the codec, 0 none. Chosen only when the
  // dropout parameters are (explicit bits, group or keep mean rank 0 unless given).
  int rank = -1;
  uint64_t seed = 0x44454C5441445121ull;  // "DELTADQ!"
  // Fit mu on calibration-weighted output error when calibration is given (policy "fit_mu": true). Off by
  // default: measured on the MLP pair it kept 93% of the gain at 16x but 8% at 128x (it shrinks the
  // unbiased dropout noise along with the signal), against 100.7% / 85.8% with mu = 1.
  bool fit_mu = false;
  // The tensor is an embedding whose rows are looked up (by token or position), not multiplied with inputs.
  // Dropout's noise then lands whole on each row looked up, where a linear layer's output averages it over
  // its inputs; so where deltadq's unbiased dropout is worse than no estimate at all, the low-rank term
  // alone (biased) competes (see RunDeltaDQ). It changes nothing for other tensors: on minilm at 128x,
  // the low-rank term alone had the lower output error on all 38 tensors but lost gain when it was taken
  // for the linear layers (89.8% dense against 94.2%), and raised it when taken for the embeddings
  // (95.6%).
  bool lookup = false;
  int eval_samples = 64;  // random inputs (at least; more for tensors with few rows)
  // A cheaper search for the rate allocation's probes: deltadq stops after the scale mode and rank,
  // chosen on its reference setting (2 bits, groups of 64), without the bits x group grid.
  bool quick = false;
  // Called between steps of the work (candidates, row blocks of a large tensor, SVD iterations: at most a
  // few seconds apart) with the fraction of the call done, in [0, 1); returning false stops the call,
  // which then fails with kUnavailable. Nothing the call chooses depends on it.
  std::function<bool(double fraction)> progress;
  // Measurements to reuse and extend (null: the call keeps its own).
  std::shared_ptr<LossyMeasurements> measurements;
  // Receives the rebuilt tensor from CompressLossyTensor (exactly what downloads will produce) a block of
  // about 1M elements at a time, in row order, before the call returns; LossyResult::reconstructed then
  // stays empty. A caller that hashes or writes the rows as they come never holds the tensor rebuilt whole
  // (86 MiB of a 4096 x 11008 bf16 tensor). Null: the result holds it.
  std::function<void(std::string_view rows)> rebuilt;
  // The largest residual (float32 bytes) that the whole-tensor refit of a large tensor (after a search on
  // every s-th row) holds; a larger one is computed again from the tensor's bytes for each block a pass
  // reads (the pair's bytes are held anyway). Time against memory only: the results are the same. The
  // default holds 4096 x 4096 and recomputes 4096 x 11008, whose 172 MiB residual beside the pair's
  // 172 MiB set a lossy job's peak. Recomputing costs most with a low-rank term (its rows of L are
  // multiplied again each pass): one 4096 x 11008 bf16 tensor at 33x took 18.3 s against 13.7 s held
  // (bench/lossy_memory, probes included), at 5.7x 30.5 s against 28.9 s.
  uint64_t held_residual_bytes = uint64_t{64} << 20;
  // The same limit when the compute device is a GPU, whose memory holds the residual instead of the host's:
  // each pass over a residual that is not held widens its rows from the pair's bytes on the host and copies
  // them over (bf16 to float32 alone was 16% of the CPU time of an LLM-shaped layer at 128x), which the
  // GPU then waits for. The default holds a 32000 x 16384 float32 residual.
  uint64_t device_residual_bytes = uint64_t{2} << 30;
  // Threads for the call's loops on the host (gpu/host_parallel.h: drawing shuffle orders, widening the
  // pair's bytes, rebuilding rows). The results are the same at any count. The server gives a tensor too
  // large to run beside others (see kLossyBytesBeside) the machine's cores, which otherwise wait, on a CPU
  // and beside a GPU alike: libtorch's own operations keep one thread on the CPU (see OneCpuThread).
  int host_threads = 1;
};

struct LossyTensorReport {
  std::string method;
  double lambda = 0, mu = 1;
  int bits = 0, group = 0, keep = 0;
  int rank = 0;               // of the low-rank term (0: none)
  bool shared_scale = false;  // one quantization scale for the tensor instead of one per row
  double keep_fraction = 1;
  uint64_t stored_bytes = 0;     // the encoded chunk
  bool within_budget = true;     // false when even the smallest setting exceeds the tensor's share
  uint64_t delta_bytes = 0;      // the delta in the tensor's dtype (rows * cols * dtype size)
  double weight_error = 0;       // ||W_ft - W_hat|| / ||W_ft - W_base||
  double output_error = 0;       // ||(W_ft - W_hat) X|| / ||(W_ft - W_base) X||, X random or calibrated
  double delta_norm = 0;         // ||W_ft - W_base||, to aggregate errors over tensors
  double delta_output_norm = 0;  // ||(W_ft - W_base) X|| / sqrt(samples): RMS over the evaluation inputs
  // "ecsq" (dense, entropy-coded uniform quantizer), "dropout" (group k-of-g), "lowrank+dropout", or for a
  // lookup where dropout was worse than nothing, "lowrank" (the low-rank term alone) or "none" (no estimate)
  std::string estimator;
  std::string reason;  // why the search chose this candidate (which rule or comparison decided)
};

struct LossyResult {
  std::string chunk;          // the encoded lossy chunk (codec id kLossy)
  std::string reconstructed;  // W_hat in the tensor's dtype, exactly what downloads will produce (empty
                              // when LossyOptions::rebuilt received it)
  LossyTensorReport report;
};

// Compresses one tensor of `rows` x `cols` elements of a float dtype. `calib_diag` (cols floats, may be
// null) is the diagonal of X^T X of the layer's inputs. `stream` distinguishes tensors (mask streams).
StatusOr<LossyResult> CompressLossyTensor(DType dtype, const char* base, const char* finetune, uint32_t rows,
                                          uint32_t cols, uint32_t stream, const float* calib_diag,
                                          const LossyOptions& options);

// The failure of a tensor with NaN or Inf weights: the compressor's, and the rate allocation's for the
// rows it does not give a probe.
inline Status NonfiniteLossyWeights() {
  return NonfiniteWeights("tensor holds NaN or Inf weights; lossy mode needs finite weights");
}

// Tensors above this many elements choose deltadq's parameters on every s-th row (a search costs a
// hundred or more builds, each a pass over the tensor), then fit k on the whole tensor (a few passes).
// The self-trained pairs' tensors are all below it, so their results do not change.
inline constexpr uint64_t kLossySearchElements = uint64_t{1} << 20;

// The row stride s of the search over a rows x cols tensor with these options (1: every row).
inline uint32_t LossySearchRowStride(uint32_t rows, uint32_t cols, const LossyOptions& o) {
  const bool automatic = o.method == LossyMethod::kDeltaDQ && !o.bits && !o.group && !o.keep && o.rank < 0;
  const uint64_t n = static_cast<uint64_t>(rows) * cols;
  if (!automatic || n <= kLossySearchElements) return 1;
  return static_cast<uint32_t>(
      std::min<uint64_t>(rows / 2, (n + kLossySearchElements - 1) / kLossySearchElements));
}

// Rows 0, s, 2s, ... of a row-major tensor's bytes.
inline std::string EveryNthRow(const char* data, uint32_t rows, uint64_t row_bytes, uint32_t s) {
  std::string out;
  out.reserve((rows + s - 1) / s * row_bytes);
  for (uint32_t r = 0; r < rows; r += s) out.append(data + r * row_bytes, row_bytes);
  return out;
}

// The quick search (LossyOptions::quick) of one tensor at each of `ratios`, for a rate allocation: the
// tensor is loaded once and its residual's SVD, masks and evaluation products serve every ratio. A ratio
// the method cannot reach comes back with reachable = false. `base` and `finetune` hold only rows 0, s,
// 2s, ... of the rows x cols tensors (s = LossySearchRowStride: all of them but for a large tensor, which
// is probed on those rows, its sizes and output norms scaled back to the whole); the caller checks that
// the rows left out hold finite weights. A float32 tensor's probes (without a fitted mu) report the
// candidate's own output error, which the rebuilt tensor has up to float32 rounding, and no weight error
// (NaN): their chunks are not decoded.
struct LossyProbe {
  double ratio = 0;
  bool reachable = false;
  LossyTensorReport report;
};
StatusOr<std::vector<LossyProbe>> ProbeLossyTensor(DType dtype, const char* base, const char* finetune,
                                                   uint32_t rows, uint32_t cols, uint32_t stream,
                                                   const float* calib_diag, const LossyOptions& options,
                                                   const std::vector<double>& ratios);

}  // namespace deltastore
