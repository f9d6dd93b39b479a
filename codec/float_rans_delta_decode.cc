// The fast float coder's delta model, decoder side (the model: float_rans_delta.cc): per value the base
// gives the context, one rANS symbol the difference's size, the raw bits the rest. Payloads with 32 lanes
// (version 2: 16-bit kinds, version 3: every kind) go through the AVX-512 decoder (codec/float_rans_simd.h)
// where the CPU has it.
#include <memory>

#include "codec/bit_stream.h"
#include "codec/float_rans_delta.h"
#include "codec/float_rans_simd.h"

namespace deltastore::float_rans {
namespace {

// kNbr: the map has several columns (else the neighbour context is not computed at all). kV2: the payload
// version is 2 (a sign change codes its exponent in the delta alphabet, no escape table).
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
                      DeltaDecoder<F, kNbr, true>* d, Checksum4x64State* check) {
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
  const size_t done = DecodeDeltaRowsSimd(KindOf<F>(), setup, x, avg16, d->base, d->out, n, &s, check);
  d->wp = s.words;
  d->bits.Seek(s.raw, s.raw_bit);
  return done;
}

template <typename F, int kLanes, bool kNbr, bool kV2>
bool DecodeDeltaLanes(const Layout& layout, const DeltaTables& tables, std::string_view words,
                      std::string_view raw, const uint8_t* base, size_t n, uint8_t* out,
                      Checksum4x64State* check) {
  if (words.size() < 4 * kLanes || words.size() % 2 != 0) return false;
  DeltaDecoder<F, kNbr, kV2> d(layout, tables, words.substr(4 * kLanes), raw, base, out);
  uint32_t x[kLanes];
  int avg16[kLanes] = {};
  for (int k = 0; k < kLanes; ++k) {
    std::memcpy(&x[k], words.data() + 4 * k, 4);
    if (x[k] < rans::kStateLow) return false;
  }
  size_t i = 0;
  if constexpr (kV2 && kLanes == kSimdLanes) {
    if (SimdEnabled()) i = DecodeRowsSimd(tables.grid, raw, n, x, avg16, &d, check);
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
                     std::string_view raw, const uint8_t* base, size_t n, uint8_t* out,
                     Checksum4x64State* check) {
  const bool nbr = tables.grid.map.cols() > 1;
  if (layout.version >= 2) {
    switch (layout.lanes_log2) {
      case 0: return DecodeDeltaLanes<F, 1, true, true>(layout, tables, words, raw, base, n, out, check);
      case 3:
        return nbr ? DecodeDeltaLanes<F, 8, true, true>(layout, tables, words, raw, base, n, out, check)
                   : DecodeDeltaLanes<F, 8, false, true>(layout, tables, words, raw, base, n, out, check);
      case 5:
        return nbr ? DecodeDeltaLanes<F, 32, true, true>(layout, tables, words, raw, base, n, out, check)
                   : DecodeDeltaLanes<F, 32, false, true>(layout, tables, words, raw, base, n, out, check);
      default: return false;
    }
  }
  switch (layout.lanes_log2) {
    case 0: return DecodeDeltaLanes<F, 1, true, false>(layout, tables, words, raw, base, n, out, check);
    case 3:
      return nbr ? DecodeDeltaLanes<F, 8, true, false>(layout, tables, words, raw, base, n, out, check)
                 : DecodeDeltaLanes<F, 8, false, false>(layout, tables, words, raw, base, n, out, check);
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

Status ReadDeltaTables(FloatKind kind, const Layout& layout, std::string_view* in, DeltaTables* tables) {
  switch (kind) {
    case FloatKind::kBF16: return ReadDeltaTablesImpl<BF16Format>(layout, in, tables);
    case FloatKind::kF16: return ReadDeltaTablesImpl<F16Format>(layout, in, tables);
    case FloatKind::kF32: return ReadDeltaTablesImpl<F32Format>(layout, in, tables);
  }
  return InvalidArgument("float rans: unknown float kind");
}

bool DecodeDelta(FloatKind kind, const Layout& layout, const DeltaTables& tables, std::string_view words,
                 std::string_view raw, const uint8_t* base, size_t n, uint8_t* out,
                 Checksum4x64State* check) {
  switch (kind) {
    case FloatKind::kBF16:
      return DecodeDeltaImpl<BF16Format>(layout, tables, words, raw, base, n, out, check);
    case FloatKind::kF16: return DecodeDeltaImpl<F16Format>(layout, tables, words, raw, base, n, out, check);
    case FloatKind::kF32: return DecodeDeltaImpl<F32Format>(layout, tables, words, raw, base, n, out, check);
  }
  return false;
}

}  // namespace deltastore::float_rans
