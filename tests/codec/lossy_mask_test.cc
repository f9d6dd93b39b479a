// The lossy format's masks and their random source (codec/, no libtorch): the Philox generator against
// published answers, and the kept-position masks pinned by golden values (docs/lossy_format.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "codec/lossy_codec.h"
#include "codec/philox.h"

namespace deltastore {
namespace {

TEST(PhiloxTest, MatchesPublishedKnownAnswers) {
  // Random123 kat_vectors: philox4x32-10.
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, 0), (PhiloxBlock{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffffffffffull),
            (PhiloxBlock{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0x299f31d0a4093822ull),
            (PhiloxBlock{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(LossyMaskTest, GroupMaskKeepsExactlyKPerGroupAndIsStable) {
  LossyParams p;
  p.rows = 5;
  p.cols = 100;  // groups of 32: 3 full, one of 4
  p.mask = MaskKind::kGroupK;
  p.group = 32;
  p.keep = 8;
  p.seed = 42;
  std::vector<uint32_t> cols, again;
  for (uint32_t r = 0; r < p.rows; ++r) {
    KeptColumns(p, r, &cols);
    ASSERT_EQ(cols.size(), 3u * 8 + 1);  // the 4-wide tail keeps round(8 * 4 / 32) = 1
    for (uint32_t g = 0; g < 3; ++g) {
      EXPECT_EQ(std::count_if(cols.begin(), cols.end(), [&](uint32_t c) { return c / 32 == g; }), 8);
    }
    EXPECT_TRUE(std::is_sorted(cols.begin(), cols.end()));
    KeptColumns(p, r, &again);
    EXPECT_EQ(cols, again);
  }
  // A golden value pins the specification (docs/lossy_format.md): changing it breaks stored versions.
  KeptColumns(p, 0, &cols);
  uint64_t h = 0;
  for (uint32_t c : cols) h = h * 131 + c;
  EXPECT_EQ(h, 16892471214797354603ull);
  LossyParams q = p;
  q.seed = 43;
  KeptColumns(q, 0, &again);
  EXPECT_NE(cols, again);
  std::vector<uint32_t> other;
  q = p;
  q.stream = 1;
  KeptColumns(q, 0, &other);
  EXPECT_NE(cols, other);
}

TEST(LossyMaskTest, BernoulliMaskHasTheRequestedDensity) {
  LossyParams p;
  p.rows = 200;
  p.cols = 500;
  p.mask = MaskKind::kBernoulli;
  p.keep_prob = 0.1f;
  uint64_t kept = 0;
  ForEachKept(p, {}, [&](uint32_t, uint32_t) { ++kept; });
  EXPECT_NEAR(static_cast<double>(kept) / (200.0 * 500.0), 0.1, 0.005);
}

}  // namespace
}  // namespace deltastore
