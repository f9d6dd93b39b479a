// The CPU's CSR product (gpu/csr_product.h): every output element is the sum of its row's terms from zero
// in S's order, each term rounded to float, bit for bit, at any width of X (the eight-wide registers and
// the one-by-one tail); and it is the product libtorch computes, to rounding.
#include "gpu/csr_product.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

namespace deltastore {
namespace {

struct Csr {
  std::vector<int64_t> crow{0};
  std::vector<uint32_t> col;
  std::vector<float> val;
};

// `rows` x `cols`, each element kept with probability `density` (rows may be empty), columns ascending.
Csr RandomCsr(int64_t rows, int64_t cols, double density, std::mt19937* rng) {
  std::bernoulli_distribution keep(density);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Csr s;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (!keep(*rng)) continue;
      s.col.push_back(static_cast<uint32_t>(c));
      s.val.push_back(n(*rng));
    }
    s.crow.push_back(static_cast<int64_t>(s.col.size()));
  }
  return s;
}

std::vector<float> RandomDense(int64_t rows, int64_t cols, std::mt19937* rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (float& v : x) v = n(*rng);
  return x;
}

// The order and roundings the header promises, one element at a time.
std::vector<float> Reference(const Csr& s, const std::vector<float>& X, int64_t samples) {
  const int64_t rows = static_cast<int64_t>(s.crow.size()) - 1;
  std::vector<float> out(static_cast<size_t>(rows * samples));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < samples; ++j) {
      volatile float a = 0.0f;  // no contraction into a fused multiply-add here either
      for (int64_t k = s.crow[r]; k < s.crow[r + 1]; ++k) {
        const volatile float term = s.val[k] * X[s.col[k] * samples + j];
        a = a + term;
      }
      out[r * samples + j] = a;
    }
  }
  return out;
}

TEST(CsrProductTest, EachElementIsItsRowsTermsSummedInOrderAtAnyWidth) {
  std::mt19937 rng(7);
  for (int64_t samples : {1, 7, 8, 31, 32, 33, 64, 65, 96, 100, 1024}) {
    for (double density : {0.0, 0.05, 0.5, 1.0}) {
      for (bool descending : {false, true}) {  // the order given is the order summed
        const int64_t rows = 13, cols = 70;
        Csr s = RandomCsr(rows, cols, density, &rng);
        if (descending) {
          for (int64_t r = 0; r < rows; ++r) {
            std::reverse(s.col.begin() + s.crow[r], s.col.begin() + s.crow[r + 1]);
            std::reverse(s.val.begin() + s.crow[r], s.val.begin() + s.crow[r + 1]);
          }
        }
        std::vector<float> X = RandomDense(cols, samples, &rng);
        std::vector<float> out(static_cast<size_t>(rows * samples), -1.0f);
        CsrTimesDense(s.crow.data(), s.col.data(), s.val.data(), rows, X.data(), samples, out.data());
        std::vector<float> want = Reference(s, X, samples);
        EXPECT_EQ(0, std::memcmp(out.data(), want.data(), out.size() * sizeof(float)))
            << "samples " << samples << ", density " << density << ", descending " << descending;
      }
    }
  }
}

TEST(CsrProductTest, NoRowsWritesNothing) {
  const int64_t crow = 0;
  float out = 5.0f;
  CsrTimesDense(&crow, nullptr, nullptr, 0, nullptr, 64, &out);
  EXPECT_EQ(out, 5.0f);
}

TEST(CsrProductTest, IsLibtorchsProductToRounding) {
  std::mt19937 rng(11);
  const int64_t rows = 40, cols = 384, samples = 64;
  Csr s = RandomCsr(rows, cols, 0.2, &rng);
  std::vector<float> X = RandomDense(cols, samples, &rng);
  std::vector<float> out(static_cast<size_t>(rows * samples));
  CsrTimesDense(s.crow.data(), s.col.data(), s.val.data(), rows, X.data(), samples, out.data());
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  auto S = torch::sparse_csr_tensor(torch::tensor(s.crow, i64),
                                    torch::tensor(std::vector<int64_t>(s.col.begin(), s.col.end()), i64),
                                    torch::tensor(s.val), {rows, cols},
                                    torch::TensorOptions().dtype(torch::kFloat32).layout(torch::kSparseCsr));
  auto want = S.matmul(torch::from_blob(X.data(), {cols, samples}));
  auto got = torch::from_blob(out.data(), {rows, samples});
  EXPECT_TRUE(torch::allclose(got, want, /*rtol=*/1e-5, /*atol=*/1e-5));
  EXPECT_GT(want.abs().max().template item<float>(), 1.0f);  // not a product of zeros
}

}  // namespace
}  // namespace deltastore
