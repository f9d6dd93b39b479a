// The fast float coder's payload versions and decoders: version 2 (version 3 for F32: float_rans_v3_test.cc)
// decodes the same with the AVX-512 decoder and the scalar one, version 1 (chunks written before) still
// decodes, and corrupt version 2 payloads large enough for the vector decoder are refused.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/float_rans.h"
#include "codec/float_rans_simd.h"
#include "tests/codec/float_test_util.h"

namespace deltastore {
namespace {

using namespace float_test;

// Restores the vector decoder's switch at the end of a test.
class SimdSwitch {
 public:
  SimdSwitch() : was_(float_rans::SimdEnabled()) {}
  ~SimdSwitch() { float_rans::SetSimdEnabled(was_); }
  SimdSwitch(const SimdSwitch&) = delete;
  SimdSwitch& operator=(const SimdSwitch&) = delete;

 private:
  bool was_;
};

// Decodes with the vector decoder (where the CPU has it) and with the scalar one: both give the data.
void DecodeBothWays(FloatKind kind, const std::string& enc, const Values& data, const Values* base,
                    const std::string& what) {
  const SimdSwitch restore;
  for (bool simd : {true, false}) {
    float_rans::SetSimdEnabled(simd);
    Values out(kind, data.size());
    const Status s =
        DecodeFloatsRans(kind, enc, base != nullptr ? base->data() : nullptr, data.size(), out.data());
    ASSERT_TRUE(s.ok()) << what << " simd=" << simd << ": " << s.ToString();
    EXPECT_TRUE(out.bytes() == data.bytes()) << what << " simd=" << simd;
  }
}

// Weights whose finetune changes the size of its differences every 5000 values (the neighbour context
// pays) and flips the sign of every 29th value (escapes, near and far exponents).
Values Varied(FloatKind kind, const Values& base, uint64_t seed) {
  const size_t n = base.size();
  Values data(kind, n);
  const uint32_t sign = kind == FloatKind::kF32 ? 0x80000000u : 0x8000u;
  for (size_t from = 0; from < n; from += 5000) {
    const size_t len = std::min<size_t>(5000, n - from);
    Values part(kind, len);
    for (size_t i = 0; i < len; ++i) part.Set(i, base.Get(from + i));
    const float noise = (from / 5000) % 2 ? 0.02f : 0.0005f;
    const Values ft = Finetune(kind, part, seed + from, noise);
    for (size_t i = 0; i < len; ++i) data.Set(from + i, ft.Get(i));
  }
  for (size_t i = 3; i < n; i += 29) data.Set(i, data.Get(i) ^ sign);
  // Sign changes to a tiny magnitude (an exponent far from the base's).
  for (size_t i = 7; i < n; i += 131) data.Set(i, ((base.Get(i) & sign) ^ sign) | (i % 5 ? 0x1u : 0x7Fu));
  return data;
}

TEST(FloatRansV2Test, VectorAndScalarDecodersAgree) {
  std::printf("AVX-512 decoder %s\n", float_rans::SimdEnabled() ? "on" : "not available (scalar only)");
  for (FloatKind kind : kAllKinds) {
    for (size_t n : {size_t{8192}, size_t{8192 + 31}, size_t{40000}, size_t{100003}}) {
      const Values base = Gaussian(kind, n, n + 1);
      const Values data = Varied(kind, base, n + 2);
      const std::string what = std::string(KindName(kind)) + " n=" + std::to_string(n);
      DecodeBothWays(kind, EncodeFloatsRans(kind, data.data(), base.data(), n), data, &base, what + " delta");
      DecodeBothWays(kind, EncodeFloatsRans(kind, data.data(), nullptr, n), data, nullptr,
                     what + " standalone");
      // Uniform noise: one column of tables (no neighbour context).
      const Values plain = Finetune(kind, base, n + 5);
      DecodeBothWays(kind, EncodeFloatsRans(kind, plain.data(), base.data(), n), plain, &base,
                     what + " plain delta");
      // Trailing zero mantissa bits (tz > 0), zeros and tiny values far below the largest exponent.
      Values coarse = data;
      Values coarse_base = base;
      for (size_t i = 0; i < n; ++i) {
        coarse.Set(i, i % 17 == 0 ? 0 : data.Get(i) & ~3u);
        coarse_base.Set(i, base.Get(i) & ~3u);
        if (i % 23 == 0) coarse.Set(i, ToKind(kind, i % 2 ? 3e-5f : -7e-6f) & ~3u);
      }
      DecodeBothWays(kind, EncodeFloatsRans(kind, coarse.data(), coarse_base.data(), n), coarse, &coarse_base,
                     what + " coarse delta");
      DecodeBothWays(kind, EncodeFloatsRans(kind, coarse.data(), nullptr, n), coarse, nullptr,
                     what + " coarse standalone");
    }
  }
}

TEST(FloatRansV2Test, BothVersionsRoundTripAndDeltasAreRefusedAsTheOther) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : {size_t{1}, size_t{700}, size_t{9000}}) {
      const Values base = Gaussian(kind, n, n + 3);
      const Values data = Varied(kind, base, n + 4);
      for (const Values* b : {static_cast<const Values*>(nullptr), &base}) {
        const uint8_t* bp = b != nullptr ? b->data() : nullptr;
        for (int version : {1, 2}) {
          const std::string enc = EncodeFloatsRans(kind, data.data(), bp, n, version);
          ASSERT_FALSE(enc.empty());
          Values out(kind, n);
          const Status s = DecodeFloatsRans(kind, enc, bp, n, out.data(), version);
          ASSERT_TRUE(s.ok()) << KindName(kind) << " v" << version << ": " << s.ToString();
          EXPECT_TRUE(out.bytes() == data.bytes());
          // Delta payloads differ between the versions (a standalone one with at most 8 lanes is the
          // same in both).
          if (static_cast<uint8_t>(enc[0]) >> 4 == 1) {
            EXPECT_FALSE(DecodeFloatsRans(kind, enc, bp, n, out.data(), 3 - version).ok())
                << KindName(kind) << " n=" << n << " v" << version << " read as the other";
          }
        }
      }
    }
  }
  const Values v = Gaussian(FloatKind::kBF16, 10, 1);
  Values out(FloatKind::kBF16, 10);
  EXPECT_TRUE(EncodeFloatsRans(FloatKind::kBF16, v.data(), nullptr, 10, kFloatRansVersion + 1).empty());
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, "\x20", nullptr, 10, out.data(), kFloatRansVersion + 1).code(),
            StatusCode::kInvalidArgument);
}

// A version 1 payload written by the version 1 encoder (commit a18acd6): 600 BF16 values against their
// base, a sign change every 97 values (so an escape table), 8 lanes. Decoded here forever.
void GoldenValues(std::vector<uint16_t>* base, std::vector<uint16_t>* data) {
  uint32_t s = 12345;
  for (int i = 0; i < 600; ++i) {
    s = s * 1664525u + 1013904223u;
    const auto b = static_cast<uint16_t>(0x3C00 + ((s >> 8) & 0x3FF) + ((s >> 31) << 15));
    const int d = static_cast<int>((s >> 20) & 7) - 3;
    base->push_back(b);
    data->push_back(static_cast<uint16_t>(i % 97 == 5 ? b ^ 0x8000 : b + d));
  }
}

constexpr const char* kGoldenV1Delta =
    "11007f0301030101000c0c080b0bcbbb0c0101787dcdcccc82029b4fb51e8e22"
    "01002f22cf00148cb01d28adca04ba6f3600d1e27c01eb0f11000a0ac261b8fb"
    "d666e1537527718097d63777c65cd1874751dcdbb9e508aa3aea7a30a28a9b13"
    "6cb2cde2f914f4ad49c6feabd02d8991c4d82cedd7190524e3a680519d010581"
    "27d6501631dd22a33c32a73f489dca64b0cefd1c6c9ddc8ad906cb3a8f2b66ac"
    "0ddff12f9fb828fe704539040febf4e21155162cdf8a790b5384bb2689c39522"
    "1a884c028e83726ab354782a08e33d218da471cb1ae0a355f1c350d47d47bf24"
    "1324d1bd36ec420857a15914320f7fcd38863a5504cbe2ac04ddf7e2ed3a957a"
    "549f774ce9ab74ba71f4263917ca5faf7fb52750daf57238f99c5bd64d9586d4"
    "92000010000005000036005c008800801c";

TEST(FloatRansV2Test, GoldenVersion1PayloadAndChunkStillDecode) {
  std::vector<uint16_t> base, data;
  GoldenValues(&base, &data);
  const std::string payload = FromHex(kGoldenV1Delta);
  ASSERT_EQ(payload.size(), 305u);
  const auto* bp = reinterpret_cast<const uint8_t*>(base.data());
  std::vector<uint16_t> out(data.size());
  const Status s =
      DecodeFloatsRans(FloatKind::kBF16, payload, bp, data.size(), reinterpret_cast<uint8_t*>(out.data()), 1);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, data);
  // The version 1 encoder still writes exactly these bytes.
  EXPECT_EQ(
      EncodeFloatsRans(FloatKind::kBF16, reinterpret_cast<const uint8_t*>(data.data()), bp, data.size(), 1),
      payload);
  // As a chunk with header version 1.
  const std::string_view raw(reinterpret_cast<const char*>(data.data()), 2 * data.size());
  const std::string_view braw(reinterpret_cast<const char*>(base.data()), 2 * base.size());
  std::string chunk = ChunkHeader(CodecId::kFloatRans, kChunkFlagDelta, DType::kBF16, raw.size()) + payload;
  ASSERT_EQ(static_cast<uint8_t>(chunk[1]), 1);
  auto decoded = DecodeChunk(chunk, braw, raw.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, raw);
  // What EncodeChunk writes now is the current version, and a version the build does not know is refused.
  const std::string now = EncodeChunk(DType::kBF16, raw, braw);
  EXPECT_EQ(static_cast<uint8_t>(now[1]), kFloatRansVersion);
  chunk[1] = static_cast<char>(kFloatRansVersion + 1);
  EXPECT_FALSE(DecodeChunk(chunk, braw, raw.size()).ok());
}

// Flipped bytes and truncations of payloads that the vector decoder reads: kCorruption, never a crash.
TEST(FloatRansV2Test, CorruptLargePayloadsAreRefused) {
  const SimdSwitch restore;
  for (FloatKind kind : kAllKinds) {  // F32: 32 lanes since version 3
    const size_t n = 8192 + 64;
    const Values base = Gaussian(kind, n, 91);
    const Values data = Varied(kind, base, 92);
    for (const Values* b : {static_cast<const Values*>(nullptr), &base}) {
      const uint8_t* bp = b != nullptr ? b->data() : nullptr;
      const std::string enc = EncodeFloatsRans(kind, data.data(), bp, n);
      ASSERT_EQ(static_cast<uint8_t>(enc[3]), 5) << "32 lanes";
      Values out(kind, n);
      for (bool simd : {true, false}) {
        float_rans::SetSimdEnabled(simd);
        for (size_t pos = 0; pos < enc.size(); pos += (pos < 600 ? 1 : 7)) {
          std::string bad = enc;
          bad[pos] = static_cast<char>(bad[pos] ^ (pos % 3 == 0 ? 0x01 : pos % 3 == 1 ? 0x80 : 0xFF));
          EXPECT_EQ(DecodeFloatsRans(kind, bad, bp, n, out.data()).code(), StatusCode::kCorruption)
              << KindName(kind) << " byte " << pos << " simd=" << simd;
        }
        for (size_t len = 0; len < enc.size(); len += (len < 600 ? 1 : 5)) {
          EXPECT_EQ(DecodeFloatsRans(kind, enc.substr(0, len), bp, n, out.data()).code(),
                    StatusCode::kCorruption)
              << KindName(kind) << " truncated to " << len << " simd=" << simd;
        }
      }
    }
  }
}

}  // namespace
}  // namespace deltastore
