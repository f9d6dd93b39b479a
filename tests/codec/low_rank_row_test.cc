// LowRankRow gives, lane by lane, the bits of the plain loop: each column's sum over k in order, every
// product and sum rounded on its own, whatever width (eight-column lanes, the tail) the column falls in.
#include "codec/low_rank_row.h"

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

float Plain(const std::vector<float>& a, const std::vector<float>& b, uint32_t rank, uint32_t cols,
            uint32_t j) {
  volatile float s = 0;  // volatile: a rounded product, then a rounded sum, never fused
  for (uint32_t k = 0; k < rank; ++k) {
    volatile float p = a[k] * b[static_cast<size_t>(k) * cols + j];
    s = s + p;
  }
  return s;
}

TEST(LowRankRowTest, EveryColumnHasThePlainLoopsBits) {
  std::mt19937 rng(7);
  // Values over several magnitudes, so that the order of the sums shows in the low bits.
  std::lognormal_distribution<float> mag(0.0f, 3.0f);
  std::bernoulli_distribution sign(0.5);
  for (uint32_t rank : {0u, 1u, 5u, 33u}) {
    for (uint32_t cols : {1u, 7u, 8u, 9u, 63u, 64u, 65u, 72u, 130u, 384u}) {
      SCOPED_TRACE(testing::Message() << "rank " << rank << " cols " << cols);
      std::vector<float> a(rank), b(static_cast<size_t>(rank) * cols), out(cols, -1.0f);
      for (float& x : a) x = sign(rng) ? mag(rng) : -mag(rng);
      for (float& x : b) x = sign(rng) ? mag(rng) : -mag(rng);
      LowRankRow(a.data(), b.data(), rank, cols, out.data());
      size_t differ = 0;
      for (uint32_t j = 0; j < cols; ++j) {
        const float want = Plain(a, b, rank, cols, j);
        differ += Bits(want) != Bits(out[j]);
      }
      EXPECT_EQ(differ, 0u);
    }
  }
}

}  // namespace
}  // namespace deltastore
