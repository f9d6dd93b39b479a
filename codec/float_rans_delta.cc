// The fast float coder's delta model: d = |f| - |b| in ulps, coded as a symbol (bit length, sign, the
// bit below the leading one) in a context of the base exponent and of the lane's recent difference
// sizes; the other bits of d go raw. A sign change is an escape symbol, the new exponent from a table of
// its own (same lane), and the new mantissa raw.
#include <algorithm>
#include <array>
#include <memory>

#include "codec/bit_stream.h"
#include "codec/float_rans_model.h"
#include "codec/float_rans_simd.h"

namespace deltastore::float_rans {
namespace {

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
std::string CodeSymbols(const DeltaPass<F>& pass, const EncTables& grid, const rans::EncSymbol* esc,
                        size_t n) {
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
  for (size_t t = full; t > 0;) {
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
  DeltaSink out{pass->syms.get(), pass->cells.get(), pass->counts.counts.data(), pass->counts.alphabet,
                bits->Begin(), &pass->escapes};
  int avg16[kLanes] = {};
  const size_t full = n / kLanes * kLanes;
  for (size_t i = 0; i < full; i += kLanes) {
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k)
      AnalyseValue<F>(p, Load<F>(base, i + k), Load<F>(data, i + k), &avg16[k], i + k, &out);
  }
  for (size_t i = full; i < n; ++i)
    AnalyseValue<F>(p, Load<F>(base, i), Load<F>(data, i), &avg16[i - full], i, &out);
  bits->End(out.bits);
}

template <typename F>
void EncodeDeltaImpl(const uint8_t* data, const uint8_t* base, size_t n, const Layout& layout, Coded* out) {
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
  const ContextMap map = ChooseContextMap(pass.counts, 3, nullptr);
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
    case 32: out->words = CodeSymbols<F, 32>(pass, grid, esc.data(), n); break;
    case 8: out->words = CodeSymbols<F, 8>(pass, grid, esc.data(), n); break;
    default: out->words = CodeSymbols<F, 1>(pass, grid, esc.data(), n); break;
  }
  out->raw = bits.Finish();
}

// ---------------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------------

// kNbr: the map has several columns (else the neighbour context is not computed at all). kV2: the payload
// version is 2 (a sign change's new magnitude is raw).
template <typename F, bool kNbr, bool kV2>
struct DeltaDecoder {
  DeltaDecoder(const Layout& layout, const DeltaTables& tables, std::string_view words, std::string_view raw,
               const uint8_t* base, uint8_t* out)
      : p(layout),
        storage(tables.grid.storage.data()),
        col_shift(tables.grid.map.col_shift),
        esc(tables.escape.empty() ? ZeroTable() : tables.escape.data()),
        wp(reinterpret_cast<const uint8_t*>(words.data())),
        wend(wp + words.size()),
        bits(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()),
        base(base),
        out(out) {
    // The first table of each base exponent's row, as an offset into storage.
    for (int be = 0; be < DeltaParams<F>::kEscAlphabet; ++be) {
      row_at[be] =
          static_cast<uint32_t>(tables.grid.map.Table(p.exp[be].row / kDeltaCols, 0)) * rans::kProbScale;
    }
  }

  [[gnu::always_inline]] const rans::DecEntry* Table(int be, int avg16) const {
    const rans::DecEntry* t = storage + row_at[be];
    if constexpr (kNbr) {
      const int col = std::clamp((avg16 + p.exp[be].off) >> 4, 0, kDeltaCols - 1);
      t += static_cast<uint32_t>(col >> col_shift) * rans::kProbScale;
    }
    return t;
  }

  // Decodes value i in lane state (x, avg16). kChecked: reads nothing past the streams' ends. The raw
  // bit reader must have been refilled for this value (see kValuesPerRefill).
  template <bool kChecked>
  [[gnu::always_inline]] void Value(uint32_t* x, int* avg16, size_t i) {
    const uint32_t b = Load<F>(base, i);
    const uint32_t bm = (b & F::kMagMask) >> p.tz;
    const int be = static_cast<int>(bm >> p.mb);
    const uint32_t sym = rans::DecGet(x, Table(be, *avg16));
    Renorm<kChecked>(x);
    uint32_t sign = b & F::kSignBit;
    uint32_t fm;
    int a;
    if (kV2 ? sym < DeltaParams<F>::kAlphabet : sym != kDeltaEscape) [[likely]] {
      const SymInfo& info = kSymInfo<F>[sym];
      const uint32_t ad = info.lead | bits.Get(info.nraw);
      fm = bm + ((ad ^ info.neg_mask) - info.neg_mask);
      a = be + static_cast<int>(sym >> 2);
    } else {
      if constexpr (kV2) {
        if (sym != DeltaParams<F>::kEscOther) {
          // A corrupt stream can give an exponent outside [0, 2^E): masked here, refused by the checksum.
          const uint32_t fe = static_cast<uint32_t>(be + static_cast<int>(sym) - DeltaParams<F>::kEscZero);
          fm = ((fe << p.mb) | bits.Get(p.mb)) & (F::kMagMask >> p.tz);
        } else {
          fm = bits.Get(F::kExpBits + p.mb);
        }
      } else {
        const uint32_t fe = rans::DecGet(x, esc);
        Renorm<kChecked>(x);
        fm = (fe << p.mb) | bits.Get(p.mb);
      }
      sign ^= F::kSignBit;
      a = be + p.mb + 1;
    }
    Store<F>(out, i, sign | ((fm << p.tz) & F::kMagMask));
    if constexpr (kNbr) UpdateAverage(avg16, a);
  }

  template <bool kChecked>
  [[gnu::always_inline]] void Renorm(uint32_t* x) {
    if constexpr (kChecked) {
      rans::DecRenormChecked(x, &wp, wend, &overrun);
    } else {
      rans::DecRenorm(x, &wp);
    }
  }

  const DeltaParams<F> p;
  const rans::DecEntry* storage;
  int col_shift;
  uint32_t row_at[DeltaParams<F>::kEscAlphabet];
  const rans::DecEntry* esc;
  const uint8_t* wp;
  const uint8_t* wend;
  BulkBitReader bits;
  const uint8_t* base;
  uint8_t* out;
  bool overrun = false;
};

// The rows that the AVX-512 decoder takes (codec/float_rans_simd.h), from value 0; the scalar decoder
// goes on from there.
template <typename F, bool kNbr>
size_t DecodeRowsSimd(const DecTables& grid, std::string_view raw, size_t n, uint32_t* x, int* avg16,
                      DeltaDecoder<F, kNbr, true>* d) {
  SimdDeltaSetup setup;
  setup.tz = d->p.tz;
  setup.mb = d->p.mb;
  setup.maxe = d->p.maxe;
  setup.rows = grid.map.rows;
  setup.cols_log2 = std::bit_width(static_cast<unsigned>(grid.map.cols())) - 1;
  setup.col_shift = grid.map.col_shift;
  setup.nbr = kNbr && grid.map.cols() > 1;
  setup.tables = grid.storage.data();
  const auto* r = reinterpret_cast<const uint8_t*>(raw.data());
  SimdStreams s{d->wp, d->wend, r, r + raw.size(), 0};
  const size_t done = DecodeDeltaRowsSimd(KindOf<F>(), setup, x, avg16, d->base, d->out, n, &s);
  d->wp = s.words;
  d->bits.Seek(s.raw, s.raw_bit);
  return done;
}

template <typename F, int kLanes, bool kNbr, bool kV2>
bool DecodeDeltaLanes(const Layout& layout, const DeltaTables& tables, std::string_view words,
                      std::string_view raw, const uint8_t* base, size_t n, uint8_t* out) {
  if (words.size() < 4 * kLanes || words.size() % 2 != 0) return false;
  DeltaDecoder<F, kNbr, kV2> d(layout, tables, words.substr(4 * kLanes), raw, base, out);
  uint32_t x[kLanes];
  int avg16[kLanes] = {};
  for (int k = 0; k < kLanes; ++k) {
    std::memcpy(&x[k], words.data() + 4 * k, 4);
    if (x[k] < rans::kStateLow) return false;
  }
  size_t i = 0;
  if constexpr (kV2 && kLanes == kSimdLanes && F::kWidth == 16) {
    if (SimdEnabled()) i = DecodeRowsSimd(tables.grid, raw, n, x, avg16, &d);
  }
  // Each row of values reads at most 2 words and 4 raw bytes per lane.
  for (; i + kLanes <= n; i += kLanes) {
    if (static_cast<size_t>(d.wend - d.wp) < 4 * kLanes || d.bits.BytesLeft() < 4 * kLanes + 16) break;
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k) {
      if (k % kValuesPerRefill<F, kV2> == 0) d.bits.Refill();
      d.template Value<false>(&x[k], &avg16[k], i + k);
    }
  }
  for (; i < n; i += kLanes) {
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k) {
      if (i + k >= n) break;
      d.bits.RefillChecked();
      d.template Value<true>(&x[k], &avg16[k], i + k);
    }
    if (d.overrun) return false;
  }
  for (int k = 0; k < kLanes; ++k) {
    if (x[k] != rans::kStateLow) return false;
  }
  return !d.overrun && d.wp == d.wend && d.bits.FinishedExactly();
}

template <typename F>
bool DecodeDeltaImpl(const Layout& layout, const DeltaTables& tables, std::string_view words,
                     std::string_view raw, const uint8_t* base, size_t n, uint8_t* out) {
  const bool nbr = tables.grid.map.cols() > 1;
  if (layout.version >= 2) {
    switch (layout.lanes_log2) {
      case 0: return DecodeDeltaLanes<F, 1, true, true>(layout, tables, words, raw, base, n, out);
      case 3:
        return nbr ? DecodeDeltaLanes<F, 8, true, true>(layout, tables, words, raw, base, n, out)
                   : DecodeDeltaLanes<F, 8, false, true>(layout, tables, words, raw, base, n, out);
      case 5:
        return nbr ? DecodeDeltaLanes<F, 32, true, true>(layout, tables, words, raw, base, n, out)
                   : DecodeDeltaLanes<F, 32, false, true>(layout, tables, words, raw, base, n, out);
      default: return false;
    }
  }
  switch (layout.lanes_log2) {
    case 0: return DecodeDeltaLanes<F, 1, true, false>(layout, tables, words, raw, base, n, out);
    case 3:
      return nbr ? DecodeDeltaLanes<F, 8, true, false>(layout, tables, words, raw, base, n, out)
                 : DecodeDeltaLanes<F, 8, false, false>(layout, tables, words, raw, base, n, out);
    default: return false;
  }
}

template <typename F>
Status ReadDeltaTablesImpl(const Layout& layout, std::string_view* in, DeltaTables* tables) {
  using P = DeltaParams<F>;
  const bool v2 = layout.version >= 2;
  const int alphabet = v2 ? P::kAlphabetV2 : P::kAlphabet;
  const int mag_bits = F::kExpBits + F::kManBits - layout.tz;
  bool valid[P::kAlphabetV2];
  for (int s = 0; s < alphabet; ++s) {
    const int len = s >> 2;
    if (s >= P::kAlphabet) {
      valid[s] = true;
    } else {
      valid[s] = s == static_cast<int>(kDeltaEscape)
                     ? !v2
                     : len <= mag_bits && !(len < 2 && (s & 1)) && !(len == 0 && (s & 2));
    }
  }
  DS_RETURN_IF_ERROR(ReadTables(in, kDeltaRows, kDeltaCols, alphabet, valid, &tables->grid));
  tables->escape.clear();
  if (layout.version >= 2) return OkStatus();
  if (in->empty() || static_cast<uint8_t>(in->front()) > 1) return Corruption("float rans: bad escape flag");
  const bool has_escape = in->front() == 1;
  in->remove_prefix(1);
  if (has_escape) {
    constexpr int kEsc = DeltaParams<F>::kEscAlphabet;
    bool all[kEsc];
    std::fill(all, all + kEsc, true);
    tables->escape.resize(rans::kProbScale);
    DS_RETURN_IF_ERROR(ReadTable(in, kEsc, all, tables->escape.data()));
  }
  return OkStatus();
}

}  // namespace

void EncodeDelta(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n, const Layout& layout,
                 Coded* out) {
  switch (kind) {
    case FloatKind::kBF16: return EncodeDeltaImpl<BF16Format>(data, base, n, layout, out);
    case FloatKind::kF16: return EncodeDeltaImpl<F16Format>(data, base, n, layout, out);
    case FloatKind::kF32: return EncodeDeltaImpl<F32Format>(data, base, n, layout, out);
  }
}

Status ReadDeltaTables(FloatKind kind, const Layout& layout, std::string_view* in, DeltaTables* tables) {
  switch (kind) {
    case FloatKind::kBF16: return ReadDeltaTablesImpl<BF16Format>(layout, in, tables);
    case FloatKind::kF16: return ReadDeltaTablesImpl<F16Format>(layout, in, tables);
    case FloatKind::kF32: return ReadDeltaTablesImpl<F32Format>(layout, in, tables);
  }
  return InvalidArgument("float rans: unknown float kind");
}

bool DecodeDelta(FloatKind kind, const Layout& layout, const DeltaTables& tables, std::string_view words,
                 std::string_view raw, const uint8_t* base, size_t n, uint8_t* out) {
  switch (kind) {
    case FloatKind::kBF16: return DecodeDeltaImpl<BF16Format>(layout, tables, words, raw, base, n, out);
    case FloatKind::kF16: return DecodeDeltaImpl<F16Format>(layout, tables, words, raw, base, n, out);
    case FloatKind::kF32: return DecodeDeltaImpl<F32Format>(layout, tables, words, raw, base, n, out);
  }
  return false;
}

}  // namespace deltastore::float_rans
