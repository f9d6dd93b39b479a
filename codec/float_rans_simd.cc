#include "codec/float_rans_simd.h"

#include <atomic>

#include "codec/float_rans_avx512.h"

namespace deltastore::float_rans {
namespace {

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

std::atomic<bool>& Enabled() {
  static std::atomic<bool> on{CpuHasAvx512()};
  return on;
}

// A row reads at most 2 x 16 words (64 bytes) and, per half, 64 raw bytes at an offset of at most 31
// (16-bit kinds), or (F32) two loads of 64 bytes at offsets of at most 62 and 62 + 31.
constexpr ptrdiff_t kWordMargin = 64;
template <int kWidth>
constexpr ptrdiff_t kRawMargin = kWidth == 16 ? 128 : 192;

// One symbol per lane from table[lane] (table numbers, kProbScale entries each), the state update and
// the renormalisation: lanes that need a word take the next ones in lane order.
DS_AVX512_INLINE inline __m512i DecodeSymbols(__m512i* x, __m512i table, const rans::DecEntry* t,
                                              SimdStreams* s) {
  const __m512i slot = _mm512_and_si512(*x, _mm512_set1_epi32(rans::kProbMask));
  const __m512i idx = _mm512_add_epi32(_mm512_slli_epi32(table, rans::kProbBits), slot);
  const __m512i e = _mm512_i32gather_epi32(idx, t, 4);
  const __m512i freq = _mm512_add_epi32(_mm512_srli_epi32(e, 20), _mm512_set1_epi32(1));
  const __m512i bias = _mm512_and_si512(_mm512_srli_epi32(e, 8), _mm512_set1_epi32(rans::kProbMask));
  __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(*x, rans::kProbBits)), bias);
  const __mmask16 k = _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(rans::kStateLow));
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s->words)));
  v = _mm512_or_si512(_mm512_mask_slli_epi32(v, k, v, 16), _mm512_maskz_expand_epi32(k, w));
  s->words += 2 * _mm_popcnt_u32(k);
  *x = v;
  return _mm512_and_si512(e, _mm512_set1_epi32(0xFF));
}

// Inclusive prefix sum of the 16 lanes (lane 15: the sum of all).
DS_AVX512_INLINE inline __m512i InclusiveSum(__m512i v) {
  const __m512i zero = _mm512_setzero_si512();
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 15));
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 14));
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 12));
  return _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 8));
}

// Moves the raw stream past the fields whose lengths' inclusive sum is `incl`.
DS_AVX512_INLINE inline void SkipRaw(__m512i incl, SimdStreams* s) {
  const int total = s->raw_bit + _mm_extract_epi32(_mm512_extracti32x4_epi32(incl, 3), 3);
  s->raw += total >> 3;
  s->raw_bit = total & 7;
}

// Raw fields of nraw[k] bits, lane 0 first, from the bit stream at s. A field and its offset in its first
// byte fit 32 bits (nraw <= 15 for the 16-bit kinds), 16 fields fit 31 bytes after s->raw.
DS_AVX512_INLINE inline __m512i RawFields(__m512i nraw, SimdStreams* s) {
  const __m512i incl = InclusiveSum(nraw);
  const __m512i off = _mm512_add_epi32(_mm512_sub_epi32(incl, nraw), _mm512_set1_epi32(s->raw_bit));
  const __m512i bytes = _mm512_loadu_si512(s->raw);
  const __m512i at =
      _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(off, 3), _mm512_set1_epi32(0x01010101)),
                       _mm512_set1_epi32(0x03020100));
  __m512i v = _mm512_permutexvar_epi8(at, bytes);
  v = _mm512_srlv_epi32(v, _mm512_and_si512(off, _mm512_set1_epi32(7)));
  v = _mm512_andnot_si512(_mm512_sllv_epi32(_mm512_set1_epi32(-1), nraw), v);
  SkipRaw(incl, s);
  return v;
}

// F32: raw fields of up to 31 bits (with their offset in the first byte, more than 32 bits), so each group
// of 8 lanes is cut as 64-bit words from a 64-byte load of its own.
DS_AVX512_INLINE inline __m512i Fields64(__m512i byte_at, __m512i shift, __m512i nraw, const uint8_t* from) {
  const __m512i at = _mm512_add_epi64(_mm512_or_si512(byte_at, _mm512_slli_epi64(byte_at, 32)),
                                      _mm512_set1_epi64(0x0706050403020100));
  __m512i v = _mm512_permutexvar_epi8(at, _mm512_loadu_si512(from));
  v = _mm512_srlv_epi64(v, shift);
  return _mm512_andnot_si512(_mm512_sllv_epi64(_mm512_set1_epi64(-1), nraw), v);
}

// Lanes 0..7 or 8..15, widened to 64 bits.
DS_AVX512_INLINE inline __m512i Low8(__m512i v) {
  return _mm512_cvtepu32_epi64(_mm512_castsi512_si256(v));
}
DS_AVX512_INLINE inline __m512i High8(__m512i v) {
  return _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(v, 1));
}

DS_AVX512_INLINE inline __m512i RawFields32(__m512i nraw, SimdStreams* s) {
  const __m512i incl = InclusiveSum(nraw);
  const __m512i off = _mm512_add_epi32(_mm512_sub_epi32(incl, nraw), _mm512_set1_epi32(s->raw_bit));
  // Lanes 8..15 read from the byte holding lane 8's first bit.
  const int hi_byte = _mm_cvtsi128_si32(_mm512_extracti32x4_epi32(off, 2)) >> 3;
  __m512i byte_at = _mm512_srli_epi32(off, 3);
  byte_at = _mm512_mask_sub_epi32(byte_at, 0xFF00, byte_at, _mm512_set1_epi32(hi_byte));
  byte_at = _mm512_mullo_epi32(byte_at, _mm512_set1_epi32(0x01010101));  // in each byte
  const __m512i shift = _mm512_and_si512(off, _mm512_set1_epi32(7));
  const __m512i v0 = Fields64(Low8(byte_at), Low8(shift), Low8(nraw), s->raw);
  const __m512i v1 = Fields64(High8(byte_at), High8(shift), High8(nraw), s->raw + hi_byte);
  SkipRaw(incl, s);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(v0)), _mm512_cvtepi64_epi32(v1), 1);
}

// The 16 values of a kind of kWidth bits at p, as 32-bit lanes, and back.
template <int kWidth>
DS_AVX512_INLINE inline __m512i LoadWords(const uint8_t* p) {
  if constexpr (kWidth == 32) return _mm512_loadu_si512(p);
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// One 32-byte block into the checksum's four lanes (codec/checksum.h).
DS_AVX512_INLINE inline __m256i MixBlock(__m256i h, __m256i block) {
  h = _mm256_mullo_epi64(_mm256_xor_si256(h, block), _mm256_set1_epi64x(static_cast<int64_t>(kChecksumMul)));
  return _mm256_xor_si256(h, _mm256_srli_epi64(h, 29));
}
// Stores the 16 values and mixes their bytes (one or two whole blocks) into the checksum lanes `h`.
template <int kWidth>
DS_AVX512_INLINE inline void StoreWords(uint8_t* p, __m512i v, __m256i* h) {
  if constexpr (kWidth == 32) {
    _mm512_storeu_si512(p, v);
    *h = MixBlock(MixBlock(*h, _mm512_castsi512_si256(v)), _mm512_extracti64x4_epi64(v, 1));
  } else {
    const __m256i w = _mm512_cvtepi32_epi16(v);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), w);
    *h = MixBlock(*h, w);
  }
}
template <int kWidth>
DS_AVX512_INLINE inline __m512i Raw(__m512i nraw, SimdStreams* s) {
  if constexpr (kWidth == 32) return RawFields32(nraw, s);
  return RawFields(nraw, s);
}

template <int kExp, int kMan>
struct DeltaKernel {
  static constexpr int kWidth = 1 + kExp + kMan;
  static constexpr uint32_t kMagMask = (uint32_t{1} << (kWidth - 1)) - 1;
  static constexpr int kSign = static_cast<int>(uint32_t{1} << (kWidth - 1));
  static constexpr int kAlphabet = 4 * kWidth;
  static constexpr int kEscZero = kAlphabet + kAlphabet / 2;  // float_rans_delta.cc
  static constexpr int kEscOther = 2 * kAlphabet - 1;

  // One vector of 16 values at index i.
  DS_AVX512_INLINE static void Half(const SimdDeltaSetup& p, __m512i* x, __m512i* avg, const uint8_t* base,
                                    uint8_t* out, SimdStreams* s, __m256i* h) {
    const __m512i b = LoadWords<kWidth>(base);
    const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi32(kMagMask));
    const __m512i be = _mm512_srli_epi32(mag, kMan);
    __m512i table = _mm512_sub_epi32(_mm512_set1_epi32(p.maxe), be);
    table = _mm512_min_epi32(_mm512_max_epi32(table, _mm512_setzero_si512()), _mm512_set1_epi32(p.rows - 1));
    table = _mm512_sll_epi32(table, _mm_cvtsi32_si128(p.cols_log2));
    if (p.nbr) {
      // ((avg16 + 8) >> 4) - be + 9 - mb, clamped to [0, 7], >> col_shift.
      __m512i col = _mm512_sub_epi32(_mm512_add_epi32(*avg, _mm512_set1_epi32(8 + 16 * (9 - p.mb))),
                                     _mm512_slli_epi32(be, 4));
      col = _mm512_srai_epi32(col, 4);
      col = _mm512_min_epi32(_mm512_max_epi32(col, _mm512_setzero_si512()), _mm512_set1_epi32(7));
      table = _mm512_add_epi32(table, _mm512_srl_epi32(col, _mm_cvtsi32_si128(p.col_shift)));
    }
    const __m512i sym = DecodeSymbols(x, table, p.tables, s);
    const __m512i len = _mm512_srli_epi32(sym, 2);
    __m512i nraw = _mm512_max_epi32(_mm512_sub_epi32(len, _mm512_set1_epi32(2)), _mm512_setzero_si512());
    const __mmask16 esc = _mm512_cmpge_epu32_mask(sym, _mm512_set1_epi32(kAlphabet));
    __mmask16 other = 0;
    if (esc != 0) [[unlikely]] {
      other = _mm512_cmpeq_epi32_mask(sym, _mm512_set1_epi32(kEscOther));
      nraw = _mm512_mask_mov_epi32(nraw, esc, _mm512_set1_epi32(p.mb));
      nraw = _mm512_mask_mov_epi32(nraw, other, _mm512_set1_epi32(kExp + p.mb));
    }
    const __m512i v = Raw<kWidth>(nraw, s);
    // |d| = lead | raw: lead = (2 | hb) << nraw for len >= 2, else len.
    const __m512i two_hb = _mm512_or_si512(_mm512_and_si512(sym, _mm512_set1_epi32(1)), _mm512_set1_epi32(2));
    __m512i lead = _mm512_sllv_epi32(two_hb, nraw);
    lead = _mm512_mask_mov_epi32(lead, _mm512_cmplt_epu32_mask(len, _mm512_set1_epi32(2)), len);
    __m512i ad = _mm512_or_si512(lead, v);
    const __mmask16 neg = _mm512_test_epi32_mask(sym, _mm512_set1_epi32(2));
    ad = _mm512_mask_sub_epi32(ad, neg, _mm512_setzero_si512(), ad);
    const __m128i tz = _mm_cvtsi32_si128(p.tz);
    __m512i fm = _mm512_add_epi32(_mm512_srl_epi32(mag, tz), ad);
    __m512i sign = _mm512_and_si512(b, _mm512_set1_epi32(kSign));
    __m512i a = _mm512_add_epi32(be, len);
    if (esc != 0) [[unlikely]] {
      // The new exponent relative to the base's, or raw with the mantissa; the sign flips.
      const __m512i fe = _mm512_sub_epi32(_mm512_add_epi32(be, sym), _mm512_set1_epi32(kEscZero));
      __m512i fe_m = _mm512_or_si512(_mm512_sll_epi32(fe, _mm_cvtsi32_si128(p.mb)), v);
      fe_m = _mm512_mask_mov_epi32(fe_m, other, v);
      fe_m = _mm512_and_si512(fe_m, _mm512_srl_epi32(_mm512_set1_epi32(kMagMask), tz));
      fm = _mm512_mask_mov_epi32(fm, esc, fe_m);
      sign = _mm512_mask_xor_epi32(sign, esc, sign, _mm512_set1_epi32(kSign));
      a = _mm512_mask_mov_epi32(a, esc, _mm512_add_epi32(be, _mm512_set1_epi32(p.mb + 1)));
    }
    const __m512i res =
        _mm512_or_si512(sign, _mm512_and_si512(_mm512_sll_epi32(fm, tz), _mm512_set1_epi32(kMagMask)));
    StoreWords<kWidth>(out, res, h);
    if (p.nbr) {
      const __m512i diff = _mm512_sub_epi32(_mm512_slli_epi32(a, 4), *avg);
      *avg = _mm512_add_epi32(*avg, _mm512_srai_epi32(diff, 4));
    }
  }
};

template <int kExp, int kMan>
DS_AVX512 size_t DeltaRows(const SimdDeltaSetup& setup, uint32_t* x32, int* avg32, const uint8_t* base,
                           uint8_t* out, size_t n, SimdStreams* streams, Checksum4x64State* check) {
  // Locals (kept in registers: the stores to `out` cannot change them).
  const SimdDeltaSetup p = setup;
  SimdStreams local = *streams;
  SimdStreams* const s = &local;
  __m512i x0 = _mm512_loadu_si512(x32);
  __m512i x1 = _mm512_loadu_si512(x32 + 16);
  __m512i a0 = _mm512_loadu_si512(avg32);
  __m512i a1 = _mm512_loadu_si512(avg32 + 16);
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(check->lanes));
  constexpr int kWidth = 1 + kExp + kMan;
  constexpr size_t kBytes = kWidth / 8;
  size_t i = 0;
  for (; i + kSimdLanes <= n; i += kSimdLanes) {
    if (s->words_end - s->words < kWordMargin || s->raw_end - s->raw < kRawMargin<kWidth>) break;
    DeltaKernel<kExp, kMan>::Half(p, &x0, &a0, base + kBytes * i, out + kBytes * i, s, &h);
    DeltaKernel<kExp, kMan>::Half(p, &x1, &a1, base + kBytes * (i + 16), out + kBytes * (i + 16), s, &h);
  }
  *streams = local;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(check->lanes), h);
  check->done = kBytes * i;
  _mm512_storeu_si512(x32, x0);
  _mm512_storeu_si512(x32 + 16, x1);
  _mm512_storeu_si512(avg32, a0);
  _mm512_storeu_si512(avg32 + 16, a1);
  return i;
}

template <int kExp, int kMan>
struct StandaloneKernel {
  static constexpr uint32_t kTokZero = 30;
  static constexpr int kWidth = 1 + kExp + kMan;

  DS_AVX512_INLINE static void Half(const SimdStandaloneSetup& p, __m512i* x, __m512i* prev, uint8_t* out,
                                    SimdStreams* s, __m256i* h) {
    const __m512i table = _mm512_min_epu32(*prev, _mm512_set1_epi32(p.rows - 1));
    const __m512i sym = DecodeSymbols(x, table, p.tables, s);
    const __m512i tok = _mm512_srli_epi32(sym, 3);
    const int top_bits = p.mb < 2 ? p.mb : 2;
    const int low = p.mb - top_bits;
    const __mmask16 normal = _mm512_cmplt_epu32_mask(tok, _mm512_set1_epi32(kTokZero));
    const __mmask16 esc = _mm512_cmpgt_epu32_mask(tok, _mm512_set1_epi32(kTokZero));
    __m512i nraw = _mm512_maskz_mov_epi32(normal, _mm512_set1_epi32(low));
    nraw = _mm512_mask_mov_epi32(nraw, esc, _mm512_set1_epi32(kExp + low));
    const __m512i v = Raw<kWidth>(nraw, s);
    const __m128i low_c = _mm_cvtsi32_si128(low);
    const __m128i mb_c = _mm_cvtsi32_si128(p.mb);
    const __m512i low_mask = _mm512_srl_epi32(_mm512_set1_epi32(-1), _mm_cvtsi32_si128(32 - low));
    const __m512i top = _mm512_sll_epi32(_mm512_and_si512(sym, _mm512_set1_epi32(3)), low_c);
    // Normal: exponent maxe - tok; escape: the exponent is the raw field's high bits; zero: 0.
    __m512i e = _mm512_sub_epi32(_mm512_set1_epi32(p.maxe), tok);
    e = _mm512_mask_mov_epi32(e, esc, _mm512_srl_epi32(v, low_c));
    const __m512i fm = _mm512_maskz_or_epi32(normal | esc, _mm512_or_si512(_mm512_sll_epi32(e, mb_c), top),
                                             _mm512_and_si512(v, low_mask));
    const __m512i sign =
        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(sym, 2), _mm512_set1_epi32(1)), kWidth - 1);
    const __m512i res = _mm512_or_si512(sign, _mm512_sll_epi32(fm, _mm_cvtsi32_si128(p.tz)));
    StoreWords<kWidth>(out, res, h);
    *prev = tok;
  }
};

template <int kExp, int kMan>
DS_AVX512 size_t StandaloneRows(const SimdStandaloneSetup& setup, uint32_t* x32, uint32_t* prev32,
                                uint8_t* out, size_t n, SimdStreams* streams, Checksum4x64State* check) {
  const SimdStandaloneSetup p = setup;  // locals, as in DeltaRows
  SimdStreams local = *streams;
  SimdStreams* const s = &local;
  __m512i x0 = _mm512_loadu_si512(x32);
  __m512i x1 = _mm512_loadu_si512(x32 + 16);
  __m512i p0 = _mm512_loadu_si512(prev32);
  __m512i p1 = _mm512_loadu_si512(prev32 + 16);
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(check->lanes));
  constexpr size_t kBytes = (1 + kExp + kMan) / 8;
  size_t i = 0;
  for (; i + kSimdLanes <= n; i += kSimdLanes) {
    if (s->words_end - s->words < kWordMargin || s->raw_end - s->raw < kRawMargin<1 + kExp + kMan>) break;
    StandaloneKernel<kExp, kMan>::Half(p, &x0, &p0, out + kBytes * i, s, &h);
    StandaloneKernel<kExp, kMan>::Half(p, &x1, &p1, out + kBytes * (i + 16), s, &h);
  }
  *streams = local;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(check->lanes), h);
  check->done = kBytes * i;
  _mm512_storeu_si512(x32, x0);
  _mm512_storeu_si512(x32 + 16, x1);
  _mm512_storeu_si512(prev32, p0);
  _mm512_storeu_si512(prev32 + 16, p1);
  return i;
}

}  // namespace

bool SimdEnabled() {
  return Enabled().load(std::memory_order_relaxed);
}

void SetSimdEnabled(bool on) {
  Enabled().store(on && CpuHasAvx512(), std::memory_order_relaxed);
}

size_t DecodeDeltaRowsSimd(FloatKind kind, const SimdDeltaSetup& setup, uint32_t* x, int* avg16,
                           const uint8_t* base, uint8_t* out, size_t n, SimdStreams* s,
                           Checksum4x64State* check) {
  switch (kind) {
    case FloatKind::kBF16: return DeltaRows<8, 7>(setup, x, avg16, base, out, n, s, check);
    case FloatKind::kF16: return DeltaRows<5, 10>(setup, x, avg16, base, out, n, s, check);
    case FloatKind::kF32: return DeltaRows<8, 23>(setup, x, avg16, base, out, n, s, check);
  }
  return 0;
}

size_t DecodeStandaloneRowsSimd(FloatKind kind, const SimdStandaloneSetup& setup, uint32_t* x, uint32_t* prev,
                                uint8_t* out, size_t n, SimdStreams* s, Checksum4x64State* check) {
  switch (kind) {
    case FloatKind::kBF16: return StandaloneRows<8, 7>(setup, x, prev, out, n, s, check);
    case FloatKind::kF16: return StandaloneRows<5, 10>(setup, x, prev, out, n, s, check);
    case FloatKind::kF32: return StandaloneRows<8, 23>(setup, x, prev, out, n, s, check);
  }
  return 0;
}

}  // namespace deltastore::float_rans
