// Internals of the fast float coder (codec/float_rans.h) shared by its files: the float formats, the
// lane layout, and the two models (delta against a base, standalone), each as an encoder that returns
// its three parts and a decoder that reads its tables and then its streams.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/checksum.h"
#include "codec/float_coder.h"
#include "codec/float_rans_tables.h"
#include "codec/rans.h"
#include "common/status.h"

namespace deltastore::float_rans {

template <typename WordT, int kExp, int kMan>
struct Format {
  using Word = WordT;
  static constexpr int kWidth = static_cast<int>(sizeof(Word)) * 8;
  static constexpr int kExpBits = kExp;
  static constexpr int kManBits = kMan;
  static_assert(1 + kExp + kMan == kWidth);
  static constexpr uint32_t kMagMask = (uint32_t{1} << (kWidth - 1)) - 1;
  static constexpr uint32_t kSignBit = uint32_t{1} << (kWidth - 1);
};
using BF16Format = Format<uint16_t, 8, 7>;
using F16Format = Format<uint16_t, 5, 10>;
using F32Format = Format<uint32_t, 8, 23>;

template <typename F>
constexpr FloatKind KindOf() {
  if constexpr (F::kWidth == 32) return FloatKind::kF32;
  return F::kExpBits == 8 ? FloatKind::kBF16 : FloatKind::kF16;
}

template <typename F>
[[gnu::always_inline]] inline uint32_t Load(const uint8_t* p, size_t i) {
  typename F::Word w;
  std::memcpy(&w, p + i * sizeof(w), sizeof(w));
  return w;
}
template <typename F>
[[gnu::always_inline]] inline void Store(uint8_t* p, size_t i, uint32_t v) {
  const auto w = static_cast<typename F::Word>(v);
  std::memcpy(p + i * sizeof(w), &w, sizeof(w));
}

// Shared header fields of the coded modes.
struct Layout {
  int tz = 0;          // trailing mantissa bits that are zero in every value (and base value)
  uint32_t maxe = 0;   // largest exponent of the base values (delta) or of the values (standalone)
  int lanes_log2 = 0;  // 2^lanes_log2 rANS states
  int version = 3;     // payload version (the chunk header's codec version): 1, 2 or 3
  int lanes() const { return 1 << lanes_log2; }
};

// Value i is coded by lane i % lanes (its own rANS state and context history), values in order: a
// lane's previous value is value i - lanes. Version 1 has 1 or 8 lanes, version 2 1, 8 or (BF16, F16) 32,
// version 3 1, 8 or 32.
inline constexpr int kMaxLanesLog2 = 5;
bool ValidLanes(int version, FloatKind kind, int lanes_log2);

// What an encoder returns: the tables (map and frequencies), the rANS stream (the lanes' final states as
// u32, then u16 words) and the raw bit stream.
struct Coded {
  std::string tables;
  std::string words;
  std::string raw;
  size_t size() const { return tables.size() + words.size() + raw.size(); }
};

// ---------------------------------------------------------------------------------------------------
// Delta model (float_rans_delta.cc)
// ---------------------------------------------------------------------------------------------------

// Contexts: rows = the base exponent below the largest one (clamped), columns = the bit length of the
// difference expected from the lane's previous values (a running average of log2 |f - b|).
inline constexpr int kDeltaRows = 24;
inline constexpr int kDeltaCols = 8;
inline constexpr int kDeltaEmaShift = 4;
// Symbols: (bit length of |d|) << 2 | (d < 0) << 1 | (bit below the leading one); 2 = sign change.
inline constexpr uint32_t kDeltaEscape = 2;

struct DeltaTables {
  DecTables grid;
  // Version 1: the new exponent after a sign change (empty: no sign changes). Version 2 has no escape
  // table: the new magnitude follows raw.
  std::vector<rans::DecEntry> escape;
};

// After the first pass, go_on(estimated bits: the tables, their counts' entropy, the raw bits) says
// whether to code; false returns false (`out` unspecified).
bool EncodeDelta(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n, const Layout& layout,
                 const std::function<bool(uint64_t)>& go_on, Coded* out);
Status ReadDeltaTables(FloatKind kind, const Layout& layout, std::string_view* in, DeltaTables* tables);
// False on a stream that does not decode. The caller checks the checksum of what it gives: `check` (at
// done == 0) comes back advanced over the bytes the vector decoder mixed as it wrote them.
bool DecodeDelta(FloatKind kind, const Layout& layout, const DeltaTables& tables, std::string_view words,
                 std::string_view raw, const uint8_t* base, size_t n, uint8_t* out, Checksum4x64State* check);

// ---------------------------------------------------------------------------------------------------
// Standalone model (float_rans_standalone.cc)
// ---------------------------------------------------------------------------------------------------

// Exponent tokens: maxe - e below kTokZero; kTokZero = a zero magnitude; kTokEscape = any other
// exponent, which follows as raw bits. Symbol = token << 3 | sign << 2 | top two mantissa bits, in the
// context of the lane's previous token.
inline constexpr uint32_t kTokZero = 30;
inline constexpr uint32_t kTokEscape = 31;
inline constexpr int kStandaloneRows = 32;
inline constexpr int kTopBits = 2;

// As EncodeDelta: false when give_up_bits is not 0 and the first pass estimates more bits than that.
bool EncodeStandalone(FloatKind kind, const uint8_t* data, size_t n, const Layout& layout,
                      uint64_t give_up_bits, Coded* out);
Status ReadStandaloneTables(FloatKind kind, const Layout& layout, std::string_view* in, DecTables* tables);
bool DecodeStandalone(FloatKind kind, const Layout& layout, const DecTables& tables, std::string_view words,
                      std::string_view raw, size_t n, uint8_t* out, Checksum4x64State* check);

// Estimated bits of the standalone coding of n values from a sample of them.
uint64_t EstimateStandaloneBits(FloatKind kind, const uint8_t* data, size_t n, const Layout& layout);

}  // namespace deltastore::float_rans
