// SumScaledRows gives, lane by lane, the bits of the plain loop: each column's sum over the terms in order,
// every product and sum rounded on its own, whatever width (64-, 32- or 8-column lanes, the tail) the column
// falls in, with the rows taken in order (a low-rank term's row) or through an index (a CSR row).
#include "codec/scaled_rows.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace deltastore {
namespace {

uint32_t Bits(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float Plain(const std::vector<float>& val, const std::vector<uint32_t>* idx, const std::vector<float>& rows,
            uint32_t width, uint32_t j) {
  volatile float s = 0;  // volatile: a rounded product, then a rounded sum, never fused
  for (size_t i = 0; i < val.size(); ++i) {
    const size_t r = idx != nullptr ? (*idx)[i] : i;
    volatile float p = val[i] * rows[r * width + j];
    s = s + p;
  }
  return s;
}

TEST(ScaledRowsTest, EveryColumnHasThePlainLoopsBits) {
  std::mt19937 rng(7);
  // Values over several magnitudes, so that the order of the sums shows in the low bits.
  std::lognormal_distribution<float> mag(0.0f, 3.0f);
  std::bernoulli_distribution sign(0.5);
  const uint32_t table = 40;  // rows an index picks from, in any order, some twice
  std::uniform_int_distribution<uint32_t> pick(0, table - 1);
  for (bool indexed : {false, true}) {
    for (uint32_t n : {0u, 1u, 5u, 33u}) {
      for (uint32_t width : {1u, 7u, 8u, 9u, 31u, 32u, 40u, 63u, 64u, 65u, 72u, 96u, 130u, 384u}) {
        SCOPED_TRACE(testing::Message() << "indexed " << indexed << " n " << n << " width " << width);
        std::vector<float> val(n), rows(static_cast<size_t>(indexed ? table : n) * width), out(width, -1.0f);
        std::vector<uint32_t> idx(n);
        for (float& x : val) x = sign(rng) ? mag(rng) : -mag(rng);
        for (float& x : rows) x = sign(rng) ? mag(rng) : -mag(rng);
        for (uint32_t& r : idx) r = pick(rng);
        SumScaledRows(val.data(), indexed ? idx.data() : nullptr, n, rows.data(), width, out.data());
        size_t differ = 0;
        for (uint32_t j = 0; j < width; ++j) {
          const float want = Plain(val, indexed ? &idx : nullptr, rows, width, j);
          differ += Bits(want) != Bits(out[j]);
        }
        EXPECT_EQ(differ, 0u);
      }
    }
  }
}

}  // namespace
}  // namespace deltastore
