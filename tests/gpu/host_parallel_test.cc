// HostParallelFor (gpu/host_parallel.h): pieces that cover the range once, on several threads, and an
// exception from a piece rethrown to the caller.
#include "gpu/host_parallel.h"

#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace deltastore {
namespace {

TEST(HostParallelForTest, PiecesCoverTheRangeOnceEachAtLeastAGrainLong) {
  for (auto [threads, n, grain] : std::vector<std::tuple<int, int64_t, int64_t>>{
           {1, 1000, 10}, {4, 1000, 10}, {4, 1001, 300}, {8, 5, 1}, {3, 19, 10}, {16, 0, 1}, {0, 7, 0}}) {
    std::vector<int> seen(static_cast<size_t>(n), 0);
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> pieces;
    std::set<std::thread::id> ids;
    HostParallelFor(threads, n, grain, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) ++seen[static_cast<size_t>(i)];  // disjoint pieces
      std::lock_guard<std::mutex> lock(mu);
      pieces.emplace_back(a, b);
      ids.insert(std::this_thread::get_id());
    });
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << threads << " " << n << " " << i;
    const int64_t want =
        n == 0 ? 0 : std::clamp<int64_t>(n / std::max<int64_t>(grain, 1), 1, std::max(threads, 1));
    EXPECT_EQ(static_cast<int64_t>(pieces.size()), want) << threads << " " << n;
    EXPECT_EQ(static_cast<int64_t>(ids.size()), want) << threads << " " << n;  // one thread a piece
    for (auto [a, b] : pieces) {
      if (pieces.size() > 1) {
        EXPECT_GE(b - a, grain) << threads << " " << n;
      }
    }
  }
}

TEST(HostParallelForTest, AnExceptionFromAPieceReachesTheCaller) {
  std::vector<int> done(4, 0);
  EXPECT_THROW(HostParallelFor(4, 400, 100,
                               [&](int64_t a, int64_t) {
                                 done[static_cast<size_t>(a / 100)] = 1;
                                 if (a == 200) throw std::runtime_error("piece 2");
                               }),
               std::runtime_error);
  EXPECT_EQ(done, std::vector<int>({1, 1, 1, 1}));  // the others ran to their end
}

}  // namespace
}  // namespace deltastore
