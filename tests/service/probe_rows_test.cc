// What the rate allocation keeps of a tensor pair streamed past it in pieces (service/probe_rows.h): every
// s-th row, the whole pair's fingerprint and whether every weight is finite, whatever the pieces' sizes.
#include "service/probe_rows.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace deltastore {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0x3f);  // small exponents: finite in every dtype
  return out;
}

std::string EveryStrideRow(const std::string& bytes, uint64_t row_bytes, uint32_t s) {
  std::string out;
  for (uint64_t at = 0; at < bytes.size(); at += s * row_bytes) out += bytes.substr(at, row_bytes);
  return out;
}

TEST(ProbeRowsTest, KeepsEveryStrideRowWhateverThePieces) {
  const uint64_t row_bytes = 6 * 2, rows = 37;  // bf16 rows of 6
  const std::string base = RandomBytes(row_bytes * rows, 1), ft = RandomBytes(row_bytes * rows, 2);
  for (uint32_t s : {1u, 2u, 5u, 40u}) {
    for (uint64_t piece : {uint64_t{2}, uint64_t{10}, row_bytes, uint64_t{50}, row_bytes * rows}) {
      ProbeRows kept(DType::kBF16, row_bytes, s);
      for (uint64_t at = 0; at < base.size(); at += piece) {
        kept.Add(at, std::string_view(base).substr(at, piece), std::string_view(ft).substr(at, piece));
      }
      EXPECT_EQ(kept.base(), EveryStrideRow(base, row_bytes, s)) << s << " " << piece;
      EXPECT_EQ(kept.finetune(), EveryStrideRow(ft, row_bytes, s)) << s << " " << piece;
      EXPECT_TRUE(kept.finite());
      EXPECT_EQ(kept.Fingerprint(), PairFingerprint(base, ft)) << s << " " << piece;
    }
  }
  EXPECT_NE(PairFingerprint(base, ft), PairFingerprint(ft, base));
}

TEST(ProbeRowsTest, ANonfiniteWeightInARowLeftOutIsSeen) {
  const uint64_t row_bytes = 8 * 4, rows = 9;
  std::string base = RandomBytes(row_bytes * rows, 3), ft = RandomBytes(row_bytes * rows, 4);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(ft.data() + 3 * row_bytes + 4, &nan, 4);  // row 3: left out with a stride of 2
  ProbeRows kept(DType::kF32, row_bytes, 2);
  kept.Add(0, base, ft);
  EXPECT_FALSE(kept.finite());
  EXPECT_EQ(kept.base().size(), 5 * row_bytes);
}

TEST(ProbeRowsTest, InfAndNanAreNotFiniteInEachFloatDtype) {
  const float inf = std::numeric_limits<float>::infinity(), one = 1.0f;
  std::string f32(4, '\0');
  std::memcpy(f32.data(), &one, 4);
  EXPECT_TRUE(AllFinite(DType::kF32, f32));
  std::memcpy(f32.data(), &inf, 4);
  EXPECT_FALSE(AllFinite(DType::kF32, f32));
  // bf16 +Inf 0x7f80, a NaN 0x7fc1; f16 +Inf 0x7c00, a NaN 0xfe01; and their largest finite values.
  for (auto [dtype, bits, finite] :
       std::vector<std::tuple<DType, uint16_t, bool>>{{DType::kBF16, 0x7f80, false},
                                                      {DType::kBF16, 0x7fc1, false},
                                                      {DType::kBF16, 0x7f7f, true},
                                                      {DType::kF16, 0x7c00, false},
                                                      {DType::kF16, 0xfe01, false},
                                                      {DType::kF16, 0x7bff, true}}) {
    std::string b(6, '\0');
    std::memcpy(b.data() + 2, &bits, 2);
    EXPECT_EQ(AllFinite(dtype, b), finite) << bits;
  }
  EXPECT_TRUE(AllFinite(DType::kI32, std::string(4, '\xff')));
}

}  // namespace
}  // namespace deltastore
