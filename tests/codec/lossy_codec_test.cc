// Lossy chunk format version 2 (tensor-wide scale, low-rank term): round trip, reconstruction formula,
// version choice and the parser's checks.
#include "codec/lossy_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "codec/chunk_codec.h"

namespace deltastore {
namespace {

// The value fp16 storage keeps of x.
float Half(float x) {
  return HalfToFloat(FloatToHalf(x));
}

// A small group k-of-g tensor with 2-bit codes; `shared` one scale for the tensor, `rank` factors of
// `factor_bits`-bit codes (valid codes unless the caller changes them).
LossyTensor MakeTensor(uint32_t rows, uint32_t cols, bool shared, uint16_t rank, uint8_t factor_bits = 4,
                       uint32_t seed = 1) {
  std::mt19937 rng(seed);
  LossyTensor t;
  LossyParams& p = t.p;
  p.rows = rows;
  p.cols = cols;
  p.lambda = -0.0123f;
  p.mu = 1.0625f;
  p.mask = MaskKind::kGroupK;
  p.seed = 99;
  p.stream = 5;
  p.group = 4;
  p.keep = 2;
  p.values = ValueKind::kQuant;
  p.bits = 2;
  p.planes = 2;
  p.shared_scale = shared;
  p.rank = rank;
  p.factor_bits = rank ? factor_bits : 0;
  for (uint32_t r = 0; r < rows; ++r) {
    // Stored as fp16: the values a parse returns.
    t.row_scale.push_back(shared ? Half(0.0371f) : Half(0.01f * static_cast<float>(r + 1) + 0.0013f));
    t.row_zero.push_back(shared ? Half(-0.0557f) : Half(-0.02f * static_cast<float>(r + 1) - 0.0007f));
  }
  uint64_t kept = 0;
  ForEachKept(p, {}, [&](uint32_t, uint32_t) { ++kept; });
  for (uint64_t i = 0; i < kept; ++i) t.codes.push_back(static_cast<uint16_t>(rng() % 4));
  if (rank) {
    const int limit = (1 << (factor_bits - 1)) - 1;
    for (uint32_t k = 0; k < rank; ++k) {
      t.factor_scale_a.push_back(Half(0.0173f * static_cast<float>(k + 1)));
      t.factor_scale_b.push_back(Half(0.0291f / static_cast<float>(k + 1)));
    }
    for (uint32_t i = 0; i < rows * rank; ++i)
      t.a_codes.push_back(static_cast<int8_t>(static_cast<int>(rng() % (2 * limit + 1)) - limit));
    for (uint32_t i = 0; i < rank * cols; ++i)
      t.b_codes.push_back(static_cast<int8_t>(static_cast<int>(rng() % (2 * limit + 1)) - limit));
  }
  return t;
}

std::string BaseBytes(uint32_t rows, uint32_t cols, std::vector<float>* values) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 0.05f);
  values->resize(static_cast<size_t>(rows) * cols);
  for (float& v : *values) v = n(rng);
  std::string bytes(values->size() * 4, '\0');
  std::memcpy(bytes.data(), values->data(), bytes.size());
  return bytes;
}

Status ParseStatus(const std::string& chunk) {
  DType dtype;
  return ParseLossyChunk(chunk, &dtype).status();
}

// Offsets in a lossy chunk: the 12-byte chunk header, then version (1), rows, cols, lambda, mu (4 each),
// mask (1), seed (8), stream (4), group, keep (2 each), keep_prob (4), values, bits, planes (1 each),
// sign_scale (4); version 2 then has scale mode (1), rank (2), factor bits (1).
constexpr size_t kVersionAt = 12;
constexpr size_t kScaleModeAt = 12 + 45;
constexpr size_t kRankAt = kScaleModeAt + 1;
constexpr size_t kFactorBitsAt = kRankAt + 2;

TEST(LossyCodecV2Test, EncodeThenParseGivesTheSameFields) {
  LossyTensor t = MakeTensor(6, 10, /*shared=*/true, /*rank=*/2);
  std::string chunk = EncodeLossyChunk(DType::kF32, t);
  DType dtype;
  auto parsed = ParseLossyChunk(chunk, &dtype);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(dtype, DType::kF32);
  const LossyParams &p = t.p, &q = parsed->p;
  EXPECT_EQ(q.rows, p.rows);
  EXPECT_EQ(q.cols, p.cols);
  EXPECT_EQ(q.lambda, p.lambda);
  EXPECT_EQ(q.mu, p.mu);
  EXPECT_EQ(q.mask, p.mask);
  EXPECT_EQ(q.seed, p.seed);
  EXPECT_EQ(q.stream, p.stream);
  EXPECT_EQ(q.group, p.group);
  EXPECT_EQ(q.keep, p.keep);
  EXPECT_EQ(q.values, p.values);
  EXPECT_EQ(q.bits, p.bits);
  EXPECT_EQ(q.planes, p.planes);
  EXPECT_TRUE(q.shared_scale);
  EXPECT_EQ(q.rank, 2);
  EXPECT_EQ(q.factor_bits, 4);
  EXPECT_EQ(parsed->codes, t.codes);
  EXPECT_EQ(parsed->a_codes, t.a_codes);
  EXPECT_EQ(parsed->b_codes, t.b_codes);
  EXPECT_EQ(parsed->factor_scale_a, t.factor_scale_a);
  EXPECT_EQ(parsed->factor_scale_b, t.factor_scale_b);
  // One scale and zero for the tensor, given to every row.
  EXPECT_EQ(parsed->row_scale, std::vector<float>(6, t.row_scale[0]));
  EXPECT_EQ(parsed->row_zero, std::vector<float>(6, t.row_zero[0]));
  // Re-encoding what was parsed gives the same bytes.
  EXPECT_EQ(EncodeLossyChunk(dtype, *parsed), chunk);

  // Per-row scales with a low-rank term keep every row's pair.
  LossyTensor rows = MakeTensor(6, 10, /*shared=*/false, /*rank=*/1, /*factor_bits=*/8);
  auto parsed_rows = ParseLossyChunk(EncodeLossyChunk(DType::kBF16, rows), &dtype);
  ASSERT_TRUE(parsed_rows.ok()) << parsed_rows.status().ToString();
  EXPECT_EQ(dtype, DType::kBF16);
  EXPECT_FALSE(parsed_rows->p.shared_scale);
  EXPECT_EQ(parsed_rows->p.factor_bits, 8);
  EXPECT_EQ(parsed_rows->row_scale, rows.row_scale);
  EXPECT_EQ(parsed_rows->row_zero, rows.row_zero);
  EXPECT_EQ(parsed_rows->a_codes, rows.a_codes);
  EXPECT_EQ(parsed_rows->b_codes, rows.b_codes);
}

// W = (1 + lambda) * W_base + mu * (S + L), L = A * B summed over k in order, each operation rounded to
// float on its own; computed here from the tensor's fields, independently of the decoder.
TEST(LossyCodecV2Test, DecodeFollowsTheFormulaExactly) {
  const uint32_t rows = 5, cols = 12;
  LossyTensor t = MakeTensor(rows, cols, /*shared=*/true, /*rank=*/2);
  std::vector<float> base;
  std::string base_bytes = BaseBytes(rows, cols, &base);

  std::vector<float> s(static_cast<size_t>(rows) * cols, 0.0f);
  std::vector<uint32_t> kept;
  size_t next = 0;
  for (uint32_t r = 0; r < rows; ++r) {
    KeptColumns(t.p, r, &kept);
    ASSERT_EQ(kept.size(), 6u);  // 2 of every 4
    for (uint32_t c : kept) {
      volatile float scaled = t.row_scale[0] * static_cast<float>(t.codes[next++]);
      s[r * cols + c] = t.row_zero[0] + scaled;
    }
  }
  ASSERT_EQ(next, t.codes.size());
  std::vector<float> want(s.size());
  for (uint32_t i = 0; i < rows; ++i) {
    for (uint32_t j = 0; j < cols; ++j) {
      float l = 0.0f;
      for (uint32_t k = 0; k < 2; ++k) {
        const float a = t.factor_scale_a[k] * static_cast<float>(t.a_codes[i * 2 + k]);
        const float b = t.factor_scale_b[k] * static_cast<float>(t.b_codes[k * cols + j]);
        volatile float prod = a * b;
        l = l + prod;
      }
      const float c = s[i * cols + j] + l;
      volatile float shifted = (1.0f + t.p.lambda) * base[i * cols + j];
      volatile float scaled = t.p.mu * c;
      want[i * cols + j] = shifted + scaled;
    }
  }

  std::string out;
  ASSERT_TRUE(DecodeLossyChunk(EncodeLossyChunk(DType::kF32, t), base_bytes, &out).ok());
  ASSERT_EQ(out.size(), want.size() * 4);
  std::vector<float> got(want.size());
  std::memcpy(got.data(), out.data(), out.size());
  for (size_t i = 0; i < want.size(); ++i) {
    uint32_t wb, gb;
    std::memcpy(&wb, &want[i], 4);
    std::memcpy(&gb, &got[i], 4);
    EXPECT_EQ(gb, wb) << "element " << i << ": " << got[i] << " vs " << want[i];
  }
  // The low-rank term matters: without it the reconstruction differs.
  LossyTensor no_rank = t;
  no_rank.p.rank = 0;
  no_rank.p.factor_bits = 0;
  no_rank.a_codes.clear();
  no_rank.b_codes.clear();
  no_rank.factor_scale_a.clear();
  no_rank.factor_scale_b.clear();
  std::string out_no_rank;
  ASSERT_TRUE(DecodeLossyChunk(EncodeLossyChunk(DType::kF32, no_rank), base_bytes, &out_no_rank).ok());
  EXPECT_NE(out_no_rank, out);
  // The generic chunk path gives the same bytes.
  auto generic = DecodeChunk(EncodeLossyChunk(DType::kF32, t), base_bytes, base_bytes.size());
  ASSERT_TRUE(generic.ok()) << generic.status().ToString();
  EXPECT_EQ(*generic, out);
}

TEST(LossyCodecV2Test, EncodingThatReleasesTheCodesWritesTheSameBytes) {
  for (auto [shared, rank] : {std::pair<bool, uint16_t>{false, 0}, {true, 0}, {false, 2}, {true, 2}}) {
    LossyTensor t = MakeTensor(6, 10, shared, rank);
    const std::string chunk = EncodeLossyChunk(DType::kF32, t);
    ASSERT_FALSE(t.codes.empty());
    EXPECT_EQ(EncodeLossyChunkReleasingCodes(DType::kF32, &t), chunk) << shared << " " << rank;
    EXPECT_TRUE(t.codes.empty());
    EXPECT_EQ(t.codes.capacity(), 0u);
  }
}

TEST(LossyCodecV2Test, EncodingFromPackedPlanesWritesTheSameBytes) {
  // Version 1 and 2 tensors of 2-bit codes in 2 planes, and a dense one of 8-bit codes in 1 plane.
  std::vector<LossyTensor> tensors = {MakeTensor(6, 10, false, 0), MakeTensor(6, 10, true, 2)};
  LossyTensor dense = MakeTensor(6, 10, false, 0);
  dense.p.mask = MaskKind::kDense;
  dense.p.bits = 8;
  dense.p.planes = 1;
  dense.codes.clear();
  for (uint16_t i = 0; i < 60; ++i) dense.codes.push_back(static_cast<uint16_t>((i * 37) % 256));
  tensors.push_back(dense);
  for (const LossyTensor& t : tensors) {
    const std::string chunk = EncodeLossyChunk(DType::kF32, t);
    DType dtype;
    PackedCodes packed;
    std::vector<uint64_t> row_start;
    ASSERT_TRUE(ParseLossyChunkPacked(chunk, &dtype, &packed, &row_start).ok());
    LossyTensor without = t;
    without.codes.clear();
    auto encoded = EncodeLossyChunkPacked(DType::kF32, without, packed);
    ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
    EXPECT_EQ(*encoded, chunk) << int(t.p.bits) << " " << t.p.rank;
    // Planes that do not match the tensor's are refused, not encoded.
    PackedCodes short_count = packed;
    short_count.count -= 1;
    EXPECT_EQ(EncodeLossyChunkPacked(DType::kF32, without, short_count).status().code(),
              StatusCode::kInternal);
    PackedCodes wrong_width = packed;
    wrong_width.widths[0] += 1;
    EXPECT_EQ(EncodeLossyChunkPacked(DType::kF32, without, wrong_width).status().code(),
              StatusCode::kInternal);
  }
}

TEST(LossyCodecV2Test, WriterUsesVersion1UnlessAVersion2FeatureIsUsed) {
  auto version = [](const LossyTensor& t) {
    return static_cast<int>(static_cast<uint8_t>(EncodeLossyChunk(DType::kF32, t)[kVersionAt]));
  };
  LossyTensor plain = MakeTensor(4, 8, false, 0);
  EXPECT_EQ(version(plain), 1);
  EXPECT_EQ(version(MakeTensor(4, 8, true, 0)), 2);
  EXPECT_EQ(version(MakeTensor(4, 8, false, 2)), 2);
  EXPECT_EQ(version(MakeTensor(4, 8, true, 2)), 2);
  // Version 1 (what old readers and golden stores hold) parses to the same fields, per-row scales kept.
  DType dtype;
  auto parsed = ParseLossyChunk(EncodeLossyChunk(DType::kF32, plain), &dtype);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_FALSE(parsed->p.shared_scale);
  EXPECT_EQ(parsed->p.rank, 0);
  EXPECT_EQ(parsed->codes, plain.codes);
  EXPECT_EQ(parsed->row_scale, plain.row_scale);
  // Non-quantized values with neither feature are version 1 too.
  LossyTensor f16;
  f16.p.rows = 2;
  f16.p.cols = 3;
  f16.p.values = ValueKind::kF16;
  f16.codes.assign(6, FloatToHalf(0.5f));
  EXPECT_EQ(version(f16), 1);
}

// Version 2 with neither feature (no writer makes it, readers accept it): a one-row tensor's scale pair
// is the same 4 bytes with a per-row or a tensor-wide scale, so the scale mode byte can be cleared.
TEST(LossyCodecV2Test, Version2WithNeitherFeatureParsesAndReencodesAsVersion1) {
  std::string c = EncodeLossyChunk(DType::kF32, MakeTensor(1, 12, true, 0));
  ASSERT_EQ(static_cast<uint8_t>(c[kVersionAt]), 2);
  c[kScaleModeAt] = 0;
  DType dtype;
  auto t = ParseLossyChunk(c, &dtype);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->p.shared_scale);
  EXPECT_EQ(t->p.rank, 0);
  std::string again = EncodeLossyChunk(dtype, *t);
  EXPECT_EQ(static_cast<uint8_t>(again[kVersionAt]), 1);
  auto t2 = ParseLossyChunk(again, &dtype);
  ASSERT_TRUE(t2.ok()) << t2.status().ToString();
  EXPECT_EQ(t2->codes, t->codes);
  EXPECT_EQ(t2->row_scale, t->row_scale);
  EXPECT_EQ(t2->row_zero, t->row_zero);
  EXPECT_EQ(t2->p.factor_bits, t->p.factor_bits);
  // With a factor width but no rank it would not re-encode to the same fields (lossy_chunk_fuzz's
  // round-trip invariant): refused.
  c[kFactorBitsAt] = 3;
  EXPECT_EQ(ParseStatus(c).code(), StatusCode::kCorruption);
}

// Over 100 lines on purpose: one corruption per block, each against the same encoded chunk.
TEST(LossyCodecV2Test, CorruptVersion2ChunksAreRejected) {
  auto expect_corrupt = [](const std::string& chunk, const std::string& what) {
    Status s = ParseStatus(chunk);
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << what << ": " << s.ToString();
  };
  const LossyTensor good = MakeTensor(6, 10, true, 2);
  const std::string chunk = EncodeLossyChunk(DType::kF32, good);
  ASSERT_TRUE(ParseStatus(chunk).ok());

  // Rank above min(rows, cols): a 3 x 10 tensor with a rank-4 term (its factors sized for that rank).
  LossyTensor wide = MakeTensor(3, 10, true, 4);
  expect_corrupt(EncodeLossyChunk(DType::kF32, wide), "rank > rows");
  LossyTensor tall = MakeTensor(10, 3, false, 4);
  expect_corrupt(EncodeLossyChunk(DType::kF32, tall), "rank > cols");
  // The same tensors at rank 3 are valid.
  EXPECT_TRUE(ParseStatus(EncodeLossyChunk(DType::kF32, MakeTensor(3, 10, true, 3))).ok());
  EXPECT_TRUE(ParseStatus(EncodeLossyChunk(DType::kF32, MakeTensor(10, 3, false, 3))).ok());

  // Rank above kMaxLossyRank on a tensor large enough for it.
  {
    LossyTensor big = MakeTensor(257, 257, true, 0);
    big.p.rank = 257;
    big.p.factor_bits = 2;
    big.factor_scale_a.assign(257, 0.01f);
    big.factor_scale_b.assign(257, 0.01f);
    big.a_codes.assign(257 * 257, 1);
    big.b_codes.assign(257 * 257, -1);
    std::string c = EncodeLossyChunk(DType::kF32, big);
    expect_corrupt(c, "rank 257");
    // At rank 256 the same tensor is valid.
    big.p.rank = 256;
    big.factor_scale_a.resize(256);
    big.factor_scale_b.resize(256);
    big.a_codes.resize(257 * 256);
    big.b_codes.resize(256 * 257);
    EXPECT_TRUE(ParseStatus(EncodeLossyChunk(DType::kF32, big)).ok());
  }

  // Factor widths outside 2..8 (the header byte patched; the rest of the chunk is valid).
  for (uint8_t bits : {0, 1, 9, 255}) {
    std::string c = chunk;
    ASSERT_EQ(static_cast<uint8_t>(c[kFactorBitsAt]), 4);
    c[kFactorBitsAt] = static_cast<char>(bits);
    expect_corrupt(c, "factor bits " + std::to_string(bits));
  }
  // Encoded with 1 and 9 bits from the start.
  for (uint8_t bits : {1, 9}) {
    LossyTensor t = good;
    t.p.factor_bits = bits;
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "encoded factor bits " + std::to_string(bits));
  }
  // A scale mode other than 0 or 1.
  {
    std::string c = chunk;
    c[kScaleModeAt] = 2;
    expect_corrupt(c, "scale mode 2");
  }
  // A factor code outside +-(2^(bits-1) - 1): 4-bit codes stop at 7.
  for (int8_t code : {8, -8, 127, -128}) {
    LossyTensor t = good;
    t.a_codes[3] = code;
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "a code " + std::to_string(code));
    t = good;
    t.b_codes.back() = code;
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "b code " + std::to_string(code));
  }
  {
    LossyTensor t = good;
    t.a_codes[0] = 7;  // the largest valid code
    t.b_codes[0] = -7;
    EXPECT_TRUE(ParseStatus(EncodeLossyChunk(DType::kF32, t)).ok());
  }
  // Factor scales that are not finite (as fp16).
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf(""), 1e6f}) {
    LossyTensor t = good;
    t.factor_scale_b[1] = bad;
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "factor scale " + std::to_string(bad));
  }
  // A body with more or fewer bytes than the header implies.
  {
    LossyTensor t = good;
    t.a_codes.push_back(1);
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "body one byte long");
    t = good;
    t.b_codes.pop_back();
    expect_corrupt(EncodeLossyChunk(DType::kF32, t), "body one byte short");
  }
  // The header's rank patched: the body no longer has the size that rank implies.
  {
    std::string c = chunk;
    c[kRankAt] = 3;
    expect_corrupt(c, "rank 3 over a rank-2 body");
    c[kRankAt] = 1;
    expect_corrupt(c, "rank 1 over a rank-2 body");
  }
  // A factor width without a low-rank term: version 2 written with a tensor-wide scale and rank 0, its
  // factor bits byte set. Writers put 0 there; anything else would not survive a re-encode.
  {
    std::string c = EncodeLossyChunk(DType::kF32, MakeTensor(6, 10, true, 0));
    ASSERT_EQ(static_cast<uint8_t>(c[kVersionAt]), 2);
    ASSERT_TRUE(ParseStatus(c).ok());
    c[kFactorBitsAt] = 4;
    expect_corrupt(c, "factor bits 4 at rank 0");
  }
  // Truncated anywhere, and trailing bytes.
  for (size_t cut = 0; cut < chunk.size(); ++cut) {
    EXPECT_EQ(ParseStatus(chunk.substr(0, cut)).code(), StatusCode::kCorruption) << "cut at " << cut;
  }
  expect_corrupt(chunk + std::string(1, '\0'), "one trailing byte");
  expect_corrupt(chunk + chunk, "a chunk twice");
}

}  // namespace
}  // namespace deltastore
