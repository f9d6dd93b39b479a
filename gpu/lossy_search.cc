// The methods: deltadq's parameter search and the baselines measured beside it.
#include "gpu/lossy_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

namespace deltastore::lossy_detail {
namespace {

// Dense entropy-coded scalar quantization: one uniform step for the whole tensor (equal distortion per
// weight, which minimises squared error at a given entropy), codes centred on 128 in 8 bits, one plane,
// so zstd's entropy coder sees whole symbols. The step is the smallest that fits the budget. A candidate
// is built a block of rows at a time (the same codes and products as whole; on a 4096 x 11008 tensor the
// whole-tensor temporaries took 1 GiB).
std::optional<Candidate> Ecsq(const Work& w) {
  const ResidualSpread spread = Spread(w);
  const double sigma = spread.sigma;
  if (!(sigma > 0)) return std::nullopt;
  auto make = [&](int step_index) {
    // steps on a geometric grid: sigma * 2^(-step_index / 8) from 16 sigma down to sigma / 2^12
    double step = sigma * std::ldexp(1.0, 4) * std::pow(2.0, -step_index / 8.0);
    LossyParams p = BaseParams(w);
    p.mask = MaskKind::kDense;
    p.values = ValueKind::kQuant;
    p.bits = 8;
    p.planes = 1;
    Candidate c;
    c.t.p = p;
    float st = HalfToFloat(FloatToHalf(static_cast<float>(step)));
    float zero = HalfToFloat(FloatToHalf(-128.0f * st));
    // The codes go straight into their one plane (a byte each), written a block at a time.
    PackedCodes packed;
    packed.count = static_cast<uint64_t>(w.rows) * w.cols;
    packed.widths = {8};
    packed.shifts = {0};
    std::string& plane = packed.planes.emplace_back(packed.count, '\0');
    std::vector<torch::Tensor> cx;  // the estimate's rows @ inputs
    torch::Tensor whole;            // a one-block tensor's estimate, whose product waits (BuildDeferred)
    const bool one_block = OneBlock(w.rows, w.cols);
    for (uint32_t r0 = 0, n = BlockRows(w.rows, w.cols); r0 < w.rows; r0 += n) {
      n = std::min(n, w.rows - r0);
      auto q = torch::round((ResidualRows(w, r0, n) - zero) / st).clamp(0, 255);
      auto codes = q.to(torch::kCPU).to(torch::kUInt8).contiguous();
      std::memcpy(plane.data() + static_cast<size_t>(r0) * w.cols, codes.data_ptr<uint8_t>(),
                  static_cast<size_t>(codes.numel()));
      torch::Tensor estimate = q.mul_(st).add_(zero);
      if (one_block) {
        whole = estimate;
      } else {
        cx.push_back(estimate.matmul(w.X));
      }
    }
    c.t.row_scale.assign(w.rows, st);
    c.t.row_zero.assign(w.rows, zero);
    EncodeCandidate(w, &c, &packed);
    if (whole.defined()) {
      c.deferred_error = [rx = w.RX, dx = w.DX, x = w.X, whole] {
        return RelativeError(rx, dx, torch::Tensor(), whole.matmul(x));
      };
    } else {
      c.output_error = RelativeError(w.RX, w.DX, torch::Tensor(), torch::cat(cx, 0));
    }
    Tick(w);
    return c;
  };
  // Finer steps than max|R| / 127 saturate the codes, and sizes shrink again: the search stops there.
  const int finest = static_cast<int>(std::floor(8.0 * std::log2(16.0 * sigma * 127.0 / spread.max_abs)));
  return FitBudget(w, 0, std::clamp(finest, 0, 16 * 8), make, "ecsq");
}

// Group k-of-g dropout with b-bit values, k the largest that fits (or the caller's), of R - L; the fit
// starts from `hint` when given (see FitBudget).
std::optional<Candidate> GroupDropout(const Work& w, int b, int g, bool shared, const LowRank* lr,
                                      std::optional<int> hint = std::nullopt) {
  const LossyOptions& o = *w.opt;
  int gg = std::min<int>(g, static_cast<int>(w.cols));
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kGroupK;
  p.group = static_cast<uint16_t>(gg);
  p.values = ValueKind::kQuant;
  p.bits = static_cast<uint8_t>(b);
  p.planes = static_cast<uint8_t>(b >= 2 ? 2 : 1);
  p.shared_scale = shared;
  auto make = [&](int k) {
    LossyParams q = p;
    q.keep = static_cast<uint16_t>(k);
    return BuildDeferred(w, q, {}, lr);
  };
  if (!o.keep) {
    // Everything a candidate depends on besides k (Quantize clips the shared scale below half a bit).
    const std::string key = "dropout b" + std::to_string(b) + " g" + std::to_string(gg) +
                            (shared ? " shared" : " rows") + (w.bits_per_weight < 0.5 ? " clip" : "") + " r" +
                            std::to_string(lr ? lr->rank : 0) + "/" + std::to_string(lr ? lr->svd_width : 0);
    return FitBudget(w, 1, gg, make, key, hint);
  }
  Candidate c = make(std::min(o.keep, gg));
  ResolveError(&c);
  c.fits = true;  // explicit parameters: the caller chose the size
  return c;
}

// The output error of the estimate L alone (lx = L @ inputs; undefined: no estimate at all).
double AloneError(const Work& w, const torch::Tensor& lx) {
  return RelativeError(w.RX, w.DX, lx, torch::zeros({}, w.RX.options()));
}

// The low-rank term alone, with no sparse part (a chunk whose mask keeps no element: kPositions with no
// positions), at the largest rank that fits the budget; rank 0 is no estimate at all (the base shift
// only). The fit interpolates between rank 0 and the largest, without a starting point: the factors'
// bytes before zstd, and the rank a subsample of the rows chose, were both far off (minilm's word
// embedding: 77 KB of rank-5 factors stored in 8 KB, most tokens' rows of A being zero; rank 32 on every
// 12th row, 101 on the whole), and stepping from them took up to nine builds where this takes about four.
std::optional<Candidate> LowRankAlone(const Work& w) {
  const int most = static_cast<int>(std::min<uint32_t>({kMaxLossyRank, w.rows, w.cols}));
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kPositions;
  p.values = ValueKind::kQuant;
  p.bits = 1;
  p.planes = 1;
  p.shared_scale = true;  // one (unused) scale for the tensor, not one a row
  auto make = [&](int rank) {
    Candidate c;
    c.t.p = p;
    c.t.row_scale = {0.0f};
    c.t.row_zero = {0.0f};
    torch::Tensor lx;  // L @ inputs as A @ (B @ inputs): no rows x cols product, and no R - L
    if (rank > 0) {
      LowRank lr = LowRankFactors(w, rank, kFactorBits);
      SetLowRank(&c.t, lr);
      lx = lr.A.matmul(lr.B.matmul(w.X));
    }
    EncodeCandidate(w, &c);
    c.output_error = AloneError(w, lx);
    Tick(w);
    return c;
  };
  // The SVD at the largest rank at once: grown as the fit's ranks outgrew it, it was computed again, wider,
  // each time (minilm's word embedding at 128x: four SVDs, 4.4 of the 5.4 s this took).
  EnsureSvd(w, most);
  return FitBudget(w, 0, most, make);
}

// Scale mode and low-rank term, chosen on the reference setting (2 bits, groups of 64): one scale per
// row costs 32 bits a row, the whole budget of a 128-column row at 128x, so a tensor-wide scale
// competes; then ranks r = 1, 2, 3, 4, 6, 8, ... while L's factors take under 90% of the budget, kept
// while the output error falls. Every candidate stays unbiased: the dropout estimates R - L, so the
// rank trades the dropout's variance against the bits L takes. Returns the reference setting's best,
// with the chosen scale mode (*shared) and rank (*lr).
std::optional<Candidate> ChooseScaleAndRank(const Work& w, bool* shared, LowRank* lr) {
  const LossyOptions& o = *w.opt;
  const int b0 = o.bits ? o.bits : 2, g0 = o.group ? o.group : 64;
  std::optional<Candidate> ref =
      Better(GroupDropout(w, b0, g0, false, nullptr), GroupDropout(w, b0, g0, true, nullptr));
  *shared = ref && ref->t.p.shared_scale;
  std::vector<int> ranks;
  if (o.rank > 0) {
    ranks = {o.rank};
  } else if (o.rank < 0) {
    for (int r : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256}) ranks.push_back(r);
  }
  // Quick probes of a tensor run at growing budgets (the allocation asks for its ratios in descending
  // order), and the best rank grows with the budget: a probe starts its sweep at the rank the previous,
  // smaller budget chose instead of at 1 (the sweep is ~ten rank families on a nearly low-rank delta).
  const bool hinted = o.quick && o.rank < 0 && w.budget_bytes >= w.rank_hint_budget;
  const int start = hinted ? w.rank_hint : 0;
  int worse = 0;
  for (int r : ranks) {
    if (r < start) continue;
    if (r > kMaxLossyRank || r > static_cast<int>(std::min(w.rows, w.cols))) break;
    if (o.rank < 0 && LowRankBytes(w, r, kFactorBits) > 0.9 * w.budget_bytes) break;
    LowRank cand = MakeLowRank(w, r, kFactorBits);
    std::optional<Candidate> c = GroupDropout(w, b0, g0, *shared, &cand);
    if (o.rank > 0 || (c && c->fits && (!ref || !ref->fits || c->output_error < ref->output_error))) {
      ref = std::move(c);
      *lr = std::move(cand);
      worse = 0;
    } else if (++worse >= 2) {
      break;
    }
  }
  if (o.quick && o.rank < 0) w.rank_hint = lr->rank, w.rank_hint_budget = w.budget_bytes;
  return ref;
}

// Groups of up to 128 leave the budget fit steps of 1/128 of a row's values: at 1024x on f32 (0.03 bits a
// weight) k = 1 of 128 at 2 bits spends half the budget and k = 1 of 64 slightly more than all of it, so
// the search settled at half (minilm: 1899x for 1024x). Where the reference groups keep fewer than
// kFineKeep values, a wider group (up to the row) at 1 and 2 bits lets k land within a few percent of
// the budget. 0 when the usual groups are fine enough, or the row is no wider than them.
constexpr int kFineKeep = 16;
int WideGroup(const Work& w, int bits) {
  if (UsualGroupsFit(w, bits)) return 0;  // 16x and 128x on f32 are unchanged
  const double want = std::ceil(kFineKeep * bits / std::max(w.bits_per_weight, 1e-9));
  const int g = static_cast<int>(std::min<double>({want, static_cast<double>(w.cols), 65535.0}));
  return g > 128 ? g : 0;
}

// x with 3 significant digits.
std::string Decimal(double x) {
  char s[32];
  std::snprintf(s, sizeof s, "%.3g", x);
  return s;
}

std::optional<Candidate> Tagged(std::optional<Candidate> c, const std::string& reason) {
  if (c) c->reason = c->t.p.mask == MaskKind::kDense ? "ecsq: " + reason : reason;
  return c;
}

// See RunDeltaDQ's grid.
constexpr double kGridGain = 0.9;

std::optional<Candidate> RunDeltaDQ(const Work& w) {
  const LossyOptions& o = *w.opt;
  const bool automatic = !o.bits && !o.group && !o.keep;
  // Below 2 bits per weight (where the dense quantizer is not tried) 1-bit values join the grid: with its
  // tensor-wide unshrunk level (SharedRange) a group keeps twice the values of 2 bits, and the dropout's
  // variance (g/k - 1) falls by more than the coarser code adds.
  std::vector<int> bits_list = o.bits ? std::vector<int>{o.bits} : std::vector<int>{2, 4};
  if (!o.bits && w.bits_per_weight < 2.0 && UsualGroupsFit(w, 1)) bits_list.insert(bits_list.begin(), 1);
  std::vector<int> groups = o.group ? std::vector<int>{o.group} : std::vector<int>{32, 64, 128};
  std::optional<Candidate> best;
  // The dense entropy-coded quantizer minimises weight error, but below ~2 bits per weight it zeroes
  // most of the delta: a biased estimate that costs task accuracy (measured on the self-trained MLP
  // pair at 32x: 59% of the gain kept, against 98% for unbiased dropout). There the unbiased group
  // dropout of DeltaDQ is used, its parameters chosen by output error.
  if (automatic && w.bits_per_weight >= 2.0) best = Ecsq(w);
  // From 3 bits per weight the dense quantizer is far ahead (faceres f32 at 8x: weight error 0.061
  // against 0.4 for the best dropout), so the dropout search is skipped there.
  if (automatic && w.bits_per_weight >= 3.0 && best)
    return Tagged(std::move(best), "3 or more bits per weight, where it beats dropout (no dropout search)");
  // The dense quantizer's error falls by about half with each bit a weight added; dropout's falls slower
  // (its variance goes as g/k - 1). So once the dense quantizer beat dropout at some budget of a tensor,
  // it is taken to win at every larger one (a rule measured, not proven: on minilm at 16x, each of the
  // 38 tensors' probes switched from dropout to it once, never back). The probes run at growing budgets; from
  // the first one the dense quantizer wins, the rest skip the dropout search (at 11.3x on minilm it took 7.3
  // of the probes' 25 s).
  if (automatic && o.quick && best && w.bits_per_weight >= w.dense_won_bpw)
    return Tagged(std::move(best),
                  "quick probe: it beat the reference dropout setting at a smaller budget (" +
                      Decimal(w.dense_won_bpw) + " bits a weight; no dropout search)");
  bool shared = false;
  LowRank lr;
  std::optional<Candidate> ref;  // the reference setting's best, with the chosen scale mode and rank
  if (automatic || o.rank > 0) ref = ChooseScaleAndRank(w, &shared, &lr);
  // Dropout's variance grows as g/k - 1: with few kept a group, on a residual whose energy sits in a few
  // rows, the unbiased estimate is worse than none at all (minilm's word embedding at 128x kept 14 of 366
  // at output error 2.39, and the base's embedding in its place kept more of the gain). On a lookup
  // (LossyOptions::lookup), and there only, the low-rank term alone (biased: it drops the spectrum's
  // tail) then competes: a linear layer keeps the task with the unbiased estimate even so.
  std::optional<Candidate> low_rank_alone;
  if (automatic && o.lookup && o.rank < 0 && ref && ref->fits &&
      ref->output_error > AloneError(w, torch::Tensor()))
    low_rank_alone = LowRankAlone(w);
  const std::string and_alone =
      low_rank_alone
          ? ", and the low-rank term alone: the reference dropout setting was worse than no estimate"
          : "";
  if (o.quick && (automatic || o.rank > 0)) {
    if (int g = automatic ? WideGroup(w, 2) : 0; g > 0)
      ref = Better(std::move(ref), GroupDropout(w, 2, g, shared, &lr));
    const bool compared = best && ref;
    best = Better(std::move(best), Better(std::move(ref), std::move(low_rank_alone)));
    if (compared && best->t.p.mask == MaskKind::kDense)
      w.dense_won_bpw = std::min(w.dense_won_bpw, w.bits_per_weight);
    return Tagged(
        std::move(best),
        "quick probe: least output error of the reference dropout setting (and the dense quantizer" +
            and_alone + ")");
  }
  // The bits x group grid moved the reference setting's output error by at most 4.2% (on minilm, mlp
  // and tfm at 16x): where the dense quantizer or the low-rank term alone is more than twice that ahead
  // of the reference, the grid cannot overtake it and is not searched.
  best = Better(std::move(best), std::move(low_rank_alone));
  if (automatic && best && ref && best->fits && ref->fits &&
      best->output_error < kGridGain * ref->output_error)
    return Tagged(std::move(best), "its output error is under " + Decimal(kGridGain) +
                                       " times the reference dropout setting's, more than the bits x group "
                                       "grid gains (no grid search" +
                                       and_alone + ")");
  for (int b : bits_list) {
    if (b == 1 && !shared && !o.bits) continue;  // one bit with a scale per row: its least and largest value
    for (int g : groups) {
      if (std::min<int>(g, static_cast<int>(w.cols)) != g && !o.group && g != groups.front())
        continue;  // narrow tensors: one group size
      best = Better(std::move(best), GroupDropout(w, b, g, shared, &lr));
    }
  }
  if (automatic) {
    for (int b : {1, 2}) {
      if (int g = WideGroup(w, b); g > 0) best = Better(std::move(best), GroupDropout(w, b, g, shared, &lr));
    }
  }
  return Tagged(std::move(best),
                "least output error over the bits x group grid (and the dense quantizer" + and_alone + ")");
}

std::optional<Candidate> RunGroupK4(const Work& w) {
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kGroupK;
  p.group = static_cast<uint16_t>(std::min<uint32_t>(64, w.cols));
  p.values = ValueKind::kQuant;
  p.bits = 4;
  p.planes = 2;
  return FitBudget(w, 1, p.group, [&](int k) {
    LossyParams q = p;
    q.keep = static_cast<uint16_t>(k);
    return BuildDeferred(w, q);
  });
}

// DARE (fp16 values) and random4 (4-bit values): Bernoulli dropout.
std::optional<Candidate> RunBernoulli(const Work& w) {
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kBernoulli;
  p.values = w.opt->method == LossyMethod::kDare ? ValueKind::kF16 : ValueKind::kQuant;
  p.bits = 4;
  p.planes = 2;
  // keep probability on a geometric grid, 2^((step - 1024) / 64): from 2^-16 to 1 in steps of 1.1%.
  // Steps of 1/1024 left DARE at 1024x (fp16 values: p = 2/1024) a choice between half and all of
  // its budget (minilm: 1359x for 1024x).
  return FitBudget(w, 1, 1024, [&](int step) {
    LossyParams q = p;
    q.keep_prob = static_cast<float>(std::exp2((step - 1024) / 64.0));
    return BuildDeferred(w, q);
  });
}

std::optional<Candidate> RunBitDelta(const Work& w) {
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kDense;
  p.values = ValueKind::kSign;
  Candidate c = Build(w, p);
  c.fits = c.chunk.size() <= w.budget_bytes;
  return c;
}

std::optional<Candidate> RunTopK8(const Work& w) {
  auto order =
      std::get<1>(HeldResidual(w).flatten().abs().sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  std::vector<int64_t> ranked = ToVector(order);
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kPositions;
  p.values = ValueKind::kQuant;
  p.bits = 8;
  p.planes = 2;
  int64_t n = static_cast<int64_t>(ranked.size());
  // k in steps of n / 4096
  return FitBudget(w, 1, 4096, [&](int step) {
    int64_t k = std::max<int64_t>(1, n * step / 4096);
    std::vector<uint32_t> pos(ranked.begin(), ranked.begin() + k);
    std::sort(pos.begin(), pos.end());
    return BuildDeferred(w, p, pos);
  });
}

std::optional<Candidate> RunLowBit(const Work& w) {
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kDense;
  p.values = ValueKind::kQuant;
  p.planes = 1;
  std::optional<Candidate> best;
  for (int b = 1; b <= 8; ++b) {
    p.bits = static_cast<uint8_t>(b);
    Candidate c = Build(w, p);
    c.fits = c.chunk.size() <= w.budget_bytes;
    if (!c.fits && best) break;
    best = std::move(c);
    if (!best->fits) break;
  }
  return best;
}

}  // namespace

std::optional<Candidate> RunMethod(const Work& w) {
  switch (w.opt->method) {
    case LossyMethod::kDeltaDQ: return RunDeltaDQ(w);
    case LossyMethod::kGroupK4: return RunGroupK4(w);
    case LossyMethod::kDare:
    case LossyMethod::kRandom4: return RunBernoulli(w);
    case LossyMethod::kBitDelta: return RunBitDelta(w);
    case LossyMethod::kTopK8: return RunTopK8(w);
    case LossyMethod::kLowBit: return RunLowBit(w);
  }
  return std::nullopt;
}

}  // namespace deltastore::lossy_detail

namespace deltastore::lossy_detail {

std::optional<Candidate> RefitOnWhole(Work* w, const Candidate& choice, const std::string& why,
                                      bool last_use) {
  const LossyParams& p = choice.t.p;
  if (p.mask == MaskKind::kDense) return Tagged(Ecsq(*w), why + "; step fitted on the whole tensor");
  if (choice.kept == 0) return Tagged(LowRankAlone(*w), why + "; rank fitted on the whole tensor");
  LowRank lr;
  if (p.rank > 0) lr = MakeLowRank(*w, p.rank, kFactorBits, last_use ? &w->R : nullptr);
  // The subsample's k is the fit's starting point: each row has the same share of the budget.
  return Tagged(GroupDropout(*w, p.bits, p.group, p.shared_scale, &lr, p.keep),
                why + "; k fitted on the whole tensor");
}

}  // namespace deltastore::lossy_detail
