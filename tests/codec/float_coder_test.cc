#include "codec/float_coder.h"
#include "tests/fixtures.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/codec/float_test_util.h"

namespace deltastore {
namespace {

using namespace float_test;

// Encodes and decodes; checks the round trip and returns the encoded size.
size_t RoundTrip(FloatKind kind, const Values& data, const Values* base) {
  const size_t n = data.size();
  const uint8_t* base_ptr = base != nullptr ? base->data() : nullptr;
  const std::string encoded = EncodeFloats(kind, data.data(), base_ptr, n);
  EXPECT_FALSE(encoded.empty());
  EXPECT_EQ(encoded, EncodeFloats(kind, data.data(), base_ptr, n)) << "encoding is not deterministic";
  Values decoded(kind, n);
  const Status s = DecodeFloats(kind, encoded, base_ptr, n, decoded.data());
  EXPECT_TRUE(s.ok()) << KindName(kind) << " n=" << n << ": " << s.ToString();
  EXPECT_TRUE(decoded.bytes() == data.bytes())
      << KindName(kind) << " n=" << n << " base=" << (base != nullptr);
  return encoded.size();
}

const size_t kSizes[] = {0, 1, 2, 3, 7, 8, 9, 31, 1000, 4097, 65537};

TEST(FloatCoderTest, KindSizes) {
  EXPECT_EQ(FloatKindSize(FloatKind::kBF16), 2u);
  EXPECT_EQ(FloatKindSize(FloatKind::kF16), 2u);
  EXPECT_EQ(FloatKindSize(FloatKind::kF32), 4u);
  EXPECT_EQ(FloatKindSize(static_cast<FloatKind>(0)), 0u);
}

TEST(FloatCoderTest, RandomBitsRoundTrip) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : kSizes) {
      const Values data = RandomBits(kind, n, n * 7 + 1);
      const Values base = RandomBits(kind, n, n * 7 + 2);
      const size_t alone = RoundTrip(kind, data, nullptr);
      const size_t delta = RoundTrip(kind, data, &base);
      // Incompressible: stored raw, with a few bytes of header.
      EXPECT_LE(alone, n * FloatKindSize(kind) + 5);
      EXPECT_LE(delta, n * FloatKindSize(kind) + 5);
    }
  }
}

TEST(FloatCoderTest, GaussianRoundTrip) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : kSizes) {
      const Values base = Gaussian(kind, n, n + 11);
      const Values data = Finetune(kind, base, n + 12);
      RoundTrip(kind, data, nullptr);
      RoundTrip(kind, data, &base);
    }
  }
}

TEST(FloatCoderTest, CompressesWeights) {
  const size_t n = 100000;
  for (FloatKind kind : kAllKinds) {
    const Values base = Gaussian(kind, n, 5);
    const Values data = Finetune(kind, base, 6);
    const double raw = static_cast<double>(n * FloatKindSize(kind));
    const double alone = raw / static_cast<double>(RoundTrip(kind, data, nullptr));
    const double delta = raw / static_cast<double>(RoundTrip(kind, data, &base));
    std::printf("%s synthetic: standalone %.3fx, delta %.3fx\n", KindName(kind), alone, delta);
    EXPECT_GT(alone, 1.1) << KindName(kind);
    EXPECT_GT(delta, alone) << KindName(kind);
  }
}

TEST(FloatCoderTest, EqualValuesAreTiny) {
  const size_t n = 1 << 18;
  for (FloatKind kind : kAllKinds) {
    const Values base = Gaussian(kind, n, 21);
    // Delta against itself: every value is "unchanged".
    EXPECT_LT(RoundTrip(kind, base, &base), 16u) << KindName(kind);
    // All but a few unchanged.
    Values almost = base;
    for (size_t i = 0; i < n; i += 50000) almost.Set(i, almost.Get(i) ^ 1);
    EXPECT_LT(RoundTrip(kind, almost, &base), n * FloatKindSize(kind) / 200) << KindName(kind);
    // A constant tensor, standalone and against itself.
    Values constant(kind, n);
    for (size_t i = 0; i < n; ++i) constant.Set(i, ToKind(kind, 0.125f));
    EXPECT_LT(RoundTrip(kind, constant, nullptr), n * FloatKindSize(kind) / 200) << KindName(kind);
    Values zeros(kind, n);
    EXPECT_LT(RoundTrip(kind, zeros, &zeros), n * FloatKindSize(kind) / 200) << KindName(kind);
    EXPECT_LT(RoundTrip(kind, zeros, nullptr), n * FloatKindSize(kind) / 200) << KindName(kind);
  }
}

TEST(FloatCoderTest, SpecialValues) {
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
    // Every special value against every other one (and itself), plus a run of each.
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
    // Specials mixed into ordinary weights.
    Values mixed = Gaussian(kind, 5000, 31);
    const Values mixed_base = Finetune(kind, mixed, 32);
    for (size_t i = 0; i < mixed.size(); i += 37) mixed.Set(i, sv[(i / 37) % k]);
    RoundTrip(kind, mixed, nullptr);
    RoundTrip(kind, mixed, &mixed_base);
    RoundTrip(kind, mixed_base, &mixed);
  }
}

TEST(FloatCoderTest, ExtremeExponentsAndTrailingZeros) {
  for (FloatKind kind : kAllKinds) {
    std::mt19937_64 rng(41);
    const size_t n = 20000;
    // Values spread over the whole exponent range (exponent escapes in standalone mode).
    Values wide(kind, n);
    const int width = static_cast<int>(FloatKindSize(kind)) * 8;
    for (size_t i = 0; i < n; ++i) {
      wide.Set(i, static_cast<uint32_t>(rng()) & ((uint64_t{1} << width) - 1));
      if (i % 3 == 0) wide.Set(i, wide.Get(i) & ~((uint32_t{1} << (width / 2)) - 1));
    }
    RoundTrip(kind, wide, nullptr);
    // Values with the low mantissa bits zero (e.g. bf16 upcast to f32) compress much better.
    Values coarse = Gaussian(kind, n, 42);
    for (size_t i = 0; i < n; ++i) coarse.Set(i, coarse.Get(i) & ~uint32_t{0xF});
    const Values coarse_base = Finetune(kind, coarse, 43);
    const size_t full = RoundTrip(kind, Gaussian(kind, n, 42), nullptr);
    EXPECT_LT(RoundTrip(kind, coarse, nullptr), full);
    RoundTrip(kind, coarse, &coarse_base);
    Values coarse_base2 = coarse_base;
    for (size_t i = 0; i < n; ++i) coarse_base2.Set(i, coarse_base.Get(i) & ~uint32_t{0xF});
    RoundTrip(kind, coarse, &coarse_base2);
  }
}

TEST(FloatCoderTest, UnrelatedBaseFallsBackToStandalone) {
  const size_t n = 50000;
  for (FloatKind kind : kAllKinds) {
    const Values data = Gaussian(kind, n, 51);
    const Values unrelated = Gaussian(kind, n, 52, 3.0f);
    const size_t alone = RoundTrip(kind, data, nullptr);
    EXPECT_LE(RoundTrip(kind, data, &unrelated), alone) << KindName(kind);
  }
}

TEST(FloatCoderTest, BadArguments) {
  const Values base = Gaussian(FloatKind::kBF16, 1000, 61);
  const Values data = Finetune(FloatKind::kBF16, base, 62);
  const std::string delta = EncodeFloats(FloatKind::kBF16, data.data(), base.data(), 1000);
  Values out(FloatKind::kBF16, 1000);
  EXPECT_EQ(DecodeFloats(FloatKind::kBF16, delta, nullptr, 1000, out.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeFloats(FloatKind::kF16, delta, base.data(), 1000, out.data()).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeFloats(FloatKind::kBF16, delta, base.data(), 999, out.data()).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeFloats(static_cast<FloatKind>(9), delta, base.data(), 1000, out.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(EncodeFloats(static_cast<FloatKind>(9), data.data(), nullptr, 1000).empty());
  EXPECT_EQ(DecodeFloats(FloatKind::kBF16, "", nullptr, 0, nullptr).code(), StatusCode::kCorruption);
  // A standalone encoding decodes whether or not a base is passed.
  const std::string alone = EncodeFloats(FloatKind::kBF16, data.data(), nullptr, 1000);
  ASSERT_TRUE(DecodeFloats(FloatKind::kBF16, alone, base.data(), 1000, out.data()).ok());
  EXPECT_TRUE(out.bytes() == data.bytes());
  // A different base decodes to garbage, which the checksum catches.
  const Values other = Gaussian(FloatKind::kBF16, 1000, 63);
  EXPECT_EQ(DecodeFloats(FloatKind::kBF16, delta, other.data(), 1000, out.data()).code(),
            StatusCode::kCorruption);
}

// Every truncation and many random corruptions of `encoded` must decode to an error (and not crash; run
// under ASan to check the bounds).
void ExpectCorruptionDetected(FloatKind kind, const std::string& encoded, const Values* base, size_t n,
                              int trials = 1000) {
  const uint8_t* base_ptr = base != nullptr ? base->data() : nullptr;
  Values out(kind, n);
  ASSERT_TRUE(DecodeFloats(kind, encoded, base_ptr, n, out.data()).ok());
  // Every truncation of short encodings; of long ones, the first and last 64 and some in between.
  const size_t step = std::max<size_t>(1, encoded.size() / 128);
  for (size_t len = 0; len < encoded.size(); len += (len < 64 || len + 64 >= encoded.size()) ? 1 : step) {
    EXPECT_FALSE(DecodeFloats(kind, std::string_view(encoded).substr(0, len), base_ptr, n, out.data()).ok())
        << KindName(kind) << " truncated to " << len << " of " << encoded.size();
  }
  // One more byte at the end.
  EXPECT_FALSE(DecodeFloats(kind, encoded + '\0', base_ptr, n, out.data()).ok());
  std::mt19937_64 rng(encoded.size());
  for (int trial = 0; trial < trials; ++trial) {
    std::string bad = encoded;
    const int flips = 1 + static_cast<int>(rng() % 3);
    std::string where;
    for (int f = 0; f < flips; ++f) {
      const size_t pos = rng() % bad.size();
      where += " " + std::to_string(pos);
      if (trial % 2 == 0) {
        bad[pos] = static_cast<char>(bad[pos] ^ (1 << (rng() % 8)));  // one bit
      } else {
        bad[pos] = static_cast<char>(bad[pos] ^ (1 + rng() % 255));  // a different byte
      }
    }
    if (bad == encoded) continue;  // the flips cancelled out
    EXPECT_FALSE(DecodeFloats(kind, bad, base_ptr, n, out.data()).ok())
        << KindName(kind) << " n=" << n << " size=" << encoded.size() << " mode=" << (encoded[0] >> 4)
        << " changed bytes at" << where;
  }
  // Garbage of every length up to 64 bytes, with each valid header byte.
  for (size_t len = 1; len <= 64; ++len) {
    for (uint8_t mode = 0; mode < 4; ++mode) {
      std::string garbage(len, '\0');
      for (char& c : garbage) c = static_cast<char>(rng());
      garbage[0] = static_cast<char>((mode << 4) | static_cast<uint8_t>(kind));
      EXPECT_FALSE(DecodeFloats(kind, garbage, base_ptr, n, out.data()).ok());
    }
  }
}

TEST(FloatCoderTest, CorruptInputIsDetected) {
  for (FloatKind kind : kAllKinds) {
    for (size_t n : {size_t{1}, size_t{5}, size_t{300}, size_t{2000}}) {
      const Values base = Gaussian(kind, n, n + 71);
      const Values data = Finetune(kind, base, n + 72);
      ExpectCorruptionDetected(kind, EncodeFloats(kind, data.data(), base.data(), n), &base, n);
      ExpectCorruptionDetected(kind, EncodeFloats(kind, data.data(), nullptr, n), nullptr, n);
      // Raw fallback.
      const Values noise = RandomBits(kind, n, n + 73);
      ExpectCorruptionDetected(kind, EncodeFloats(kind, noise.data(), nullptr, n), nullptr, n);
    }
    // Highly compressible input: a short stream for many values.
    const size_t n = 20000;
    const Values base = Gaussian(kind, n, 74);
    ExpectCorruptionDetected(kind, EncodeFloats(kind, base.data(), base.data(), n), &base, n);
    Values almost = base;
    almost.Set(n / 2, almost.Get(n / 2) ^ 1);
    ExpectCorruptionDetected(kind, EncodeFloats(kind, almost.data(), base.data(), n), &base, n, 200);
  }
}

TEST(FloatCoderTest, GarbageWithHugeCountFailsFast) {
  // A few bytes of garbage claiming 2^24 values must fail without decoding them all.
  const size_t n = size_t{1} << 24;
  std::vector<uint8_t> out(n * 2);
  std::vector<uint8_t> base(n * 2, 0x3C);
  std::mt19937_64 rng(81);
  for (int trial = 0; trial < 20; ++trial) {
    std::string garbage(40, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    garbage[0] = static_cast<char>(((1 + trial % 2) << 4) | static_cast<uint8_t>(FloatKind::kBF16));
    garbage[1] = 0;
    garbage[2] = 0x7F;
    garbage[3] = 10;
    garbage[8] = 0;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(DecodeFloats(FloatKind::kBF16, garbage, base.data(), n, out.data()).ok());
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  }
}

// ---------------------------------------------------------------------------------------------------
// Real fixtures
// ---------------------------------------------------------------------------------------------------

// Seconds of CPU time used by this thread (the machine may be shared: wall time overstates the cost).
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct FixtureResult {
  size_t raw = 0;
  size_t encoded = 0;
  double encode_s = 0;
  double decode_s = 0;
  double encode_cpu_s = 0;
  double decode_cpu_s = 0;
  double ratio() const { return static_cast<double>(raw) / static_cast<double>(encoded); }
};

// Encodes every tensor of `dtype` in `data_file` (against the same tensor in `base_file` when given),
// checks the round trip and sums up.
FixtureResult RunFixture(const std::string& data_file, const std::string& base_file, const std::string& dtype,
                         FloatKind kind) {
  const std::string dir = DS_FIXTURES_DIR;
  std::map<std::string, Tensor> data;
  std::map<std::string, Tensor> base;
  EXPECT_TRUE(ReadSafetensors(dir + "/" + data_file, &data)) << data_file;
  if (!base_file.empty()) {
    EXPECT_TRUE(ReadSafetensors(dir + "/" + base_file, &base)) << base_file;
  }
  FixtureResult r;
  for (const auto& [name, t] : data) {
    if (t.dtype != dtype) continue;
    const size_t n = t.bytes.size() / FloatKindSize(kind);
    const uint8_t* base_ptr = nullptr;
    if (!base_file.empty()) {
      const auto it = base.find(name);
      EXPECT_TRUE(it != base.end() && it->second.bytes.size() == t.bytes.size()) << name;
      if (it == base.end() || it->second.bytes.size() != t.bytes.size()) continue;
      base_ptr = reinterpret_cast<const uint8_t*>(it->second.bytes.data());
    }
    const auto* ptr = reinterpret_cast<const uint8_t*>(t.bytes.data());
    std::string decoded(t.bytes.size(), '\0');
    const double c0 = ThreadCpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    const std::string encoded = EncodeFloats(kind, ptr, base_ptr, n);
    const auto t1 = std::chrono::steady_clock::now();
    const double c1 = ThreadCpuSeconds();
    const Status s = DecodeFloats(kind, encoded, base_ptr, n, reinterpret_cast<uint8_t*>(decoded.data()));
    const auto t2 = std::chrono::steady_clock::now();
    const double c2 = ThreadCpuSeconds();
    EXPECT_TRUE(s.ok()) << name << ": " << s.ToString();
    EXPECT_TRUE(decoded == t.bytes) << name;
    r.raw += t.bytes.size();
    r.encoded += encoded.size();
    r.encode_s += std::chrono::duration<double>(t1 - t0).count();
    r.decode_s += std::chrono::duration<double>(t2 - t1).count();
    r.encode_cpu_s += c1 - c0;
    r.decode_cpu_s += c2 - c1;
  }
  EXPECT_GT(r.raw, 0u);
  const auto mbps = [&](double s) { return static_cast<double>(r.raw) / s / 1e6; };
  std::printf(
      "%s%s%s: %zu -> %zu bytes, ratio %.4fx; encode %.1f MB/s (%.1f MB/s of CPU time), decode %.1f MB/s "
      "(%.1f MB/s of CPU time)\n",
      data_file.c_str(), base_file.empty() ? "" : " vs ", base_file.c_str(), r.raw, r.encoded, r.ratio(),
      mbps(r.encode_s), mbps(r.encode_cpu_s), mbps(r.decode_s), mbps(r.decode_cpu_s));
  return r;
}

#define SKIP_WITHOUT_FIXTURES(...)                                    \
  for (const char* fixture : {__VA_ARGS__}) {                         \
    DS_REQUIRE_FIXTURE(std::string(DS_FIXTURES_DIR) + "/" + fixture); \
  }

TEST(FloatCoderFixtureTest, Bf16Delta) {
  SKIP_WITHOUT_FIXTURES("faceres.bf16.safetensors", "faceres-deep.bf16.safetensors");
  const FixtureResult r =
      RunFixture("faceres-deep.bf16.safetensors", "faceres.bf16.safetensors", "BF16", FloatKind::kBF16);
  // Byte planes + zstd reach 1.63x; the order-0 entropy of the XOR is 1.76x.
  EXPECT_GE(r.ratio(), 1.80);
}

TEST(FloatCoderFixtureTest, F32Delta) {
  SKIP_WITHOUT_FIXTURES("faceres.f32.safetensors", "faceres-deep.f32.safetensors");
  const FixtureResult r =
      RunFixture("faceres-deep.f32.safetensors", "faceres.f32.safetensors", "F32", FloatKind::kF32);
  // Byte planes + zstd reach 1.24x.
  EXPECT_GE(r.ratio(), 1.30);
}

TEST(FloatCoderFixtureTest, Bf16Standalone) {
  SKIP_WITHOUT_FIXTURES("faceres.bf16.safetensors", "faceres-deep.bf16.safetensors");
  // Order-0 entropy per tensor gives about 1.45-1.49x; zstd 1.27x.
  EXPECT_GE(RunFixture("faceres.bf16.safetensors", "", "BF16", FloatKind::kBF16).ratio(), 1.45);
  EXPECT_GE(RunFixture("faceres-deep.bf16.safetensors", "", "BF16", FloatKind::kBF16).ratio(), 1.40);
}

TEST(FloatCoderFixtureTest, F32Standalone) {
  SKIP_WITHOUT_FIXTURES("faceres.f32.safetensors", "faceres-deep.f32.safetensors");
  // faceres.f32 is f16 upcast: 13 mantissa bits are zero everywhere.
  EXPECT_GE(RunFixture("faceres.f32.safetensors", "", "F32", FloatKind::kF32).ratio(), 2.2);
  EXPECT_GE(RunFixture("faceres-deep.f32.safetensors", "", "F32", FloatKind::kF32).ratio(), 1.1);
}

TEST(FloatCoderFixtureTest, IdenticalPair) {
  SKIP_WITHOUT_FIXTURES("blazeface.f32.safetensors", "blazeface-back.f32.safetensors");
  const FixtureResult r =
      RunFixture("blazeface-back.f32.safetensors", "blazeface.f32.safetensors", "F32", FloatKind::kF32);
  EXPECT_GE(r.ratio(), 500.0);
}

}  // namespace
}  // namespace deltastore
