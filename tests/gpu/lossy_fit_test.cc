// FitBudget (gpu/lossy_candidate.cc): the largest parameter whose candidate fits the budget, found from
// the bracket's ends or from a hint, with the same answer either way while sizes grow with the parameter.
#include <gtest/gtest.h>

#include <set>

#include "gpu/lossy_internal.h"

namespace deltastore {
namespace {

using namespace lossy_detail;

// Candidates whose chunk is `size(x)` bytes; records which parameters were built.
struct Family {
  explicit Family(std::function<size_t(int)> f) : size(std::move(f)) {}
  std::function<size_t(int)> size;
  std::vector<int> built;
  Candidate operator()(int x) {
    built.push_back(x);
    Candidate c;
    c.chunk.assign(size(x), 'x');
    c.output_error = 1.0 / x;
    return c;
  }
};

// A search state with only what FitBudget reads: the tensor's shape, its budget, its measurements.
struct Budget {
  explicit Budget(double bytes) {
    w.rows = 64, w.cols = 64;
    w.budget_bytes = bytes;
  }
  Work w{};
};

// Sizes 100 + 37 x: within [1, 128], a budget of 2000 bytes is met up to x = 51.
size_t Linear(int x) {
  return 100 + 37 * static_cast<size_t>(x);
}

TEST(LossyFitTest, AHintGivesTheAnswerOfTheSearchWithoutOne) {
  Family plain{Linear};
  Budget b(2000);
  Work& w = b.w;
  std::optional<Candidate> want = FitBudget(w, 1, 128, std::ref(plain));
  ASSERT_TRUE(want);
  EXPECT_EQ(want->chunk.size(), Linear(51));
  EXPECT_TRUE(want->fits);
  for (int hint : {-5, 1, 2, 30, 50, 51, 52, 53, 90, 127, 128, 400}) {
    Family f{Linear};
    Budget b(2000);
    Work& v = b.w;
    std::optional<Candidate> got = FitBudget(v, 1, 128, std::ref(f), {}, hint);
    ASSERT_TRUE(got) << hint;
    EXPECT_EQ(got->chunk.size(), Linear(51)) << hint;
    EXPECT_TRUE(got->fits) << hint;
    // The keep-everything end does not fit, and its candidate is the largest: built only when hinted.
    EXPECT_EQ(std::set<int>(f.built.begin(), f.built.end()).count(128), hint >= 128 ? 1u : 0u) << hint;
  }
}

TEST(LossyFitTest, ARightHintCostsTwoBuilds) {
  Family f{Linear};
  Budget b(2000);
  Work& w = b.w;
  std::optional<Candidate> got = FitBudget(w, 1, 128, std::ref(f), {}, 51);
  ASSERT_TRUE(got);
  EXPECT_EQ(f.built, (std::vector<int>{51, 52}));
}

TEST(LossyFitTest, AHintKeepsTheEndsAnswers) {
  // Nothing fits: the lo candidate, marked over the budget.
  Family none{Linear};
  Budget b(50);
  Work& w = b.w;
  std::optional<Candidate> got = FitBudget(w, 1, 128, std::ref(none), {}, 60);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->chunk.size(), Linear(1));
  EXPECT_FALSE(got->fits);
  // Everything fits: the hi candidate.
  Family all{Linear};
  Budget c(1e9);
  Work& v = c.w;
  got = FitBudget(v, 1, 128, std::ref(all), {}, 60);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->chunk.size(), Linear(128));
  EXPECT_TRUE(got->fits);
}

TEST(LossyFitTest, AHintReusesMeasuredSizes) {
  Family first{Linear};
  Budget b(2000);
  Work& w = b.w;
  ASSERT_TRUE(FitBudget(w, 1, 128, std::ref(first), "family", 40));
  EXPECT_GT(first.built.size(), 2u);
  // The same family again on the same tensor: only the answer is built.
  Family again{Linear};
  std::optional<Candidate> got = FitBudget(w, 1, 128, std::ref(again), "family", 40);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->chunk.size(), Linear(51));
  EXPECT_EQ(again.built, (std::vector<int>{51}));
}

// Only the answer's output error is computed: the others' are never asked for (BuildDeferred).
TEST(LossyFitTest, OnlyTheAnswersDeferredErrorIsComputed) {
  std::vector<int> asked;
  auto make = [&](int x) {
    Candidate c;
    c.chunk.assign(Linear(x), 'x');
    c.deferred_error = [&asked, x] {
      asked.push_back(x);
      return 1.0 / x;
    };
    return c;
  };
  Budget b(2000);
  std::optional<Candidate> got = FitBudget(b.w, 1, 128, make);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->chunk.size(), Linear(51));
  EXPECT_FALSE(got->deferred_error);
  EXPECT_EQ(got->output_error, 1.0 / 51);
  EXPECT_EQ(asked, (std::vector<int>{51}));
}

}  // namespace
}  // namespace deltastore
