// Static-table rANS with 32-bit states and 16-bit renormalisation, for several interleaved states that
// share one word stream (the float coder's fast variant, codec/float_rans.h, uses it).
//
// A table gives every symbol of an alphabet (at most 256 symbols) a frequency out of kProbScale. Tables
// travel in the encoding as one code per symbol, a byte (exact below 128, 4 significant bits above) or,
// for small tables, a nibble (15 steps of about 1.8x); encoder and decoder rebuild the same frequencies
// from the codes with NormalizeWeights, which is integer arithmetic only.
//
// Encoding runs backwards over the symbols (rANS is last in, first out): each state pushes 16-bit words
// below a write pointer; at the end the states are stored in front of the words. Decoding reads the
// states, then the words forwards, one table lookup per symbol.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace deltastore::rans {

static_assert(std::endian::native == std::endian::little, "rans assumes a little-endian host");

inline constexpr int kProbBits = 12;
inline constexpr uint32_t kProbScale = 1u << kProbBits;
inline constexpr uint32_t kProbMask = kProbScale - 1;
inline constexpr uint32_t kStateLow = 1u << 16;  // a normalised state is in [kStateLow, 2^32)
inline constexpr int kMaxAlphabet = 256;

// Byte codes: 0 = absent; 1..127 = that frequency; 128 + 16 e + m = (16 + m) << (e + 3).
// Nibble codes: 0 = absent; 1..15 = kNibbleWeights[code].
enum class CodeWidth : uint8_t { kByte = 0, kNibble = 1 };
inline constexpr uint32_t kNibbleWeights[16] = {0,  1,   2,   3,   6,   11,   19,   35,
                                                64, 116, 210, 380, 690, 1250, 2260, 4096};
uint8_t FreqToCode(uint32_t freq, CodeWidth width);
uint32_t CodeToWeight(uint8_t code, CodeWidth width);

// Frequencies summing to kProbScale, every present symbol (weight > 0) at least 1, absent ones 0, in
// proportion to the weights. Returns false when no weight is positive.
bool NormalizeWeights(const uint32_t* weights, int alphabet, uint32_t* freqs);

// Frequencies as above from symbol counts, already rounded through FreqToCode/CodeToWeight, so the
// decoder rebuilds exactly these from the codes. `codes` gets one byte per symbol.
bool QuantizedFreqs(const uint32_t* counts, int alphabet, CodeWidth width, uint32_t* freqs, uint8_t* codes);

// Bits (16.16) to code the counted symbols with these frequencies.
uint64_t CrossEntropyQ16(const uint32_t* counts, const uint32_t* freqs, int alphabet);

// log2(x) in 16.16 fixed point (integer arithmetic; log2(0) is taken as 0).
uint32_t Log2Q16(uint64_t x);

// Bits (16.16 fixed point) to code the symbols counted in counts[lo, hi] with their own order-0 table.
uint64_t EntropyQ16(const uint32_t* counts, int lo, int hi);

// ---------------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------------

// What the encoder needs per symbol: its frequency, its cumulative start, and x / freq for every 32-bit
// x as (x + (x * mult >> 32)) >> shift, with shift = ceil(log2 freq) and 2^32 + mult =
// ceil(2^(32 + shift) / freq) (Granlund and Montgomery, "Division by invariant integers using
// multiplication", theorem 4.2: exact for every x < 2^32). 8 bytes, so that a vector encoder gathers one
// word per symbol.
struct EncSymbol {
  uint32_t mult = 0;
  uint32_t info = 0;  // freq (bits 0-12), cum (bits 13-24), shift (bits 25-28)
};
inline constexpr int kEncCumShift = 13;
inline constexpr int kEncDivShift = 25;
inline constexpr uint32_t kEncFreqMask = (1u << kEncCumShift) - 1;
inline constexpr uint32_t kEncCumMask = kProbMask;

// Fills enc[0, alphabet) from frequencies summing to kProbScale.
void BuildEncSymbols(const uint32_t* freqs, int alphabet, EncSymbol* enc);

// Codes one symbol into state `x`, pushing a 16-bit word below `*ptr` when the state would overflow.
[[gnu::always_inline]] inline uint32_t EncPut(uint32_t x, const EncSymbol& s, uint8_t** ptr) {
  // Branch-free (whether a word goes out is close to a coin toss): the word is always stored, and the
  // pointer only moves when it counts. The buffer has room for it either way.
  const uint32_t freq = s.info & kEncFreqMask;
  const uint32_t out = (x >> (32 - kProbBits)) >= freq;
  const uint16_t w = static_cast<uint16_t>(x);
  std::memcpy(*ptr - 2, &w, 2);
  *ptr -= 2 * out;
  x >>= 16 * out;
  const auto q = static_cast<uint32_t>((x + ((uint64_t{x} * s.mult) >> 32)) >> (s.info >> kEncDivShift));
  return x + ((s.info >> kEncCumShift) & kEncCumMask) + q * (kProbScale - freq);
}

// ---------------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------------

// A decode table has kProbScale entries, one per slot: symbol (bits 0-7), slot - cum of the symbol
// (bits 8-19), freq - 1 (bits 20-31).
using DecEntry = uint32_t;

// Fills table[0, kProbScale) from frequencies summing to kProbScale.
void BuildDecTable(const uint32_t* freqs, int alphabet, DecEntry* table);

// Decodes one symbol from state `x` (the caller renormalises).
[[gnu::always_inline]] inline uint32_t DecGet(uint32_t* x, const DecEntry* table) {
  const DecEntry e = table[*x & kProbMask];
  *x = ((e >> 20) + 1) * (*x >> kProbBits) + ((e >> 8) & kProbMask);
  return e & 0xFF;
}

// Renormalises with the next word at `*p`, which the caller guarantees is readable.
[[gnu::always_inline]] inline void DecRenorm(uint32_t* x, const uint8_t** p) {
  uint16_t w;
  std::memcpy(&w, *p, 2);
  // Branch-free: a word is read about every other symbol, unpredictably.
  const uint32_t take = *x < kStateLow;
  *x = (*x << (16 * take)) | (w & (0u - take));
  *p += 2 * take;
}

// Renormalises reading nothing past `end`; a missing word reads as zero and sets *overrun.
[[gnu::always_inline]] inline void DecRenormChecked(uint32_t* x, const uint8_t** p, const uint8_t* end,
                                                    bool* overrun) {
  if (*x >= kStateLow) return;
  uint16_t w = 0;
  if (end - *p >= 2) {
    std::memcpy(&w, *p, 2);
    *p += 2;
  } else {
    *overrun = true;
  }
  *x = (*x << 16) | w;
}

}  // namespace deltastore::rans
