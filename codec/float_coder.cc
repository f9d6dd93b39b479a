// The adaptive float coder (codec id 0x03, policy level "max"; docs/float_coder_format.md). Over 600
// lines for a reason: its encoder and decoder share one file-local adaptive model, range coder and
// context layout, which must stay bit-for-bit in step; the default coder is float_rans*.cc.
#include "codec/float_coder.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

namespace deltastore {
namespace {

static_assert(std::endian::native == std::endian::little, "float_coder assumes a little-endian host");

// ---------------------------------------------------------------------------------------------------
// Encoded layout
//
//   byte 0      (mode << 4) | kind
//   mode 0 (raw): 4 bytes checksum of the values (as below), then the n values as given.
//   mode 3 (same as the base): 4 bytes checksum of the values.
//   mode 1 (delta) and 2 (standalone):
//     byte 1    tz: trailing mantissa bits that are zero in every value (and in every base value)
//     byte 2    the largest exponent among the values (standalone) or the base values (delta)
//     varint    length of the range coder stream
//     4 bytes   checksum of the decoded values, xor checksum of the header bytes before it (little-endian)
//     the range coder stream, then the raw bit stream (to the end)
// ---------------------------------------------------------------------------------------------------

constexpr uint8_t kModeRaw = 0;
constexpr uint8_t kModeDelta = 1;
constexpr uint8_t kModeStandalone = 2;
constexpr uint8_t kModeSame = 3;

// ---------------------------------------------------------------------------------------------------
// Adaptive binary range coder (as in LZMA): 12-bit probabilities of a 0 bit, 32-bit range, bytewise
// normalisation, carry propagation through a cached byte in the encoder.
// ---------------------------------------------------------------------------------------------------

using Prob = uint16_t;
constexpr int kProbBits = 12;
constexpr uint32_t kProbOne = 1u << kProbBits;
constexpr Prob kProbInit = kProbOne / 2;
constexpr int kAdaptShift = 5;
constexpr uint32_t kRangeTop = 1u << 24;

inline uint32_t UpdatedProb(uint32_t v, uint32_t bit) {
  return bit ? v - (v >> kAdaptShift) : v + ((kProbOne - v) >> kAdaptShift);
}

// An adaptive distribution over kSyms symbols, coded with the range coder directly (one step per symbol
// instead of a tree of binary decisions). c[i] is the cumulative frequency of the symbols below i, out of
// kCdfTotal; every symbol keeps at least kCdfFloor. Each update moves the cdf toward the coded symbol by
// 1/2^rate of the distance, the rate growing from kRateMin to kRateMax as the context sees more symbols.
// Finding the symbol and updating are a few SIMD operations on 8 lanes at a time.
constexpr int kCdfBits = 15;
constexpr int kCdfTotal = (1 << kCdfBits) - 1;
constexpr int kCdfFloor = 4;
constexpr int kRateMin = 3;
constexpr int kRateMax = 8;
constexpr int kRateStep = 2;

// Eight 16-bit lanes (GCC/Clang vector extension: SSE2 on x86-64, NEON on ARM, scalar elsewhere).
typedef int16_t I16x8 __attribute__((vector_size(16)));

inline I16x8 LoadI16x8(const int16_t* p) {
  I16x8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreI16x8(int16_t* p, I16x8 v) {
  std::memcpy(p, &v, sizeof(v));
}

template <int kSyms>
struct SymModel {
  static_assert(kSyms % 8 == 0);
  static constexpr int kFree = kCdfTotal - kSyms * kCdfFloor;
  static_assert(kFree > kCdfTotal / 2);
  SymModel() {
    for (int i = 0; i <= kSyms; ++i) c[i] = static_cast<int16_t>(i * kCdfFloor + i * kFree / kSyms);
  }

  // The symbol s with c[s] <= q < c[s + 1], for 0 <= q < kCdfTotal.
  uint32_t Find(int q) const {
    const I16x8 qv = I16x8{} + static_cast<int16_t>(q);
    I16x8 acc{};
#pragma GCC unroll 16
    for (int i = 0; i < kSyms; i += 8) acc += LoadI16x8(&c[i]) <= qv;  // -1 where true
    int count = 0;
    for (int j = 0; j < 8; ++j) count -= acc[j];
    return static_cast<uint32_t>(count - 1);
  }

  void Update(uint32_t s) {
    const int rate = std::min(kRateMax, kRateMin + static_cast<int>(std::bit_width(count)) / kRateStep);
    count += count < 0xFFFF;
    const I16x8 sv = I16x8{} + static_cast<int16_t>(s);
    const I16x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
#pragma GCC unroll 16
    for (int i = 0; i < kSyms; i += 8) {
      const I16x8 idx = lane + static_cast<int16_t>(i);
      const I16x8 target = idx * static_cast<int16_t>(kCdfFloor) + ((idx > sv) & static_cast<int16_t>(kFree));
      const I16x8 cv = LoadI16x8(&c[i]);
      StoreI16x8(&c[i], cv + ((target - cv) >> rate));
    }
  }

  int16_t c[kSyms + 1];
  uint16_t count = 0;
};

class RangeEncoder {
 public:
  template <int kSyms>
  [[gnu::always_inline]] void Sym(SymModel<kSyms>& m, uint32_t s) {
    const uint32_t r = range_ >> kCdfBits;
    const uint32_t lo = static_cast<uint32_t>(m.c[s]);
    low_ += static_cast<uint64_t>(r) * lo;
    range_ = r * (static_cast<uint32_t>(m.c[s + 1]) - lo);
    while (range_ < kRangeTop) {
      range_ <<= 8;
      ShiftLow();
    }
    m.Update(s);
  }

  explicit RangeEncoder(size_t reserve) { out_.resize(std::max<size_t>(reserve, 64)); }

  void Bit(Prob* p, uint32_t bit) {
    const uint32_t v = *p;
    const uint32_t bound = (range_ >> kProbBits) * v;
    low_ += bound & (0ull - bit);
    range_ = bit ? range_ - bound : bound;
    *p = static_cast<Prob>(UpdatedProb(v, bit));
    while (range_ < kRangeTop) {
      range_ <<= 8;
      ShiftLow();
    }
  }

  // Codes the low kBits bits of `sym`, high bit first, with a binary tree of probabilities
  // (probs[1 .. 2^kBits - 1]).
  template <int kBits>
  void Tree(Prob* probs, uint32_t sym) {
    uint32_t idx = 1;
    for (int i = kBits - 1; i >= 0; --i) {
      const uint32_t bit = (sym >> i) & 1;
      Bit(&probs[idx], bit);
      idx = idx * 2 + bit;
    }
  }

  // Bytes written so far, including pending ones.
  size_t size() const { return pos_ + cache_size_; }

  std::string& Finish() {
    for (int i = 0; i < 5; ++i) ShiftLow();
    out_.resize(pos_);
    return out_;
  }

 private:
  void ShiftLow() {
    if (static_cast<uint32_t>(low_) < 0xFF000000u || (low_ >> 32) != 0) {
      const uint8_t carry = static_cast<uint8_t>(low_ >> 32);
      uint8_t temp = cache_;
      do {
        if (pos_ == out_.size()) out_.resize(out_.size() * 2);
        out_[pos_++] = static_cast<char>(static_cast<uint8_t>(temp + carry));
        temp = 0xFF;
      } while (--cache_size_ != 0);
      cache_ = static_cast<uint8_t>(low_ >> 24);
    }
    ++cache_size_;
    low_ = (low_ & 0x00FFFFFFu) << 8;
  }

  uint64_t low_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
  uint8_t cache_ = 0;
  uint64_t cache_size_ = 1;
  std::string out_;  // out_[0, pos_) written
  size_t pos_ = 0;
};

class RangeDecoder {
 public:
  template <int kSyms>
  uint32_t Sym(SymModel<kSyms>& m) {
    const uint32_t r = range_ >> kCdfBits;
    const uint32_t s = m.Find(static_cast<int>(std::min<uint32_t>(code_ / r, kCdfTotal - 1)));
    const uint32_t lo = static_cast<uint32_t>(m.c[s]);
    code_ -= r * lo;
    range_ = r * (static_cast<uint32_t>(m.c[s + 1]) - lo);
    while (range_ < kRangeTop) {
      range_ <<= 8;
      code_ = (code_ << 8) | NextByte();
    }
    m.Update(s);
    return s;
  }

  RangeDecoder(const uint8_t* p, size_t size) : p_(p), end_(p + size) {
    first_byte_ = NextByte();
    for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | NextByte();
  }

  uint32_t Bit(Prob* p) {
    const uint32_t v = *p;
    const uint32_t bound = (range_ >> kProbBits) * v;
    const uint32_t bit = code_ >= bound;
    code_ -= bound & (0u - bit);
    range_ = bit ? range_ - bound : bound;
    *p = static_cast<Prob>(UpdatedProb(v, bit));
    while (range_ < kRangeTop) {
      range_ <<= 8;
      code_ = (code_ << 8) | NextByte();
    }
    return bit;
  }

  template <int kBits>
  uint32_t Tree(Prob* probs) {
    uint32_t idx = 1;
    for (int i = 0; i < kBits; ++i) idx = idx * 2 + Bit(&probs[idx]);
    return idx - (1u << kBits);
  }

  // A valid stream starts with a zero byte and is consumed exactly, and since the encoder flushes the low
  // end of the final interval, the code ends at zero.
  bool Ok() const { return first_byte_ == 0 && overrun_ == 0 && p_ == end_ && code_ == 0; }
  bool Overrun() const { return overrun_ != 0; }

 private:
  uint32_t NextByte() {
    if (p_ != end_) return *p_++;
    ++overrun_;
    return 0;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t range_ = 0xFFFFFFFFu;
  uint32_t code_ = 0;
  uint32_t first_byte_ = 0;
  size_t overrun_ = 0;
};

// Raw bits, least significant first, packed little-endian.
class BitWriter {
 public:
  explicit BitWriter(size_t reserve) { out_.reserve(reserve); }

  // `nbits` <= 32, `v` < 2^nbits.
  void Put(uint32_t v, int nbits) {
    acc_ |= static_cast<uint64_t>(v) << fill_;
    fill_ += nbits;
    if (fill_ >= 32) {
      const uint32_t w = static_cast<uint32_t>(acc_);
      out_.append(reinterpret_cast<const char*>(&w), 4);
      acc_ >>= 32;
      fill_ -= 32;
    }
  }

  size_t size() const { return out_.size() + static_cast<size_t>(fill_ + 7) / 8; }

  std::string& Finish() {
    while (fill_ > 0) {
      out_.push_back(static_cast<char>(acc_ & 0xFF));
      acc_ >>= 8;
      fill_ -= std::min(fill_, 8);
    }
    return out_;
  }

 private:
  uint64_t acc_ = 0;
  int fill_ = 0;
  std::string out_;
};

class BitReader {
 public:
  BitReader(const uint8_t* p, size_t size) : p_(p), end_(p + size), size_(size) {}

  // `nbits` <= 32. Past the end it reads zeros; Ok() then fails.
  uint32_t Get(int nbits) {
    if (fill_ < nbits) Refill();
    const uint32_t v = static_cast<uint32_t>(acc_ & ((uint64_t{1} << nbits) - 1));
    acc_ >>= nbits;
    fill_ -= nbits;
    consumed_ += static_cast<uint64_t>(nbits);
    return v;
  }

  // The stream was consumed to its last byte and no further, and the padding bits are zero.
  bool Ok() {
    if ((consumed_ + 7) / 8 != size_) return false;
    return Get(static_cast<int>(uint64_t{8} * size_ - consumed_)) == 0;
  }
  bool Overrun() const { return consumed_ > uint64_t{8} * size_; }

 private:
  void Refill() {
    if (end_ - p_ >= 8) {
      uint64_t w;
      std::memcpy(&w, p_, 8);
      acc_ |= w << fill_;
      p_ += (63 - fill_) >> 3;
      fill_ |= 56;
    } else {
      while (fill_ <= 56) {
        const uint64_t b = p_ != end_ ? *p_++ : 0;
        acc_ |= b << fill_;
        fill_ += 8;
      }
    }
  }

  const uint8_t* p_;
  const uint8_t* end_;
  size_t size_;
  uint64_t acc_ = 0;
  int fill_ = 0;
  uint64_t consumed_ = 0;
};

// A fast non-cryptographic checksum of the decoded bytes (corruption detection only).
uint32_t Checksum(const uint8_t* p, size_t len) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = 0x243F6A8885A308D3ull ^ len;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  if (i < len) std::memcpy(&w, p + i, len - i);
  h = (h ^ w) * kMul;
  h ^= h >> 32;
  h *= kMul;
  return static_cast<uint32_t>(h >> 32);
}

// Decoders stop early on garbage that runs past the end of its streams (a valid stream never does).
constexpr size_t kOverrunCheckInterval = 4096;

// ---------------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------------

template <typename WordT, int kExp, int kMan>
struct Format {
  using Word = WordT;
  static constexpr int kWidth = static_cast<int>(sizeof(Word)) * 8;
  static constexpr int kExpBits = kExp;
  static constexpr int kManBits = kMan;
  static_assert(1 + kExp + kMan == kWidth);
  static constexpr uint32_t kMagMask = (uint32_t{1} << (kWidth - 1)) - 1;
};
using BF16Format = Format<uint16_t, 8, 7>;
using F16Format = Format<uint16_t, 5, 10>;
using F32Format = Format<uint32_t, 8, 23>;

template <typename F>
inline uint32_t Load(const uint8_t* p, size_t i) {
  typename F::Word w;
  std::memcpy(&w, p + i * sizeof(w), sizeof(w));
  return w;
}
template <typename F>
inline void Store(uint8_t* p, size_t i, uint32_t v) {
  const auto w = static_cast<typename F::Word>(v);
  std::memcpy(p + i * sizeof(w), &w, sizeof(w));
}

// ---------------------------------------------------------------------------------------------------
// Delta model
// ---------------------------------------------------------------------------------------------------

// Contexts: the base exponent below the largest base exponent (clamped), and the bit length of d to
// expect from the neighbours: a running average of log2 |f - b| (exponent + bit length of d), less the
// base exponent.
constexpr int kExpCtx = 24;
constexpr int kNbrCtx = 8;
constexpr int kNbrOffset = 2;
constexpr int kEmaShift = 4;

// Delta symbols, d = |f| - |b| in ulps: (bit length of |d|) << 2 | (d < 0) << 1 | (the bit below the
// leading one). Symbol 2 ("negative zero") is an escape: f coded explicitly (used for sign changes).
constexpr uint32_t kEscapeSym = 2;

template <typename F>
struct DeltaModel {
  static constexpr int kSyms = 4 * F::kWidth;
  DeltaModel() : tok(static_cast<size_t>(kExpCtx) * kNbrCtx), esc_exp(size_t{1} << F::kExpBits, kProbInit) {}
  std::vector<SymModel<kSyms>> tok;  // [exponent ctx][neighbour ctx]
  std::vector<Prob> esc_exp;         // [tree node]
  Prob esc_flip = kProbInit;
  Prob esc_mant_nonzero = kProbInit;
};

class DeltaContext {
 public:
  DeltaContext(uint32_t max_be, int mb) : max_be_(static_cast<int>(max_be)), nbr_bias_(kNbrOffset + 7 - mb) {}
  size_t Index(uint32_t be) const {
    const int e = static_cast<int>(be);
    const int ectx = std::clamp(max_be_ - e, 0, kExpCtx - 1);
    const int nctx = std::clamp(((avg16_ + 8) >> 4) - e + nbr_bias_, 0, kNbrCtx - 1);
    return static_cast<size_t>(ectx) * kNbrCtx + static_cast<size_t>(nctx);
  }
  void Update(int a) { avg16_ += ((a << 4) - avg16_) >> kEmaShift; }

 private:
  int max_be_;
  int nbr_bias_;
  int avg16_ = 0;  // running average of log2 |delta|, times 16
};

template <typename F>
void EncodeDelta(const uint8_t* data, const uint8_t* base, size_t n, int tz, uint32_t max_be,
                 RangeEncoder& rc, BitWriter& bw, size_t sample, size_t* sample_bytes) {
  DeltaModel<F> m;
  const int mb = F::kManBits - tz;
  const uint32_t mb_mask = (uint32_t{1} << mb) - 1;
  DeltaContext ctx(max_be, mb);
  for (size_t i = 0; i < n; ++i) {
    if (i == sample) *sample_bytes = rc.size() + bw.size();
    const uint32_t b = Load<F>(base, i);
    const uint32_t f = Load<F>(data, i);
    const uint32_t bm = (b & F::kMagMask) >> tz;
    const uint32_t fm = (f & F::kMagMask) >> tz;
    const uint32_t be = bm >> mb;
    auto& tm = m.tok[ctx.Index(be)];
    const uint32_t flip = (b ^ f) >> (F::kWidth - 1);
    if (flip == 0) {
      const int32_t d = static_cast<int32_t>(fm) - static_cast<int32_t>(bm);
      const uint32_t ad = d < 0 ? 0u - static_cast<uint32_t>(d) : static_cast<uint32_t>(d);
      const int len = std::bit_width(ad);
      const uint32_t neg = d < 0;
      uint32_t sym = (static_cast<uint32_t>(len) << 2) | (neg << 1);
      if (len >= 2) {
        const uint32_t rem = ad - (uint32_t{1} << (len - 1));
        sym |= rem >> (len - 2);
        rc.Sym(tm, sym);
        bw.Put(rem & ((uint32_t{1} << (len - 2)) - 1), len - 2);
      } else {
        rc.Sym(tm, sym);
      }
      ctx.Update(static_cast<int>(be) + len);
    } else {
      rc.Sym(tm, kEscapeSym);
      rc.Bit(&m.esc_flip, flip);
      const uint32_t fe = fm >> mb;
      const uint32_t mant = fm & mb_mask;
      rc.Tree<F::kExpBits>(m.esc_exp.data(), fe);
      if (fe == 0) rc.Bit(&m.esc_mant_nonzero, mant != 0);
      if (fe != 0 || mant != 0) bw.Put(mant, mb);
      ctx.Update(static_cast<int>(be) + mb + 1);
    }
  }
}

template <typename F>
bool DecodeDelta(RangeDecoder& rc, BitReader& br, const uint8_t* base, size_t n, int tz, uint32_t max_be,
                 uint8_t* out) {
  DeltaModel<F> m;
  const int mb = F::kManBits - tz;
  const uint32_t mb_mask = (uint32_t{1} << mb) - 1;
  const uint32_t max_mag = F::kMagMask >> tz;
  DeltaContext ctx(max_be, mb);
  for (size_t i = 0; i < n; ++i) {
    if (i % kOverrunCheckInterval == 0 && (rc.Overrun() || br.Overrun())) return false;
    const uint32_t b = Load<F>(base, i);
    const uint32_t bm = (b & F::kMagMask) >> tz;
    const uint32_t be = bm >> mb;
    const uint32_t sym = rc.Sym(m.tok[ctx.Index(be)]);
    uint32_t sign = b >> (F::kWidth - 1);
    uint32_t fm;
    if (sym != kEscapeSym) {
      const int len = static_cast<int>(sym >> 2);
      uint32_t ad = 0;
      if (len >= 2) {
        ad = (uint32_t{1} << (len - 1)) | ((sym & 1) << (len - 2)) | br.Get(len - 2);
      } else if (len == 1) {
        if (sym & 1) return false;
        ad = 1;
      } else if (sym != 0) {
        return false;
      }
      if (sym & 2) {
        if (ad > bm) return false;
        fm = bm - ad;
      } else {
        fm = bm + ad;
        if (fm > max_mag) return false;
      }
      ctx.Update(static_cast<int>(be) + len);
    } else {
      sign ^= rc.Bit(&m.esc_flip);
      const uint32_t fe = rc.Tree<F::kExpBits>(m.esc_exp.data());
      uint32_t mant = 0;
      if (fe != 0 || rc.Bit(&m.esc_mant_nonzero)) mant = br.Get(mb);
      fm = (fe << mb) | (mant & mb_mask);
      ctx.Update(static_cast<int>(be) + mb + 1);
    }
    Store<F>(out, i, (sign << (F::kWidth - 1)) | (fm << tz));
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Standalone model
// ---------------------------------------------------------------------------------------------------

// Exponent tokens: maxe - e (largest exponent less this one) below kExpTokZero; for 8-bit exponents,
// kExpTokZero = zero exponent, kExpTokEscape = any other, followed by the exponent as raw bits.
constexpr int kExpTokBits = 5;
constexpr uint32_t kExpTokZero = 30;
constexpr uint32_t kExpTokEscape = 31;
constexpr int kManTopBits = 2;

template <typename F>
struct StandaloneModel {
  StandaloneModel() : exp_tok(32), sign_mant(size_t{32} * 2), mant_nonzero(32, kProbInit) {}
  std::vector<SymModel<32>> exp_tok;                    // [previous token]
  std::vector<SymModel<(2 << kManTopBits)>> sign_mant;  // [token][previous sign]: sign, top mantissa bits
  std::vector<Prob> mant_nonzero;                       // [token]
};

template <typename F>
uint32_t ExpToken(uint32_t e, uint32_t maxe) {
  if constexpr (F::kExpBits <= kExpTokBits) {
    return maxe - e;
  } else {
    if (maxe - e < kExpTokZero) return maxe - e;
    return e == 0 ? kExpTokZero : kExpTokEscape;
  }
}

template <typename F>
void EncodeStandalone(const uint8_t* data, size_t n, int tz, uint32_t maxe, RangeEncoder& rc, BitWriter& bw) {
  StandaloneModel<F> m;
  const int mb = F::kManBits - tz;
  const uint32_t mb_mask = (uint32_t{1} << mb) - 1;
  const int top_bits = std::min(mb, kManTopBits);
  const int low_bits = mb - top_bits;
  uint32_t prev_tok = 0;
  uint32_t prev_sign = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t f = Load<F>(data, i);
    const uint32_t sign = f >> (F::kWidth - 1);
    const uint32_t fm = (f & F::kMagMask) >> tz;
    const uint32_t e = fm >> mb;
    const uint32_t mant = fm & mb_mask;
    const uint32_t tok = ExpToken<F>(e, maxe);
    rc.Sym(m.exp_tok[prev_tok], tok);
    if (F::kExpBits > kExpTokBits && tok == kExpTokEscape) bw.Put(e, F::kExpBits);
    auto& sm = m.sign_mant[tok * 2 + prev_sign];
    if (e == 0) rc.Bit(&m.mant_nonzero[tok], mant != 0);
    if (e != 0 || mant != 0) {
      rc.Sym(sm, (sign << kManTopBits) | (mant >> low_bits));
      bw.Put(mant & ((uint32_t{1} << low_bits) - 1), low_bits);
    } else {
      rc.Sym(sm, sign << kManTopBits);
    }
    prev_tok = tok;
    prev_sign = sign;
  }
}

template <typename F>
bool DecodeStandalone(RangeDecoder& rc, BitReader& br, size_t n, int tz, uint32_t maxe, uint8_t* out) {
  StandaloneModel<F> m;
  const int mb = F::kManBits - tz;
  const int top_bits = std::min(mb, kManTopBits);
  const int low_bits = mb - top_bits;
  const uint32_t top_max = uint32_t{1} << top_bits;
  uint32_t prev_tok = 0;
  uint32_t prev_sign = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i % kOverrunCheckInterval == 0 && (rc.Overrun() || br.Overrun())) return false;
    const uint32_t tok = rc.Sym(m.exp_tok[prev_tok]);
    uint32_t e;
    if (F::kExpBits > kExpTokBits && tok >= kExpTokZero) {
      e = tok == kExpTokZero ? 0 : br.Get(F::kExpBits);
    } else {
      if (tok > maxe) return false;
      e = maxe - tok;
    }
    auto& sm = m.sign_mant[tok * 2 + prev_sign];
    const bool nonzero = e != 0 || rc.Bit(&m.mant_nonzero[tok]);
    const uint32_t sym = rc.Sym(sm);
    const uint32_t sign = sym >> kManTopBits;
    const uint32_t top = sym & ((uint32_t{1} << kManTopBits) - 1);
    if (top >= top_max || (!nonzero && top != 0)) return false;
    const uint32_t mant = nonzero ? (top << low_bits) | br.Get(low_bits) : 0;
    const uint32_t fm = (e << mb) | mant;
    Store<F>(out, i, (sign << (F::kWidth - 1)) | (fm << tz));
    prev_tok = tok;
    prev_sign = sign;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Top level
// ---------------------------------------------------------------------------------------------------

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view& in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63; shift += 7) {
    if (in.empty()) return false;
    const uint8_t byte = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

std::string EncodeRaw(FloatKind kind, const uint8_t* data, size_t bytes) {
  std::string out(1, static_cast<char>((kModeRaw << 4) | static_cast<uint8_t>(kind)));
  const uint32_t sum = Checksum(data, bytes);
  out.append(reinterpret_cast<const char*>(&sum), 4);
  if (bytes > 0) out.append(reinterpret_cast<const char*>(data), bytes);
  return out;
}

// Values coded both ways to choose between delta and standalone coding.
constexpr size_t kModeSample = 8192;

// Header and streams of a coded encoding (mode 1 or 2).
std::string Assemble(uint8_t mode, FloatKind kind, int tz, uint32_t maxe, uint32_t sum,
                     const std::string& rc_bytes, const std::string& raw_bits) {
  std::string out;
  out.reserve(16 + rc_bytes.size() + raw_bits.size());
  out.push_back(static_cast<char>((mode << 4) | static_cast<uint8_t>(kind)));
  out.push_back(static_cast<char>(tz));
  out.push_back(static_cast<char>(maxe));
  PutVarint(out, rc_bytes.size());
  const uint32_t check = sum ^ Checksum(reinterpret_cast<const uint8_t*>(out.data()), out.size());
  out.append(reinterpret_cast<const char*>(&check), 4);
  out.append(rc_bytes);
  out.append(raw_bits);
  return out;
}

template <typename F>
int TrailingZeros(uint32_t man_or) {
  man_or &= (uint32_t{1} << F::kManBits) - 1;
  return man_or == 0 ? F::kManBits : std::countr_zero(man_or);
}

template <typename F>
std::string EncodeImpl(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n) {
  const size_t bytes = n * sizeof(typename F::Word);
  if (n == 0) return EncodeRaw(kind, data, 0);
  // Trailing mantissa bits that are zero everywhere, and the largest exponents.
  uint32_t data_or = 0;
  uint32_t data_max = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t f = Load<F>(data, i);
    data_or |= f;
    data_max = std::max(data_max, f & F::kMagMask);
  }
  const uint32_t sum = Checksum(data, bytes);
  if (base != nullptr && std::memcmp(data, base, bytes) == 0) {  // unchanged (a frozen layer)
    std::string out(1, static_cast<char>((kModeSame << 4) | static_cast<uint8_t>(kind)));
    out.append(reinterpret_cast<const char*>(&sum), 4);
    return out;
  }
  std::string best;
  bool try_standalone = base == nullptr;
  if (base != nullptr) {
    const size_t sample = std::min(n, kModeSample);
    uint32_t base_or = 0;
    uint32_t base_max = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t b = Load<F>(base, i);
      base_or |= b;
      base_max = std::max(base_max, b & F::kMagMask);
    }
    const int tz = TrailingZeros<F>(data_or | base_or);
    const uint32_t maxe = base_max >> F::kManBits;
    RangeEncoder rc(bytes / 2 + 64);
    BitWriter bw(bytes / 2 + 64);
    size_t sample_bytes = 0;
    EncodeDelta<F>(data, base, n, tz, maxe, rc, bw, sample, &sample_bytes);
    best = Assemble(kModeDelta, kind, tz, maxe, sum, rc.Finish(), bw.Finish());
    if (sample == n) sample_bytes = best.size();
    // An unrelated base can make the delta worse than coding the values alone: compare on a sample.
    RangeEncoder sample_rc(sample);
    BitWriter sample_bw(sample);
    EncodeStandalone<F>(data, sample, TrailingZeros<F>(data_or), data_max >> F::kManBits, sample_rc,
                        sample_bw);
    try_standalone = sample_rc.Finish().size() + sample_bw.Finish().size() < sample_bytes;
  }
  if (try_standalone) {
    const int tz = TrailingZeros<F>(data_or);
    const uint32_t maxe = data_max >> F::kManBits;
    RangeEncoder rc(bytes / 2 + 64);
    BitWriter bw(bytes / 2 + 64);
    EncodeStandalone<F>(data, n, tz, maxe, rc, bw);
    std::string standalone = Assemble(kModeStandalone, kind, tz, maxe, sum, rc.Finish(), bw.Finish());
    if (best.empty() || standalone.size() < best.size()) best = std::move(standalone);
  }
  if (best.size() >= 5 + bytes) return EncodeRaw(kind, data, bytes);
  return best;
}

template <typename F>
Status DecodeImpl(uint8_t mode, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out) {
  const size_t bytes = n * sizeof(typename F::Word);
  std::string_view in = encoded.substr(1);
  if (in.size() < 2) return Corruption("float coder: truncated header");
  const int tz = static_cast<uint8_t>(in[0]);
  const uint32_t param = static_cast<uint8_t>(in[1]);
  in.remove_prefix(2);
  if (tz > F::kManBits) return Corruption("float coder: bad header");
  if (param >= (uint32_t{1} << F::kExpBits)) return Corruption("float coder: bad header");
  uint64_t rc_len;
  if (!GetVarint(in, &rc_len) || in.size() < 4) return Corruption("float coder: truncated header");
  // The stored check covers the header too (some header changes would decode to the same values).
  uint32_t sum;
  std::memcpy(&sum, in.data(), 4);
  sum ^= Checksum(reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size() - in.size());
  in.remove_prefix(4);
  if (rc_len > in.size()) return Corruption("float coder: truncated stream");
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  RangeDecoder rc(p, rc_len);
  BitReader br(p + rc_len, in.size() - rc_len);
  const bool ok = mode == kModeDelta ? DecodeDelta<F>(rc, br, base, n, tz, param, out)
                                     : DecodeStandalone<F>(rc, br, n, tz, param, out);
  if (!ok || !rc.Ok() || !br.Ok()) return Corruption("float coder: corrupt stream");
  if (Checksum(out, bytes) != sum) return Corruption("float coder: checksum mismatch");
  return OkStatus();
}

}  // namespace

size_t FloatKindSize(FloatKind kind) {
  switch (kind) {
    case FloatKind::kBF16:
    case FloatKind::kF16: return 2;
    case FloatKind::kF32: return 4;
  }
  return 0;
}

std::string EncodeFloats(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n) {
  switch (kind) {
    case FloatKind::kBF16: return EncodeImpl<BF16Format>(kind, data, base, n);
    case FloatKind::kF16: return EncodeImpl<F16Format>(kind, data, base, n);
    case FloatKind::kF32: return EncodeImpl<F32Format>(kind, data, base, n);
  }
  return {};
}

Status DecodeFloats(FloatKind kind, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out) {
  const size_t width = FloatKindSize(kind);
  if (width == 0) return InvalidArgument("float coder: unknown float kind");
  if (encoded.empty()) return Corruption("float coder: empty input");
  const uint8_t head = static_cast<uint8_t>(encoded[0]);
  if ((head & 0x0F) != static_cast<uint8_t>(kind)) return Corruption("float coder: float kind mismatch");
  const uint8_t mode = head >> 4;
  switch (mode) {
    case kModeRaw:
    case kModeSame: {
      if (encoded.size() != 5 + (mode == kModeRaw ? n * width : 0)) {
        return Corruption("float coder: size mismatch");
      }
      if (mode == kModeSame && base == nullptr) {
        return InvalidArgument("float coder: delta encoding needs the base values");
      }
      uint32_t sum;
      std::memcpy(&sum, encoded.data() + 1, 4);
      if (n > 0)
        std::memcpy(out, mode == kModeRaw ? reinterpret_cast<const uint8_t*>(encoded.data()) + 5 : base,
                    n * width);
      if (Checksum(out, n * width) != sum) return Corruption("float coder: checksum mismatch");
      return OkStatus();
    }
    case kModeDelta:
      if (base == nullptr) return InvalidArgument("float coder: delta encoding needs the base values");
      break;
    case kModeStandalone: break;
    default: return Corruption("float coder: unknown mode");
  }
  switch (kind) {
    case FloatKind::kBF16: return DecodeImpl<BF16Format>(mode, encoded, base, n, out);
    case FloatKind::kF16: return DecodeImpl<F16Format>(mode, encoded, base, n, out);
    case FloatKind::kF32: return DecodeImpl<F32Format>(mode, encoded, base, n, out);
  }
  return InvalidArgument("float coder: unknown float kind");
}

}  // namespace deltastore
