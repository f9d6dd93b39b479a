#include "codec/float_rans_tables.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <memory>
#include <utility>

namespace deltastore::float_rans {
namespace {

// Estimated bits (16.16) of one table: its symbols' entropy plus lo, hi and a code per symbol in between,
// a byte, or a nibble at a cost of about 1/32 bit per coded symbol. Zero for a table without counts (it
// is not written).
uint64_t TableCostQ16(const uint32_t* counts, int lo, int hi) {
  while (lo <= hi && counts[lo] == 0) ++lo;
  while (hi >= lo && counts[hi] == 0) --hi;
  if (lo > hi) return 0;
  uint64_t total = 0;
  for (int s = lo; s <= hi; ++s) total += counts[s];
  const int count = hi - lo + 1;
  const auto range = static_cast<uint64_t>(count);
  const uint64_t table_bits = std::min(8 * (2 + range), 16 + 4 * range + total / 32);
  return rans::EntropyQ16(counts, lo, hi) + (table_bits << 16);
}

// Counts of the cells of a grid merged by columns (2^col_shift per group), symbols lo..hi only: the grid's
// own at col_shift 0, then each Halve adds adjacent pairs of columns (in place). A cell that counted
// nothing is not used; its counts are not read (in `merged` they may be stale).
struct ColumnMerge {
  // `grid_used`: GridCounts::Used of every cell.
  ColumnMerge(const GridCounts& g, std::vector<bool> grid_used, int lo, int hi)
      : rows(g.rows),
        cols(g.cols),
        a(g.alphabet),
        lo(lo),
        hi(hi),
        cells(g.counts.data()),
        used(std::move(grid_used)) {}
  void Halve() {
    const int half = cols / 2;
    if (merged.empty()) merged.resize(static_cast<size_t>(rows) * half * a);
    uint32_t* const dst = merged.data();
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < half; ++c) {
        // Forward in place: the pair read is at or after the cell written, before any later write.
        uint32_t* out = dst + (static_cast<size_t>(r) * half + c) * a;
        const uint32_t* in = cells + (static_cast<size_t>(r) * cols + 2 * c) * a;
        const bool u0 = used[r * cols + 2 * c];
        const bool u1 = used[r * cols + 2 * c + 1];
        if (u0 && u1) {
          for (int s = lo; s <= hi; ++s) out[s] = in[s] + in[s + a];
        } else if (u0 || u1) {
          const uint32_t* from = u0 ? in : in + a;
          std::copy(from + lo, from + hi + 1, out + lo);
        }
        used[r * half + c] = u0 || u1;
      }
    }
    cols = half;
    cells = dst;
  }
  bool Used(int r, int c) const { return used[r * cols + c]; }
  const uint32_t* At(int r, int c) const { return cells + (static_cast<size_t>(r) * cols + c) * a; }
  int rows, cols, a, lo, hi;
  const uint32_t* cells;  // [row][column][symbol], the grid's or `merged`
  std::vector<uint32_t> merged;
  std::vector<bool> used;  // [row][column]
};

size_t CodeBytes(int lo, int hi, rans::CodeWidth width) {
  const int count = hi - lo + 1;
  const auto n = static_cast<size_t>(count);
  return width == rans::CodeWidth::kByte ? n : (n + 1) / 2;
}

// lo, hi, then the codes of the symbols lo..hi (nibbles: low nibble first, the last one padded with 0).
void WriteCodes(const uint8_t* codes, int alphabet, rans::CodeWidth width, std::string* out) {
  int lo = 0;
  int hi = alphabet - 1;
  while (codes[lo] == 0) ++lo;
  while (codes[hi] == 0) --hi;
  out->push_back(static_cast<char>(lo));
  out->push_back(static_cast<char>(hi));
  if (width == rans::CodeWidth::kByte) {
    const int count = hi - lo + 1;
    out->append(reinterpret_cast<const char*>(codes + lo), static_cast<size_t>(count));
    return;
  }
  for (int s = lo; s <= hi; s += 2) {
    const uint8_t high = s + 1 <= hi ? codes[s + 1] : 0;
    out->push_back(static_cast<char>(codes[s] | (high << 4)));
  }
}

// Reads what WriteCodes wrote into freqs[0, alphabet).
Status ReadFreqs(std::string_view* in, int alphabet, rans::CodeWidth width, const bool* valid,
                 uint32_t* freqs) {
  if (in->size() < 2) return Corruption("float rans: truncated table");
  const int lo = static_cast<uint8_t>((*in)[0]);
  const int hi = static_cast<uint8_t>((*in)[1]);
  if (lo > hi || hi >= alphabet) return Corruption("float rans: bad table range");
  const size_t n = CodeBytes(lo, hi, width);
  if (in->size() < 2 + n) return Corruption("float rans: truncated table");
  const auto* p = reinterpret_cast<const uint8_t*>(in->data()) + 2;
  uint32_t weights[rans::kMaxAlphabet] = {};
  for (int s = lo; s <= hi; ++s) {
    const int k = s - lo;
    const uint8_t code = width == rans::CodeWidth::kByte ? p[k] : (p[k / 2] >> (4 * (k % 2))) & 15;
    weights[s] = rans::CodeToWeight(code, width);
    if (weights[s] != 0 && !valid[s]) return Corruption("float rans: table codes an invalid symbol");
  }
  if (weights[lo] == 0 || weights[hi] == 0) return Corruption("float rans: bad table range");
  if (width == rans::CodeWidth::kNibble && (hi - lo) % 2 == 0 && (p[n - 1] >> 4) != 0)
    return Corruption("float rans: bad table padding");
  in->remove_prefix(2 + n);
  if (!rans::NormalizeWeights(weights, alphabet, freqs)) return Corruption("float rans: empty table");
  return OkStatus();
}

// One table's codes and frequencies in both widths, to choose from.
struct TableCodes {
  bool present = false;
  uint8_t codes[2][rans::kMaxAlphabet];
  uint32_t freqs[2][rans::kMaxAlphabet];
  uint64_t cost_q16[2] = {0, 0};  // coded symbols plus the table itself

  TableCodes(const uint32_t* counts, int alphabet) {
    for (int w = 0; w < 2; ++w) {
      const auto width = static_cast<rans::CodeWidth>(w);
      present = rans::QuantizedFreqs(counts, alphabet, width, freqs[w], codes[w]);
      if (!present) return;
      int lo = 0;
      int hi = alphabet - 1;
      while (codes[w][lo] == 0) ++lo;
      while (codes[w][hi] == 0) --hi;
      cost_q16[w] = rans::CrossEntropyQ16(counts, freqs[w], alphabet) +
                    ((8 * (2 + static_cast<uint64_t>(CodeBytes(lo, hi, width)))) << 16);
    }
  }
};

}  // namespace

bool GridCounts::Used(int cell) const {
  static constexpr uint32_t kZeros[rans::kMaxAlphabet] = {};
  return std::memcmp(Cell(cell), kZeros, sizeof(uint32_t) * static_cast<size_t>(alphabet)) != 0;
}

ContextMap ChooseContextMap(const GridCounts& g, int max_col_shift, uint64_t* cost_bits) {
  // The symbols counted anywhere.
  int lo = g.alphabet;
  int hi = -1;
  std::vector<bool> used(static_cast<size_t>(g.rows) * g.cols);
  for (int cell = 0; cell < g.rows * g.cols; ++cell) {
    // Only what could widen [lo, hi] is looked at.
    used[cell] = g.Used(cell);
    if (!used[cell]) continue;
    const uint32_t* c = g.Cell(cell);
    for (int s = 0; s < std::min(lo, g.alphabet); ++s) {
      if (c[s] != 0) {
        lo = s;
        break;
      }
    }
    for (int s = g.alphabet - 1; s > hi; --s) {
      if (c[s] != 0) {
        hi = s;
        break;
      }
    }
  }
  ContextMap best{g.rows, g.cols, 1, 0};
  uint64_t best_cost = ~uint64_t{0};
  if (hi < 0) {
    if (cost_bits != nullptr) *cost_bits = 0;
    return best;
  }
  std::vector<uint32_t> suffix;
  std::vector<uint64_t> row_cost(g.rows + 1);
  std::vector<uint64_t> suffix_cost(g.rows);
  std::vector<uint64_t> column_cost;
  ColumnMerge m(g, std::move(used), lo, hi);
  for (int shift = 0; shift <= max_col_shift && (g.cols >> shift) >= 1; ++shift) {
    if (shift > 0) m.Halve();
    suffix.assign(static_cast<size_t>(m.cols) * g.alphabet, 0);
    column_cost.assign(m.cols, 0);
    // row_cost[r]: rows < r with their own tables; suffix_cost[r]: rows >= r merged (a column's cost
    // changes only with a used cell). An unused cell's table costs nothing.
    for (int r = 0; r < g.rows; ++r) {
      uint64_t cost = 0;
      for (int c = 0; c < m.cols; ++c) {
        if (m.Used(r, c)) cost += TableCostQ16(m.At(r, c), lo, hi);
      }
      row_cost[r + 1] = row_cost[r] + cost;
    }
    for (int r = g.rows - 1; r >= 0; --r) {
      uint64_t below = 0;
      for (int c = 0; c < m.cols; ++c) {
        if (m.Used(r, c)) {
          uint32_t* s = suffix.data() + static_cast<size_t>(c) * g.alphabet;
          const uint32_t* row = m.At(r, c);
          for (int k = lo; k <= hi; ++k) s[k] += row[k];
          column_cost[c] = TableCostQ16(s, lo, hi);
        }
        below += column_cost[c];
      }
      suffix_cost[r] = below;
    }
    for (int rows = 1; rows <= g.rows; ++rows) {
      const uint64_t bitmap_bits = static_cast<uint64_t>((rows * m.cols + 7) / 8 * 8) + 24;
      const uint64_t cost = row_cost[rows - 1] + suffix_cost[rows - 1] + (bitmap_bits << 16);
      if (cost < best_cost) {
        best_cost = cost;
        best = ContextMap{g.rows, g.cols, rows, shift};
      }
    }
  }
  if (cost_bits != nullptr) *cost_bits = (best_cost >> 16) + 16;
  return best;
}

void WriteTables(const GridCounts& g, const ContextMap& map, std::string* out, EncTables* enc) {
  const int tables = map.tables();
  std::vector<uint32_t> merged(static_cast<size_t>(tables) * g.alphabet, 0);
  for (int r = 0; r < g.rows; ++r) {
    for (int c = 0; c < g.cols; ++c) {
      if (!g.Used(r * g.cols + c)) continue;
      const uint32_t* src = g.Cell(r * g.cols + c);
      uint32_t* dst = merged.data() + static_cast<size_t>(map.Table(r, c)) * g.alphabet;
      for (int s = 0; s < g.alphabet; ++s) dst[s] += src[s];
    }
  }
  // One code width for the whole set: the smaller total.
  std::vector<std::unique_ptr<TableCodes>> codes(tables);
  uint64_t cost[2] = {0, 0};
  for (int t = 0; t < tables; ++t) {
    codes[t] = std::make_unique<TableCodes>(merged.data() + static_cast<size_t>(t) * g.alphabet, g.alphabet);
    for (int w = 0; w < 2; ++w) cost[w] += codes[t]->cost_q16[w];
  }
  const int w = cost[1] < cost[0] ? 1 : 0;
  out->push_back(static_cast<char>(map.rows));
  out->push_back(static_cast<char>(map.col_shift));
  out->push_back(static_cast<char>(w));
  const size_t bitmap_at = out->size();
  out->append(static_cast<size_t>((tables + 7) / 8), '\0');
  enc->symbols.assign(static_cast<size_t>(tables) * g.alphabet, rans::EncSymbol{});
  for (int t = 0; t < tables; ++t) {
    if (!codes[t]->present) continue;
    (*out)[bitmap_at + t / 8] = static_cast<char>((*out)[bitmap_at + t / 8] | (1 << (t % 8)));
    WriteCodes(codes[t]->codes[w], g.alphabet, static_cast<rans::CodeWidth>(w), out);
    rans::BuildEncSymbols(codes[t]->freqs[w], g.alphabet, &enc->symbols[static_cast<size_t>(t) * g.alphabet]);
  }
  enc->cell.assign(static_cast<size_t>(g.rows) * g.cols, nullptr);
  for (int r = 0; r < g.rows; ++r) {
    for (int c = 0; c < g.cols; ++c) {
      const int t = map.Table(r, c);
      if (codes[t]->present) enc->cell[r * g.cols + c] = &enc->symbols[static_cast<size_t>(t) * g.alphabet];
    }
  }
}

Status ReadTables(std::string_view* in, int grid_rows, int grid_cols, int alphabet, const bool* valid,
                  DecTables* out) {
  if (in->size() < 3) return Corruption("float rans: truncated table map");
  ContextMap map{grid_rows, grid_cols, static_cast<uint8_t>((*in)[0]), static_cast<uint8_t>((*in)[1])};
  const uint8_t width = static_cast<uint8_t>((*in)[2]);
  if (map.rows < 1 || map.rows > grid_rows ||
      map.col_shift >= static_cast<int>(std::bit_width(static_cast<unsigned>(grid_cols))) || width > 1)
    return Corruption("float rans: bad table map");
  in->remove_prefix(3);
  const int tables = map.tables();
  const size_t bitmap_bytes = static_cast<size_t>((tables + 7) / 8);
  if (in->size() < bitmap_bytes) return Corruption("float rans: truncated table map");
  const std::string_view bitmap = in->substr(0, bitmap_bytes);
  in->remove_prefix(bitmap_bytes);
  if (tables % 8 != 0 && (static_cast<uint8_t>(bitmap.back()) >> (tables % 8)) != 0)
    return Corruption("float rans: bad table map");
  out->map = map;
  out->storage.assign(static_cast<size_t>(tables) * rans::kProbScale, 0);
  uint32_t freqs[rans::kMaxAlphabet];
  for (int t = 0; t < tables; ++t) {
    if (((static_cast<uint8_t>(bitmap[t / 8]) >> (t % 8)) & 1) == 0) continue;
    DS_RETURN_IF_ERROR(ReadFreqs(in, alphabet, static_cast<rans::CodeWidth>(width), valid, freqs));
    rans::BuildDecTable(freqs, alphabet, out->storage.data() + static_cast<size_t>(t) * rans::kProbScale);
  }
  out->cell.resize(static_cast<size_t>(grid_rows) * grid_cols);
  for (int r = 0; r < grid_rows; ++r) {
    for (int c = 0; c < grid_cols; ++c) {
      out->cell[r * grid_cols + c] =
          out->storage.data() + static_cast<size_t>(map.Table(r, c)) * rans::kProbScale;
    }
  }
  return OkStatus();
}

bool WriteTable(const uint32_t* counts, int alphabet, std::string* out, rans::EncSymbol* enc) {
  const auto codes = std::make_unique<TableCodes>(counts, alphabet);
  if (!codes->present) return false;
  const int w = codes->cost_q16[1] < codes->cost_q16[0] ? 1 : 0;
  out->push_back(static_cast<char>(w));
  WriteCodes(codes->codes[w], alphabet, static_cast<rans::CodeWidth>(w), out);
  rans::BuildEncSymbols(codes->freqs[w], alphabet, enc);
  return true;
}

Status ReadTable(std::string_view* in, int alphabet, const bool* valid, rans::DecEntry* table) {
  if (in->empty() || static_cast<uint8_t>(in->front()) > 1) return Corruption("float rans: bad table width");
  const auto width = static_cast<rans::CodeWidth>(in->front());
  in->remove_prefix(1);
  uint32_t freqs[rans::kMaxAlphabet];
  DS_RETURN_IF_ERROR(ReadFreqs(in, alphabet, width, valid, freqs));
  rans::BuildDecTable(freqs, alphabet, table);
  return OkStatus();
}

const rans::DecEntry* ZeroTable() {
  static const std::array<rans::DecEntry, rans::kProbScale> zeros{};
  return zeros.data();
}

}  // namespace deltastore::float_rans
