// Element conversions to float32 (codec/float_convert.cc): the bulk bf16 path (eight at a time where the
// CPU has AVX2) gives the bits of the one-element conversion for every bf16 value, at any alignment and
// length.
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

TEST(FloatConvertTest, Bf16BulkIsTheElementConversionForEveryValue) {
  std::string all(2 * 65536 + 16, '\0');
  for (uint32_t v = 0; v < 65536; ++v) {
    const auto h = static_cast<uint16_t>(v);
    std::memcpy(all.data() + 2 * v, &h, 2);
  }
  // Offsets off the 16-byte grid and lengths with a tail of 0-7 elements.
  for (size_t offset : {0, 1, 3, 8}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{13}, size_t{65536} - offset}) {
      const char* data = all.data() + 2 * offset;
      std::vector<float> out(n + 1, -1.0f);
      ASSERT_TRUE(ToFloat32(DType::kBF16, data, n, out.data()));
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        ASSERT_EQ(Bits(out[i]), Bits(Bf16ToFloat(h))) << "offset " << offset << " n " << n << " i " << i;
        ASSERT_EQ(Bits(out[i]), static_cast<uint32_t>(h) << 16);
      }
      EXPECT_EQ(out[n], -1.0f) << "wrote past n = " << n;
    }
  }
}

TEST(FloatConvertTest, F16AndF32AreTheElementConversions) {
  std::string all(2 * 65536, '\0');
  for (uint32_t v = 0; v < 65536; ++v) {
    const auto h = static_cast<uint16_t>(v);
    std::memcpy(all.data() + 2 * v, &h, 2);
  }
  std::vector<float> out(65536);
  ASSERT_TRUE(ToFloat32(DType::kF16, all.data(), 65536, out.data()));
  for (uint32_t v = 0; v < 65536; ++v)
    ASSERT_EQ(Bits(out[v]), Bits(HalfToFloat(static_cast<uint16_t>(v)))) << v;
  // float32: the bytes as they are; a dtype that is not a float is refused.
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
