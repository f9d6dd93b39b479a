// The fast float coder's payload version 3 (what EncodeFloatsRans writes): F32 with 32 lanes, decoded the
// same by the AVX-512 decoder and the scalar one, edge values included; the AVX-512 encoder passes write
// the scalar ones' bytes; version 2 F32 payloads (8 lanes) still decode, and a version 3 F32 payload with
// 32 lanes is refused as version 2.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/float_rans.h"
#include "codec/float_rans_simd.h"
#include "tests/codec/float_test_util.h"

namespace deltastore {
namespace {

using namespace float_test;

constexpr FloatKind kF32 = FloatKind::kF32;

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

// Encodes data (against base when given), checks the lane count of a coded payload, and decodes with the
// vector decoder (where the CPU has it) and the scalar one: both give the data.
void RoundTripBothWays(const Values& data, const Values* base, const std::string& what) {
  const SimdSwitch restore;
  const size_t n = data.size();
  const uint8_t* bp = base != nullptr ? base->data() : nullptr;
  const std::string enc = EncodeFloatsRans(kF32, data.data(), bp, n);
  ASSERT_FALSE(enc.empty()) << what;
  const int mode = static_cast<uint8_t>(enc[0]) >> 4;
  if (mode == 1 || mode == 2) {
    const int lanes_log2 = n >= 8192 ? 5 : n >= 512 ? 3 : 0;
    EXPECT_EQ(static_cast<uint8_t>(enc[3]), lanes_log2) << what;
  }
  for (bool simd : {true, false}) {
    float_rans::SetSimdEnabled(simd);
    Values out(kF32, n);
    const Status s = DecodeFloatsRans(kF32, enc, bp, n, out.data());
    ASSERT_TRUE(s.ok()) << what << " simd=" << simd << ": " << s.ToString();
    EXPECT_TRUE(out.bytes() == data.bytes()) << what << " simd=" << simd;
  }
}

// Weights with NaNs (quiet and signalling, with payloads), infinities, signed zeros, subnormals, the
// largest finite values and sign flips of the base, between finetuned values.
Values EdgeValues(const Values& base, uint64_t seed) {
  const size_t n = base.size();
  Values data = Finetune(kF32, base, seed);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t sign = (i / 3) % 2 ? 0x80000000u : 0;
    const uint32_t b = base.Get(i);
    switch (i % 41) {
      case 1: data.Set(i, sign | 0x7FC00000u | static_cast<uint32_t>(i & 0x3FFFFF)); break;     // quiet NaN
      case 5: data.Set(i, sign | 0x7F800001u | static_cast<uint32_t>(i & 0xFFFF)); break;       // signalling
      case 9: data.Set(i, sign | 0x7F800000u); break;                                           // infinity
      case 13: data.Set(i, sign); break;                                                        // +-0
      case 17: data.Set(i, sign | static_cast<uint32_t>((i * 2654435761u) & 0x7FFFFF)); break;  // subnormal
      case 21: data.Set(i, sign | 0x7F7FFFFFu); break;  // largest finite
      case 25: data.Set(i, b ^ 0x80000000u); break;     // sign flip, same magnitude
      case 29: data.Set(i, (b ^ 0x80000000u) + 77); break;
      case 33: data.Set(i, sign | 0x00800000u); break;  // smallest normal
      default: break;
    }
  }
  return data;
}

TEST(FloatRansV3Test, F32EdgeValuesDecodeTheSameBothWays) {
  std::printf("AVX-512 decoder %s\n", float_rans::SimdEnabled() ? "on" : "not available (scalar only)");
  for (size_t n : {size_t{0}, size_t{1}, size_t{8191}, size_t{8192}, size_t{8193}, size_t{40000 + 17}}) {
    const std::string what = "f32 n=" + std::to_string(n);
    const Values base = Gaussian(kF32, n, n + 7);
    const Values data = EdgeValues(base, n + 8);
    RoundTripBothWays(data, &base, what + " delta");
    RoundTripBothWays(data, nullptr, what + " standalone");
    // The edge values in the base too, the finetune of that base against it.
    const Values edge_base = EdgeValues(base, n + 9);
    RoundTripBothWays(Finetune(kF32, edge_base, n + 10), &edge_base, what + " edge base");
    RoundTripBothWays(data, &edge_base, what + " edge both");
    // All equal: one value (coded or raw), against an unrelated base and alone; equal to the base.
    Values same(kF32, n);
    for (size_t i = 0; i < n; ++i) same.Set(i, 0xBF800000u);
    RoundTripBothWays(same, &base, what + " all equal delta");
    RoundTripBothWays(same, nullptr, what + " all equal standalone");
    RoundTripBothWays(base, &base, what + " same as base");
    // Every value's sign flipped against the base.
    Values flipped(kF32, n);
    for (size_t i = 0; i < n; ++i) flipped.Set(i, base.Get(i) ^ 0x80000000u);
    RoundTripBothWays(flipped, &base, what + " all flipped");
  }
}

// Edge values of any kind between finetuned ones: NaNs with payloads, infinities, signed zeros,
// subnormals, the largest finite value, sign flips of the base (same and other magnitude).
Values AnyKindEdgeValues(FloatKind kind, const Values& base, uint64_t seed) {
  const int bits = 8 * static_cast<int>(FloatKindSize(kind));
  const int man = kind == FloatKind::kF32 ? 23 : kind == FloatKind::kBF16 ? 7 : 10;
  const uint32_t sign_bit = uint32_t{1} << (bits - 1);
  const uint32_t inf = (sign_bit - 1) & ~((uint32_t{1} << man) - 1);
  const uint32_t man_mask = (uint32_t{1} << man) - 1;
  Values data = Finetune(kind, base, seed);
  for (size_t i = 0; i < base.size(); ++i) {
    const uint32_t sign = (i / 3) % 2 ? sign_bit : 0;
    const auto k = static_cast<uint32_t>(i * 2654435761u);
    switch (i % 23) {
      case 1: data.Set(i, sign | inf | ((k & man_mask) | 1)); break;  // NaN with a payload
      case 4: data.Set(i, sign | inf); break;
      case 7: data.Set(i, sign); break;
      case 10: data.Set(i, sign | (k & man_mask)); break;  // subnormal
      case 13: data.Set(i, sign | (inf - 1)); break;
      case 16: data.Set(i, base.Get(i) ^ sign_bit); break;
      case 19: data.Set(i, (base.Get(i) ^ sign_bit) ^ (k & 0x3F)); break;
      default: break;
    }
  }
  return data;
}

// A finetune with a run of four sign changes to a tiny magnitude (a far exponent: the longest raw fields)
// every 64 values.
Values FarFlipRuns(FloatKind kind, const Values& base, uint64_t seed) {
  const int bits = 8 * static_cast<int>(FloatKindSize(kind));
  const int man = kind == FloatKind::kF32 ? 23 : kind == FloatKind::kBF16 ? 7 : 10;
  const uint32_t sign_bit = uint32_t{1} << (bits - 1);
  Values data = Finetune(kind, base, seed);
  for (size_t i = 4; i + 4 <= base.size(); i += 64) {
    for (size_t k = i; k < i + 4; ++k) {
      const auto m = static_cast<uint32_t>(k * 2654435761u) & ((uint32_t{1} << man) - 1);
      data.Set(k, ((base.Get(k) & sign_bit) ^ sign_bit) | (uint32_t{1} << man) | m);
    }
  }
  return data;
}

// The encoder's AVX-512 passes (where the CPU has them) write the scalar passes' bytes: every version,
// delta and standalone, lengths around the rows of 32 lanes, edge values in the data and in the base.
TEST(FloatRansV3Test, VectorAndScalarEncodersWriteTheSameBytes) {
  const SimdSwitch restore;
  for (FloatKind kind : kAllKinds) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{31}, size_t{33}, size_t{511}, size_t{8192}, size_t{8193},
                     size_t{8192 + 31}, size_t{40017}}) {
      const Values base = Gaussian(kind, n, n + 11);
      const Values edge_base = AnyKindEdgeValues(kind, base, n + 12);
      const Values data = AnyKindEdgeValues(kind, base, n + 13);
      const Values plain = Finetune(kind, base, n + 14);
      const Values far = FarFlipRuns(kind, base, n + 15);
      const std::pair<const Values*, const Values*> cases[] = {{&data, &base},      {&data, nullptr},
                                                               {&data, &edge_base}, {&plain, &base},
                                                               {&plain, nullptr},   {&far, &base}};
      for (int version = 1; version <= kFloatRansVersion; ++version) {
        for (const auto& [d, b] : cases) {
          const uint8_t* bp = b != nullptr ? b->data() : nullptr;
          float_rans::SetSimdEnabled(true);
          const std::string vec = EncodeFloatsRans(kind, d->data(), bp, n, version);
          float_rans::SetSimdEnabled(false);
          const std::string scalar = EncodeFloatsRans(kind, d->data(), bp, n, version);
          EXPECT_EQ(vec, scalar) << KindName(kind) << " n=" << n << " v" << version
                                 << (b == nullptr ? " standalone" : " delta");
          Values out(kind, n);
          ASSERT_TRUE(DecodeFloatsRans(kind, vec, bp, n, out.data(), version).ok());
          EXPECT_TRUE(out.bytes() == d->bytes());
        }
      }
    }
  }
}

// Version 3 writes 32 lanes for F32, which version 2 refuses; version 2 (8 lanes) still round-trips, and
// the 16-bit kinds write the same bytes in both versions.
TEST(FloatRansV3Test, Version3F32IsRefusedAsVersion2AndVersion2StillDecodes) {
  for (FloatKind kind : kAllKinds) {
    const size_t n = 9000;
    const Values base = Gaussian(kind, n, 31);
    const Values data = Finetune(kind, base, 32);
    for (const Values* b : {static_cast<const Values*>(nullptr), &base}) {
      const uint8_t* bp = b != nullptr ? b->data() : nullptr;
      const std::string v3 = EncodeFloatsRans(kind, data.data(), bp, n, 3);
      const std::string v2 = EncodeFloatsRans(kind, data.data(), bp, n, 2);
      Values out(kind, n);
      ASSERT_TRUE(DecodeFloatsRans(kind, v2, bp, n, out.data(), 2).ok()) << KindName(kind);
      EXPECT_TRUE(out.bytes() == data.bytes());
      if (kind != kF32) {
        EXPECT_EQ(v3, v2) << KindName(kind);
        continue;
      }
      EXPECT_EQ(static_cast<uint8_t>(v3[3]), 5);
      EXPECT_EQ(static_cast<uint8_t>(v2[3]), 3);
      EXPECT_EQ(DecodeFloatsRans(kind, v3, bp, n, out.data(), 2).code(), StatusCode::kCorruption);
      ASSERT_TRUE(DecodeFloatsRans(kind, v3, bp, n, out.data(), 3).ok());
      EXPECT_TRUE(out.bytes() == data.bytes());
    }
  }
}

// A version 2 F32 payload written by the version 2 encoder (commit 904a92b): 600 values against their
// base (8 lanes), sign changes near and far, a constant every 89 values. Decoded here forever.
void GoldenF32(std::vector<uint32_t>* base, std::vector<uint32_t>* data) {
  uint32_t s = 777;
  for (int i = 0; i < 600; ++i) {
    s = s * 1664525u + 1013904223u;
    const uint32_t b = 0x3E000000u + ((s >> 4) & 0x1FFFFFFu) + ((s >> 31) << 31);
    const int d = static_cast<int>((s >> 9) & 0x3FF) - 512;
    base->push_back(b);
    data->push_back(i % 97 == 5 ? b ^ 0x80000000u : (i % 89 == 7 ? 0xBF800000u : b + d));
  }
}

constexpr const char* kGoldenV2F32Delta =
    "13007f030100010109c20400004546758888889899a9aababb0c400000000000"
    "0000000000000000000000000000000000004000000004400000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "00000000008050c802f28b44e655c512004c1cc207ca884500d1ab4f0bf2756a"
    "00db5f120017e81000d55f1b03189c301062e8f871ae59a81e31774d64c477fb"
    "56d0937c114798c34c80e9b8457c3c80a1de180ba685788ba5b1e4c3f8dc8f63"
    "ef2bdac25d14934534eea208fc4d69c76e0da81a25b0a2c7a48131bd65da2c4f"
    "4d3c6a9390226779f3b2985c78ad628ba05c7112d9b3a452925da4ca5af30828"
    "dc4e86ca312a2e4f4aedc662cc126dca1e0b1bc20f4de36863fff72a29f340e4"
    "125d390523cccb92979fd838c9fe1bdc97dddce85e1c1e26e067e19114fa24e0"
    "4e493ba86ef679e09086e470c8fb27a47ee2e99f52dacb780ab07a87c554069d"
    "42959d08a6aa02e98a8b5629eb5c3c7efc3245a18da74871da6f488e9c13d77e"
    "138a0fb343e3eb602faf67970797c43158517738417d4cbe72a12dfde5629c8e"
    "ce5e5a912760a81028f699263f283603ba5c2646d05853b11e4118fb4b0000c0"
    "7aa7a7fcf33aa75749292278346820a090baf944ad01e03b1529ef544fd7f284"
    "f9d5e2aa92e80b82381f75e1d46867982c82c8cdb9d7bd82cf0a96d2c36123be"
    "ef01000080ad8ad124097db522f90172a58e1bc7ffb6caec1eb6c6d8ff6bc77d"
    "e436fb89d17529423f474fd01f6812311337512a7b2e132e1c1b49b4a85989b3"
    "a777390e7d5e0693281b2c030000388912f3f2bc16f48c2380142d467f7d3e18"
    "4ef1440623f5874fe8bf759fe36f68883b2e161f1372074f531b786185471232"
    "cc3fe3581869ffd18f4b199abb4ef7cf9a0f08000010ccd92433d6fb5dc90a24"
    "a995e8f7ea626a70df288becc6aaf96fb091081fb2000094e70c5c48f4358a8e"
    "d81be9ba416a54cbd5bf43ca28bfc94011f6b18ab57ea990cf91faad976b16c7"
    "16adb15b99155e71084273cc31f12a68afe3d8737a5be53697345d3a5ddda02f"
    "6f76c40d6b64689debc6500a396c09264b5d57fa2523e181895dc86fc2ed1500"
    "18f2e54b475b0a98df93a74f08ae9ccb8e049d6a0020151d3f8806d604dbe2fe"
    "8cdaaac15b64fca9be408f5e103742bb52863b5ca81865ab35eda548b98be25c"
    "ab7d7983acc7537947e056a5b05772475ac62b1d4e5e1e1910c1558cc030d583"
    "ffee4dd5b5e6fb71f4486d685cd9d3a7bf6912002482140fe700";

TEST(FloatRansV3Test, GoldenVersion2F32PayloadAndChunkStillDecode) {
  std::vector<uint32_t> base, data;
  GoldenF32(&base, &data);
  const std::string payload = FromHex(kGoldenV2F32Delta);
  ASSERT_EQ(payload.size(), 922u);
  const auto* bp = reinterpret_cast<const uint8_t*>(base.data());
  std::vector<uint32_t> out(data.size());
  const Status s =
      DecodeFloatsRans(kF32, payload, bp, data.size(), reinterpret_cast<uint8_t*>(out.data()), 2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, data);
  // As a chunk with header version 2.
  const std::string_view raw(reinterpret_cast<const char*>(data.data()), 4 * data.size());
  const std::string_view braw(reinterpret_cast<const char*>(base.data()), 4 * base.size());
  std::string chunk = ChunkHeader(CodecId::kFloatRans, kChunkFlagDelta, DType::kF32, raw.size()) + payload;
  chunk[1] = 2;
  auto decoded = DecodeChunk(chunk, braw, raw.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, raw);
  // What EncodeChunk writes now is version 3.
  EXPECT_EQ(static_cast<uint8_t>(EncodeChunk(DType::kF32, raw, braw)[1]), 3);
}

}  // namespace
}  // namespace deltastore
