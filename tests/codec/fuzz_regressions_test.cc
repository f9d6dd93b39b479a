// Inputs the fuzz targets (fuzz/) found, kept as regression tests.
#include <gtest/gtest.h>

#include <utility>

#include "codec/chunk_codec.h"
#include "codec/lossy_codec.h"
#include "codec/manifest.h"

namespace deltastore {
namespace {

// A lossy chunk that keeps nothing (positions mask, no positions) and stores F16 values: its size is
// only its header's.
LossyTensor EmptyPositions(uint32_t rows, uint32_t cols) {
  LossyTensor t;
  t.p.rows = rows;
  t.p.cols = cols;
  t.p.mask = MaskKind::kPositions;
  t.p.values = ValueKind::kF16;
  return t;
}

// lossy_chunk_fuzz: a dtype byte that names no dtype has element size 0, so rows x cols x 0 matched a
// raw size of 0 for any shape, and parsing then walked (and allocated for) rows x cols elements.
TEST(FuzzRegressionTest, LossyChunkWithUnknownDtypeIsRefused) {
  std::string chunk = EncodeLossyChunk(static_cast<DType>(0), EmptyPositions(8, 40));
  ASSERT_EQ(static_cast<uint8_t>(chunk[3]), 0);
  DType dtype;
  auto t = ParseLossyChunk(chunk, &dtype);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kCorruption);
  auto out = DecodeChunk(chunk, {}, 0);
  EXPECT_FALSE(out.ok());
}

// lossy_chunk_fuzz: rows x cols x element size wrapped around 2^64 to the raw size (2^31 x 2^30 x 8 = 0),
// so a header-sized chunk claimed 2^61 elements.
TEST(FuzzRegressionTest, LossyChunkWhoseShapeOverflowsIsRefused) {
  std::string chunk = EncodeLossyChunk(DType::kF64, EmptyPositions(1u << 31, 1u << 30));
  DType dtype;
  auto t = ParseLossyChunk(chunk, &dtype);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kCorruption);
  EXPECT_FALSE(DecodeChunk(chunk, {}, 0).ok());

  // The same shape with a size that does not wrap still parses (the check is exact, not a limit).
  std::string ok_chunk = EncodeLossyChunk(DType::kF32, EmptyPositions(3, 5));
  EXPECT_TRUE(ParseLossyChunk(ok_chunk, &dtype).ok());
}

// lossy_chunk_fuzz: rows x 0 columns is 0 elements, so any row count matched a raw size of 0, and
// parsing and reconstruction walked every row (2^32 - 1 of them took minutes; a quantized tensor also
// sized its scales section by the rows, 16 GiB). No lossy tensor is empty: refused.
TEST(FuzzRegressionTest, LossyChunkWithAnEmptyDimensionIsRefused) {
  for (auto [rows, cols] : {std::pair<uint32_t, uint32_t>{1u << 20, 0}, {0, 1u << 20}, {0, 0}}) {
    LossyTensor t;
    t.p.rows = rows;
    t.p.cols = cols;
    t.p.mask = MaskKind::kDense;
    t.p.values = ValueKind::kSign;
    std::string chunk = EncodeLossyChunk(DType::kF32, t);
    DType dtype;
    auto parsed = ParseLossyChunk(chunk, &dtype);
    ASSERT_FALSE(parsed.ok()) << rows << "x" << cols;
    EXPECT_EQ(parsed.status().code(), StatusCode::kCorruption);
    EXPECT_FALSE(DecodeChunk(chunk, {}, 0).ok());
  }
}

// container_fuzz: a manifest may claim any raw size per chunk, and readers allocate it before decoding
// (a 2^40-byte blob chunk in a 200-byte container). Only lossy chunks may exceed kChunkSize (they hold a
// whole tensor and are bounded by the base tensor when decoded); DecodeChunk refuses the rest too.
TEST(FuzzRegressionTest, ChunksLargerThanTheFormatAllowsAreRefused) {
  auto manifest_with = [](uint64_t raw, TensorEncoding enc) {
    Manifest m;
    FileEntry blob;
    blob.path = "blob.bin";
    blob.kind = FileKind::kBlob;
    blob.size = raw;
    blob.chunks = {ChunkRef{Sha256::Of("x"), raw, 10}};
    FileEntry st;
    st.path = "model.safetensors";
    st.kind = FileKind::kSafetensors;
    st.header = ChunkRef{Sha256::Of("h"), 8, 8};
    TensorEntry t;
    t.name = "w";
    t.dtype = DType::kF32;
    t.shape = {raw / 4};
    t.size = raw;
    t.encoding = enc;
    t.chunks = {ChunkRef{Sha256::Of("t"), raw, 10}};
    st.tensors = {t};
    st.size = 8 + raw;
    m.files = {blob, st};
    return SerializeManifest(m);
  };
  EXPECT_TRUE(ParseManifest(manifest_with(kChunkSize, TensorEncoding::kDelta)).ok());
  auto big = ParseManifest(manifest_with(kChunkSize + 4, TensorEncoding::kDelta));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("bad sizes"), std::string::npos) << big.status().message();

  // A chunk claiming more than kChunkSize raw bytes is refused before anything is allocated.
  std::string chunk = EncodeChunk(DType::kU8, std::string(16, 'a'), {}, {});
  std::string huge = chunk;
  for (int i = 0; i < 8; ++i) huge[4 + i] = (i == 5) ? 1 : 0;  // raw size 2^40
  auto out = DecodeChunk(huge, {}, 1ull << 40);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(DecodeChunk(chunk, {}, 16).ok());
}

}  // namespace
}  // namespace deltastore
