// A group mask's selection in a row block (gpu/lossy_select.cc): found by the vector kernel when the block
// is a contiguous float32 block on the CPU, else (on a GPU, every block) by tensor operations on the
// shuffle order where it is held. Both keep the same elements in the same order, with the same unbiased
// values, bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

TEST(LossySelectTest, TensorOperationsKeepWhatTheCpuKernelKeeps) {
  torch::NoGradGuard no_grad;
  const uint32_t rows = 37, cols = 203;  // the last group of each row is shorter
  LossyOptions o;
  Work w;
  w.rows = rows, w.cols = cols, w.opt = &o;
  auto gen = at::detail::createCPUGenerator(5);
  const torch::Tensor block = at::normal(0.0, 1.0, {rows, cols}, gen).to(torch::kFloat32);
  // The same values, not contiguous: the tensor-operation path on the CPU.
  const torch::Tensor strided = block.t().contiguous().t();
  ASSERT_FALSE(strided.is_contiguous());
  for (auto [group, keep] : {std::pair{64, 5}, {16, 1}, {128, 128}, {255, 17}}) {
    LossyParams p;
    p.rows = rows, p.cols = cols, p.seed = 11, p.stream = 3;
    p.mask = MaskKind::kGroupK, p.group = static_cast<uint16_t>(group), p.keep = static_cast<uint16_t>(keep);
    const uint32_t r0 = 4, n = 30;
    const Selection kernel = SelectWithValues(w, p, {}, block.narrow(0, r0, n), r0, n);
    const Selection ops = SelectWithValues(w, p, {}, strided.narrow(0, r0, n), r0, n);
    ASSERT_TRUE(kernel.crow.defined()) << group;
    ASSERT_FALSE(ops.crow.defined()) << group;
    EXPECT_EQ(ops.values.numel(), kernel.values.numel()) << group;
    EXPECT_TRUE(torch::equal(ops.col, kernel.col.to(torch::kInt64))) << group;
    EXPECT_TRUE(torch::equal(ops.values, kernel.values)) << group;
    const torch::Tensor crow =
        torch::cat({torch::zeros({1}, torch::kInt64), torch::bincount(ops.row, {}, n).cumsum(0)});
    EXPECT_TRUE(torch::equal(crow, kernel.crow)) << group;
    EXPECT_TRUE(torch::equal(ops.index, ops.row * cols + ops.col)) << group;
    // What the codec keeps: KeptColumns sorts each group's picks, which is the selection's order.
    std::vector<uint32_t> kept;
    KeptColumns(p, r0 + 7, &kept);
    const torch::Tensor row7 =
        ops.col.narrow(0, crow[7].item<int64_t>(), (crow[8] - crow[7]).item<int64_t>());
    EXPECT_EQ(ToVector(row7), std::vector<int64_t>(kept.begin(), kept.end())) << group;
  }
}

// The shuffle order is drawn in pieces of rows on the options' host threads: the same order on one
// thread or three.
TEST(LossySelectTest, TheShuffleOrderIsTheSameOnOneThreadOrThree) {
  torch::NoGradGuard no_grad;
  const uint32_t rows = 3000, cols = 700;  // row blocks of 1497 rows
  LossyParams p;
  p.rows = rows, p.cols = cols, p.seed = 2, p.stream = 9;
  p.mask = MaskKind::kGroupK, p.group = 64, p.keep = 3;
  const torch::Tensor block = torch::randn({rows, cols}, torch::kFloat32);
  std::vector<Selection> got;
  for (int threads : {1, 3}) {
    LossyOptions o;
    o.host_threads = threads;
    Work w;  // its own mask cache
    w.rows = rows, w.cols = cols, w.opt = &o;
    got.push_back(SelectWithValues(w, p, {}, block, 0, rows));
  }
  EXPECT_EQ(got[0].values.numel(), int64_t{3} * 11 * rows);  // 10 full groups and one of 60, 3 each
  EXPECT_TRUE(torch::equal(got[0].col, got[1].col));
  EXPECT_TRUE(torch::equal(got[0].crow, got[1].crow));
  EXPECT_TRUE(torch::equal(got[0].values, got[1].values));
}

}  // namespace
}  // namespace deltastore
