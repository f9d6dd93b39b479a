// One row's group-mask selection on the CPU (gpu/mask_select.h): the eight-wide kernel keeps the columns
// and values of a plain loop over the columns, in order, at every tail length, for masks that keep
// nothing, everything or some of the row, and writes nothing past the slack it asks for.
#include "gpu/mask_select.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <vector>

namespace deltastore {
namespace {

TEST(MaskSelectTest, TheVectorKernelKeepsWhatAPlainLoopKeeps) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> step(0, 254);
  for (int64_t cols : {0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 100, 384, 1000}) {
    for (int keep_kind = 0; keep_kind < 4; ++keep_kind) {
      std::vector<uint8_t> o(cols), keep(cols);
      std::vector<float> src(cols), scale(cols);
      for (int64_t c = 0; c < cols; ++c) {
        o[c] = static_cast<uint8_t>(step(rng));
        // nothing kept, everything kept, about a third, about half with a varying keep count
        keep[c] = keep_kind == 0   ? 0
                  : keep_kind == 1 ? 255
                  : keep_kind == 2 ? 85
                                   : static_cast<uint8_t>(step(rng));
        src[c] = normal(rng);
        scale[c] = 1.0f + static_cast<float>(c % 5) / 3.0f;
      }
      std::vector<uint32_t> want_col;
      std::vector<float> want_val;
      for (int64_t c = 0; c < cols; ++c) {
        if (o[c] < keep[c])
          want_col.push_back(static_cast<uint32_t>(c)), want_val.push_back(src[c] * scale[c]);
      }
      const auto n = static_cast<int64_t>(want_col.size());
      // one more element past the slack, filled with a marker that must stay
      const size_t room = static_cast<size_t>(n + kSelectSlack + 1);
      std::vector<uint32_t> col(room, 0xdeadbeef), scol(room);
      std::vector<float> val(room, -1.0f), sval(room);
      ASSERT_EQ(CountBelow(o.data(), keep.data(), cols), n) << cols;
      ASSERT_EQ(SelectBelow(o.data(), keep.data(), src.data(), scale.data(), cols, col.data(), val.data()),
                n);
      ASSERT_EQ(
          SelectBelowScalar(o.data(), keep.data(), src.data(), scale.data(), cols, scol.data(), sval.data()),
          n);
      for (int64_t k = 0; k < n; ++k) {
        ASSERT_EQ(col[k], want_col[k]) << "cols " << cols << " k " << k;
        ASSERT_EQ(std::bit_cast<uint32_t>(val[k]), std::bit_cast<uint32_t>(want_val[k]))
            << "cols " << cols << " k " << k;
        ASSERT_EQ(scol[k], want_col[k]) << "cols " << cols << " k " << k;
        ASSERT_EQ(std::bit_cast<uint32_t>(sval[k]), std::bit_cast<uint32_t>(want_val[k]))
            << "cols " << cols << " k " << k;
      }
      EXPECT_EQ(col[room - 1], 0xdeadbeef) << cols;
      EXPECT_EQ(val[room - 1], -1.0f) << cols;
    }
  }
}

}  // namespace
}  // namespace deltastore
