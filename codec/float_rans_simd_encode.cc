// AVX-512 passes of the fast float coder's encoder (codec/float_rans.h), run where SimdEnabled(): the
// scan of the words, the first passes of the delta and standalone models, and the rANS coding of rows of
// 32 values. Each gives the bytes of its scalar counterpart (Scan in float_rans.cc, Analyse in
// float_rans_delta.cc, EncodeStandaloneImpl in float_rans_standalone.cc, CodeSymbols in both).
#include <algorithm>
#include <bit>

#include "codec/float_rans_avx512.h"
#include "codec/float_rans_model.h"
#include "codec/float_rans_simd.h"

namespace deltastore::float_rans {
namespace {

// Words of kWidth bits at p as 16 32-bit lanes.
template <int kWidth>
DS_AVX512_INLINE inline __m512i Load16(const uint8_t* p) {
  if constexpr (kWidth == 32) return _mm512_loadu_si512(p);
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The 16 raw fields of kWidth-bit values (at most kWidth - 1 bits each) in lane order, in pairs (even lane
// low) and, 16-bit kinds, pairs of pairs: each Put waits on the one before, the fewer the better. A group
// over Cursor::kMaxPutBits (only with long fields) goes in its halves.
template <int kWidth>
DS_AVX512_INLINE inline void PutRaw(__m512i raw, __m512i nraw, BulkBitWriter::Cursor* bits) {
  constexpr int kMax = BulkBitWriter::Cursor::kMaxPutBits;
  const __m512i lo_mask = _mm512_set1_epi64(0xFFFFFFFF);
  const __m512i n_lo = _mm512_and_si512(nraw, lo_mask);
  const __m512i pair =
      _mm512_or_si512(_mm512_and_si512(raw, lo_mask), _mm512_sllv_epi64(_mm512_srli_epi64(raw, 32), n_lo));
  alignas(64) uint64_t pv[8];
  alignas(64) uint64_t pn[8];
  _mm512_store_si512(pv, pair);
  _mm512_store_si512(pn, _mm512_add_epi64(n_lo, _mm512_srli_epi64(nraw, 32)));
  if constexpr (kWidth == 16) {
    for (int k = 0; k < 8; k += 2) {
      const int n0 = static_cast<int>(pn[k]);
      const int n = n0 + static_cast<int>(pn[k + 1]);
      if (n <= kMax) [[likely]] {
        bits->Put(pv[k] | (pv[k + 1] << n0), n);
      } else {
        bits->Put(pv[k], n0);
        bits->Put(pv[k + 1], n - n0);
      }
    }
  } else {
    alignas(64) uint32_t n_first[16];
    _mm512_store_si512(n_first, nraw);
    for (int k = 0; k < 8; ++k) {
      const int n = static_cast<int>(pn[k]);
      if (n <= kMax) [[likely]] {
        bits->Put(pv[k], n);
      } else {
        const int n0 = static_cast<int>(n_first[2 * k]);
        bits->Put(pv[k] & ((uint64_t{1} << n0) - 1), n0);
        bits->Put(pv[k] >> n0, n - n0);
      }
    }
  }
}

// The delta encoder's first pass, 16 values at a time (the scalar one: AnalyseValue in
// float_rans_delta.cc).
template <int kExp, int kMan>
struct AnalyseKernel {
  static constexpr int kWidth = 1 + kExp + kMan;
  static constexpr int kMagMask = static_cast<int>((uint32_t{1} << (kWidth - 1)) - 1);
  static constexpr int kSign = static_cast<int>(uint32_t{1} << (kWidth - 1));
  static constexpr int kAlphabet = 4 * kWidth;
  static constexpr int kEscZero = kAlphabet + kAlphabet / 2;
  static constexpr int kEscOther = 2 * kAlphabet - 1;

  DS_AVX512_INLINE static void Half(const SimdDeltaSetup& p, const uint8_t* data, const uint8_t* base,
                                    __m512i* avg, uint8_t* syms, uint8_t* cells, uint16_t* keys,
                                    __m128i alphabet_log2, BulkBitWriter::Cursor* bits) {
    const __m512i mag_mask = _mm512_set1_epi32(kMagMask);
    const __m512i zero = _mm512_setzero_si512();
    const __m512i b = Load16<kWidth>(base);
    const __m512i f = Load16<kWidth>(data);
    const __m128i tz = _mm_cvtsi32_si128(p.tz);
    const __m512i bm = _mm512_srl_epi32(_mm512_and_si512(b, mag_mask), tz);
    const __m512i fm = _mm512_srl_epi32(_mm512_and_si512(f, mag_mask), tz);
    const __m512i be = _mm512_srli_epi32(_mm512_and_si512(b, mag_mask), kMan);
    __m512i row = _mm512_sub_epi32(_mm512_set1_epi32(p.maxe), be);
    row = _mm512_min_epi32(_mm512_max_epi32(row, zero), _mm512_set1_epi32(23));
    __m512i col = _mm512_sub_epi32(_mm512_add_epi32(*avg, _mm512_set1_epi32(8 + 16 * (9 - p.mb))),
                                   _mm512_slli_epi32(be, 4));
    col = _mm512_min_epi32(_mm512_max_epi32(_mm512_srai_epi32(col, 4), zero), _mm512_set1_epi32(7));
    const __m512i cell = _mm512_add_epi32(_mm512_slli_epi32(row, 3), col);
    // Same sign: |d|, its length, the bit below the leading one.
    const __m512i d = _mm512_sub_epi32(fm, bm);
    const __m512i ad = _mm512_abs_epi32(d);
    const __m512i len = _mm512_sub_epi32(_mm512_set1_epi32(32), _mm512_lzcnt_epi32(ad));
    __m512i nraw = _mm512_max_epi32(_mm512_sub_epi32(len, _mm512_set1_epi32(2)), zero);
    const __mmask16 long_d = _mm512_cmpge_epi32_mask(len, _mm512_set1_epi32(2));
    const __m512i hb = _mm512_maskz_and_epi32(long_d, _mm512_srlv_epi32(ad, nraw), _mm512_set1_epi32(1));
    __m512i sym = _mm512_or_si512(_mm512_slli_epi32(len, 2), hb);
    sym = _mm512_mask_or_epi32(sym, _mm512_cmplt_epi32_mask(d, zero), sym, _mm512_set1_epi32(2));
    __m512i raw = _mm512_andnot_si512(_mm512_sllv_epi32(_mm512_set1_epi32(-1), nraw), ad);
    __m512i a = _mm512_add_epi32(be, len);
    const __mmask16 flip = _mm512_test_epi32_mask(_mm512_xor_si512(b, f), _mm512_set1_epi32(kSign));
    if (flip != 0) [[unlikely]] {
      const __m512i s = _mm512_sub_epi32(
          _mm512_add_epi32(_mm512_srl_epi32(fm, _mm_cvtsi32_si128(p.mb)), _mm512_set1_epi32(kEscZero)), be);
      const __mmask16 near = flip & _mm512_cmpge_epi32_mask(s, _mm512_set1_epi32(kAlphabet)) &
                             _mm512_cmplt_epi32_mask(s, _mm512_set1_epi32(kEscOther));
      const __mmask16 far = flip & ~near;
      sym = _mm512_mask_mov_epi32(sym, near, s);
      sym = _mm512_mask_mov_epi32(sym, far, _mm512_set1_epi32(kEscOther));
      const __m512i man =
          _mm512_andnot_si512(_mm512_sll_epi32(_mm512_set1_epi32(-1), _mm_cvtsi32_si128(p.mb)), fm);
      raw = _mm512_mask_mov_epi32(raw, near, man);
      raw = _mm512_mask_mov_epi32(raw, far, fm);
      nraw = _mm512_mask_mov_epi32(nraw, near, _mm512_set1_epi32(p.mb));
      nraw = _mm512_mask_mov_epi32(nraw, far, _mm512_set1_epi32(kExp + p.mb));
      a = _mm512_mask_mov_epi32(a, flip, _mm512_add_epi32(be, _mm512_set1_epi32(p.mb + 1)));
    }
    *avg = _mm512_add_epi32(*avg, _mm512_srai_epi32(_mm512_sub_epi32(_mm512_slli_epi32(a, 4), *avg), 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(syms), _mm512_cvtepi32_epi8(sym));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(cells), _mm512_cvtepi32_epi8(cell));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys),
                        _mm512_cvtepi32_epi16(_mm512_or_si512(_mm512_sll_epi32(cell, alphabet_log2), sym)));
    PutRaw<kWidth>(raw, nraw, bits);
  }
};

template <int kExp, int kMan>
DS_AVX512 size_t AnalyseRows(const SimdDeltaSetup& p, const uint8_t* data, const uint8_t* base, size_t n,
                             int* avg32, uint8_t* syms, uint8_t* cells, uint32_t* counts, int alphabet_log2,
                             BulkBitWriter::Cursor* bits) {
  constexpr size_t kBytes = (1 + kExp + kMan) / 8;
  // Counted a block at a time after the block's values, from their keys cell << alphabet_log2 | symbol
  // (counting in the values' loop would wait on every count's address).
  constexpr size_t kBlock = 1024;
  alignas(64) uint16_t keys[kBlock];
  const __m128i shift = _mm_cvtsi32_si128(alphabet_log2);
  __m512i a0 = _mm512_loadu_si512(avg32);
  __m512i a1 = _mm512_loadu_si512(avg32 + 16);
  BulkBitWriter::Cursor c = *bits;  // in registers: the count stores cannot change a local
  size_t i = 0;
  while (i + kSimdLanes <= n) {
    const size_t end = std::min(n / kSimdLanes * kSimdLanes, i + kBlock);
    uint16_t* k = keys;
    for (; i < end; i += kSimdLanes, k += kSimdLanes) {
      AnalyseKernel<kExp, kMan>::Half(p, data + kBytes * i, base + kBytes * i, &a0, syms + i, cells + i, k,
                                      shift, &c);
      AnalyseKernel<kExp, kMan>::Half(p, data + kBytes * (i + 16), base + kBytes * (i + 16), &a1,
                                      syms + i + 16, cells + i + 16, k + 16, shift, &c);
    }
    for (const uint16_t* key = keys; key < k; ++key) ++counts[*key];
  }
  *bits = c;
  _mm512_storeu_si512(avg32, a0);
  _mm512_storeu_si512(avg32 + 16, a1);
  return i;
}

// The standalone encoder's first pass (ValueSymbol in float_rans_standalone.cc), 16 values at a time.
template <int kExp, int kMan>
DS_AVX512_INLINE inline void StandaloneHalf(const SimdStandaloneSetup& p, const uint8_t* data, uint8_t* syms,
                                            BulkBitWriter::Cursor* bits) {
  constexpr int kWidth = 1 + kExp + kMan;
  const int top_bits = p.mb < 2 ? p.mb : 2;
  const int low = p.mb - top_bits;
  const __m512i f = Load16<kWidth>(data);
  const __m512i fm = _mm512_srl_epi32(_mm512_and_si512(f, _mm512_set1_epi32((1u << (kWidth - 1)) - 1)),
                                      _mm_cvtsi32_si128(p.tz));
  const __m512i e = _mm512_srl_epi32(fm, _mm_cvtsi32_si128(p.mb));
  const __m512i low_bits =
      _mm512_andnot_si512(_mm512_sll_epi32(_mm512_set1_epi32(-1), _mm_cvtsi32_si128(low)), fm);
  const __m512i top =
      _mm512_and_si512(_mm512_srl_epi32(fm, _mm_cvtsi32_si128(low)), _mm512_set1_epi32((1 << top_bits) - 1));
  const __m512i tok_normal = _mm512_sub_epi32(_mm512_set1_epi32(p.maxe), e);
  const __mmask16 zero = _mm512_cmpeq_epi32_mask(fm, _mm512_setzero_si512());
  const __mmask16 normal = ~zero & _mm512_cmplt_epu32_mask(tok_normal, _mm512_set1_epi32(kTokZero));
  const __mmask16 esc = ~zero & ~normal;
  __m512i tok = _mm512_mask_mov_epi32(_mm512_set1_epi32(kTokZero), normal, tok_normal);
  tok = _mm512_mask_mov_epi32(tok, esc, _mm512_set1_epi32(kTokEscape));
  __m512i raw = _mm512_maskz_mov_epi32(normal, low_bits);
  raw = _mm512_mask_or_epi32(raw, esc, _mm512_sll_epi32(e, _mm_cvtsi32_si128(low)), low_bits);
  __m512i nraw = _mm512_maskz_mov_epi32(normal, _mm512_set1_epi32(low));
  nraw = _mm512_mask_mov_epi32(nraw, esc, _mm512_set1_epi32(kExp + low));
  const __m512i sign = _mm512_srli_epi32(f, kWidth - 1);
  const __m512i sym =
      _mm512_or_si512(_mm512_or_si512(_mm512_slli_epi32(tok, 3), _mm512_slli_epi32(sign, 2)), top);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(syms), _mm512_cvtepi32_epi8(sym));
  PutRaw<kWidth>(raw, nraw, bits);
}

template <int kExp, int kMan>
DS_AVX512 size_t StandaloneValues(const SimdStandaloneSetup& setup, const uint8_t* data, size_t n,
                                  uint8_t* syms, BulkBitWriter::Cursor* bits) {
  constexpr size_t kBytes = (1 + kExp + kMan) / 8;
  const SimdStandaloneSetup p = setup;  // locals, as in AnalyseRows
  BulkBitWriter::Cursor c = *bits;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) StandaloneHalf<kExp, kMan>(p, data + kBytes * i, syms + i, &c);
  *bits = c;
  return i;
}

// OR of the words and their largest magnitude, 16 words a step.
template <int kWidth>
DS_AVX512 size_t Scan(const uint8_t* p, size_t n, uint32_t* or_all, uint32_t* max_mag) {
  const __m512i mag = _mm512_set1_epi32(static_cast<int>((uint32_t{1} << (kWidth - 1)) - 1));
  __m512i o = _mm512_setzero_si512();
  __m512i m = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = Load16<kWidth>(p + i * (kWidth / 8));
    o = _mm512_or_si512(o, v);
    m = _mm512_max_epu32(m, _mm512_and_si512(v, mag));
  }
  *or_all = static_cast<uint32_t>(_mm512_reduce_or_epi32(o));
  *max_mag = _mm512_reduce_max_epu32(m);
  return i;
}

// The rANS coding of 16 lanes of one row, as rans::EncPut: their words go below *ptr in lane order.
// idx: the symbols' EncSymbol indices. x / freq is worked out in 64-bit lanes, even and odd lanes apart.
DS_AVX512_INLINE inline __m512i EncodeHalf(__m512i x, __m512i idx, const rans::EncSymbol* symbols,
                                           uint8_t** ptr) {
  static_assert(sizeof(rans::EncSymbol) == 8 && offsetof(rans::EncSymbol, info) == 4);
  // mult | info << 32 of the even lanes (64-bit lane j: lane 2j) and of the odd ones.
  const __m512i e0 = _mm512_i32gather_epi64(_mm512_cvtepi64_epi32(idx), symbols, 8);
  const __m512i e1 = _mm512_i32gather_epi64(_mm512_cvtepi64_epi32(_mm512_srli_epi64(idx, 32)), symbols, 8);
  const __m512i info = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(e0, 32), e1);
  const __m512i freq = _mm512_and_si512(info, _mm512_set1_epi32(rans::kEncFreqMask));
  const __mmask16 out = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(x, 32 - rans::kProbBits), freq);
  const int words = _mm_popcnt_u32(out);
  *ptr -= 2 * words;
  const __m256i w = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(out, x));
  _mm512_mask_storeu_epi16(*ptr, (1u << words) - 1, _mm512_castsi256_si512(w));
  x = _mm512_mask_srli_epi32(x, out, x, 16);
  // q = (x + (x * mult >> 32)) >> shift.
  constexpr int kShiftAt = 32 + rans::kEncDivShift;
  const __m512i x0 = _mm512_and_si512(x, _mm512_set1_epi64(0xFFFFFFFF));
  const __m512i x1 = _mm512_srli_epi64(x, 32);
  const __m512i q0 = _mm512_srlv_epi64(_mm512_add_epi64(x0, _mm512_srli_epi64(_mm512_mul_epu32(x0, e0), 32)),
                                       _mm512_srli_epi64(e0, kShiftAt));
  const __m512i q1 = _mm512_srlv_epi64(_mm512_add_epi64(x1, _mm512_srli_epi64(_mm512_mul_epu32(x1, e1), 32)),
                                       _mm512_srli_epi64(e1, kShiftAt));
  const __m512i q = _mm512_mask_blend_epi32(0xAAAA, q0, _mm512_slli_epi64(q1, 32));
  const __m512i cum =
      _mm512_and_si512(_mm512_srli_epi32(info, rans::kEncCumShift), _mm512_set1_epi32(rans::kEncCumMask));
  const __m512i cmpl = _mm512_sub_epi32(_mm512_set1_epi32(rans::kProbScale), freq);
  return _mm512_add_epi32(_mm512_add_epi32(x, cum), _mm512_mullo_epi32(q, cmpl));
}

// The EncSymbol indices of 16 values: (table << alphabet_log2) + symbol, the table from the cell as
// ContextMap::Table.
DS_AVX512_INLINE inline __m512i SymbolIndices(const SimdEncodeSetup& p, const uint8_t* syms,
                                              const uint8_t* cells) {
  const __m512i sym = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(syms)));
  __m512i cell = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cells)));
  cell = _mm512_srl_epi32(cell, _mm_cvtsi32_si128(p.cell_shift));
  const __m512i row = _mm512_min_epu32(_mm512_srl_epi32(cell, _mm_cvtsi32_si128(p.grid_cols_log2)),
                                       _mm512_set1_epi32(p.rows - 1));
  const __m512i col = _mm512_srl_epi32(_mm512_and_si512(cell, _mm512_set1_epi32((1 << p.grid_cols_log2) - 1)),
                                       _mm_cvtsi32_si128(p.col_shift));
  const __m512i table =
      _mm512_add_epi32(_mm512_sll_epi32(row, _mm_cvtsi32_si128(p.grid_cols_log2 - p.col_shift)), col);
  return _mm512_add_epi32(_mm512_sll_epi32(table, _mm_cvtsi32_si128(p.alphabet_log2)), sym);
}

DS_AVX512 uint8_t* EncodeRows(const SimdEncodeSetup& setup, const uint8_t* syms, const uint8_t* cells,
                              size_t rows, uint32_t* x32, uint8_t* ptr) {
  const SimdEncodeSetup p = setup;  // locals: the word stores cannot change them
  const rans::EncSymbol* const symbols = p.symbols;
  __m512i x0 = _mm512_loadu_si512(x32);
  __m512i x1 = _mm512_loadu_si512(x32 + 16);
  for (size_t r = rows; r > 0;) {
    --r;
    const size_t t = r * kSimdLanes;
    // Backwards: lanes 31..16, then 15..0, whose words go in front.
    x1 = EncodeHalf(x1, SymbolIndices(p, syms + t + 16, cells + t + 16), symbols, &ptr);
    x0 = EncodeHalf(x0, SymbolIndices(p, syms + t, cells + t), symbols, &ptr);
  }
  _mm512_storeu_si512(x32, x0);
  _mm512_storeu_si512(x32 + 16, x1);
  return ptr;
}

}  // namespace

size_t AnalyseDeltaRowsSimd(FloatKind kind, const SimdDeltaSetup& setup, const uint8_t* data,
                            const uint8_t* base, size_t n, int* avg16, uint8_t* syms, uint8_t* cells,
                            uint32_t* counts, int alphabet, BulkBitWriter::Cursor* bits) {
  const int alphabet_log2 = std::countr_zero(static_cast<unsigned>(alphabet));
  switch (kind) {
    case FloatKind::kBF16:
      return AnalyseRows<8, 7>(setup, data, base, n, avg16, syms, cells, counts, alphabet_log2, bits);
    case FloatKind::kF16:
      return AnalyseRows<5, 10>(setup, data, base, n, avg16, syms, cells, counts, alphabet_log2, bits);
    case FloatKind::kF32:
      return AnalyseRows<8, 23>(setup, data, base, n, avg16, syms, cells, counts, alphabet_log2, bits);
  }
  return 0;
}

size_t StandaloneSymbolsSimd(FloatKind kind, const SimdStandaloneSetup& setup, const uint8_t* data, size_t n,
                             uint8_t* syms, BulkBitWriter::Cursor* bits) {
  switch (kind) {
    case FloatKind::kBF16: return StandaloneValues<8, 7>(setup, data, n, syms, bits);
    case FloatKind::kF16: return StandaloneValues<5, 10>(setup, data, n, syms, bits);
    case FloatKind::kF32: return StandaloneValues<8, 23>(setup, data, n, syms, bits);
  }
  return 0;
}

size_t ScanSimd(int width, const uint8_t* p, size_t n, uint32_t* or_all, uint32_t* max_mag) {
  return width == 32 ? Scan<32>(p, n, or_all, max_mag) : Scan<16>(p, n, or_all, max_mag);
}

uint8_t* EncodeRowsSimd(const SimdEncodeSetup& setup, const uint8_t* syms, const uint8_t* cells, size_t rows,
                        uint32_t* x, uint8_t* ptr) {
  return EncodeRows(setup, syms, cells, rows, x, ptr);
}

}  // namespace deltastore::float_rans
