#include "codec/chunk_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "codec/float_rans.h"

namespace deltastore {
namespace {

std::string Random(size_t n, uint32_t seed, int mask = 0xff) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & mask);
  return s;
}

TEST(ChunkCodecTest, RoundTripsEveryDTypeStandaloneAndDelta) {
  for (DType dt : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI8,
                   DType::kU8, DType::kBool, DType::kF8E4M3}) {
    size_t word = DTypeSize(dt);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
      std::string raw = Random(n * word, 1 + n, 0x3f);
      std::string base = Random(n * word, 2 + n, 0x3f);
      for (bool delta : {false, true}) {
        std::string enc = EncodeChunk(dt, raw, delta ? std::string_view(base) : std::string_view());
        ASSERT_GE(enc.size(), 2u);
        const bool rans = static_cast<CodecId>(enc[0]) == CodecId::kFloatRans;
        EXPECT_EQ(static_cast<uint8_t>(enc[1]), rans ? kFloatRansVersion : kCodecVersion);
        auto dec = DecodeChunk(enc, delta ? std::string_view(base) : std::string_view(), raw.size());
        ASSERT_TRUE(dec.ok()) << DTypeName(dt) << " n=" << n << " " << dec.status().ToString();
        EXPECT_EQ(*dec, raw) << DTypeName(dt) << " n=" << n << " delta=" << delta;
      }
    }
  }
}

TEST(ChunkCodecTest, IncompressibleDataIsStoredRaw) {
  std::string raw = Random(4096, 3);
  std::string enc = EncodeChunk(DType::kU8, raw, {});
  EXPECT_EQ(static_cast<CodecId>(enc[0]), CodecId::kRaw);
  EXPECT_LE(enc.size(), raw.size() + 12);
  EXPECT_EQ(*DecodeChunk(enc, {}, raw.size()), raw);
}

TEST(ChunkCodecTest, DeltaOfIdenticalWeightsIsTiny) {
  // Weight-like bf16 values (normal, sigma 0.02): a delta against themselves carries no information.
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::string raw(1 << 16, '\0');
  for (size_t i = 0; i < raw.size(); i += 2) {
    float f = normal(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    uint16_t bf = static_cast<uint16_t>(bits >> 16);
    std::memcpy(raw.data() + i, &bf, 2);
  }
  std::string enc = EncodeChunk(DType::kBF16, raw, raw);
  EXPECT_LT(enc.size(), raw.size() / 32);
  EXPECT_EQ(*DecodeChunk(enc, raw, raw.size()), raw);
}

TEST(ChunkCodecTest, RejectsCorruptAndUnknownChunks) {
  std::string raw = Random(4000, 5, 0x0f);
  std::string enc = EncodeChunk(DType::kI32, raw, {});
  EXPECT_EQ(DecodeChunk(enc.substr(0, 5), {}, raw.size()).status().code(), StatusCode::kCorruption);
  std::string bad_version = enc;
  bad_version[1] = 9;
  EXPECT_NE(DecodeChunk(bad_version, {}, raw.size()).status().message().find("version 9"), std::string::npos);
  std::string bad_id = enc;
  bad_id[0] = 0x7e;
  EXPECT_FALSE(DecodeChunk(bad_id, {}, raw.size()).ok());
  EXPECT_FALSE(DecodeChunk(enc, {}, raw.size() + 4).ok());  // manifest says another size
  for (size_t cut = 12; cut < enc.size(); cut += 97) {
    EXPECT_FALSE(DecodeChunk(enc.substr(0, cut), {}, raw.size()).ok()) << cut;
  }
  std::string delta = EncodeChunk(DType::kI32, raw, raw);
  EXPECT_EQ(DecodeChunk(delta, {}, raw.size()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace deltastore
