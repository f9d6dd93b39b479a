// Row-range reconstruction (LossyRowDecoder): any split of the rows gives the bytes DecodeLossyChunk gives
// for the whole tensor, for every mask kind, value kind and dtype, with and without the low-rank term.
#include "codec/lossy_rows.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>

namespace deltastore {
namespace {

float Half(float x) {
  return HalfToFloat(FloatToHalf(x));
}

LossyTensor MakeTensor(MaskKind mask, ValueKind values, uint16_t rank, bool shared, uint32_t rows,
                       uint32_t cols) {
  std::mt19937 rng(rows * 131 + cols + static_cast<uint32_t>(mask) * 7 + rank);
  LossyTensor t;
  LossyParams& p = t.p;
  p.rows = rows;
  p.cols = cols;
  p.lambda = -0.0123f;
  p.mu = 1.0625f;
  p.mask = mask;
  p.seed = 99;
  p.stream = 5;
  p.group = 8;
  p.keep = 3;
  p.keep_prob = 0.37f;
  p.values = values;
  p.bits = values == ValueKind::kQuant ? 3 : 4;
  p.planes = values == ValueKind::kQuant ? 2 : 1;
  p.sign_scale = 0.011f;
  p.shared_scale = shared && values == ValueKind::kQuant;
  p.rank = rank;
  p.factor_bits = rank ? 4 : 0;
  if (mask == MaskKind::kPositions) {
    for (uint32_t i = 0; i < rows * cols; ++i) {
      if (rng() % 5 == 0) t.positions.push_back(i);
    }
  }
  if (values == ValueKind::kQuant) {
    for (uint32_t r = 0; r < rows; ++r) {
      t.row_scale.push_back(shared ? Half(0.0371f) : Half(0.01f * static_cast<float>(r + 1) + 0.0013f));
      t.row_zero.push_back(shared ? Half(-0.0557f) : Half(-0.02f * static_cast<float>(r + 1) - 0.0007f));
    }
  }
  uint64_t kept = 0;
  ForEachKept(p, t.positions, [&](uint32_t, uint32_t) { ++kept; });
  for (uint64_t i = 0; i < kept; ++i) {
    uint32_t code = values == ValueKind::kQuant ? rng() % 8
                    : values == ValueKind::kSign
                        ? rng() % 2
                        : FloatToHalf(0.001f * static_cast<float>(rng() % 200) - 0.1f);
    t.codes.push_back(static_cast<uint16_t>(code));
  }
  for (uint32_t k = 0; k < rank; ++k) {
    t.factor_scale_a.push_back(Half(0.0173f * static_cast<float>(k + 1)));
    t.factor_scale_b.push_back(Half(0.0291f / static_cast<float>(k + 1)));
  }
  for (uint32_t i = 0; i < rows * rank; ++i)
    t.a_codes.push_back(static_cast<int8_t>(static_cast<int>(rng() % 15) - 7));
  for (uint32_t i = 0; i < rank * cols; ++i)
    t.b_codes.push_back(static_cast<int8_t>(static_cast<int>(rng() % 15) - 7));
  return t;
}

std::string Base(DType dtype, uint64_t n) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  std::string out(n * DTypeSize(dtype), '\0');
  FromFloat32(dtype, v.data(), n, out.data());
  return out;
}

// Decodes the chunk at the split points `cuts` (row indices, ascending, ending at rows).
std::string DecodeSplit(const LossyRowDecoder& d, const std::string& base,
                        const std::vector<uint32_t>& cuts) {
  std::string out(d.raw_size(), '\0');
  uint32_t r0 = 0;
  for (uint32_t r1 : cuts) {
    const uint64_t at = r0 * d.row_bytes(), n = (r1 - r0) * d.row_bytes();
    Status s = d.DecodeRows(r0, r1, std::string_view(base).substr(at, n), out.data() + at);
    EXPECT_TRUE(s.ok()) << s.ToString();
    r0 = r1;
  }
  return out;
}

TEST(LossyRowsTest, AnySplitGivesTheWholeDecodesBytes) {
  const uint32_t rows = 13, cols = 37;
  int cases = 0;
  for (MaskKind mask : {MaskKind::kDense, MaskKind::kGroupK, MaskKind::kBernoulli, MaskKind::kPositions}) {
    for (ValueKind values : {ValueKind::kQuant, ValueKind::kF16, ValueKind::kSign}) {
      for (uint16_t rank : {0, 3}) {
        for (bool shared : {false, true}) {
          for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
            SCOPED_TRACE(testing::Message() << "mask " << int(mask) << " values " << int(values) << " rank "
                                            << rank << " shared " << shared << " dtype " << int(dtype));
            const std::string chunk =
                EncodeLossyChunk(dtype, MakeTensor(mask, values, rank, shared, rows, cols));
            const std::string base = Base(dtype, uint64_t{rows} * cols);
            std::string whole;
            ASSERT_TRUE(DecodeLossyChunk(chunk, base, &whole).ok());
            auto d = LossyRowDecoder::Parse(chunk);
            ASSERT_TRUE(d.ok()) << d.status().ToString();
            EXPECT_EQ(DecodeSplit(**d, base, {rows}), whole);
            EXPECT_EQ(DecodeSplit(**d, base, {1, 2, 7, 12, rows}), whole);
            EXPECT_EQ(DecodeSplit(**d, base, {5, 5, 10, rows}), whole);  // an empty range too
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 144);
}

// One decoder serves several threads at once, each on its own rows (a download's workers; the compressor's
// rebuild of a block on its host threads, gpu/lossy.cc DecodeBlock): the bytes of the whole decode.
TEST(LossyRowsTest, RowsDecodedOnSeveralThreadsAtOnceAreTheWholeDecodesBytes) {
  const uint32_t rows = 400, cols = 37, threads = 4;
  for (MaskKind mask : {MaskKind::kGroupK, MaskKind::kBernoulli}) {
    const std::string chunk =
        EncodeLossyChunk(DType::kBF16, MakeTensor(mask, ValueKind::kQuant, 3, false, rows, cols));
    const std::string base = Base(DType::kBF16, uint64_t{rows} * cols);
    std::string whole;
    ASSERT_TRUE(DecodeLossyChunk(chunk, base, &whole).ok());
    auto d = LossyRowDecoder::Parse(chunk);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    std::string out(whole.size(), '\0');
    std::vector<Status> got(threads);
    std::vector<std::thread> pool;
    const uint64_t rb = (*d)->row_bytes();
    for (uint32_t t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        // rows t, t + 4, t + 8, ... one at a time, so that the threads interleave
        for (uint32_t r = t; r < rows && got[t].ok(); r += threads) {
          got[t] = (*d)->DecodeRows(r, r + 1, std::string_view(base).substr(r * rb, rb), out.data() + r * rb);
        }
      });
    }
    for (auto& th : pool) th.join();
    for (const Status& st : got) EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(out == whole) << int(mask);
  }
}

TEST(LossyRowsTest, RejectsRangesOutsideTheTensorAndWrongBaseSizes) {
  const std::string chunk =
      EncodeLossyChunk(DType::kF32, MakeTensor(MaskKind::kGroupK, ValueKind::kQuant, 2, false, 4, 9));
  auto d = LossyRowDecoder::Parse(chunk);
  ASSERT_TRUE(d.ok());
  std::string out(5 * 9 * 4, '\0'), base = Base(DType::kF32, 5 * 9);
  EXPECT_FALSE((*d)->DecodeRows(3, 5, std::string_view(base).substr(0, 2 * 36), out.data()).ok());
  EXPECT_FALSE((*d)->DecodeRows(2, 1, {}, out.data()).ok());
  EXPECT_FALSE((*d)->DecodeRows(0, 2, std::string_view(base).substr(0, 36), out.data()).ok());
  EXPECT_FALSE(LossyRowDecoder::Parse(chunk.substr(0, chunk.size() - 1)).ok());
}

TEST(LossyRowsTest, CacheParsesEachChunkOnceAndKeepsTheNewest) {
  const std::string a =
      EncodeLossyChunk(DType::kF32, MakeTensor(MaskKind::kDense, ValueKind::kSign, 0, false, 3, 4));
  int fetches = 0;
  auto fetch = [&]() -> StatusOr<std::string> {
    ++fetches;
    return std::string(a);  // a copy: the chunk stays for the next fetch
  };
  LossyDecoderCache cache(2);
  ASSERT_TRUE(cache.Get("a", fetch).ok());
  ASSERT_TRUE(cache.Get("a", fetch).ok());
  EXPECT_EQ(fetches, 1);
  ASSERT_TRUE(cache.Get("b", fetch).ok());
  ASSERT_TRUE(cache.Get("c", fetch).ok());  // evicts "a"
  ASSERT_TRUE(cache.Get("a", fetch).ok());
  EXPECT_EQ(fetches, 4);
  auto bad = cache.Get("d", []() -> StatusOr<std::string> { return std::string("junk"); });
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace deltastore
