// The fast float coder's standalone model: per value one symbol (exponent token, sign, top mantissa
// bits) in the context of the lane's previous token, then the other mantissa bits raw.
#include <algorithm>
#include <bit>
#include <memory>

#include "codec/bit_stream.h"
#include "codec/float_rans_model.h"
#include "codec/float_rans_simd.h"

namespace deltastore::float_rans {
namespace {

constexpr int kAlphabet = 256;

template <typename F>
struct StandaloneParams {
  explicit StandaloneParams(const Layout& layout)
      : tz(layout.tz),
        mb(F::kManBits - layout.tz),
        top_bits(std::min(mb, kTopBits)),
        low(mb - top_bits),
        maxe(layout.maxe) {}
  int tz, mb, top_bits, low;
  uint32_t maxe;
};

// The symbol of one value, and its raw bits (value, count).
template <typename F>
[[gnu::always_inline]] inline uint32_t ValueSymbol(const StandaloneParams<F>& p, uint32_t f, uint32_t* raw,
                                                   int* nraw) {
  const uint32_t sign = f >> (F::kWidth - 1);
  const uint32_t fm = (f & F::kMagMask) >> p.tz;
  const uint32_t e = fm >> p.mb;
  const uint32_t low_bits = fm & ((uint32_t{1} << p.low) - 1);
  const uint32_t top = (fm >> p.low) & ((uint32_t{1} << p.top_bits) - 1);
  uint32_t tok;
  if (fm == 0) {
    tok = kTokZero;
    *raw = 0;
    *nraw = 0;
  } else if (p.maxe - e < kTokZero) {
    tok = p.maxe - e;
    *raw = low_bits;
    *nraw = p.low;
  } else {
    tok = kTokEscape;
    *raw = (e << p.low) | low_bits;
    *nraw = F::kExpBits + p.low;
  }
  return (tok << 3) | (sign << 2) | top;
}

template <int kLanes>
std::string CodeSymbols(const uint8_t* syms, const ContextMap& map, const EncTables& grid, size_t n) {
  const size_t cap = 2 * n + 8 * kLanes + 16;
  // Not zero-filled: words and states are written below `end` in turn.
  const auto buf = std::make_unique_for_overwrite<uint8_t[]>(cap);
  uint8_t* const end = buf.get() + cap;
  uint8_t* ptr = end;
  uint32_t x[kLanes];
  for (int k = 0; k < kLanes; ++k) x[k] = rans::kStateLow;
  // The context of symbol t is the previous symbol of its lane (t - kLanes), or token 0 at a lane's start.
  const auto put = [&](uint32_t& state, size_t t) {
    const int cell = t >= kLanes ? syms[t - kLanes] >> 3 : 0;
    state = rans::EncPut(state, grid.cell[cell][syms[t]], &ptr);
  };
  const size_t full = n / kLanes * kLanes;
#pragma GCC unroll 8
  for (int k = kLanes - 1; k >= 0; --k) {
    if (full + k < n) put(x[k], full + k);
  }
  size_t t = full;
  if constexpr (kLanes == kSimdLanes) {
    if (full > kLanes && SimdEnabled()) {
      // Rows 1.. (row 0 has no previous tokens): the cell of value t is the token of value t - kLanes.
      SimdEncodeSetup setup;
      setup.symbols = grid.symbols.data();
      setup.alphabet_log2 = std::countr_zero(static_cast<unsigned>(kAlphabet));
      setup.rows = map.rows;
      setup.cell_shift = 3;
      ptr = EncodeRowsSimd(setup, syms + kLanes, syms, full / kLanes - 1, x, ptr);
      t = kLanes;
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

template <typename F>
bool EncodeStandaloneImpl(const uint8_t* data, size_t n, const Layout& layout, uint64_t give_up_bits,
                          Coded* out) {
  const StandaloneParams<F> p(layout);
  const int lanes = layout.lanes();
  const auto syms = std::make_unique_for_overwrite<uint8_t[]>(n);  // every one written below
  GridCounts counts(kStandaloneRows, 1, kAlphabet);
  BulkBitWriter bits(n * sizeof(typename F::Word));
  size_t i = 0;
  if (SimdEnabled()) {
    SimdStandaloneSetup setup;
    setup.tz = p.tz;
    setup.mb = p.mb;
    setup.maxe = static_cast<int>(p.maxe);
    BulkBitWriter::Cursor c = bits.Begin();
    i = StandaloneSymbolsSimd(KindOf<F>(), setup, data, n, syms.get(), &c);
    bits.End(c);
  }
  for (; i < n; ++i) {
    uint32_t raw;
    int nraw;
    syms[i] = static_cast<uint8_t>(ValueSymbol<F>(p, Load<F>(data, i), &raw, &nraw));
    bits.Put(raw, nraw);
  }
  // The context of value i is its lane's previous token (0 for the lane's first value).
  const size_t L = std::min(static_cast<size_t>(lanes), n);
  uint32_t* const c = counts.counts.data();
  for (i = 0; i < L; ++i) ++c[syms[i]];
  for (; i < n; ++i) ++c[static_cast<size_t>(syms[i - L] >> 3) * kAlphabet + syms[i]];
  uint64_t cost_bits = 0;
  const ContextMap map = ChooseContextMap(counts, 0, &cost_bits);
  if (give_up_bits != 0 && cost_bits + bits.bits() > give_up_bits) return false;
  EncTables grid;
  WriteTables(counts, map, &out->tables, &grid);
  switch (lanes) {
    case 32: out->words = CodeSymbols<32>(syms.get(), map, grid, n); break;
    case 8: out->words = CodeSymbols<8>(syms.get(), map, grid, n); break;
    default: out->words = CodeSymbols<1>(syms.get(), map, grid, n); break;
  }
  out->raw = bits.Finish();
  return true;
}

template <typename F>
struct StandaloneDecoder {
  StandaloneDecoder(const Layout& layout, const DecTables& tables, std::string_view words,
                    std::string_view raw, uint8_t* out)
      : p(layout),
        cells(tables.cell.data()),
        wp(reinterpret_cast<const uint8_t*>(words.data())),
        wend(wp + words.size()),
        bits(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()),
        out(out) {}

  template <bool kChecked>
  [[gnu::always_inline]] void Value(uint32_t* x, uint32_t* prev, size_t i) {
    const uint32_t sym = rans::DecGet(x, cells[*prev]);
    if constexpr (kChecked) {
      rans::DecRenormChecked(x, &wp, wend, &overrun);
      bits.RefillChecked();
    } else {
      rans::DecRenorm(x, &wp);
      bits.Refill();
    }
    const uint32_t tok = sym >> 3;
    const uint32_t top = sym & 3;
    uint32_t fm;
    if (tok < kTokZero) [[likely]] {
      fm = ((p.maxe - tok) << p.mb) | (top << p.low) | bits.Get(p.low);
    } else if (tok == kTokZero) {
      fm = 0;
    } else {
      const uint32_t v = bits.Get(F::kExpBits + p.low);
      fm = ((v >> p.low) << p.mb) | (top << p.low) | (v & ((uint32_t{1} << p.low) - 1));
    }
    Store<F>(out, i, ((sym >> 2 & 1) << (F::kWidth - 1)) | (fm << p.tz));
    *prev = tok;
  }

  const StandaloneParams<F> p;
  const rans::DecEntry* const* cells;
  const uint8_t* wp;
  const uint8_t* wend;
  BulkBitReader bits;
  uint8_t* out;
  bool overrun = false;
};

template <typename F, int kLanes>
bool DecodeLanes(const Layout& layout, const DecTables& tables, std::string_view words, std::string_view raw,
                 size_t n, uint8_t* out, Checksum4x64State* check) {
  if (words.size() < 4 * kLanes || words.size() % 2 != 0) return false;
  StandaloneDecoder<F> d(layout, tables, words.substr(4 * kLanes), raw, out);
  uint32_t x[kLanes];
  uint32_t prev[kLanes] = {};
  for (int k = 0; k < kLanes; ++k) {
    std::memcpy(&x[k], words.data() + 4 * k, 4);
    if (x[k] < rans::kStateLow) return false;
  }
  size_t i = 0;
  if constexpr (kLanes == kSimdLanes) {
    if (SimdEnabled()) {
      SimdStandaloneSetup setup;
      setup.tz = d.p.tz;
      setup.mb = d.p.mb;
      setup.maxe = static_cast<int>(d.p.maxe);
      setup.rows = tables.map.rows;
      setup.tables = tables.storage.data();
      const auto* r = reinterpret_cast<const uint8_t*>(raw.data());
      SimdStreams s{d.wp, d.wend, r, r + raw.size(), 0};
      i = DecodeStandaloneRowsSimd(KindOf<F>(), setup, x, prev, out, n, &s, check);
      d.wp = s.words;
      d.bits.Seek(s.raw, s.raw_bit);
    }
  }
  // Each row reads at most one word and 4 raw bytes per lane.
  for (; i + kLanes <= n; i += kLanes) {
    if (static_cast<size_t>(d.wend - d.wp) < 2 * kLanes || d.bits.BytesLeft() < 4 * kLanes + 16) break;
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k) d.template Value<false>(&x[k], &prev[k], i + k);
  }
  for (; i < n; i += kLanes) {
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k) {
      if (i + k >= n) break;
      d.template Value<true>(&x[k], &prev[k], i + k);
    }
    if (d.overrun) return false;
  }
  for (int k = 0; k < kLanes; ++k) {
    if (x[k] != rans::kStateLow) return false;
  }
  return !d.overrun && d.wp == d.wend && d.bits.FinishedExactly();
}

template <typename F>
Status ReadTablesImpl(const Layout& layout, std::string_view* in, DecTables* tables) {
  const StandaloneParams<F> p(layout);
  bool valid[kAlphabet];
  for (uint32_t s = 0; s < kAlphabet; ++s) {
    const uint32_t tok = s >> 3;
    const uint32_t top = s & 3;
    const bool top_ok = top < (uint32_t{1} << p.top_bits);
    valid[s] = tok == kTokZero ? top == 0 : top_ok && (tok == kTokEscape || tok <= p.maxe);
  }
  return ReadTables(in, kStandaloneRows, 1, kAlphabet, valid, tables);
}

template <typename F>
uint64_t EstimateImpl(const uint8_t* data, size_t n, const Layout& layout) {
  // Blocks of 64 values spread over the input, order-0 counts (the contexts only lower the cost).
  constexpr size_t kBlock = 64;
  constexpr size_t kBlocks = 128;
  const StandaloneParams<F> p(layout);
  std::vector<uint32_t> counts(kAlphabet);
  uint64_t raw_bits = 0;
  size_t sampled = 0;
  const size_t step = std::max(kBlock, n / kBlocks);
  for (size_t b = 0; b < n; b += step) {
    for (size_t i = b; i < std::min(n, b + kBlock); ++i, ++sampled) {
      uint32_t raw;
      int nraw;
      ++counts[ValueSymbol<F>(p, Load<F>(data, i), &raw, &nraw)];
      raw_bits += static_cast<uint64_t>(nraw);
    }
  }
  if (sampled == 0) return 0;
  const uint64_t bits = (rans::EntropyQ16(counts.data(), 0, kAlphabet - 1) >> 16) + raw_bits;
  return bits * n / sampled;
}

}  // namespace

#define DS_FLOAT_RANS_DISPATCH(kind, call) \
  switch (kind) {                          \
    case FloatKind::kBF16: {               \
      using F = BF16Format;                \
      return call;                         \
    }                                      \
    case FloatKind::kF16: {                \
      using F = F16Format;                 \
      return call;                         \
    }                                      \
    case FloatKind::kF32: {                \
      using F = F32Format;                 \
      return call;                         \
    }                                      \
  }

bool EncodeStandalone(FloatKind kind, const uint8_t* data, size_t n, const Layout& layout,
                      uint64_t give_up_bits, Coded* out) {
  DS_FLOAT_RANS_DISPATCH(kind, EncodeStandaloneImpl<F>(data, n, layout, give_up_bits, out));
  return false;
}

Status ReadStandaloneTables(FloatKind kind, const Layout& layout, std::string_view* in, DecTables* tables) {
  DS_FLOAT_RANS_DISPATCH(kind, ReadTablesImpl<F>(layout, in, tables));
  return InvalidArgument("float rans: unknown float kind");
}

bool DecodeStandalone(FloatKind kind, const Layout& layout, const DecTables& tables, std::string_view words,
                      std::string_view raw, size_t n, uint8_t* out, Checksum4x64State* check) {
  if (layout.lanes_log2 == 5) {
    DS_FLOAT_RANS_DISPATCH(kind, (DecodeLanes<F, 32>(layout, tables, words, raw, n, out, check)));
  } else if (layout.lanes_log2 == 3) {
    DS_FLOAT_RANS_DISPATCH(kind, (DecodeLanes<F, 8>(layout, tables, words, raw, n, out, check)));
  } else if (layout.lanes_log2 == 0) {
    DS_FLOAT_RANS_DISPATCH(kind, (DecodeLanes<F, 1>(layout, tables, words, raw, n, out, check)));
  }
  return false;
}

uint64_t EstimateStandaloneBits(FloatKind kind, const uint8_t* data, size_t n, const Layout& layout) {
  DS_FLOAT_RANS_DISPATCH(kind, EstimateImpl<F>(data, n, layout));
  return 0;
}

}  // namespace deltastore::float_rans
