// The static tables of the fast float coder (codec/float_rans.h): a grid of contexts (rows x columns,
// e.g. base exponent x neighbour size) whose symbol counts the encoder gathers in a first pass, merged
// into fewer tables where a table would cost more than it saves, written compactly, and rebuilt by the
// decoder. The layout in bytes is in docs/float_coder_format.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codec/rans.h"
#include "common/status.h"

namespace deltastore::float_rans {

// How grid cells share tables: rows >= `rows` use the tables of row `rows` - 1, and 2^col_shift adjacent
// columns share one.
struct ContextMap {
  int grid_rows = 1;
  int grid_cols = 1;  // a power of two
  int rows = 1;       // 1 .. grid_rows
  int col_shift = 0;  // grid_cols >> col_shift >= 1
  int cols() const { return grid_cols >> col_shift; }
  int tables() const { return rows * cols(); }
  int Table(int row, int col) const { return (row < rows ? row : rows - 1) * cols() + (col >> col_shift); }
};

// Symbol counts per grid cell, gathered by the encoder's first pass.
struct GridCounts {
  GridCounts(int rows, int cols, int alphabet)
      : rows(rows), cols(cols), alphabet(alphabet), counts(static_cast<size_t>(rows) * cols * alphabet) {}
  uint32_t* Cell(int cell) { return counts.data() + static_cast<size_t>(cell) * alphabet; }
  const uint32_t* Cell(int cell) const { return counts.data() + static_cast<size_t>(cell) * alphabet; }
  // Whether the cell counted any symbol (most cells of a small input do not: they are skipped).
  bool Used(int cell) const;
  int rows, cols, alphabet;
  std::vector<uint32_t> counts;  // [row * cols + col][symbol]
};

// The encoder's side of a written table set: per grid cell, the symbols of its table.
struct EncTables {
  std::vector<rans::EncSymbol> symbols;      // [table][symbol]
  std::vector<const rans::EncSymbol*> cell;  // [grid cell] -> its table's symbols (null: no values)
};

// The decoder's side: map.tables() decode tables one after the other, table t at t * kProbScale (a table
// the encoding leaves out decodes every slot to symbol 0: garbage, which the checks after decoding
// reject), and per grid cell a pointer to its table.
struct DecTables {
  ContextMap map;
  std::vector<rans::DecEntry> storage;
  std::vector<const rans::DecEntry*> cell;  // [grid cell]
};

// Picks the map that minimises the estimated size: the order-0 entropy of every table's counts plus the
// bytes to write the table. `max_col_shift` bounds the column merging (0 for a one-column grid).
// `cost_bits`, when not null, gets the estimated size in bits.
ContextMap ChooseContextMap(const GridCounts& counts, int max_col_shift, uint64_t* cost_bits);

// Appends the map and its tables to `out` and fills `enc`.
void WriteTables(const GridCounts& counts, const ContextMap& map, std::string* out, EncTables* enc);

// Reads what WriteTables wrote for a grid of that shape. `valid[s]` says whether symbol s may appear
// (a table giving another symbol a frequency is corrupt).
Status ReadTables(std::string_view* in, int grid_rows, int grid_cols, int alphabet, const bool* valid,
                  DecTables* out);

// One table on its own (no map): code width, lo, hi, codes. WriteTable returns false (writing nothing) when
// no symbol was counted.
bool WriteTable(const uint32_t* counts, int alphabet, std::string* out, rans::EncSymbol* enc);
Status ReadTable(std::string_view* in, int alphabet, const bool* valid, rans::DecEntry* table);

// A table that decodes every slot to symbol 0 (for cells that no valid stream uses).
const rans::DecEntry* ZeroTable();

}  // namespace deltastore::float_rans
