// Reading lossy tensors back row range by row range (VersionReader::ReadLossy): a download of a version
// with lossy tensors larger than a piece, through several workers and at odd ranges, gives the bytes of
// the whole-tensor decode (DecodeLossyChunk) that the ingest recorded.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include "codec/lossy_codec.h"
#include "codec/safetensors.h"
#include "service/ingest.h"
#include "service/reader.h"
#include "storage/stores.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;

std::string RandomBytes(DType dtype, uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  std::string out(n * DTypeSize(dtype), '\0');
  FromFloat32(dtype, v.data(), n, out.data());
  return out;
}

// A lossy encoding with random codes: group mask, per-row scales and, on the second tensor, a rank-3 term;
// *decoded receives the whole tensor's decode.
LossyOutcome Encode(const TensorInfo& info, const std::string& base, uint32_t stream, std::string* decoded) {
  std::mt19937 rng(stream + 3);
  LossyTensor t;
  LossyParams& p = t.p;
  p.rows = static_cast<uint32_t>(info.shape[0]);
  p.cols = static_cast<uint32_t>(info.numel() / info.shape[0]);
  p.lambda = 0.003f;
  p.mask = MaskKind::kGroupK;
  p.seed = 11;
  p.stream = stream;
  p.group = 64;
  p.keep = 16;
  p.bits = 2;
  p.planes = 1;
  p.rank = stream % 2 == 1 ? 3 : 0;
  p.factor_bits = p.rank ? 4 : 0;
  for (uint32_t r = 0; r < p.rows; ++r) {
    t.row_scale.push_back(HalfToFloat(FloatToHalf(0.001f * static_cast<float>(r % 17 + 1))));
    t.row_zero.push_back(HalfToFloat(FloatToHalf(-0.0015f)));
  }
  uint64_t kept = 0;
  ForEachKept(p, {}, [&](uint32_t, uint32_t) { ++kept; });
  for (uint64_t i = 0; i < kept; ++i) t.codes.push_back(static_cast<uint16_t>(rng() % 4));
  for (uint32_t k = 0; k < p.rank; ++k) {
    t.factor_scale_a.push_back(HalfToFloat(FloatToHalf(0.01f)));
    t.factor_scale_b.push_back(HalfToFloat(FloatToHalf(0.02f)));
  }
  for (uint64_t i = 0; i < uint64_t{p.rows} * p.rank; ++i)
    t.a_codes.push_back(static_cast<int8_t>(rng() % 15) - 7);
  for (uint64_t i = 0; i < uint64_t{p.cols} * p.rank; ++i)
    t.b_codes.push_back(static_cast<int8_t>(rng() % 15) - 7);
  LossyOutcome out;
  out.chunk = EncodeLossyChunk(info.dtype, t);
  EXPECT_TRUE(DecodeLossyChunk(out.chunk, base, decoded).ok());
  out.report_json = "{}";
  return out;
}

TEST(LossyReadTest, PiecesAndRangesGiveTheWholeDecodesBytes) {
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  // Both larger than a piece (4 MiB), rows of odd sizes that pieces end inside of.
  std::vector<TensorSpec> specs = {{"a.weight", DType::kF32, {1100, 1001}},
                                   {"b.weight", DType::kBF16, {1531, 1409}}};
  std::vector<std::string> base, ft;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t n = specs[i].shape[0] * specs[i].shape[1];
    base.push_back(RandomBytes(specs[i].dtype, n, 5 + i));
    ft.push_back(RandomBytes(specs[i].dtype, n, 50 + i));
  }
  ASSERT_TRUE(WriteSafetensorsFile((dir / "base.safetensors").string(), specs, base).ok());
  ASSERT_TRUE(WriteSafetensorsFile((dir / "ft.safetensors").string(), specs, ft).ok());

  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  IngestStats stats;
  auto base_m =
      IngestFiles(store.get(), {{(dir / "base.safetensors").string(), "m.safetensors"}}, nullptr, {}, &stats);
  ASSERT_TRUE(base_m.ok()) << base_m.status().ToString();
  std::map<std::string, std::string> want;  // tensor -> the whole-tensor decode
  IngestOptions options;
  options.lossy = [&](const TensorInfo& info, const std::string& b, const std::string&, uint32_t stream,
                      const LossyStep&,
                      const LossyRebuilt& rebuilt) -> StatusOr<std::optional<LossyOutcome>> {
    LossyOutcome o = Encode(info, b, stream, &want[info.name]);
    rebuilt(want[info.name]);
    return std::optional<LossyOutcome>(std::move(o));
  };
  auto loader = [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); };
  VersionReader base_reader(store.get(), *base_m, loader);
  auto m = IngestFiles(store.get(), {{(dir / "ft.safetensors").string(), "m.safetensors"}}, &base_reader,
                       options, &stats);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(want.size(), 2u);

  // The base is opened through the loader, so each of a download's workers reads its own (a base source
  // given at construction is shared by the clones, and a VersionReader is not safe for concurrent reads).
  const Digest base_digest = ManifestDigest(*base_m);
  auto base_loader = [&](const Digest& d) -> StatusOr<Manifest> {
    if (d == base_digest) return *base_m;
    return NotFound("none");
  };
  VersionReader reader(store.get(), *m, base_loader);
  const FileEntry& file = m->files.at(0);
  std::string expected(file.size, '\0');
  ASSERT_TRUE(reader.ReadChunks({*file.header}, 0, file.header->raw_size, expected.data()).ok());
  for (const TensorEntry& t : file.tensors) {
    ASSERT_EQ(t.encoding, TensorEncoding::kLossy) << t.name;
    ASSERT_EQ(want[t.name].size(), t.size);
    expected.replace(file.header->raw_size + t.offset, t.size, want[t.name]);
  }
  // Whole file, checked against its sha256, on 1 and 3 workers.
  for (size_t workers : {1, 3}) {
    FileStreamer streamer(&reader, &file, 0, file.size, true, workers);
    std::string got;
    while (true) {
      auto piece = streamer.Next();
      ASSERT_TRUE(piece.ok()) << piece.status().ToString();
      if (piece->empty()) break;
      got += *piece;
    }
    EXPECT_TRUE(got == expected) << workers << " workers";
  }
  // Odd ranges straight from the tensors (a piece's worth, a row's tail and the next row's head, bytes).
  const TensorEntry& b = file.tensors.at(1);
  for (auto [offset, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {2817, 5000}, {2817 * 700 - 3, 7}, {b.size - 9, 9}, {1, b.size - 1}, {kChunkSize, 4099}}) {
    std::string got(len, '\0');
    ASSERT_TRUE(reader.ReadTensor(b, offset, len, got.data()).ok());
    EXPECT_TRUE(got == want[b.name].substr(offset, len)) << offset << " " << len;
  }
  std::string past(2, '\0');
  EXPECT_FALSE(reader.ReadTensor(b, b.size - 1, 2, past.data()).ok());
}

// A hook that hands the ingest other than the whole rebuilt tensor (part of it with an outcome, or rows
// and then no outcome) fails the ingest as a bug: the served file's hash would be wrong.
TEST(LossyReadTest, AHookThatRebuildsPartOfATensorFailsTheIngest) {
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  std::vector<TensorSpec> specs = {{"a.weight", DType::kF32, {64, 32}}};
  ASSERT_TRUE(
      WriteSafetensorsFile((dir / "base.safetensors").string(), specs, {RandomBytes(DType::kF32, 2048, 1)})
          .ok());
  ASSERT_TRUE(
      WriteSafetensorsFile((dir / "ft.safetensors").string(), specs, {RandomBytes(DType::kF32, 2048, 2)})
          .ok());
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  IngestStats stats;
  auto base_m =
      IngestFiles(store.get(), {{(dir / "base.safetensors").string(), "m.safetensors"}}, nullptr, {}, &stats);
  ASSERT_TRUE(base_m.ok()) << base_m.status().ToString();
  auto loader = [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); };
  for (bool outcome : {true, false}) {
    IngestOptions options;
    options.lossy = [&](const TensorInfo& info, const std::string& b, const std::string&, uint32_t stream,
                        const LossyStep&,
                        const LossyRebuilt& rebuilt) -> StatusOr<std::optional<LossyOutcome>> {
      std::string decoded;
      LossyOutcome o = Encode(info, b, stream, &decoded);
      rebuilt(std::string_view(decoded).substr(0, decoded.size() / 2));
      if (!outcome) return std::optional<LossyOutcome>();
      return std::optional<LossyOutcome>(std::move(o));
    };
    VersionReader base_reader(store.get(), *base_m, loader);
    auto m = IngestFiles(store.get(), {{(dir / "ft.safetensors").string(), "m.safetensors"}}, &base_reader,
                         options, &stats);
    ASSERT_FALSE(m.ok()) << outcome;
    EXPECT_EQ(m.status().code(), StatusCode::kInternal) << m.status().ToString();
  }
}

}  // namespace
}  // namespace deltastore
