// Deferred output errors (gpu/lossy_internal.h, BuildDeferred): a candidate of a one-block tensor waits
// for its product S @ inputs until the error is asked for, and then gives the error and bytes a build
// computes at once; a larger tensor's is computed at once. And a build whose shuffle order is drawn on
// several host threads gives the same bytes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

// A search state with a held residual R ~ N(0, 1), its inputs and products (R @ X as D @ X too).
struct State {
  State(uint32_t rows, uint32_t cols) {
    torch::manual_seed(4);
    w.dtype = DType::kF32;
    w.rows = rows, w.cols = cols, w.stream = 1;
    w.opt = &options;
    w.R = torch::randn({rows, cols}, torch::kFloat32);
    w.X = torch::randn({cols, 64}, torch::kFloat32);
    w.RX = w.R.matmul(w.X);
    w.DX = w.RX;
  }
  LossyOptions options;
  Work w{};
};

LossyParams GroupParams(const Work& w, bool shared) {
  LossyParams p = BaseParams(w);
  p.mask = MaskKind::kGroupK;
  p.group = 64;
  p.keep = 20;
  p.values = ValueKind::kQuant;
  p.bits = 2;
  p.planes = 2;
  p.shared_scale = shared;
  return p;
}

TEST(LossyDeferredTest, AOneBlockCandidatesErrorWaitsAndIsTheErrorABuildComputes) {
  torch::NoGradGuard no_grad;
  State s(300, 1000);  // 300k elements: one row block
  ASSERT_TRUE(OneBlock(300, 1000));
  for (bool shared : {false, true}) {
    const LossyParams p = GroupParams(s.w, shared);
    Candidate now = Build(s.w, p);
    Candidate later = BuildDeferred(s.w, p);
    EXPECT_FALSE(now.deferred_error);
    ASSERT_TRUE(later.deferred_error);
    EXPECT_TRUE(std::isinf(later.output_error));  // not computed yet
    EXPECT_EQ(later.chunk, now.chunk);
    ResolveError(&later);
    EXPECT_FALSE(later.deferred_error);
    EXPECT_EQ(later.output_error, now.output_error) << shared;
    EXPECT_GT(now.output_error, 0.1);  // a real error: 20 of 64 kept at 2 bits
    EXPECT_LT(now.output_error, 2.0);
  }
}

TEST(LossyDeferredTest, ALargerTensorsErrorIsComputedAtOnce) {
  torch::NoGradGuard no_grad;
  State s(1100, 1024);  // over 2^20 elements: two row blocks
  ASSERT_FALSE(OneBlock(1100, 1024));
  const LossyParams p = GroupParams(s.w, false);
  Candidate c = BuildDeferred(s.w, p);
  EXPECT_FALSE(c.deferred_error);
  EXPECT_EQ(c.output_error, Build(s.w, p).output_error);
}

TEST(LossyDeferredTest, ABuildOnFourHostThreadsIsTheBuildOnOne) {
  torch::NoGradGuard no_grad;
  State s(1100, 1024);  // the order drawn in pieces of at least 64 rows
  for (bool shared : {false, true}) {
    const LossyParams p = GroupParams(s.w, shared);
    s.options.host_threads = 1;
    const Candidate one = Build(s.w, p);
    s.options.host_threads = 4;
    s.w.masks = MaskCache();  // the order drawn again, on four threads
    const Candidate four = Build(s.w, p);
    EXPECT_TRUE(four.chunk == one.chunk) << shared;
    EXPECT_EQ(four.kept, one.kept);
    EXPECT_EQ(four.output_error, one.output_error) << shared;
  }
}

}  // namespace
}  // namespace deltastore
