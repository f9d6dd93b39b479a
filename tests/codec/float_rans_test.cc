#include "codec/float_rans.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/float_coder.h"
#include "codec/rans.h"
#include "tests/codec/float_test_util.h"

namespace deltastore {
namespace {

using namespace float_test;

// Encodes (twice: the same bytes), decodes, checks the exact round trip; returns the encoded size.
size_t RoundTrip(FloatKind kind, const Values& data, const Values* base) {
  const size_t n = data.size();
  const uint8_t* base_ptr = base != nullptr ? base->data() : nullptr;
  const std::string encoded = EncodeFloatsRans(kind, data.data(), base_ptr, n);
  EXPECT_FALSE(encoded.empty());
  EXPECT_EQ(encoded, EncodeFloatsRans(kind, data.data(), base_ptr, n)) << "encoding is not deterministic";
  Values decoded(kind, n);
  const Status s = DecodeFloatsRans(kind, encoded, base_ptr, n, decoded.data());
  EXPECT_TRUE(s.ok()) << KindName(kind) << " n=" << n << ": " << s.ToString();
  EXPECT_TRUE(decoded.bytes() == data.bytes())
      << KindName(kind) << " n=" << n << " base=" << (base != nullptr);
  return encoded.size();
}

// Mode of an encoding (the high nibble of its first byte): 0 raw, 1 delta, 2 standalone, 3 same as base.
int Mode(const std::string& encoded) {
  return static_cast<uint8_t>(encoded[0]) >> 4;
}

const size_t kSizes[] = {0, 1, 2, 3, 7, 8, 9, 31, 511, 512, 513, 1000, 4097, 65537};

// The encoder's per-symbol division (rans::EncPut) is exact: every frequency, states across the 32-bit
// range (multiples of the frequency and their neighbours, the largest state), a cumulative start kept.
TEST(FloatRansTest, EncoderDivisionIsExact) {
  for (uint32_t f = 1; f <= rans::kProbScale; ++f) {
    const uint32_t freqs[2] = {rans::kProbScale - f, f};
    rans::EncSymbol enc[2];
    rans::BuildEncSymbols(freqs, 2, enc);
    const rans::EncSymbol& e = enc[1];
    ASSERT_EQ(e.info & rans::kEncFreqMask, f);
    ASSERT_EQ((e.info >> rans::kEncCumShift) & rans::kEncCumMask, rans::kProbScale - f);
    const uint64_t probes[] = {0,
                               1,
                               f - 1,
                               f,
                               f + 1,
                               uint64_t{f} << 16,
                               (uint64_t{f} << 20) - 1,
                               uint64_t{0xFFFFFFFF} / f * f,
                               uint64_t{0xFFFFFFFF} / f * f - 1,
                               0xFFFFFFFF};
    for (uint64_t x : probes) {
      const auto x32 = static_cast<uint32_t>(x);
      const uint64_t q = (x32 + ((uint64_t{x32} * e.mult) >> 32)) >> (e.info >> rans::kEncDivShift);
      ASSERT_EQ(q, x32 / f) << "x=" << x32 << " f=" << f;
    }
    for (uint32_t k = 1, x = 0x9E3779B9u; k < 64; ++k, x = x * 1664525u + 1013904223u) {
      const uint64_t q = (x + ((uint64_t{x} * e.mult) >> 32)) >> (e.info >> rans::kEncDivShift);
      ASSERT_EQ(q, x / f) << "x=" << x << " f=" << f;
    }
  }
}

TEST(FloatRansTest, RandomBitsAreStoredRaw) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : kSizes) {
      const Values data = RandomBits(kind, n, n * 7 + 1);
      const Values base = RandomBits(kind, n, n * 7 + 2);
      EXPECT_EQ(RoundTrip(kind, data, nullptr), n * FloatKindSize(kind) + 5) << KindName(kind) << " n=" << n;
      EXPECT_EQ(RoundTrip(kind, data, &base), n * FloatKindSize(kind) + 5) << KindName(kind) << " n=" << n;
    }
  }
}

TEST(FloatRansTest, WeightsRoundTripAtEverySize) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : kSizes) {
      const Values base = Gaussian(kind, n, n + 11);
      const Values data = Finetune(kind, base, n + 12);
      RoundTrip(kind, data, nullptr);
      RoundTrip(kind, data, &base);
    }
  }
}

TEST(FloatRansTest, CompressesLikeTheAdaptiveCoder) {
  const size_t n = 200000;
  for (FloatKind kind : kAllKinds) {
    const Values base = Gaussian(kind, n, 5);
    const Values data = Finetune(kind, base, 6);
    const size_t delta = RoundTrip(kind, data, &base);
    const size_t alone = RoundTrip(kind, data, nullptr);
    const size_t old_delta = EncodeFloats(kind, data.data(), base.data(), n).size();
    const size_t old_alone = EncodeFloats(kind, data.data(), nullptr, n).size();
    std::printf("%s synthetic: delta %zu (adaptive %zu), standalone %zu (adaptive %zu)\n", KindName(kind),
                delta, old_delta, alone, old_alone);
    EXPECT_LT(delta, alone) << KindName(kind);
    // Static tables keep within 3% of the adaptive coder here.
    EXPECT_LT(static_cast<double>(delta), 1.03 * static_cast<double>(old_delta)) << KindName(kind);
    EXPECT_LT(static_cast<double>(alone), 1.03 * static_cast<double>(old_alone)) << KindName(kind);
  }
}

TEST(FloatRansTest, EqualAndConstantValues) {
  const size_t n = 1 << 18;
  for (FloatKind kind : kAllKinds) {
    const size_t bytes = n * FloatKindSize(kind);
    const Values base = Gaussian(kind, n, 21);
    // Identical to the base: 5 bytes, mode "same".
    EXPECT_EQ(RoundTrip(kind, base, &base), 5u) << KindName(kind);
    EXPECT_EQ(Mode(EncodeFloatsRans(kind, base.data(), base.data(), n)), 3);
    // All but a few unchanged.
    Values almost = base;
    for (size_t i = 0; i < n; i += 50000) almost.Set(i, almost.Get(i) ^ 1);
    EXPECT_LT(RoundTrip(kind, almost, &base), bytes / 200) << KindName(kind);
    // A constant tensor, and zeros, standalone and as a delta.
    Values constant(kind, n);
    for (size_t i = 0; i < n; ++i) constant.Set(i, ToKind(kind, 0.125f));
    EXPECT_LT(RoundTrip(kind, constant, nullptr), bytes / 200) << KindName(kind);
    Values zeros(kind, n);
    EXPECT_LT(RoundTrip(kind, zeros, nullptr), bytes / 200) << KindName(kind);
    EXPECT_LT(RoundTrip(kind, constant, &zeros), bytes / 200) << KindName(kind);
  }
}

TEST(FloatRansTest, SpecialValues) {
  const std::map<FloatKind, std::vector<uint32_t>> specials = {
      {FloatKind::kBF16,
       {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F,
        0xFF7F, 0x3F80, 0xBF80}},
      {FloatKind::kF16,
       {0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF,
        0xFBFF, 0x3C00, 0xBC00}},
      {FloatKind::kF32,
       {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00001u, 0x7F800001u,
        0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00800000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F800000u,
        0xBF800000u}},
  };
  for (FloatKind kind : kAllKinds) {
    const std::vector<uint32_t>& sv = specials.at(kind);
    const size_t k = sv.size();
    // Every special value against every other one (sign flips, NaN payloads, infinities, signed zeros,
    // subnormals), plus runs of each; enough values for the 8-lane layout.
    Values data(kind, k * k + 64 * k);
    Values base(kind, k * k + 64 * k);
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = 0; j < k; ++j) {
        data.Set(i * k + j, sv[i]);
        base.Set(i * k + j, sv[j]);
      }
      for (size_t r = 0; r < 64; ++r) {
        data.Set(k * k + i * 64 + r, sv[i]);
        base.Set(k * k + i * 64 + r, sv[(i + r) % k]);
      }
    }
    RoundTrip(kind, data, nullptr);
    RoundTrip(kind, data, &base);
    RoundTrip(kind, base, &data);
    // Specials mixed into weights, and every value's sign flipped against its base.
    Values mixed = Gaussian(kind, 5000, 31);
    const Values mixed_base = Finetune(kind, mixed, 32);
    for (size_t i = 0; i < mixed.size(); i += 37) mixed.Set(i, sv[(i / 37) % k]);
    RoundTrip(kind, mixed, nullptr);
    RoundTrip(kind, mixed, &mixed_base);
    RoundTrip(kind, mixed_base, &mixed);
    Values flipped = mixed_base;
    const uint32_t sign = kind == FloatKind::kF32 ? 0x80000000u : 0x8000u;
    for (size_t i = 0; i < flipped.size(); ++i) flipped.Set(i, flipped.Get(i) ^ sign);
    RoundTrip(kind, flipped, &mixed_base);
    // Single values of each special, standalone and against each other.
    for (uint32_t a : sv) {
      Values one(kind, 1);
      one.Set(0, a);
      RoundTrip(kind, one, nullptr);
      for (uint32_t b : sv) {
        Values other(kind, 1);
        other.Set(0, b);
        RoundTrip(kind, one, &other);
      }
    }
  }
}

TEST(FloatRansTest, ExtremeExponentsAndTrailingZeros) {
  for (FloatKind kind : kAllKinds) {
    const size_t n = 3000;
    // Powers of two only (no mantissa bits at all), spanning every exponent.
    Values pow2(kind, n);
    const int exp_bits = kind == FloatKind::kF16 ? 5 : 8;
    const int man_bits = kind == FloatKind::kF32 ? 23 : (kind == FloatKind::kF16 ? 10 : 7);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t e = static_cast<uint32_t>(i % ((1u << exp_bits) - 1));
      pow2.Set(i, (static_cast<uint32_t>(i & 1) << (exp_bits + man_bits)) | (e << man_bits));
    }
    RoundTrip(kind, pow2, nullptr);
    const Values shifted = Gaussian(kind, n, 41, 1e3f);
    RoundTrip(kind, pow2, &shifted);
    RoundTrip(kind, shifted, &pow2);
    // Values with exponents far below the largest one (tiny and huge mixed).
    Values spread = Gaussian(kind, n, 42);
    for (size_t i = 0; i < n; i += 3) spread.Set(i, ToKind(kind, i % 2 ? 1e-30f : 3e4f));
    RoundTrip(kind, spread, nullptr);
    RoundTrip(kind, spread, &shifted);
  }
  // BF16 values upcast to F32: the 16 low mantissa bits are zero everywhere, and cost nothing.
  const size_t n = 5000;
  Values up(FloatKind::kF32, n);
  Values up_base(FloatKind::kF32, n);
  const Values h = Gaussian(FloatKind::kBF16, n, 43);
  const Values hb = Finetune(FloatKind::kBF16, h, 44);
  for (size_t i = 0; i < n; ++i) {
    up.Set(i, h.Get(i) << 16);
    up_base.Set(i, hb.Get(i) << 16);
  }
  EXPECT_LT(RoundTrip(FloatKind::kF32, up, nullptr), n * 2);
  EXPECT_LT(RoundTrip(FloatKind::kF32, up, &up_base), n * 2);
}

TEST(FloatRansTest, UnrelatedBaseCodesStandalone) {
  const size_t n = 50000;
  for (FloatKind kind : kAllKinds) {
    const Values data = Gaussian(kind, n, 51);
    const Values unrelated = Gaussian(kind, n, 52, 30.0f);
    const std::string enc = EncodeFloatsRans(kind, data.data(), unrelated.data(), n);
    EXPECT_EQ(Mode(enc), 2) << KindName(kind);
    EXPECT_EQ(enc.size(), RoundTrip(kind, data, &unrelated));
    // A standalone encoding decodes with or without the base.
    Values out(kind, n);
    ASSERT_TRUE(DecodeFloatsRans(kind, enc, nullptr, n, out.data()).ok());
    EXPECT_TRUE(out.bytes() == data.bytes());
  }
}

TEST(FloatRansTest, BadArguments) {
  const size_t n = 1000;
  const Values base = Gaussian(FloatKind::kBF16, n, 61);
  const Values data = Finetune(FloatKind::kBF16, base, 62);
  const std::string delta = EncodeFloatsRans(FloatKind::kBF16, data.data(), base.data(), n);
  ASSERT_EQ(Mode(delta), 1);
  Values out(FloatKind::kBF16, n);
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, delta, nullptr, n, out.data()).code(),
            StatusCode::kInvalidArgument);
  const std::string same = EncodeFloatsRans(FloatKind::kBF16, base.data(), base.data(), n);
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, same, nullptr, n, out.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeFloatsRans(static_cast<FloatKind>(9), delta, base.data(), n, out.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(EncodeFloatsRans(static_cast<FloatKind>(9), data.data(), nullptr, n).empty());
  // The wrong kind, the wrong count, the wrong base.
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kF16, delta, base.data(), n, out.data()).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, delta, base.data(), n - 1, out.data()).code(),
            StatusCode::kCorruption);
  Values other = base;
  other.Set(17, other.Get(17) ^ 0x10);
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, delta, other.data(), n, out.data()).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeFloatsRans(FloatKind::kBF16, "", base.data(), n, out.data()).code(),
            StatusCode::kCorruption);
}

// Every byte of small encodings flipped (three ways) and every truncation: kCorruption, never a crash
// (ASan builds check the reads), never a success.
TEST(FloatRansTest, CorruptAndTruncatedInputIsRefused) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : {size_t{200}, size_t{700}}) {
      const Values base = Gaussian(kind, n, 71 + n);
      Values data = Finetune(kind, base, 72 + n);
      data.Set(3, data.Get(3) ^ (kind == FloatKind::kF32 ? 0x80000000u : 0x8000u));  // a sign change
      for (const Values* b : {static_cast<const Values*>(nullptr), &base}) {
        const uint8_t* bp = b != nullptr ? b->data() : nullptr;
        const std::string enc = EncodeFloatsRans(kind, data.data(), bp, n);
        ASSERT_EQ(Mode(enc), b != nullptr ? 1 : 2);
        Values out(kind, n);
        for (size_t pos = 0; pos < enc.size(); ++pos) {
          for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
            std::string bad = enc;
            bad[pos] = static_cast<char>(bad[pos] ^ mask);
            const Status s = DecodeFloatsRans(kind, bad, bp, n, out.data());
            EXPECT_EQ(s.code(), StatusCode::kCorruption) << KindName(kind) << " n=" << n << " byte " << pos
                                                         << " ^ " << int(mask) << ": " << s.ToString();
          }
        }
        for (size_t len = 0; len < enc.size(); ++len) {
          const Status s = DecodeFloatsRans(kind, enc.substr(0, len), bp, n, out.data());
          EXPECT_EQ(s.code(), StatusCode::kCorruption)
              << KindName(kind) << " n=" << n << " truncated to " << len;
        }
        EXPECT_EQ(DecodeFloatsRans(kind, enc + std::string(1, '\0'), bp, n, out.data()).code(),
                  StatusCode::kCorruption);
      }
    }
  }
}

TEST(FloatRansTest, GarbageWithAHugeCountFailsFast) {
  std::string garbage(4096, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 131 + 7);
  for (uint8_t mode : {1, 2}) {
    garbage[0] = static_cast<char>((mode << 4) | static_cast<uint8_t>(FloatKind::kBF16));
    const size_t n = 4u << 20;
    std::vector<uint8_t> out(2 * n);
    std::vector<uint8_t> base(2 * n, 0x3F);
    const Status s = DecodeFloatsRans(FloatKind::kBF16, garbage, base.data(), n, out.data());
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
  }
}

TEST(FloatRansTest, ChunkCodecDefaultsToTheFastCoder) {
  const size_t n = 4096;
  const Values base = Gaussian(FloatKind::kBF16, n, 81);
  const Values data = Finetune(FloatKind::kBF16, base, 82);
  const std::string_view raw(reinterpret_cast<const char*>(data.data()), 2 * n);
  const std::string_view braw(reinterpret_cast<const char*>(base.data()), 2 * n);
  const std::string fast = EncodeChunk(DType::kBF16, raw, braw);
  EXPECT_EQ(static_cast<CodecId>(fast[0]), CodecId::kFloatRans);
  EncodeOptions max;
  max.level = EncodeLevel::kMax;
  const std::string slow = EncodeChunk(DType::kBF16, raw, braw, max);
  EXPECT_EQ(static_cast<CodecId>(slow[0]), CodecId::kFloatCtx);
  for (const std::string* enc : {&fast, &slow}) {
    auto out = DecodeChunk(*enc, braw, raw.size());
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, raw);
  }
  EXPECT_EQ(CodecName(CodecId::kFloatRans), "float-rans");
}

// ---------------------------------------------------------------------------------------------------
// Real fixtures
// ---------------------------------------------------------------------------------------------------

struct FixtureRatio {
  size_t raw = 0;
  size_t encoded = 0;
  size_t encoded_max = 0;  // the adaptive coder on the same tensors
  double ratio() const { return static_cast<double>(raw) / static_cast<double>(encoded); }
};

FixtureRatio RunFixture(const std::string& data_file, const std::string& base_file, const std::string& dtype,
                        FloatKind kind) {
  const std::string dir = DS_FIXTURES_DIR;
  std::map<std::string, Tensor> data;
  std::map<std::string, Tensor> base;
  EXPECT_TRUE(ReadSafetensors(dir + "/" + data_file, &data)) << data_file;
  if (!base_file.empty()) {
    EXPECT_TRUE(ReadSafetensors(dir + "/" + base_file, &base)) << base_file;
  }
  FixtureRatio r;
  for (const auto& [name, t] : data) {
    if (t.dtype != dtype) continue;
    const size_t n = t.bytes.size() / FloatKindSize(kind);
    const uint8_t* bp = nullptr;
    if (!base_file.empty()) bp = reinterpret_cast<const uint8_t*>(base.at(name).bytes.data());
    const auto* p = reinterpret_cast<const uint8_t*>(t.bytes.data());
    const std::string enc = EncodeFloatsRans(kind, p, bp, n);
    std::string out(t.bytes.size(), '\0');
    const Status s = DecodeFloatsRans(kind, enc, bp, n, reinterpret_cast<uint8_t*>(out.data()));
    EXPECT_TRUE(s.ok()) << name << ": " << s.ToString();
    EXPECT_TRUE(out == t.bytes) << name;
    r.raw += t.bytes.size();
    r.encoded += enc.size();
    r.encoded_max += EncodeFloats(kind, p, bp, n).size();
  }
  std::printf("%s%s%s: %zu -> %zu bytes, %.4fx (adaptive coder %.4fx)\n", data_file.c_str(),
              base_file.empty() ? "" : " vs ", base_file.c_str(), r.raw, r.encoded, r.ratio(),
              static_cast<double>(r.raw) / static_cast<double>(r.encoded_max));
  return r;
}

bool HaveFixtures(std::initializer_list<const char*> files) {
  for (const char* f : files) {
    if (!std::filesystem::exists(std::string(DS_FIXTURES_DIR) + "/" + f)) return false;
  }
  return true;
}

#define SKIP_WITHOUT_FIXTURES(...)                                                                      \
  if (!HaveFixtures({__VA_ARGS__})) {                                                                   \
    GTEST_SKIP() << "fixtures not found in " << DS_FIXTURES_DIR << " (the shared fixtures folder next " \
                 << "to the repository)";                                                               \
  }

TEST(FloatRansFixtureTest, Bf16Pair) {
  SKIP_WITHOUT_FIXTURES("faceres.bf16.safetensors", "faceres-deep.bf16.safetensors");
  EXPECT_GE(RunFixture("faceres-deep.bf16.safetensors", "faceres.bf16.safetensors", "BF16", FloatKind::kBF16)
                .ratio(),
            2.0);
  // ZipNN 0.5.4 reaches 1.511x on this file (bench/README.md).
  EXPECT_GE(RunFixture("faceres.bf16.safetensors", "", "BF16", FloatKind::kBF16).ratio(), 1.52);
}

TEST(FloatRansFixtureTest, F32Pair) {
  SKIP_WITHOUT_FIXTURES("faceres.f32.safetensors", "faceres-deep.f32.safetensors");
  EXPECT_GE(
      RunFixture("faceres-deep.f32.safetensors", "faceres.f32.safetensors", "F32", FloatKind::kF32).ratio(),
      1.30);
  EXPECT_GE(RunFixture("faceres.f32.safetensors", "", "F32", FloatKind::kF32).ratio(), 2.3);
}

TEST(FloatRansFixtureTest, IdenticalPair) {
  SKIP_WITHOUT_FIXTURES("blazeface.f32.safetensors", "blazeface-back.f32.safetensors");
  EXPECT_GE(RunFixture("blazeface-back.f32.safetensors", "blazeface.f32.safetensors", "F32", FloatKind::kF32)
                .ratio(),
            500.0);
}

}  // namespace
}  // namespace deltastore
