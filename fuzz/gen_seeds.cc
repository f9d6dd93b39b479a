// Writes the seed corpora (fuzz/corpus/<target>/) from the fixtures and small generated inputs:
//   gen_seeds FIXTURES_DIR OUT_DIR
// Seeds stay a few KB each: safetensors headers without their weights, slices of real tensors for
// the chunk codecs, manifests and containers of small generated checkpoints.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "codec/chunk_codec.h"
#include "codec/float_rans.h"
#include "codec/lossy_codec.h"
#include "codec/manifest.h"
#include "codec/safetensors.h"
#include "service/container.h"
#include "service/ingest.h"
#include "storage/stores.h"

using namespace deltastore;
namespace fs = std::filesystem;

namespace {

fs::path g_out;

void Die(const std::string& what) {
  std::fprintf(stderr, "gen_seeds: %s\n", what.c_str());
  std::exit(1);
}
void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Die(what + ": " + s.ToString());
}

void Write(const std::string& target, const std::string& name, std::string_view bytes) {
  fs::create_directories(g_out / target);
  std::ofstream f(g_out / target / name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) Die("cannot write " + name);
}

std::string ReadFile(const fs::path& p, uint64_t max = ~uint64_t{0}) {
  std::ifstream f(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (s.size() > max) s.resize(max);
  return s;
}

std::string LE32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// chunk_decode input: mode, u32 chunk length, chunk, base material.
std::string ChunkInput(uint8_t mode, const std::string& chunk, const std::string& base) {
  return std::string(1, static_cast<char>(mode)) + LE32(static_cast<uint32_t>(chunk.size())) + chunk + base;
}

// `bytes` bytes of a fixture tensor's data (the first tensor of `dtype` that has enough).
// `s` repeated to `bytes` bytes (fuzz::Cyclic of the targets).
std::string Repeat(const std::string& s, size_t bytes) {
  std::string out;
  for (size_t i = 0; i < bytes; ++i) out.push_back(s[i % s.size()]);
  return out;
}

std::string TensorSlice(const fs::path& file, DType dtype, uint64_t bytes, uint64_t skip = 0) {
  auto f = SafetensorsFile::Open(file.string());
  if (!f.ok()) Die(f.status().ToString());
  for (const auto& t : (*f)->header().tensors) {
    if (t.dtype != dtype || t.size() < skip + bytes) continue;
    std::string out(bytes, '\0');
    Check((*f)->ReadTensorRange(t, skip, bytes, out.data()), "read");
    return out;
  }
  Die("no tensor of that dtype in " + file.string());
  return {};
}

struct Checkpoint {
  std::vector<TensorSpec> specs;
  std::vector<std::string> data;
};

Checkpoint SmallCheckpoint(uint32_t seed, float noise) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.05f);
  Checkpoint c;
  c.specs = {{"embed.weight", DType::kBF16, {16, 8}},
             {"layer.weight", DType::kF32, {8, 8}},
             {"layer.bias", DType::kF16, {8}},
             {"shape", DType::kI32, {2}}};
  std::mt19937 base_rng(7);
  std::vector<float> vals(128);
  for (auto& v : vals) v = w(base_rng) + noise * w(rng);
  std::string bf(256, '\0'), f32(256, '\0'), f16(16, '\0');
  FromFloat32(DType::kBF16, vals.data(), 128, bf.data());
  FromFloat32(DType::kF32, vals.data(), 64, f32.data());
  FromFloat32(DType::kF16, vals.data() + 64, 8, f16.data());
  c.data = {bf, f32, f16, std::string("\x10\0\0\0\x08\0\0\0", 8)};
  return c;
}

fs::path WriteCheckpoint(const Checkpoint& c, const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ds_gen_seeds_" + name);
  Check(WriteSafetensorsFile(p.string(), c.specs, c.data, {{"format", "pt"}}), "write checkpoint");
  return p;
}

void SafetensorsSeeds(const fs::path& fixtures) {
  for (const char* name :
       {"blazeface.f32.safetensors", "faceres.bf16.safetensors", "faceres-deep.f32.safetensors"}) {
    std::string first8 = ReadFile(fixtures / name, 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(first8[i]);
    Write("safetensors_header", std::string(name) + ".header", ReadFile(fixtures / name, 8 + n));
  }
  fs::path small = WriteCheckpoint(SmallCheckpoint(1, 0), "st.safetensors");
  Write("safetensors_header", "small.safetensors", ReadFile(small));
  fs::remove(small);
  std::string meta_only = R"({"__metadata__":{"format":"pt"}})";
  std::string n8(8, '\0');
  n8[0] = static_cast<char>(meta_only.size());
  Write("safetensors_header", "metadata_only.safetensors", n8 + meta_only);
}

void ChunkSeeds(const fs::path& fixtures) {
  std::string bf_base = TensorSlice(fixtures / "faceres.bf16.safetensors", DType::kBF16, 2048, 4096);
  std::string bf_ft = TensorSlice(fixtures / "faceres-deep.bf16.safetensors", DType::kBF16, 2048, 4096);
  std::string f32_base = TensorSlice(fixtures / "faceres.f32.safetensors", DType::kF32, 2048, 4096);
  std::string f32_ft = TensorSlice(fixtures / "faceres-deep.f32.safetensors", DType::kF32, 2048, 4096);
  std::vector<float> vals(512);
  std::memcpy(vals.data(), f32_base.data(), 2048);
  std::string f16(1024, '\0');
  FromFloat32(DType::kF16, vals.data(), 512, f16.data());
  std::string ints;
  for (uint32_t i = 0; i < 256; ++i) ints += LE32(i * i % 977);
  std::string text;
  while (text.size() < 1500) text += "deltastore chunk seed ";
  std::mt19937 rng(3);
  std::string noise(256, '\0');
  for (auto& c : noise) c = static_cast<char>(rng());

  auto put = [](const std::string& name, uint8_t mode, const std::string& chunk, const std::string& base) {
    Write("chunk_decode", name, ChunkInput(mode, chunk, base));
  };
  put("float_bf16_standalone", 0, EncodeChunk(DType::kBF16, bf_ft, {}), "");
  put("float_bf16_delta", 1, EncodeChunk(DType::kBF16, bf_ft, bf_base), bf_base);
  put("float_f32_delta", 1, EncodeChunk(DType::kF32, f32_ft, f32_base), f32_base);
  put("float_f16_standalone", 0, EncodeChunk(DType::kF16, f16, {}), "");
  put("float_bf16_same", 1, EncodeChunk(DType::kBF16, bf_base, bf_base), bf_base);
  // A float-rans chunk of payload version 1 (chunk header version 1), as stores written before hold.
  put("float_rans_v1_bf16_delta", 1,
      ChunkHeader(CodecId::kFloatRans, kChunkFlagDelta, DType::kBF16, bf_ft.size()) +
          EncodeFloatsRans(FloatKind::kBF16, reinterpret_cast<const uint8_t*>(bf_ft.data()),
                           reinterpret_cast<const uint8_t*>(bf_base.data()), bf_ft.size() / 2, 1),
      bf_base);
  EncodeOptions max;
  max.level = EncodeLevel::kMax;
  put("float_ctx_bf16_standalone", 0, EncodeChunk(DType::kBF16, bf_ft, {}, max), "");
  put("float_ctx_bf16_delta", 1, EncodeChunk(DType::kBF16, bf_ft, bf_base, max), bf_base);
  put("float_ctx_f32_delta", 1, EncodeChunk(DType::kF32, f32_ft, f32_base, max), f32_base);
  put("planes_i32", 0, EncodeChunk(DType::kI32, ints, {}), "");
  put("planes_i32_delta", 1, EncodeChunk(DType::kI32, ints, std::string(ints.size(), '\x01')),
      std::string(ints.size(), '\x01'));
  put("zstd_u8", 0, EncodeChunk(DType::kU8, text, {}), "");
  put("raw_u8", 0, EncodeChunk(DType::kU8, noise, {}), "");
}

// float_rans input: mode, u16 n, u16 length, encoding (or values), base material (see the target).
void FloatRansSeeds(const fs::path& fixtures) {
  const std::string bf_base = TensorSlice(fixtures / "faceres.bf16.safetensors", DType::kBF16, 1024, 4096);
  const std::string bf_ft = TensorSlice(fixtures / "faceres-deep.bf16.safetensors", DType::kBF16, 1024, 4096);
  const std::string f32_base = TensorSlice(fixtures / "faceres.f32.safetensors", DType::kF32, 2048, 4096);
  const std::string f32_ft = TensorSlice(fixtures / "faceres-deep.f32.safetensors", DType::kF32, 2048, 4096);
  auto put = [](const std::string& name, uint8_t mode, size_t n, const std::string& part,
                const std::string& base) {
    std::string in(1, static_cast<char>(mode));
    in += LE32(static_cast<uint32_t>(n)).substr(0, 2) + LE32(static_cast<uint32_t>(part.size())).substr(0, 2);
    Write("float_rans", name, in + part + base);
  };
  auto u8 = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  put("bf16_delta", 1 | 4, 512, EncodeFloatsRans(FloatKind::kBF16, u8(bf_ft), u8(bf_base), 512), bf_base);
  put("bf16_standalone", 1, 512, EncodeFloatsRans(FloatKind::kBF16, u8(bf_ft), nullptr, 512), "");
  put("bf16_small_delta", 1 | 4, 100, EncodeFloatsRans(FloatKind::kBF16, u8(bf_ft), u8(bf_base), 100),
      bf_base);
  put("f32_delta", 3 | 4, 512, EncodeFloatsRans(FloatKind::kF32, u8(f32_ft), u8(f32_base), 512), f32_base);
  put("f32_standalone", 3, 512, EncodeFloatsRans(FloatKind::kF32, u8(f32_base), nullptr, 512), "");
  put("bf16_encode_delta", 1 | 4 | 8, 512, bf_ft, bf_base);
  put("f32_encode", 3 | 8, 512, f32_ft, "");
  // Version 1 payloads (mode bit 4), as chunks written before version 2 hold them.
  put("v1_bf16_delta", 1 | 4 | 16, 512, EncodeFloatsRans(FloatKind::kBF16, u8(bf_ft), u8(bf_base), 512, 1),
      bf_base);
  put("v1_f32_standalone", 3 | 16, 512, EncodeFloatsRans(FloatKind::kF32, u8(f32_base), nullptr, 512, 1), "");
  // 32 lanes (8192 values or more): the base and values repeat the 2048-value slices, as the target does.
  constexpr size_t kWide = 8256;
  const std::string wide_base = Repeat(bf_base, 2 * kWide);
  const std::string wide_ft = Repeat(bf_ft, 2 * kWide);
  put("bf16_wide_delta", 1 | 4, kWide, EncodeFloatsRans(FloatKind::kBF16, u8(wide_ft), u8(wide_base), kWide),
      bf_base);
  put("bf16_wide_standalone", 1, kWide, EncodeFloatsRans(FloatKind::kBF16, u8(wide_ft), nullptr, kWide), "");
  // F32 with 32 lanes (payload version 3).
  const std::string wide_f32_base = Repeat(f32_base, 4 * kWide);
  const std::string wide_f32_ft = Repeat(f32_ft, 4 * kWide);
  put("f32_wide_delta", 3 | 4, kWide,
      EncodeFloatsRans(FloatKind::kF32, u8(wide_f32_ft), u8(wide_f32_base), kWide), f32_base);
  put("f32_wide_standalone", 3, kWide, EncodeFloatsRans(FloatKind::kF32, u8(wide_f32_ft), nullptr, kWide),
      "");
}

LossyTensor MakeLossy(LossyParams p, uint32_t seed) {
  std::mt19937 rng(seed);
  LossyTensor t;
  t.p = p;
  if (p.mask == MaskKind::kPositions) {
    for (uint32_t i = 0; i < p.rows * p.cols; i += 1 + rng() % 7) t.positions.push_back(i);
  }
  uint64_t kept = 0;
  ForEachKept(p, t.positions, [&](uint32_t, uint32_t) { ++kept; });
  if (p.values == ValueKind::kQuant) {
    for (uint32_t r = 0; r < p.rows; ++r) {
      t.row_scale.push_back(0.001f * (1 + r % 3));
      t.row_zero.push_back(-0.004f);
    }
  }
  for (uint64_t i = 0; i < kept; ++i) {
    uint32_t v = static_cast<uint32_t>(rng());
    if (p.values == ValueKind::kQuant) t.codes.push_back(static_cast<uint16_t>(v & ((1u << p.bits) - 1)));
    if (p.values == ValueKind::kF16)
      t.codes.push_back(FloatToHalf(0.001f * static_cast<float>(int(v % 200) - 100)));
    if (p.values == ValueKind::kSign) t.codes.push_back(static_cast<uint16_t>(v & 1));
  }
  if (p.shared_scale) t.row_scale.assign(p.rows, 0.002f), t.row_zero.assign(p.rows, -0.003f);
  const int limit = p.rank > 0 ? (1 << (p.factor_bits - 1)) - 1 : 0;  // factor_bits is 0 without a rank
  for (uint32_t k = 0; k < p.rank; ++k) {
    t.factor_scale_a.push_back(0.01f * (1 + k));
    t.factor_scale_b.push_back(0.02f);
  }
  for (uint32_t i = 0; i < p.rank * (p.rows + p.cols); ++i) {
    int8_t c = static_cast<int8_t>(static_cast<int>(rng() % (2 * limit + 1)) - limit);
    (i < p.rank * p.rows ? t.a_codes : t.b_codes).push_back(c);
  }
  return t;
}

void LossySeeds() {
  struct Case {
    const char* name;
    DType dtype;
    LossyParams p;
  };
  auto params = [](MaskKind mask, ValueKind values, uint8_t bits, uint8_t planes) {
    LossyParams p;
    p.rows = 8;
    p.cols = 40;
    p.lambda = -0.01f;
    p.mu = 1.02f;
    p.mask = mask;
    p.seed = 1234;
    p.stream = 3;
    p.group = 16;
    p.keep = 4;
    p.keep_prob = 0.25f;
    p.values = values;
    p.bits = bits;
    p.planes = planes;
    p.sign_scale = 0.002f;
    return p;
  };
  std::vector<Case> cases = {
      {"groupk_quant4_2planes_bf16", DType::kBF16, params(MaskKind::kGroupK, ValueKind::kQuant, 4, 2)},
      {"bernoulli_f16_f32", DType::kF32, params(MaskKind::kBernoulli, ValueKind::kF16, 16, 2)},
      {"bernoulli_quant4_f16", DType::kF16, params(MaskKind::kBernoulli, ValueKind::kQuant, 4, 1)},
      {"dense_sign_bf16", DType::kBF16, params(MaskKind::kDense, ValueKind::kSign, 1, 1)},
      {"positions_quant8_f32", DType::kF32, params(MaskKind::kPositions, ValueKind::kQuant, 8, 1)},
      {"dense_quant3_bf16", DType::kBF16, params(MaskKind::kDense, ValueKind::kQuant, 3, 3)},
      {"v2_groupk_shared_lowrank_f32", DType::kF32, params(MaskKind::kGroupK, ValueKind::kQuant, 2, 1)},
  };
  cases.back().p.shared_scale = true;
  cases.back().p.rank = 3;
  cases.back().p.factor_bits = 4;
  uint32_t seed = 1;
  for (const auto& c : cases) {
    std::string chunk = EncodeLossyChunk(c.dtype, MakeLossy(c.p, seed++));
    DType dt;
    Check(ParseLossyChunk(chunk, &dt).status(), c.name);
    Write("lossy_chunk", c.name, chunk);
    if (seed <= 3) {  // a few lossy chunks for the chunk decoder too, with a base of their size
      std::string base(static_cast<size_t>(c.p.rows) * c.p.cols * DTypeSize(c.dtype), '\0');
      for (size_t i = 0; i < base.size(); ++i) base[i] = static_cast<char>(i % 2 ? 0x3c : i * 13);
      Write("chunk_decode", std::string("lossy_") + c.name, ChunkInput(1, chunk, base));
    }
  }
}

void ManifestAndContainerSeeds() {
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  fs::path base_path = WriteCheckpoint(SmallCheckpoint(1, 0), "base.safetensors");
  fs::path ft_path = WriteCheckpoint(SmallCheckpoint(2, 0.05f), "ft.safetensors");
  fs::path blob_path = fs::temp_directory_path() / "ds_gen_seeds_config.json";
  std::ofstream(blob_path) << R"({"architectures":["Tiny"],"hidden_size":8})";
  IngestStats stats;
  auto base = IngestFiles(store.get(),
                          {{base_path.string(), "model.safetensors"}, {blob_path.string(), "config.json"}},
                          nullptr, {}, &stats);
  Check(base.status(), "ingest base");
  std::map<Digest, Manifest> manifests{{ManifestDigest(*base), *base}};
  ManifestLoader loader = [&](const Digest& d) -> StatusOr<Manifest> { return manifests.at(d); };
  VersionReader base_reader(store.get(), *base, loader);
  auto ft = IngestFiles(store.get(), {{ft_path.string(), "model.safetensors"}}, &base_reader, {}, &stats);
  Check(ft.status(), "ingest finetune");
  ft->base = ManifestDigest(*base);

  Write("manifest", "base_with_blob.json", SerializeManifest(*base));
  Write("manifest", "delta.json", SerializeManifest(*ft));
  Manifest lossy = *ft;
  lossy.mode = "lossy";
  lossy.files[0].source_sha256 = Sha256::Of("uploaded bytes");
  for (auto& t : lossy.files[0].tensors) {
    if (t.dtype == DType::kF32) t.encoding = TensorEncoding::kLossy;
  }
  Write("manifest", "lossy.json", SerializeManifest(lossy));
  Manifest same = *ft;
  for (auto& t : same.files[0].tensors) {
    t.encoding = TensorEncoding::kSameAsBase;
    t.chunks.clear();
  }
  Write("manifest", "same_as_base.json", SerializeManifest(same));

  auto container = [&](const Manifest& m, const std::optional<Manifest>& b) {
    ContainerStreamer s(store.get(), m, b);
    std::string out;
    while (true) {
      auto piece = s.Next();
      Check(piece.status(), "container");
      if (piece->empty()) break;
      out += *piece;
    }
    if (out.size() != s.size()) Die("container size");
    return out;
  };
  std::string c_base = container(*base, std::nullopt);
  std::string c_delta = container(*ft, *base);
  // The harness replaces the last 32 bytes by the digest when the last byte is odd: keep one seed
  // each way (an even last byte means the digest is checked as it stands).
  Write("container", "base.dsc", c_base);
  Write("container", "delta.dsc", c_delta);
  fs::remove(base_path);
  fs::remove(ft_path);
  fs::remove(blob_path);
}

void HttpSeeds() {
  auto put = [](const std::string& name, const std::string& text) { Write("http", name, text); };
  put("get_file_range",
      "GET /v1/models/tune/versions/latest/files/model.safetensors\nrange: bytes=10-99\n\n");
  put("get_file_etag",
      "HEAD /v1/models/seed/versions/@V/files/config.json\nif-none-match: W/\"@V\", \"x\"\n\n");
  put("get_file_suffix", "GET /v1/models/seed/versions/v1/files/model.safetensors\nrange: bytes=-64\n\n");
  put("get_delta", "GET /v1/models/tune/versions/@T/delta\n\n");
  put("get_version", "GET /v1/models/tune/versions/latest\n\n");
  put("list_versions", "GET /v1/models/seed/versions?limit=1&after=\n\n");
  put("list_models", "GET /v1/models?limit=2\n\n");
  put("tags", "GET /v1/models/seed/tags\n\n");
  put("stats", "GET /v1/stats\n\n");
  put("job", "GET /v1/jobs/@J\n\n");
  put("upload_oneshot",
      "POST /v1/uploads?digest=@B\ncontent-type: application/octet-stream\n\nhello weights");
  put("upload_create", "POST /v1/uploads\n\n");
  put("upload_patch", "PATCH /v1/uploads/@U\ncontent-range: bytes 100-104\n\n12345");
  put("upload_patch_oci", "PATCH /v1/uploads/@U\ncontent-range: 100-101/*\n\nab");
  put("upload_get", "GET /v1/uploads/@U\n\n");
  put("upload_seal",
      "PUT "
      "/v1/uploads/@U?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000\n\n");
  put("upload_delete", "DELETE /v1/uploads/@S\n\n");
  put("create_version",
      "POST /v1/models/fz/versions\ncontent-type: application/json\n\n"
      R"({"files":[{"path":"model.safetensors","upload":"@S"}],"base":{"model":"seed","version":"v1"},)"
      R"("policy":{"mode":"lossless"},"tags":["latest"]})");
  put("create_version_lossy",
      "POST /v1/models/fz/versions\n\n"
      R"({"files":[{"path":"model.safetensors","upload":"@S"}],"base":{"model":"seed","version":"@V"},)"
      R"("policy":{"mode":"lossy","ratio":8,"method":"deltadq","min_elements":16}})");
  put("set_tag", "PUT /v1/models/seed/tags/stable\n\n{\"version\":\"@V\"}");
  put("delete_tag", "DELETE /v1/models/tune/tags/latest\n\n");
  put("delete_version", "DELETE /v1/models/tune/versions/latest\n\n");
  put("gc", "POST /v1/gc\n\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) Die("usage: gen_seeds FIXTURES_DIR OUT_DIR");
  fs::path fixtures = argv[1];
  g_out = argv[2];
  SafetensorsSeeds(fixtures);
  ChunkSeeds(fixtures);
  FloatRansSeeds(fixtures);
  LossySeeds();
  ManifestAndContainerSeeds();
  HttpSeeds();
  std::printf("seeds written to %s\n", g_out.c_str());
  return 0;
}
