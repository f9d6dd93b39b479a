// The CPU's row quantization (gpu/row_quantize.h): the eight-wide kernel gives the scalar loop's bits,
// which are libtorch's tensor expressions' (round half to even, clamp, the product rounded before the
// sum), on ties, values below zero and above the top code, and every tail length.
#include "gpu/row_quantize.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
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

}  // namespace
}  // namespace deltastore
