#include "service/ingest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "storage/stores.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;
const std::string kFixtures = DS_FIXTURES_DIR;

std::string FileSha(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return Sha256::Of(data).Hex();
}

class Registry {
 public:
  explicit Registry(std::shared_ptr<ChunkStore> store) : store_(std::move(store)) {}
  ManifestLoader Loader() {
    return [this](const Digest& d) -> StatusOr<Manifest> {
      auto it = manifests_.find(d);
      if (it == manifests_.end()) return NotFound("no version " + d.ToString());
      return it->second;
    };
  }
  StatusOr<Manifest> Add(const std::vector<IngestFile>& files, const Manifest* base, IngestStats* stats) {
    std::unique_ptr<VersionReader> reader;
    if (base) reader = std::make_unique<VersionReader>(store_.get(), *base, Loader());
    auto m = IngestFiles(store_.get(), files, reader.get(), {}, stats);
    if (m.ok()) manifests_[ManifestDigest(*m)] = *m;
    return m;
  }
  std::unique_ptr<VersionReader> Reader(const Manifest& m) {
    return std::make_unique<VersionReader>(store_.get(), m, Loader());
  }
  ChunkStore* store() { return store_.get(); }

 private:
  std::shared_ptr<ChunkStore> store_;
  std::map<Digest, Manifest> manifests_;
};

bool HaveFixtures() {
  return fs::exists(kFixtures + "/faceres.bf16.safetensors");
}

void RoundTripPair(const std::string& base_name, const std::string& ft_name, double min_ratio) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  Registry reg(NewMemoryChunkStore());
  std::string base_path = kFixtures + "/" + base_name, ft_path = kFixtures + "/" + ft_name;
  IngestStats bs, fs_;
  auto base = reg.Add({{base_path, "model.safetensors"}}, nullptr, &bs);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  auto ft = reg.Add({{ft_path, "model.safetensors"}}, &*base, &fs_);
  ASSERT_TRUE(ft.ok()) << ft.status().ToString();
  EXPECT_EQ(fs_.tensors_delta + fs_.tensors_same, fs_.tensors);
  double ratio = static_cast<double>(fs_.logical_bytes) / static_cast<double>(fs_.encoded_bytes);
  std::printf("%s vs %s: lossless delta ratio %.3fx (%lu -> %lu bytes)\n", ft_name.c_str(), base_name.c_str(),
              ratio, (unsigned long)fs_.logical_bytes, (unsigned long)fs_.encoded_bytes);
  EXPECT_GE(ratio, min_ratio);

  const TempDir tmp;
  const fs::path& out = tmp.path();
  auto reader = reg.Reader(*ft);
  ASSERT_TRUE(RebuildFile(reader.get(), ft->files[0], (out / "rebuilt").string()).ok());
  EXPECT_EQ(FileSha((out / "rebuilt").string()), FileSha(ft_path));
  EXPECT_EQ(ft->files[0].sha256.Hex(), FileSha(ft_path));
  auto base_reader = reg.Reader(*base);
  ASSERT_TRUE(RebuildFile(base_reader.get(), base->files[0], (out / "base").string()).ok());
  EXPECT_EQ(FileSha((out / "base").string()), FileSha(base_path));
}

TEST(PackerTest, Bf16PairLosslessRoundTrip) {
  RoundTripPair("faceres.bf16.safetensors", "faceres-deep.bf16.safetensors", 1.63);
}
TEST(PackerTest, F32PairLosslessRoundTrip) {
  RoundTripPair("faceres.f32.safetensors", "faceres-deep.f32.safetensors", 1.24);
}

TEST(PackerTest, IdenticalPairAddsNoChunkBytes) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  Registry reg(NewMemoryChunkStore());
  IngestStats a, b;
  ASSERT_TRUE(reg.Add({{kFixtures + "/blazeface.f32.safetensors", "model.safetensors"}}, nullptr, &a).ok());
  auto before = reg.store()->Stats();
  ASSERT_TRUE(
      reg.Add({{kFixtures + "/blazeface-back.f32.safetensors", "model.safetensors"}}, nullptr, &b).ok());
  auto after = reg.store()->Stats();
  EXPECT_GT(a.new_bytes, 0u);
  EXPECT_EQ(b.new_bytes, 0u);
  EXPECT_EQ(b.new_chunks, 0u);
  EXPECT_EQ(before->bytes, after->bytes);
}

TEST(PackerTest, Bf16ShardedVersionMatchesTensorsAcrossShardsAndKeepsSideFiles) {
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  std::mt19937 rng(7);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0x3f);  // compressible-ish
    return s;
  };
  std::string w1 = random_bytes(64 * 2), w2 = random_bytes(32 * 4), w3 = random_bytes(10);
  ASSERT_TRUE(
      WriteSafetensorsFile((dir / "b1.safetensors").string(), {{"a", DType::kBF16, {8, 8}}}, {w1}).ok());
  ASSERT_TRUE(WriteSafetensorsFile((dir / "b2.safetensors").string(), {{"b", DType::kF32, {32}}}, {w2}).ok());
  // The finetune puts both tensors in one shard, changes "a" slightly, adds a new tensor.
  std::string w1b = w1;
  w1b[5] ^= 1;
  ASSERT_TRUE(
      WriteSafetensorsFile((dir / "f.safetensors").string(),
                           {{"b", DType::kF32, {32}}, {"a", DType::kBF16, {8, 8}}, {"new", DType::kU8, {10}}},
                           {w2, w1b, w3})
          .ok());
  { std::ofstream((dir / "config.json").string()) << R"({"hidden": 8})"; }

  Registry reg(NewMemoryChunkStore());
  IngestStats s1, s2;
  auto base = reg.Add({{(dir / "b1.safetensors").string(), "model-00001-of-00002.safetensors"},
                       {(dir / "b2.safetensors").string(), "model-00002-of-00002.safetensors"},
                       {(dir / "config.json").string(), "config.json"}},
                      nullptr, &s1);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  auto ft = reg.Add({{(dir / "f.safetensors").string(), "model.safetensors"},
                     {(dir / "config.json").string(), "config.json"}},
                    &*base, &s2);
  ASSERT_TRUE(ft.ok()) << ft.status().ToString();
  EXPECT_EQ(s2.tensors_same, 1u);
  EXPECT_EQ(s2.tensors_delta, 1u);
  EXPECT_EQ(s2.tensors_standalone, 1u);
  auto reader = reg.Reader(*ft);
  for (const auto& f : ft->files) {
    auto out = (dir / ("out_" + f.path)).string();
    ASSERT_TRUE(RebuildFile(reader.get(), f, out).ok()) << f.path;
    EXPECT_EQ(FileSha(out), f.sha256.Hex());
  }
  EXPECT_EQ(FileSha((dir / "out_model.safetensors").string()), FileSha((dir / "f.safetensors").string()));
  // Ranges: any window of the rebuilt file equals the same window of the original.
  std::ifstream orig((dir / "f.safetensors").string(), std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(orig)), std::istreambuf_iterator<char>());
  const FileEntry& f = *ft->FindFile("model.safetensors");
  for (uint64_t b : {0ul, 7ul, 100ul, f.size - 1}) {
    for (uint64_t len : {0ul, 1ul, 33ul, 500ul}) {
      uint64_t e = std::min(f.size, b + len);
      std::string got;
      ASSERT_TRUE(reader
                      ->StreamFile(f, b, e,
                                   [&](std::string_view p) {
                                     got.append(p);
                                     return OkStatus();
                                   })
                      .ok());
      EXPECT_EQ(got, all.substr(b, e - b)) << b << "+" << len;
    }
  }
}

std::string StreamAll(FileStreamer* s) {
  std::string all;
  while (true) {
    auto piece = s->Next();
    EXPECT_TRUE(piece.ok()) << piece.status().ToString();
    if (!piece.ok() || piece->empty()) return all;
    EXPECT_LE(piece->size(), kChunkSize);
    all += *piece;
  }
}

// Several workers decode pieces at once, each with its own clone of the reader (and of the base reader):
// the bytes must be those of one worker, for whole files (sha256 checked) and for ranges.
TEST(PackerTest, ParallelStreamingGivesTheSameBytesAsOneWorker) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  Registry reg(NewMemoryChunkStore());
  std::string base_path = kFixtures + "/faceres.bf16.safetensors";
  std::string ft_path = kFixtures + "/faceres-deep.bf16.safetensors";
  auto base = reg.Add({{base_path, "model.safetensors"}}, nullptr, nullptr);
  ASSERT_TRUE(base.ok());
  auto ft = reg.Add({{ft_path, "model.safetensors"}}, &*base, nullptr);
  ASSERT_TRUE(ft.ok());
  std::ifstream f(ft_path, std::ios::binary);
  std::string want((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const FileEntry& file = ft->files[0];
  ASSERT_EQ(file.size, want.size());
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, file.size}, {1, file.size - 1}, {file.size / 3, file.size / 3 + 5 * kChunkSize / 4}, {17, 18}};
  for (size_t workers : {1, 2, 3, 7}) {
    for (auto [begin, end] : ranges) {
      auto reader = reg.Reader(*ft);  // a fresh reader: its base is opened through the loader
      FileStreamer s(reader.get(), &file, begin, end, /*verify=*/true, workers);
      EXPECT_EQ(StreamAll(&s), want.substr(begin, end - begin))
          << workers << " workers, " << begin << "-" << end;
    }
  }
  // A corrupt manifest digest is caught at the end whatever the number of workers.
  FileEntry bad = file;
  bad.sha256 = Sha256::Of("something else");
  auto reader = reg.Reader(*ft);
  FileStreamer s(reader.get(), &bad, 0, bad.size, /*verify=*/true, 3);
  Status last = OkStatus();
  while (true) {
    auto piece = s.Next();
    if (!piece.ok()) {
      last = piece.status();
      break;
    }
    if (piece->empty()) break;
  }
  EXPECT_FALSE(last.ok());
}

// A tensor of several chunks reports progress chunk by chunk: bytes_done moves while tensors_done waits,
// and the last report counts every byte once.
TEST(PackerTest, ProgressMovesChunkByChunkWithinATensor) {
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  const size_t n = 3 * kChunkSize + 1000;  // 4 chunks of one U8 tensor
  std::string big(n, '\0');
  for (size_t i = 0; i < n; ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  const std::string small(16, 'x');
  const std::string path = (dir / "m.safetensors").string();
  ASSERT_TRUE(
      WriteSafetensorsFile(path, {{"big", DType::kU8, {n}}, {"small", DType::kU8, {16}}}, {big, small}).ok());
  std::vector<IngestProgress> seen;
  IngestStats stats;
  auto store = NewMemoryChunkStore();
  auto m = IngestFiles(store.get(), {{path, "m.safetensors"}}, nullptr, {}, &stats,
                       [&](const IngestProgress& p) { seen.push_back(p); });
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  // "big" comes first in the data section: its 4 chunks, each a report with tensors_done still 0.
  std::vector<uint64_t> within;
  for (const auto& p : seen)
    if (p.tensors_done == 0) within.push_back(p.bytes_done);
  EXPECT_EQ(within, (std::vector<uint64_t>{kChunkSize, 2 * kChunkSize, 3 * kChunkSize, n}));
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().tensors_done, 2u);
  EXPECT_EQ(seen.back().bytes_done, n + small.size());
  EXPECT_EQ(seen.back().bytes_done, seen.back().bytes_total);
}

// A streamer dropped after its first piece stops its workers (the piece each is decoding, then nothing),
// and its reader streams the file again afterwards.
TEST(PackerTest, StreamerDestroyedMidFileStopsItsWorkers) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  Registry reg(NewMemoryChunkStore());
  auto base = reg.Add({{kFixtures + "/faceres.bf16.safetensors", "model.safetensors"}}, nullptr, nullptr);
  ASSERT_TRUE(base.ok());
  auto reader = reg.Reader(*base);
  const FileEntry& file = base->files[0];
  ASSERT_GT(file.tensors.size(), 10u);  // many more pieces than the workers decode ahead
  {
    FileStreamer s(reader.get(), &file, 0, file.size, /*verify=*/true, 4);
    auto first = s.Next();
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ(first->size(), file.header->raw_size);
  }
  FileStreamer again(reader.get(), &file, 0, file.size, /*verify=*/true, 2);
  EXPECT_EQ(Sha256::Of(StreamAll(&again)), file.sha256);
}

// On RocksDB a whole-file stream reads chunks without their own digest check (the file's sha256 covers
// them): a chunk whose bytes were swapped for another valid chunk's, which RocksDB's block checksums
// cannot see, still never yields a complete file; a range read checks the chunk's digest and refuses it.
TEST(PackerTest, SwappedChunkIsCaughtByTheFileDigestOrTheChunkDigest) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  {
    RocksOptions options;
    options.path = dir.string();
    options.sync_writes = false;
    auto stores = OpenRocksStores(options);
    ASSERT_TRUE(stores.ok()) << stores.status().ToString();
    Registry reg(stores->chunks);
    auto base = reg.Add({{kFixtures + "/faceres.bf16.safetensors", "model.safetensors"}}, nullptr, nullptr);
    ASSERT_TRUE(base.ok());
    const FileEntry& file = base->files[0];
    // Two chunks of the same size with different bytes (faceres has several 512 KiB tensors).
    const TensorEntry* victim_tensor = nullptr;
    for (const auto& t : file.tensors)
      if (victim_tensor == nullptr && t.chunks.size() == 1 && t.chunks[0].raw_size == 524288)
        victim_tensor = &t;
    ASSERT_NE(victim_tensor, nullptr);
    const ChunkRef& victim = victim_tensor->chunks[0];
    const ChunkRef* other = nullptr;
    for (const auto& t : file.tensors)
      for (const auto& c : t.chunks)
        if (c.digest != victim.digest && c.raw_size == victim.raw_size && other == nullptr) other = &c;
    ASSERT_NE(other, nullptr);
    auto other_bytes = reg.store()->Get(other->digest);
    ASSERT_TRUE(other_bytes.ok());
    ASSERT_TRUE(reg.store()->PutUnverified(victim.digest, *other_bytes).ok());

    auto reader = reg.Reader(*base);
    FileStreamer whole(reader.get(), &file, 0, file.size, /*verify=*/true, 3);
    uint64_t handed_out = 0;
    Status last = OkStatus();
    while (true) {
      auto piece = whole.Next();
      if (!piece.ok()) {
        last = piece.status();
        break;
      }
      if (piece->empty()) break;
      handed_out += piece->size();
    }
    EXPECT_EQ(last.code(), StatusCode::kCorruption) << last.ToString();
    EXPECT_LT(handed_out, file.size);

    const uint64_t at = file.header->raw_size + victim_tensor->offset;
    FileStreamer range(reader.get(), &file, at, at + 100, /*verify=*/true, 3);
    auto piece = range.Next();
    ASSERT_FALSE(piece.ok());
    EXPECT_EQ(piece.status().code(), StatusCode::kCorruption) << piece.status().ToString();
  }
}

// Everything a store holds, as text: each chunk's digest, reference count and size.
std::string StoreListing(ChunkStore* store) {
  std::string out;
  EXPECT_TRUE(store
                  ->ForEach([&](const Digest& d, int64_t refs, uint64_t size) {
                    out += d.ToString() + " " + std::to_string(refs) + " " + std::to_string(size) + "\n";
                    return OkStatus();
                  })
                  .ok());
  return out;
}

TEST(PackerTest, ParallelIngestGivesTheManifestsAndChunksOfASerialOne) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  std::string serial_listing;
  std::vector<std::string> serial_manifests;
  for (size_t threads : {1, 2, 5}) {
    auto store = NewMemoryChunkStore();
    IngestOptions options;
    options.encode_threads = threads;
    IngestStats base_stats, ft_stats;
    auto base = IngestFiles(store.get(), {{kFixtures + "/faceres.bf16.safetensors", "model.safetensors"}},
                            nullptr, options, &base_stats);
    ASSERT_TRUE(base.ok()) << base.status().ToString();
    std::map<Digest, Manifest> manifests = {{ManifestDigest(*base), *base}};
    VersionReader reader(store.get(), *base, [&](const Digest& d) -> StatusOr<Manifest> {
      auto it = manifests.find(d);
      if (it == manifests.end()) return NotFound("no version");
      return it->second;
    });
    auto ft = IngestFiles(store.get(), {{kFixtures + "/faceres-deep.bf16.safetensors", "model.safetensors"}},
                          &reader, options, &ft_stats);
    ASSERT_TRUE(ft.ok()) << ft.status().ToString();
    const std::vector<std::string> got = {SerializeManifest(*base), SerializeManifest(*ft),
                                          std::to_string(ft_stats.chunks) + " " +
                                              std::to_string(ft_stats.new_chunks) + " " +
                                              std::to_string(ft_stats.encoded_bytes)};
    if (threads == 1) {
      serial_manifests = got;
      serial_listing = StoreListing(store.get());
      ASSERT_GT(ft_stats.chunks, 10u);  // enough chunks to have several in flight
      continue;
    }
    EXPECT_EQ(got, serial_manifests) << threads << " threads";
    EXPECT_EQ(StoreListing(store.get()), serial_listing) << threads << " threads";
  }
}

TEST(PackerTest, ManifestSerializationRoundTrips) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  Registry reg(NewMemoryChunkStore());
  auto m = reg.Add({{kFixtures + "/blazeface.f32.safetensors", "model.safetensors"}}, nullptr, nullptr);
  ASSERT_TRUE(m.ok());
  auto text = SerializeManifest(*m);
  auto parsed = ParseManifest(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(SerializeManifest(*parsed), text);
  EXPECT_FALSE(ParseManifest("{}").ok());
  EXPECT_FALSE(ParseManifest(text.substr(0, text.size() / 2)).ok());
  EXPECT_FALSE(
      ParseManifest(R"({"format":"deltastore.manifest","format_version":99,"mode":"x","files":[]})").ok());
}

TEST(PackerTest, FailedIngestDropsItsReferencesAndDeleteFreesChunks) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  std::shared_ptr<ChunkStore> inner = NewMemoryChunkStore();
  FaultPlan plan;
  plan.fail_after_puts = 20;
  std::shared_ptr<ChunkStore> faulty = NewFaultInjectingChunkStore(inner, plan);
  IngestStats s;
  auto m = IngestFiles(faulty.get(), {{kFixtures + "/faceres.bf16.safetensors", "model.safetensors"}},
                       nullptr, {}, &s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
  auto gc = inner->Gc();
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(inner->Stats()->chunks, 0u) << "a failed ingest left referenced chunks";

  auto ok = IngestFiles(inner.get(), {{kFixtures + "/faceres.bf16.safetensors", "model.safetensors"}},
                        nullptr, {}, &s);
  ASSERT_TRUE(ok.ok());
  EXPECT_GT(inner->Stats()->chunks, 0u);
  ASSERT_TRUE(ReleaseManifest(inner.get(), *ok).ok());
  auto freed = inner->Gc();
  ASSERT_TRUE(freed.ok());
  EXPECT_GT(freed->bytes_freed, 0u);
  EXPECT_EQ(inner->Stats()->chunks, 0u);
}

TEST(PackerTest, BadInputIsAClearError) {
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  { std::ofstream((dir / "x.safetensors").string()) << "not a safetensors file at all"; }
  auto m = IngestFiles(NewMemoryChunkStore().get(), {{(dir / "x.safetensors").string(), "x.safetensors"}},
                       nullptr, {}, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("x.safetensors"), std::string::npos);
}

// A lossless ingest has the file cache adopt each source file under the sha256 it computed; a lossy one
// (whose served bytes differ) does not.
TEST(PackerTest, ALosslessIngestHasTheFileCacheAdoptItsFiles) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  const TempDir tmp;
  const fs::path& dir = tmp.path();
  // The sources sit beside the cache, as sealed uploads sit beside it in the data directory.
  const std::string st = (dir / "model.safetensors").string();
  fs::copy_file(kFixtures + "/faceres.bf16.safetensors", st);
  const std::string blob = (dir / "config.json").string();
  std::ofstream(blob) << R"({"hidden_size": 8})";
  auto store = NewMemoryChunkStore();
  for (bool lossy : {true, false}) {
    auto cache = FileCache::Open((dir / (lossy ? "lossy" : "lossless")).string(), uint64_t{1} << 30);
    ASSERT_TRUE(cache.ok());
    IngestOptions options;
    options.file_cache = cache->get();
    if (lossy) {
      options.lossy = [](const TensorInfo&, const std::string&, const std::string&, uint32_t,
                         const LossyStep&,
                         const LossyRebuilt&) { return StatusOr<std::optional<LossyOutcome>>(std::nullopt); };
    }
    IngestStats stats;
    auto m = IngestFiles(store.get(), {{st, "model.safetensors"}, {blob, "config.json"}}, nullptr, options,
                         &stats);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (lossy) {
      EXPECT_EQ((*cache)->entries(), 0u);
      continue;
    }
    EXPECT_EQ((*cache)->entries(), 2u);
    for (const auto& [path, file] : {std::pair{st, m->files[0]}, std::pair{blob, m->files[1]}}) {
      EXPECT_EQ(file.sha256.Hex(), FileSha(path));
      auto reader = (*cache)->Find(file.sha256, file.size);
      ASSERT_NE(reader, nullptr) << path;
      std::string back;
      for (auto piece = reader->Next(); piece.ok() && !piece->empty(); piece = reader->Next()) back += *piece;
      EXPECT_EQ(Sha256::Of(back).Hex(), FileSha(path));
    }
  }
}

}  // namespace
}  // namespace deltastore
