// The fast float coder's delta model, encoder side: d = |f| - |b| in ulps, coded as a symbol (bit length,
// sign, the bit below the leading one) in a context of the base exponent and of the lane's recent
// difference sizes; the other bits of d go raw. A sign change is an escape: version 1 codes the new
// exponent with a table of its own (same lane) and the mantissa raw; version 2 codes the new exponent
// relative to the base's as a symbol of the delta alphabet (raw when far), the mantissa raw.
#include <bit>
#include <memory>

#include "codec/bit_stream.h"
#include "codec/float_rans_delta.h"
#include "codec/float_rans_simd.h"

namespace deltastore::float_rans {
namespace {

// First pass: symbols, cells and raw bits in coding order; counts per cell; escape exponents.
template <typename F>
struct DeltaPass {
  // syms and cells are not zero-filled: the first pass writes every one.
  DeltaPass(size_t n, int alphabet)
      : syms(std::make_unique_for_overwrite<uint8_t[]>(n)),
        cells(std::make_unique_for_overwrite<uint8_t[]>(n)),
        counts(kDeltaRows, kDeltaCols, alphabet) {}
  std::unique_ptr<uint8_t[]> syms;
  std::unique_ptr<uint8_t[]> cells;
  std::vector<uint8_t> escapes;  // the exponent after each sign change, in coding order
  GridCounts counts;
};

// Where the first pass writes, as values the compiler can keep in registers (through the pass object,
// every byte store would make it reload them).
struct DeltaSink {
  uint8_t* syms;
  uint8_t* cells;
  uint32_t* counts;  // [cell * alphabet + symbol]
  int alphabet;
  BulkBitWriter::Cursor bits;
  std::vector<uint8_t>* escapes;  // version 1 only
};

template <typename F>
[[gnu::always_inline]] inline void AnalyseValue(const DeltaParams<F>& p, uint32_t b, uint32_t f, int* avg16,
                                                size_t t, DeltaSink* out) {
  const uint32_t bm = (b & F::kMagMask) >> p.tz;
  const uint32_t fm = (f & F::kMagMask) >> p.tz;
  const int be = static_cast<int>(bm >> p.mb);
  const int cell = DeltaCell(p, be, *avg16);
  uint32_t sym;
  int a;
  if (((b ^ f) & F::kSignBit) == 0) [[likely]] {
    const int32_t d = static_cast<int32_t>(fm) - static_cast<int32_t>(bm);
    const uint32_t neg_mask = static_cast<uint32_t>(d >> 31);
    const uint32_t neg = neg_mask & 1;
    const uint32_t ad = (static_cast<uint32_t>(d) ^ neg_mask) - neg_mask;
    const int len = std::bit_width(ad);
    const int nraw = len >= 2 ? len - 2 : 0;
    const uint32_t hb = (ad >> nraw) & static_cast<uint32_t>(len >= 2);
    sym = (static_cast<uint32_t>(len) << 2) | (neg << 1) | hb;
    out->bits.Put(ad & ((uint32_t{1} << nraw) - 1), nraw);
    a = be + len;
  } else {
    sym = kDeltaEscape;
    if (p.v2) {
      const int s = DeltaParams<F>::kEscZero + static_cast<int>(fm >> p.mb) - be;
      if (s >= DeltaParams<F>::kAlphabet && s < static_cast<int>(DeltaParams<F>::kEscOther)) {
        sym = static_cast<uint32_t>(s);
        out->bits.Put(fm & ((uint32_t{1} << p.mb) - 1), p.mb);
      } else {
        sym = DeltaParams<F>::kEscOther;
        out->bits.Put(fm, p.esc_raw);
      }
    } else {
      out->escapes->push_back(static_cast<uint8_t>(fm >> p.mb));
      out->bits.Put(fm & ((uint32_t{1} << p.mb) - 1), p.mb);
    }
    a = be + p.mb + 1;
  }
  out->syms[t] = static_cast<uint8_t>(sym);
  out->cells[t] = static_cast<uint8_t>(cell);
  ++out->counts[cell * out->alphabet + static_cast<int>(sym)];
  UpdateAverage(avg16, a);
}

// Second pass, backwards: the rANS stream. (Lane arrays are only indexed by constants, so that they
// live in registers.)
template <typename F, int kLanes>
std::string CodeSymbols(const DeltaPass<F>& pass, const ContextMap& map, const EncTables& grid,
                        const rans::EncSymbol* esc, size_t n) {
  const size_t cap = 4 * n + 8 * kLanes + 16;
  // Not zero-filled (it is larger than the caches): words and states are written below `end` in turn.
  const auto buf = std::make_unique_for_overwrite<uint8_t[]>(cap);
  uint8_t* const end = buf.get() + cap;
  uint8_t* ptr = end;
  uint32_t x[kLanes];
  for (int k = 0; k < kLanes; ++k) x[k] = rans::kStateLow;
  // Locals, not reloaded after every word store.
  const uint8_t* const syms = pass.syms.get();
  const uint8_t* const cells = pass.cells.get();
  const rans::EncSymbol* const* const cell_syms = grid.cell.data();
  const uint8_t* const escapes = pass.escapes.data();
  const bool v1_escapes = !pass.escapes.empty();
  size_t e = pass.escapes.size();
  const auto put = [&](uint32_t& state, size_t t) {
    const uint32_t s = syms[t];
    if (s == kDeltaEscape && v1_escapes) state = rans::EncPut(state, esc[escapes[--e]], &ptr);
    state = rans::EncPut(state, cell_syms[cells[t]][s], &ptr);
  };
  const size_t full = n / kLanes * kLanes;
#pragma GCC unroll 8
  for (int k = kLanes - 1; k >= 0; --k) {
    if (full + k < n) put(x[k], full + k);
  }
  size_t t = full;
  if constexpr (kLanes == kSimdLanes) {
    if (!v1_escapes && SimdEnabled()) {
      SimdEncodeSetup setup;
      setup.symbols = grid.symbols.data();
      setup.alphabet_log2 = std::countr_zero(static_cast<unsigned>(pass.counts.alphabet));
      setup.rows = map.rows;
      setup.grid_cols_log2 = std::countr_zero(static_cast<unsigned>(kDeltaCols));
      setup.col_shift = map.col_shift;
      ptr = EncodeRowsSimd(setup, syms, cells, full / kLanes, x, ptr);
      t = 0;
    }
  }
  while (t > 0) {
    t -= kLanes;
#pragma GCC unroll 8
    for (int k = kLanes - 1; k >= 0; --k) put(x[k], t + static_cast<size_t>(k));
  }
  ptr -= 4 * kLanes;
  for (int k = 0; k < kLanes; ++k) std::memcpy(ptr + 4 * k, &x[k], 4);
  return std::string(reinterpret_cast<const char*>(ptr), static_cast<size_t>(end - ptr));
}

// First pass over the values in coding order.
template <typename F, int kLanes>
void Analyse(const DeltaParams<F>& params, const uint8_t* data, const uint8_t* base, size_t n,
             DeltaPass<F>* pass, BulkBitWriter* bits) {
  const DeltaParams<F> p = params;  // a local copy: byte stores cannot change it
  DeltaSink out{pass->syms.get(),      pass->cells.get(), pass->counts.counts.data(),
                pass->counts.alphabet, bits->Begin(),     &pass->escapes};
  int avg16[kLanes] = {};
  size_t start = 0;
  if constexpr (kLanes == kSimdLanes) {
    if (p.v2 && SimdEnabled()) {
      SimdDeltaSetup setup;
      setup.tz = p.tz;
      setup.mb = p.mb;
      setup.maxe = p.maxe;
      start = AnalyseDeltaRowsSimd(KindOf<F>(), setup, data, base, n, avg16, out.syms, out.cells, out.counts,
                                   out.alphabet, &out.bits);
    }
  }
  const size_t full = n / kLanes * kLanes;
  for (size_t i = start; i < full; i += kLanes) {
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k)
      AnalyseValue<F>(p, Load<F>(base, i + k), Load<F>(data, i + k), &avg16[k], i + k, &out);
  }
  for (size_t i = full; i < n; ++i)
    AnalyseValue<F>(p, Load<F>(base, i), Load<F>(data, i), &avg16[i - full], i, &out);
  bits->End(out.bits);
}

template <typename F>
bool EncodeDeltaImpl(const uint8_t* data, const uint8_t* base, size_t n, const Layout& layout,
                     const std::function<bool(uint64_t)>& go_on, Coded* out) {
  const DeltaParams<F> p(layout);
  const int lanes = layout.lanes();
  const int alphabet = p.v2 ? DeltaParams<F>::kAlphabetV2 : DeltaParams<F>::kAlphabet;
  DeltaPass<F> pass(n, alphabet);
  BulkBitWriter bits(n * sizeof(typename F::Word));
  switch (lanes) {
    case 32: Analyse<F, 32>(p, data, base, n, &pass, &bits); break;
    case 8: Analyse<F, 8>(p, data, base, n, &pass, &bits); break;
    default: Analyse<F, 1>(p, data, base, n, &pass, &bits); break;
  }
  uint64_t cost_bits = 0;
  const ContextMap map = ChooseContextMap(pass.counts, 3, &cost_bits);
  if (!go_on(cost_bits + bits.bits())) return false;
  EncTables grid;
  WriteTables(pass.counts, map, &out->tables, &grid);
  std::vector<rans::EncSymbol> esc(DeltaParams<F>::kEscAlphabet);
  if (!p.v2) {
    std::vector<uint32_t> esc_counts(DeltaParams<F>::kEscAlphabet);
    for (uint8_t e : pass.escapes) ++esc_counts[e];
    out->tables.push_back(pass.escapes.empty() ? 0 : 1);
    if (!pass.escapes.empty())
      WriteTable(esc_counts.data(), DeltaParams<F>::kEscAlphabet, &out->tables, esc.data());
  }
  switch (lanes) {
    case 32: out->words = CodeSymbols<F, 32>(pass, map, grid, esc.data(), n); break;
    case 8: out->words = CodeSymbols<F, 8>(pass, map, grid, esc.data(), n); break;
    default: out->words = CodeSymbols<F, 1>(pass, map, grid, esc.data(), n); break;
  }
  out->raw = bits.Finish();
  return true;
}
}  // namespace

bool EncodeDelta(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n, const Layout& layout,
                 const std::function<bool(uint64_t)>& go_on, Coded* out) {
  switch (kind) {
    case FloatKind::kBF16: return EncodeDeltaImpl<BF16Format>(data, base, n, layout, go_on, out);
    case FloatKind::kF16: return EncodeDeltaImpl<F16Format>(data, base, n, layout, go_on, out);
    case FloatKind::kF32: return EncodeDeltaImpl<F32Format>(data, base, n, layout, go_on, out);
  }
  return false;
}

}  // namespace deltastore::float_rans
