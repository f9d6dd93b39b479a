// Internals of the lossy estimators (gpu/ only: it speaks torch). A tensor's search state (Work), the
// candidates it builds and the pieces they share: masks, the SVD of the residual, low-rank terms.
//   lossy_candidate.cc  building one candidate (quantization, encoding, output error), budget fit
//   lossy_select.cc     a candidate's kept elements: masks, a row block's selection, the shared range
//   lossy_lowrank.cc    the SVD of the residual and quantized low-rank terms
//   lossy_search.cc     the methods: deltadq's search and the baselines
//   lossy_residual.cc   the residual, held whole or computed a block at a time from the pair's bytes
//   lossy.cc            the entry points: one tensor, or a tensor probed at several ratios
#pragma once

#include <torch/torch.h>

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "codec/lossy_codec.h"
#include "gpu/lossy.h"

namespace deltastore::lossy_detail {

// The kept elements of a mask in a row block: as flat indices plus the unbiasing scale of each (g/k or
// 1/p), or, for a group mask on the CPU, as a CSR matrix of the kept values (no index, row or scale).
struct Selection {
  torch::Tensor index;   // int64 flat indices (of the tensor, or of a row block's rows), mask order
  torch::Tensor scale;   // float32 per kept element (undefined: 1 for each)
  torch::Tensor row;     // int64 row of each kept element (counted from the block's first), without crow
  torch::Tensor col;     // column of each kept element, int64, or uint32 with crow (undefined: index % cols)
  torch::Tensor values;  // a row block's kept values, unbiased (scale applied), when computed with it
  torch::Tensor crow;    // int64 CSR row starts of a row block (rows + 1), when computed with it
};

// Group masks already drawn for this tensor: per group size up to 255, the step of the group's
// Fisher-Yates shuffle that picks each element (uint8, rows x cols, on the compute device): the mask keeping
// k of a group is the elements picked before step k, since every k draws the same prefix of the shuffle
// (codec/lossy_codec.cc, KeptColumns). One Philox pass per group size then serves every k of every build.
// Other masks (Bernoulli, wider groups) are drawn a row block at a time by each build: kept whole, their
// indices took ~20 bytes a kept element (1.8 GB at the top of a budget search on a 4096 x 11008 tensor).
struct MaskCache {
  std::vector<std::pair<int, torch::Tensor>> orders;
};

// Thrown by Ticker::Step when the caller's progress callback asks to stop; the entry points turn it
// into their cancellation Status.
struct LossyCancelled {};

// Progress of one call through LossyOptions::progress: the work runs in phases, each a range of the
// fraction done that its steps (builds, row blocks, SVD iterations) approach, never reach, as
// steps / (steps + expected). Each step asks the callback whether to go on.
class Ticker {
 public:
  explicit Ticker(const std::function<bool(double)>& callback) : callback_(callback) {}
  // Starts a phase covering [lo, hi) of the work, expected to take about `expected` steps.
  void Phase(double lo, double hi, double expected);
  // One step of the current phase: reports the fraction done; throws LossyCancelled on a stop.
  void Step();

 private:
  const std::function<bool(double)>& callback_;
  double lo_ = 0, hi_ = 0, expected_ = 1, steps_ = 0;
};

struct Work {
  DType dtype;
  uint32_t rows, cols, stream;
  // Residual (delta - lambda * base), inputs, delta @ inputs. The whole-tensor refit of a tensor over
  // LossyOptions::held_residual_bytes does not hold R: each block a pass reads is computed again from the
  // pair's bytes (pair_base, pair_finetune), which the caller holds anyway. See ResidualRows.
  torch::Tensor R, X, DX;
  const char* pair_base = nullptr;  // the pair's bytes, after PrepareFromBlocks
  const char* pair_finetune = nullptr;
  mutable torch::Tensor block_scratch;  // a row block of the pair as float32 (lossy_residual.cc)
  double delta_norm = 0;                // ||delta||
  torch::Tensor RX;                     // R @ inputs
  mutable torch::Tensor U, S, Vh;       // leading singular triplets of R, float64 (computed on first use)
  mutable MaskCache masks;
  // Chunk sizes of the candidates built so far (see FitBudget): the options' measurements of this tensor,
  // else the call's own.
  std::shared_ptr<LossyMeasurements> measured = std::make_shared<LossyMeasurements>();
  // The rank the last quick probe of this tensor chose, and its budget (see ChooseScaleAndRank).
  mutable int rank_hint = 0;
  mutable double rank_hint_budget = 0;
  // The fewest bits a weight at which a quick probe of this tensor saw the dense quantizer beat the
  // dropout search (see RunDeltaDQ).
  mutable double dense_won_bpw = std::numeric_limits<double>::infinity();
  float lambda = 0;
  double budget_bytes = 0;
  double bits_per_weight = 0;  // of the budget
  const LossyOptions* opt;
  Ticker* ticker = nullptr;  // steps of the search (null: none reported)
};

// A step of w's work (see Ticker).
inline void Tick(const Work& w) {
  if (w.ticker != nullptr) w.ticker->Step();
}

// The low-rank term of a candidate: quantized factors of the top singular triplets of the residual,
// and L = A * B; the sparse part then estimates R - L without bias.
struct LowRank {
  int rank = 0, bits = 0;
  int64_t svd_width = 0;  // triplets of the SVD it came from (a wider one gives slightly other factors)
  std::vector<float> scale_a, scale_b;
  std::vector<int8_t> a, b;
  // R - L (what the sparse part estimates) when the residual is held, L @ inputs, and the factors as
  // float32 when it is not (R - L is then computed a block of rows at a time: SourceRows).
  torch::Tensor Res, LX, A, B;
};

// Rows [r0, r0 + n) of w's residual (a view when it is held, else computed from the pair's bytes: the
// same float operations as the held residual's, with the lambda the refit's Prepare found, in w's block
// scratch, valid until the next such call), and columns [c0, c0 + n) likewise (a tensor of their own).
torch::Tensor ResidualRows(const Work& w, int64_t r0, int64_t n);
torch::Tensor ResidualCols(const Work& w, int64_t c0, int64_t n);
// Rows [r0, r0 + n) of what a build estimates: w's residual, less the low-rank term when `lr` has one.
torch::Tensor SourceRows(const Work& w, const LowRank* lr, int64_t r0, int64_t n);
// w's residual, held whole (estimators that read it whole: top-k, sign; std::logic_error when not held).
const torch::Tensor& HeldResidual(const Work& w);
// w's residual whole: the held one, or a copy computed from the bytes (an exact SVD of a narrow tensor,
// mu's fit).
torch::Tensor WholeResidual(const Work& w);
// The residual's standard deviation and largest magnitude (torch's whole-tensor reductions when held,
// else float64 sums over blocks).
struct ResidualSpread {
  double sigma = 0, max_abs = 0;
};
ResidualSpread Spread(const Work& w);
// Fills w's base shift, delta norm and products (DX, RX) a block of rows at a time from the pair's bytes
// (w's rows, cols, dtype, options and inputs X are set), and with `hold` the residual R whole, else R stays
// undefined.
Status PrepareFromBlocks(Work* w, const char* base, const char* finetune, bool hold);
// ||F - rebuilt||^2 (summed in float64) and (F - rebuilt) @ X of n rows of the finetune's and the rebuilt
// tensor's bytes (each pointing at the first of the rows).
std::pair<double, torch::Tensor> ErrorOfRows(const Work& w, const char* finetune, const char* rebuilt,
                                             int64_t n);

struct Candidate {
  LossyTensor t;  // its codes released once the chunk is encoded (see EncodeCandidate)
  std::string chunk;
  uint64_t kept = 0;  // elements the mask keeps
  double output_error = std::numeric_limits<double>::infinity();
  // Set instead of output_error by BuildDeferred: it gives the error when ResolveError asks.
  std::function<double()> deferred_error;
  bool fits = true;    // within the budget
  std::string reason;  // why the search took it (the version's quality report shows it)
};

torch::Device TorchDevice();
// A rows x cols tensor of `dtype` as float32 on the compute device.
torch::Tensor Load(DType dtype, const char* data, uint32_t rows, uint32_t cols);
std::vector<int64_t> ToVector(const torch::Tensor& t);
// The dense estimate S + L the codec will reconstruct from `t` (before mu).
torch::Tensor DenseEstimate(const LossyTensor& t);
LossyParams BaseParams(const Work& w);
// The stored factors A (rows x rank) and B (rank x cols) of t's low-rank term, as float32.
std::pair<torch::Tensor, torch::Tensor> LowRankFactorTensors(const LossyTensor& t);
// L = A * B from the stored factors (the codec's AddLowRank gives the same up to rounding).
torch::Tensor LowRankEstimate(const LossyTensor& t);
// Puts the low-rank term `lr` into `t`.
void SetLowRank(LossyTensor* t, const LowRank& lr);
// Rows per block of a build (about 1M elements), and the row blocks a build of a rows x cols tensor runs
// in (each a step of the work).
uint32_t BlockRows(uint32_t rows, uint32_t cols);
int64_t RowBlocks(uint32_t rows, uint32_t cols);
// How many elements p's mask keeps (gpu/lossy_select.cc).
int64_t KeptCount(const Work& w, const LossyParams& p, const std::vector<uint32_t>& positions,
                  const LowRank* lr);
// A row block's selection with its values (Selection::values), from the block's rows of the source.
Selection SelectWithValues(const Work& w, const LossyParams& p, const std::vector<uint32_t>& positions,
                           const torch::Tensor& block, uint32_t r0, uint32_t n);
// The shared scale's range [-c, c] over the kept values of every block (none when nothing is kept); a
// tensor of one block leaves its selection in *held for the build.
std::optional<double> SharedRangeOverBlocks(const Work& w, const LossyParams& p,
                                            const std::vector<uint32_t>& positions, const LowRank* lr,
                                            std::optional<Selection>* held);
// Builds a candidate for mask/value parameters `p` from the residual, less the low-rank term if any.
Candidate Build(const Work& w, LossyParams p, const std::vector<uint32_t>& positions = {},
                const LowRank* lr = nullptr);
// The same, but on a tensor of one row block the output error (the product S @ inputs, a third of a
// build's time) waits until ResolveError asks for it: a budget fit needs only its answer's error, and
// builds ~2.5 candidates for each answer. The candidate holds its kept values and columns meanwhile
// (8 bytes a kept element, at most ~8 MiB). For the makes of FitBudget, which resolves its answer.
Candidate BuildDeferred(const Work& w, LossyParams p, const std::vector<uint32_t>& positions = {},
                        const LowRank* lr = nullptr);
// Computes c's output error now if it was deferred.
void ResolveError(Candidate* c);
// ||R X - L X - S X|| / ||D X|| (rx = R X, dx = D X) for an estimate whose sparse (or dense) part times
// the inputs is `sx` and whose low-rank term times the inputs is `lx` (undefined: none).
double RelativeError(const torch::Tensor& rx, const torch::Tensor& dx, const torch::Tensor& lx,
                     const torch::Tensor& sx);
// Whether a rows x cols tensor is built in one row block of at most ~1M elements, where BuildDeferred
// defers its output error.
bool OneBlock(uint32_t rows, uint32_t cols);
// Encodes c's chunk from its tensor and records its kept count; then the codes (2 bytes a kept element:
// 86 MiB on a dense 4096 x 11008 candidate, two of them held by a budget fit) are released, unless the
// options fit mu, which reads them again. With `packed`, the codes come packed from there instead (the
// dense quantizer's one 8-bit plane, see EncodeLossyChunkPacked), and are unpacked into c's tensor only
// for mu's fit.
void EncodeCandidate(const Work& w, Candidate* c, PackedCodes* packed = nullptr);
// Largest integer parameter in [lo, hi] whose candidate fits the budget (see lossy_candidate.cc).
std::optional<Candidate> FitBudget(const Work& w, int lo, int hi, const std::function<Candidate(int)>& make,
                                   const std::string& key = {}, std::optional<int> hint = std::nullopt);
// Prefers candidates within the budget, then the lower output error; over-budget ones by size.
std::optional<Candidate> Better(std::optional<Candidate> a, std::optional<Candidate> b);

// Whether groups of 64 keep at least 4 values of `bits` bits within w's budget. Below that the usual
// groups (up to 128) step k too coarsely for the budget, and WideGroup (lossy_search.cc) offers wider ones.
// Where it holds for 1 bit (from 1/16 bit per weight) up to 2 bits per weight, 1-bit values join deltadq's
// bits x group grid with the unshrunk level of SharedRange (lossy_select.cc); the wide groups' 1-bit values
// keep the clip of least squared error: the unshrunk level there raised minilm's output error at 1024x
// from 5.66 to 6.82 and kept 86.9% of the gain (dense measure, one seed) against 89.1%. With the 1-bit
// grid from 1/8 bit instead, minilm at 512x kept 92.2% (three seeds), from 1/16 97.3% (90.6% before); at
// 1024x it lands at 1099-1130x (1074-1115x before).
inline bool UsualGroupsFit(const Work& w, int bits) {
  return w.bits_per_weight * 64 / bits >= 4;
}

// Width of the low-rank factors' codes: on the tfm pair at 128x, 4-bit factors kept 96.7% of the gain
// and 8-bit ones 39.3% (more rank for the bits matters more than precise factors).
constexpr int kFactorBits = 4;
// Bytes the factors of a rank-r term take before zstd (codes and fp16 scales).
double LowRankBytes(const Work& w, int rank, int bits);
// The rank-r term's quantized factors (codes, scales, and A and B as float32), without L's products.
LowRank LowRankFactors(const Work& w, int rank, int bits);
// Computes w's leading singular triplets (w.U, w.S, w.Vh) to at least k of them, unless it has them.
void EnsureSvd(const Work& w, int64_t k);
// The rank-r term of w's residual. With `residual` (w's own R, given up by the caller) its Res is computed
// in R's place, which the caller must not read again.
LowRank MakeLowRank(const Work& w, int rank, int bits, torch::Tensor* residual = nullptr);

// The method's best candidate for w's budget (none when the method cannot apply).
std::optional<Candidate> RunMethod(const Work& w);
// deltadq's `choice` (made on a subsample of w's rows) rebuilt on the whole tensor: the same estimator,
// bits, group, scale mode and rank, with k (or the dense step) fitted to w's budget. `why` says how the
// choice was made.
// With `last_use`, the refit is the residual's last use: a low-rank term's residual takes R's place.
std::optional<Candidate> RefitOnWhole(Work* w, const Candidate& choice, const std::string& why,
                                      bool last_use);

}  // namespace deltastore::lossy_detail
