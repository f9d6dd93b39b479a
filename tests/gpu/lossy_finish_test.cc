// The end of a lossy compression (gpu/lossy.cc, Finish): the search state is released, the tensor is
// rebuilt row by row and the finetune reloaded; the rebuilt bytes and the report's errors are still those
// of the whole-tensor decode and of float32 arithmetic on the whole tensors, on the compute device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/lossy_codec.h"
#include "gpu/lossy.h"
#include "gpu/lossy_internal.h"

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
      // On the compute device, as Finish measures: a GPU sums a norm in another order than the CPU.
      const auto dev = lossy_detail::TorchDevice();
      const auto F = AsFloat(dtype, ft, rows, cols).to(dev), B = AsFloat(dtype, base, rows, cols).to(dev);
      const auto err = F - AsFloat(dtype, whole, rows, cols).to(dev);
      EXPECT_EQ(r->report.weight_error, err.norm().item<double>() / (F - B).norm().item<double>()) << ratio;
      DType chunk_dtype;
      auto parsed = ParseLossyChunk(r->chunk, &chunk_dtype);
      ASSERT_TRUE(parsed.ok());
      EXPECT_EQ(r->report.keep_fraction, static_cast<double>(parsed->codes.size()) / (rows * cols));
    }
  }
}

// With LossyOptions::rebuilt the rebuilt tensor comes in blocks of rows, in order, and is not held in the
// result; the chunk and the report are those of a call without it. The larger tensor (over 1M elements)
// is searched on a subsample, refitted and rebuilt a block at a time; the smaller one is one block.
TEST(LossyFinishTest, RebuiltRowsComeInBlocksInOrderAndAreTheDecodesBytes) {
  for (uint32_t rows : {96u, 1100u}) {
    const uint32_t cols = 1024;
    std::mt19937 rng(rows);
    std::normal_distribution<float> w(0.0f, 0.05f), d(0.0f, 0.002f);
    std::vector<float> b(static_cast<size_t>(rows) * cols), f(b.size());
    for (size_t i = 0; i < b.size(); ++i) {
      b[i] = w(rng);
      f[i] = b[i] * 0.99f + d(rng);
    }
    std::string base(b.size() * 2, '\0'), ft(base.size(), '\0');
    FromFloat32(DType::kBF16, b.data(), b.size(), base.data());
    FromFloat32(DType::kBF16, f.data(), f.size(), ft.data());
    LossyOptions o;
    auto plain = CompressLossyTensor(DType::kBF16, base.data(), ft.data(), rows, cols, 1, nullptr, o);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    std::vector<std::string> blocks;
    o.rebuilt = [&blocks](std::string_view r) { blocks.emplace_back(r); };
    auto sunk = CompressLossyTensor(DType::kBF16, base.data(), ft.data(), rows, cols, 1, nullptr, o);
    ASSERT_TRUE(sunk.ok()) << sunk.status().ToString();
    EXPECT_TRUE(sunk->reconstructed.empty());
    EXPECT_EQ(blocks.size(), rows > 1000 ? 2u : 1u) << rows;
    std::string joined;
    for (const std::string& r : blocks) {
      EXPECT_EQ(r.size() % (cols * 2), 0u);
      joined += r;
    }
    std::string whole;
    ASSERT_TRUE(DecodeLossyChunk(sunk->chunk, base, &whole).ok());
    EXPECT_TRUE(joined == whole) << rows;
    EXPECT_TRUE(plain->reconstructed == whole) << rows;
    EXPECT_TRUE(plain->chunk == sunk->chunk) << rows;
    EXPECT_EQ(plain->report.weight_error, sunk->report.weight_error) << rows;
    EXPECT_EQ(plain->report.output_error, sunk->report.output_error) << rows;
  }
}

}  // namespace
}  // namespace deltastore
