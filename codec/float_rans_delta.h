// Internals of the fast float coder's delta model (codec/float_rans_model.h) shared by its encoder
// (float_rans_delta.cc) and decoder (float_rans_delta_decode.cc): the context grid's parameters, the
// symbols, the lanes' running average.
#pragma once

#include <algorithm>
#include <array>

#include "codec/float_rans_model.h"

namespace deltastore::float_rans {

template <typename F>
struct DeltaParams {
  // Version 1: the delta symbols (2 = escape). Version 2 adds escape symbols kEscZero + k: a sign change
  // to the exponent be + k (-kAlphabet / 2 <= k < kAlphabet / 2 - 1), its mantissa raw; kEscOther: any
  // other exponent, which follows raw with the mantissa.
  static constexpr int kAlphabet = 4 * F::kWidth;
  static constexpr int kAlphabetV2 = 2 * kAlphabet;
  static constexpr int kEscZero = kAlphabet + kAlphabet / 2;
  static constexpr uint32_t kEscOther = kAlphabetV2 - 1;
  static constexpr int kEscAlphabet = 1 << F::kExpBits;
  explicit DeltaParams(const Layout& layout)
      : tz(layout.tz),
        mb(F::kManBits - layout.tz),
        maxe(static_cast<int>(layout.maxe)),
        v2(layout.version >= 2),
        esc_raw(v2 ? F::kExpBits + mb : mb) {
    // Row: the base exponent below the largest (clamped). Column: the expected bit length of d from the
    // lane's average, ((avg16 + 8) >> 4) - be + bias, as (avg16 + off) >> 4.
    const int bias = 2 + 7 - mb;
    for (int be = 0; be < kEscAlphabet; ++be) {
      exp[be].row = std::clamp(maxe - be, 0, kDeltaRows - 1) * kDeltaCols;
      exp[be].off = 8 + 16 * (bias - be);
    }
  }
  int tz, mb, maxe;
  bool v2;      // sign changes: version 1 codes the new exponent with the escape table, version 2 raw
  int esc_raw;  // raw bits after an escape: the new magnitude (version 2) or its mantissa (version 1)
  struct {
    int row;
    int off;
  } exp[kEscAlphabet];
};

// The context of a value: its grid cell from the base exponent and the lane's running average.
template <typename F>
[[gnu::always_inline]] inline int DeltaCell(const DeltaParams<F>& p, int be, int avg16) {
  const int col = std::clamp((avg16 + p.exp[be].off) >> 4, 0, kDeltaCols - 1);
  return p.exp[be].row + col;
}

// What a delta symbol (not the escape) says: |d| = lead | (nraw raw bits), the sign of d as a mask.
struct SymInfo {
  uint32_t lead = 0;
  uint32_t neg_mask = 0;
  int nraw = 0;
  int len = 0;
};

template <typename F>
constexpr std::array<SymInfo, 4 * F::kWidth> MakeSymInfo() {
  std::array<SymInfo, 4 * F::kWidth> info{};
  for (uint32_t sym = 0; sym < info.size(); ++sym) {
    const int len = static_cast<int>(sym >> 2);
    const int nraw = len >= 2 ? len - 2 : 0;
    info[sym].len = len;
    info[sym].nraw = nraw;
    info[sym].lead = len >= 2 ? (2 | (sym & 1)) << nraw : static_cast<uint32_t>(len);
    info[sym].neg_mask = (sym & 2) ? ~0u : 0u;
  }
  return info;
}

template <typename F>
inline constexpr std::array<SymInfo, 4 * F::kWidth> kSymInfo = MakeSymInfo<F>();

// Raw bits one value reads at most (version 1: len - 2 <= E + M - 2; version 2: E + M after an escape),
// and so how many values one refill (56 bits) serves.
template <typename F, bool kV2>
inline constexpr int kValuesPerRefill = 56 / (F::kExpBits + F::kManBits - (kV2 ? 0 : 2));

[[gnu::always_inline]] inline void UpdateAverage(int* avg16, int a) {
  *avg16 += ((a << 4) - *avg16) >> kDeltaEmaShift;
}

}  // namespace deltastore::float_rans
