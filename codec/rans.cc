#include "codec/rans.h"

#include <algorithm>
#include <array>

namespace deltastore::rans {

uint8_t FreqToCode(uint32_t freq, CodeWidth width) {
  if (width == CodeWidth::kNibble) {
    // The nearest weight on a log scale: above the geometric mean of two neighbours, the upper one.
    uint8_t code = 1;
    while (code < 15 && static_cast<uint64_t>(freq) * freq >
                            static_cast<uint64_t>(kNibbleWeights[code]) * kNibbleWeights[code + 1])
      ++code;
    return code;
  }
  if (freq < 128) return static_cast<uint8_t>(freq);
  int e = std::bit_width(freq) - 8;  // freq in [16 << (e + 3), 32 << (e + 3))
  uint32_t m = (freq + (1u << (e + 2))) >> (e + 3);
  if (m == 32) {
    ++e;
    m = 16;
  }
  return static_cast<uint8_t>(128 + 16 * e + (m - 16));
}

uint32_t CodeToWeight(uint8_t code, CodeWidth width) {
  if (width == CodeWidth::kNibble) return kNibbleWeights[code & 15];
  if (code < 128) return code;
  const uint32_t e = (code - 128u) >> 4;
  return (16 + (code & 15u)) << (e + 3);
}

bool NormalizeWeights(const uint32_t* weights, int alphabet, uint32_t* freqs) {
  uint64_t total = 0;
  for (int s = 0; s < alphabet; ++s) total += weights[s];
  if (total == 0) return false;
  uint32_t sum = 0;
  int largest = 0;
  for (int s = 0; s < alphabet; ++s) {
    uint32_t f = 0;
    if (weights[s] != 0) {
      f = static_cast<uint32_t>((static_cast<uint64_t>(weights[s]) * kProbScale + total / 2) / total);
      f = std::max(f, 1u);
    }
    freqs[s] = f;
    sum += f;
    if (f > freqs[largest]) largest = s;
  }
  if (sum <= kProbScale) {
    freqs[largest] += kProbScale - sum;
    return true;
  }
  // Too much after the floor of 1: take the excess from the largest frequencies (each keeps at least 1;
  // alphabet <= kProbScale makes that always possible).
  while (sum > kProbScale) {
    int s_max = 0;
    for (int s = 1; s < alphabet; ++s)
      if (freqs[s] > freqs[s_max]) s_max = s;
    const uint32_t take = std::min(sum - kProbScale, freqs[s_max] - 1);
    freqs[s_max] -= take;
    sum -= take;
  }
  return true;
}

bool QuantizedFreqs(const uint32_t* counts, int alphabet, CodeWidth width, uint32_t* freqs, uint8_t* codes) {
  if (!NormalizeWeights(counts, alphabet, freqs)) return false;
  uint32_t weights[kMaxAlphabet];
  for (int s = 0; s < alphabet; ++s) {
    codes[s] = freqs[s] == 0 ? 0 : FreqToCode(freqs[s], width);
    weights[s] = CodeToWeight(codes[s], width);
  }
  return NormalizeWeights(weights, alphabet, freqs);
}

uint64_t CrossEntropyQ16(const uint32_t* counts, const uint32_t* freqs, int alphabet) {
  uint64_t bits = 0;
  for (int s = 0; s < alphabet; ++s) {
    if (counts[s] != 0) bits += static_cast<uint64_t>(counts[s]) * ((kProbBits << 16) - Log2Q16(freqs[s]));
  }
  return bits;
}

namespace {

// log2(m) in 16.16 for m in [1, 4096), by repeated squaring of the normalised mantissa.
constexpr uint32_t SmallLog2(uint32_t m) {
  const int ip = std::bit_width(m) - 1;
  uint64_t y = static_cast<uint64_t>(m) << (30 - ip);  // [2^30, 2^31): the mantissa in 2.30
  uint32_t frac = 0;
  for (int i = 1; i <= 16; ++i) {
    y = (y * y) >> 30;
    if (y >= (uint64_t{1} << 31)) {
      y >>= 1;
      frac |= 1u << (16 - i);
    }
  }
  return (static_cast<uint32_t>(ip) << 16) | frac;
}

constexpr int kLogTableBits = 12;

const std::array<uint32_t, 1 << kLogTableBits>& LogTable() {
  static const std::array<uint32_t, 1 << kLogTableBits> table = [] {
    std::array<uint32_t, 1 << kLogTableBits> t{};
    for (uint32_t m = 1; m < t.size(); ++m) t[m] = SmallLog2(m);
    return t;
  }();
  return table;
}

}  // namespace

uint32_t Log2Q16(uint64_t x) {
  const auto& table = LogTable();
  if (x < table.size()) return table[x];
  const int shift =
      std::max(1, static_cast<int>(std::bit_width(x)) - kLogTableBits);  // x >= 2^kLogTableBits here
  return (static_cast<uint32_t>(shift) << 16) + table[x >> shift];
}

uint64_t EntropyQ16(const uint32_t* counts, int lo, int hi) {
  const auto& table = LogTable();
  uint64_t total = 0;
  uint64_t sum = 0;
  for (int s = lo; s <= hi; ++s) {
    const uint32_t c = counts[s];
    total += c;
    sum += static_cast<uint64_t>(c) * (c < table.size() ? table[c] : Log2Q16(c));
  }
  return total * Log2Q16(total) - sum;
}

void BuildEncSymbols(const uint32_t* freqs, int alphabet, EncSymbol* enc) {
  uint32_t cum = 0;
  for (int s = 0; s < alphabet; ++s) {
    const uint32_t f = freqs[s];
    enc[s] = EncSymbol{};
    if (f == 0) continue;
    const int shift = std::bit_width(f - 1);
    const uint64_t m = ((uint64_t{1} << (32 + shift)) + f - 1) / f;  // in [2^32, 2^33)
    enc[s].mult = static_cast<uint32_t>(m);
    enc[s].info = f | (cum << kEncCumShift) | (static_cast<uint32_t>(shift) << kEncDivShift);
    cum += f;
  }
}

void BuildDecTable(const uint32_t* freqs, int alphabet, DecEntry* table) {
  uint32_t cum = 0;
  for (int s = 0; s < alphabet; ++s) {
    const uint32_t f = freqs[s];
    if (f == 0) continue;
    const DecEntry fixed = static_cast<uint32_t>(s) | ((f - 1) << 20);
    for (uint32_t k = 0; k < f; ++k) table[cum + k] = fixed | (k << 8);
    cum += f;
  }
}

}  // namespace deltastore::rans
