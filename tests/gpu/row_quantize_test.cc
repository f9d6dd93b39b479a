// The CPU's row quantization (gpu/row_quantize.h): the eight-wide kernel gives the scalar loop's bits,
// which are libtorch's tensor expressions' (round half to even, clamp, the product rounded before the
// sum), on ties, values below zero and above the top code, and every tail length.
#include "gpu/row_quantize.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace deltastore {
namespace {

// n values around [z, z + top * s]: a third of them exactly on a half step (ties), some below z or above
// the top code.
std::vector<float> Values(int64_t n, float z, float s, float top, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-0.2f, 1.2f);
  std::uniform_int_distribution<int> step(-2, static_cast<int>(top) + 2);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    v[k] = k % 3 == 0 ? z + s * (static_cast<float>(step(*rng)) + 0.5f) : z + u(*rng) * top * s;
  }
  return v;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST(RowQuantizeTest, TheVectorKernelGivesTheScalarLoopsAndLibtorchsBits) {
  std::mt19937 rng(7);
  for (float top : {1.0f, 3.0f, 15.0f, 255.0f}) {
    for (int64_t n : {0, 1, 7, 8, 9, 16, 37, 1000}) {
      const float z = -0.013f, s = 0.0271f / top;
      const std::vector<float> v = Values(n, z, s, top, &rng);
      std::vector<uint16_t> fast(n), slow(n);
      std::vector<float> fast_deq(n), slow_deq(n);
      QuantizeRowRun(v.data(), n, z, s, top, fast.data(), fast_deq.data());
      QuantizeRowRunScalar(v.data(), n, z, s, top, slow.data(), slow_deq.data());
      auto t = torch::from_blob(const_cast<float*>(v.data()), {n}, torch::kFloat32);
      auto q = torch::round((t - z) / s).clamp(0, static_cast<double>(top));
      auto deq = (q * s + z).contiguous();
      auto codes = q.to(torch::kInt32).contiguous();
      for (int64_t k = 0; k < n; ++k) {
        ASSERT_EQ(fast[k], slow[k]) << "top " << top << " n " << n << " k " << k << " v " << v[k];
        ASSERT_EQ(Bits(fast_deq[k]), Bits(slow_deq[k])) << "top " << top << " n " << n << " k " << k;
        ASSERT_EQ(fast[k], codes.data_ptr<int32_t>()[k]) << "top " << top << " k " << k << " v " << v[k];
        ASSERT_EQ(Bits(fast_deq[k]), Bits(deq.data_ptr<float>()[k])) << "top " << top << " k " << k;
      }
    }
  }
}

// FoldRowRange over runs of rows gives libtorch's scatter_reduce "amin" / "amax" bit for bit, both the
// eight-wide kernel (runs of 16 values and more) and the scalar loop: rows that come back after other
// rows' runs, zeros of both signs (the first one met stays), a NaN (it sticks), and a row with no values
// (the infinities it starts from).
TEST(RowQuantizeTest, FoldingRowRunsGivesScatterReducesRanges) {
  const int64_t rows = 9;  // the last one gets no values
  std::vector<float> v;
  std::vector<int64_t> r;
  auto run = [&](int64_t row, const std::vector<float>& values) {
    v.insert(v.end(), values.begin(), values.end());
    r.insert(r.end(), values.size(), row);
  };
  // row 0: only zeros, -0 first, in a short run and then a long one
  run(0, {-0.0f, 0.0f});
  run(0, std::vector<float>(20, 0.0f));
  // row 1: a NaN after zeros and before a larger value, short; row 2: a NaN inside a long run
  run(1, {0.0f, -0.0f, std::nanf(""), 1.0f, 0.0f});
  std::vector<float> long_nan(40, 0.5f);
  long_nan[17] = std::nanf("");
  run(2, long_nan);
  // row 3: a long run of values of one sign and +0, then -0 first in another: the range ends at a zero
  std::vector<float> pos(24, 2.0f);
  pos[9] = 0.0f;
  run(3, pos);
  pos[9] = -0.0f;
  run(3, pos);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> row(4, rows - 2), len(1, 40), kind(0, 9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < 80; ++i) {
    const int64_t at = row(rng);
    std::vector<float> values;
    for (int k = len(rng); k > 0; --k) {
      const int c = kind(rng);
      values.push_back(c == 0 ? 0.0f : c == 1 ? -0.0f : c < 6 ? std::fabs(normal(rng)) : normal(rng));
    }
    run(at, values);
  }
  const auto n = static_cast<int64_t>(v.size());
  auto tv = torch::from_blob(v.data(), {n}, torch::kFloat32);
  auto tr = torch::from_blob(r.data(), {n}, torch::kInt64);
  const float inf = std::numeric_limits<float>::infinity();
  auto lo = torch::full({rows}, inf).scatter_reduce(0, tr, tv, "amin").contiguous();
  auto hi = torch::full({rows}, -inf).scatter_reduce(0, tr, tv, "amax").contiguous();
  for (auto fold : {FoldRowRange, FoldRowRangeScalar}) {
    std::vector<float> fl(rows, inf), fh(rows, -inf);
    for (int64_t k = 0; k < n;) {
      int64_t end = k + 1;
      while (end < n && r[end] == r[k]) ++end;
      fold(v.data() + k, end - k, &fl[r[k]], &fh[r[k]]);
      k = end;
    }
    for (int64_t i = 0; i < rows; ++i) {
      EXPECT_EQ(Bits(fl[i]), Bits(lo.data_ptr<float>()[i])) << "row " << i;
      EXPECT_EQ(Bits(fh[i]), Bits(hi.data_ptr<float>()[i])) << "row " << i;
    }
    EXPECT_EQ(Bits(fl[0]), Bits(-0.0f));
    EXPECT_EQ(Bits(fh[0]), Bits(-0.0f));
    EXPECT_TRUE(std::isnan(fl[1]) && std::isnan(fh[1]) && std::isnan(fl[2]) && std::isnan(fh[2]));
    EXPECT_EQ(Bits(fl[3]), Bits(0.0f));
    EXPECT_EQ(fh[3], 2.0f);
    EXPECT_EQ(fl[rows - 1], inf);
    EXPECT_EQ(fh[rows - 1], -inf);
  }
}

}  // namespace
}  // namespace deltastore
