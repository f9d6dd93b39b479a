// AVX-512 decoding (float_rans_simd.cc) and encoding passes (float_rans_simd_encode.cc, at the end) of
// the fast float coder's payloads (codec/float_rans.h). Decoding with 32 lanes (version 2:
// BF16, F16; version 3: F32 too): a row of 32 values is two vectors of 16 lanes, each decoded with one
// table gather, the renormalisation words expanded into the lanes that need one, and the raw bits of the
// 16 values cut out of one 64-byte load at prefix-summed offsets (F32, fields of up to 31 bits: one load
// per 8 lanes, cut as 64-bit words). Same values, same stream order as the
// scalar decoders (docs/float_coder_format.md): these only decode the rows that fit the streams without
// bounds checks and hand the lane states back to the scalar code for the rest.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/bit_stream.h"
#include "codec/checksum.h"
#include "codec/float_coder.h"
#include "codec/rans.h"

namespace deltastore::float_rans {

inline constexpr int kSimdLanes = 32;

// True when the CPU has AVX-512 F, BW, CD and VBMI and SetSimdEnabled(false) was not called.
bool SimdEnabled();
// Tests compare both paths; the default is on where the CPU allows.
void SetSimdEnabled(bool on);

// The positions in the two streams, advanced by what a call decodes.
struct SimdStreams {
  const uint8_t* words = nullptr;
  const uint8_t* words_end = nullptr;
  const uint8_t* raw = nullptr;  // the byte holding the next raw bit
  const uint8_t* raw_end = nullptr;
  int raw_bit = 0;  // bits of *raw already read (0..7)
};

// The delta model's constants (float_rans_delta.cc): `tables` holds the map's tables one after the
// other (kProbScale entries each), table of a value = clamp(maxe - be, 0, rows - 1) << cols_log2, plus
// (column >> col_shift) when nbr.
struct SimdDeltaSetup {
  int tz = 0, mb = 0, maxe = 0, rows = 1, cols_log2 = 0, col_shift = 0;
  bool nbr = false;
  const rans::DecEntry* tables = nullptr;
};

// The standalone model's constants: table of a value = min(previous token, rows - 1).
struct SimdStandaloneSetup {
  int tz = 0, mb = 0, maxe = 0, rows = 1;
  const rans::DecEntry* tables = nullptr;
};

// Decode whole rows of 32 values from value 0 while the streams leave room for unchecked reads; return
// the values decoded (a multiple of 32). x: the 32 lane states; avg16 / prev: the lanes' context state;
// check: the output's checksum, at done == 0, advanced over the bytes written (so the output is not read
// again for it).
size_t DecodeDeltaRowsSimd(FloatKind kind, const SimdDeltaSetup& setup, uint32_t* x, int* avg16,
                           const uint8_t* base, uint8_t* out, size_t n, SimdStreams* s,
                           Checksum4x64State* check);
size_t DecodeStandaloneRowsSimd(FloatKind kind, const SimdStandaloneSetup& setup, uint32_t* x, uint32_t* prev,
                                uint8_t* out, size_t n, SimdStreams* s, Checksum4x64State* check);

// The encoder's passes (float_rans_simd_encode.cc).

// The delta encoder's first pass (float_rans_delta.cc) over whole rows of 32 values of a version 2 or 3
// payload from value 0: per value its symbol and grid cell (row * 8 + column), the count of (cell,
// symbol) in counts[cell * alphabet + symbol], the raw field appended to `bits`. `setup` needs tz, mb and
// maxe. Returns the values done (a multiple of 32); avg16 as in the decoders.
size_t AnalyseDeltaRowsSimd(FloatKind kind, const SimdDeltaSetup& setup, const uint8_t* data,
                            const uint8_t* base, size_t n, int* avg16, uint8_t* syms, uint8_t* cells,
                            uint32_t* counts, int alphabet, BulkBitWriter::Cursor* bits);

// The standalone encoder's symbols (float_rans_standalone.cc) of the first values, 16 at a time, their raw
// fields appended to `bits`; `setup` needs tz, mb and maxe. Returns the values done (n rounded down to a
// multiple of 16).
size_t StandaloneSymbolsSimd(FloatKind kind, const SimdStandaloneSetup& setup, const uint8_t* data, size_t n,
                             uint8_t* syms, BulkBitWriter::Cursor* bits);

// The OR of the first words (of `width` bits, 16 or 32) at p and their largest magnitude (the word
// without its sign bit); returns how many it looked at (a multiple of 16, n rounded down).
size_t ScanSimd(int width, const uint8_t* p, size_t n, uint32_t* or_all, uint32_t* max_mag);

// The rANS coding of rows of 32 values (a symbol in the table of its cell each), as rans::EncPut value
// by value from the last row's lane 31 back to row 0's lane 0. The symbol of value t is syms[t], its
// grid cell cells[t] >> cell_shift; the grid has 2^grid_cols_log2 columns, mapped to tables as
// ContextMap::Table (rows, col_shift); the table of number k is symbols + (k << alphabet_log2).
struct SimdEncodeSetup {
  const rans::EncSymbol* symbols = nullptr;
  int alphabet_log2 = 0, rows = 1, grid_cols_log2 = 0, col_shift = 0, cell_shift = 0;
};
// x: the 32 lane states, updated; ptr: where the words so far begin. Returns where they begin after.
uint8_t* EncodeRowsSimd(const SimdEncodeSetup& setup, const uint8_t* syms, const uint8_t* cells, size_t rows,
                        uint32_t* x, uint8_t* ptr);

}  // namespace deltastore::float_rans
