// Element conversions to float32 (codec/float_convert.cc): the bulk bf16 and f16 paths (eight at a time
// where the CPU has AVX2 and F16C) give the bits of the one-element conversions for every 16-bit value,
// NaN payloads included, at any alignment and length.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "codec/lossy_codec.h"

namespace deltastore {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Every 16-bit pattern once, in order, then 16 spare bytes.
std::string AllPatterns() {
  std::string all(2 * 65536 + 16, '\0');
  for (uint32_t v = 0; v < 65536; ++v) {
    const auto h = static_cast<uint16_t>(v);
    std::memcpy(all.data() + 2 * v, &h, 2);
  }
  return all;
}

TEST(FloatConvertTest, BulkIsTheElementConversionForEveryValue) {
  const std::string all = AllPatterns();
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const auto one = dtype == DType::kBF16 ? Bf16ToFloat : HalfToFloat;
    // Offsets off the 16-byte grid and lengths with a tail of 0-7 elements.
    for (size_t offset : {0, 1, 3, 8}) {
      for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{13}, size_t{65536} - offset}) {
        const char* data = all.data() + 2 * offset;
        std::vector<float> out(n + 1, -1.0f);
        ASSERT_TRUE(ToFloat32(dtype, data, n, out.data()));
        for (size_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, data + 2 * i, 2);
          ASSERT_EQ(Bits(out[i]), Bits(one(h)))
              << static_cast<int>(dtype) << " offset " << offset << " i " << i;
        }
        EXPECT_EQ(out[n], -1.0f) << "wrote past n = " << n;
      }
    }
  }
}

TEST(FloatConvertTest, ElementConversionsAreExact) {
  // bf16: the upper half of the float32. f16: exact, a subnormal normalized, a NaN's payload kept (a
  // signalling NaN stays signalling: F16C's instruction would quiet it).
  EXPECT_EQ(Bits(Bf16ToFloat(0xc0a1)), 0xc0a10000u);
  EXPECT_EQ(Bits(HalfToFloat(0x3c00)), Bits(1.0f));
  EXPECT_EQ(HalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(Bits(HalfToFloat(0x7c01)), 0x7f802000u);
  EXPECT_EQ(Bits(HalfToFloat(0xfe00)), 0xffc00000u);
}

TEST(FloatConvertTest, F32IsCopiedAndOtherDtypesAreRefused) {
  const std::string all = AllPatterns();
  std::vector<float> out(32768);
  ASSERT_TRUE(ToFloat32(DType::kF32, all.data(), 32768, out.data()));
  for (size_t i = 0; i < 32768; ++i) {
    uint32_t in;
    std::memcpy(&in, all.data() + 4 * i, 4);
    ASSERT_EQ(Bits(out[i]), in) << i;
  }
  EXPECT_FALSE(ToFloat32(DType::kI32, all.data(), 4, out.data()));
}

}  // namespace
}  // namespace deltastore
