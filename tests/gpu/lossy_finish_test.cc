// The end of a lossy compression (gpu/lossy.cc, Finish): the search state is released, the tensor is
// rebuilt row by row and the finetune reloaded; the rebuilt bytes and the report's errors are still those
// of the whole-tensor decode and of float32 arithmetic on the whole tensors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "codec/chunk_codec.h"
#include "codec/lossy_codec.h"
#include "gpu/lossy.h"

namespace deltastore {
namespace {

torch::Tensor AsFloat(DType dtype, const std::string& bytes, uint32_t rows, uint32_t cols) {
  auto t = torch::empty({rows, cols}, torch::kFloat32);
  EXPECT_TRUE(ToFloat32(dtype, bytes.data(), static_cast<size_t>(rows) * cols, t.data_ptr<float>()));
  return t;
}

TEST(LossyFinishTest, RebuiltBytesAndReportedErrorsAreThoseOfTheWholeTensor) {
  const uint32_t rows = 96, cols = 200;
  std::mt19937 rng(3);
  std::normal_distribution<float> w(0.0f, 0.05f), d(0.0f, 0.002f);
  std::vector<float> b(rows * cols), f(rows * cols);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = w(rng);
    f[i] = b[i] * 0.99f + d(rng);
  }
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    std::string base(b.size() * DTypeSize(dtype), '\0'), ft(base.size(), '\0');
    FromFloat32(dtype, b.data(), b.size(), base.data());
    FromFloat32(dtype, f.data(), f.size(), ft.data());
    for (double ratio : {8.0, 64.0}) {
      LossyOptions o;
      o.target_ratio = ratio;
      auto r = CompressLossyTensor(dtype, base.data(), ft.data(), rows, cols, 4, nullptr, o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      std::string whole;
      ASSERT_TRUE(DecodeLossyChunk(r->chunk, base, &whole).ok());
      EXPECT_TRUE(whole == r->reconstructed) << ratio;
      torch::NoGradGuard no_grad;
      const auto F = AsFloat(dtype, ft, rows, cols), B = AsFloat(dtype, base, rows, cols);
      const auto err = F - AsFloat(dtype, whole, rows, cols);
      EXPECT_EQ(r->report.weight_error, err.norm().item<double>() / (F - B).norm().item<double>()) << ratio;
      DType chunk_dtype;
      auto parsed = ParseLossyChunk(r->chunk, &chunk_dtype);
      ASSERT_TRUE(parsed.ok());
      EXPECT_EQ(r->report.keep_fraction, static_cast<double>(parsed->codes.size()) / (rows * cols));
    }
  }
}

}  // namespace
}  // namespace deltastore
