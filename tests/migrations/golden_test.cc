// Stores written by earlier builds must keep working: open a copy of each golden store and check that
// every file of every version still downloads byte for byte (migrations/README.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "codec/lossy_codec.h"
#include "migrations/schema.h"
#include "service/registry.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
const fs::path kGolden = fs::path(DS_SOURCE_DIR) / "migrations" / "golden";

fs::path Temp(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ds_golden_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

std::string Read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

StatusOr<std::string> Download(Registry* reg, const std::string& model, const std::string& ref,
                               const std::string& path) {
  DS_ASSIGN_OR_RETURN(OpenVersion v, reg->OpenForRead(model, ref));
  const FileEntry* f = v.reader->manifest().FindFile(path);
  if (f == nullptr) return NotFound(path);
  std::string out;
  DS_RETURN_IF_ERROR(v.reader->StreamFile(*f, 0, f->size, [&](std::string_view p) {
    out.append(p);
    return OkStatus();
  }));
  return out;
}

TEST(GoldenStoreTest, EveryGoldenStoreStillServesItsFiles) {
  ASSERT_TRUE(fs::exists(kGolden)) << kGolden;
  int stores = 0;
  for (const auto& dir : fs::directory_iterator(kGolden)) {
    auto expected = json::parse(Read(dir.path() / "expected.json"));
    fs::path copy = Temp(dir.path().filename().string());
    fs::copy(dir.path(), copy, fs::copy_options::recursive);
    RegistryOptions o;
    o.data_dir = copy.string();
    auto reg = Registry::Open(o);
    ASSERT_TRUE(reg.ok()) << dir.path() << ": " << reg.status().ToString();
    for (const auto& e : expected["files"]) {
      auto bytes = Download(reg->get(), e["model"], e["ref"], e["path"]);
      ASSERT_TRUE(bytes.ok()) << e.dump() << ": " << bytes.status().ToString();
      EXPECT_EQ(Sha256::Of(*bytes).ToString(), e["sha256"]) << e.dump();
    }
    auto stats = (*reg)->Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ((*stats)["versions"], expected["versions"]);
    EXPECT_GE(*(*reg)->RecomputeRefcounts(), 0u);
    EXPECT_EQ(*(*reg)->RecomputeRefcounts(), 0u) << "refcounts of a golden store were inconsistent";
    reg->reset();
    fs::remove_all(copy);
    ++stores;
  }
  EXPECT_GE(stores, 1);
}

TEST(SchemaTest, NewStoresGetTheCurrentVersionAndNewerOnesAreRefused) {
  fs::path dir = Temp("schema");
  RegistryOptions o;
  o.data_dir = dir.string();
  {
    auto reg = Registry::Open(o);
    ASSERT_TRUE(reg.ok());
    EXPECT_EQ(*(*reg)->meta()->Get("schema", "version"), std::to_string(kSchemaVersion));
    ASSERT_TRUE((*reg)->meta()->Put("schema", "version", std::to_string(kSchemaVersion + 1)).ok());
  }
  auto reg = Registry::Open(o);
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.status().reason(), Reason::kSchemaTooNew);
  EXPECT_NE(reg.status().message().find("newer"), std::string::npos);
  fs::remove_all(dir);
}

// Writes migrations/golden/v<kSchemaVersion> (run by hand when the schema version changes).
TEST(GoldenStoreTest, DISABLED_WriteGolden) {
  fs::path out = kGolden / ("v" + std::to_string(kSchemaVersion));
  fs::remove_all(out);
  fs::path work = Temp("write");
  fs::create_directories(work);
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 0.05f);
  auto floats = [&](size_t count, float scale, const std::vector<float>* base) {
    std::vector<float> v(count);
    for (size_t i = 0; i < count; ++i) v[i] = base ? (*base)[i] * 0.99f + n(rng) * scale : n(rng);
    return v;
  };
  auto bytes = [](DType dt, const std::vector<float>& v) {
    std::string s(v.size() * DTypeSize(dt), '\0');
    FromFloat32(dt, v.data(), v.size(), s.data());
    return s;
  };
  auto w = floats(64 * 96, 1, nullptr), e = floats(32 * 64, 1, nullptr);
  auto w2 = floats(w.size(), 0.02f, &w), e2 = floats(e.size(), 0.02f, &e);
  std::string ids(16, '\3');
  std::vector<TensorSpec> specs = {{"layer.weight", DType::kF32, {64, 96}},
                                   {"emb.weight", DType::kBF16, {32, 64}},
                                   {"shape", DType::kI32, {4}}};
  ASSERT_TRUE(WriteSafetensorsFile((work / "base.safetensors").string(), specs,
                                   {bytes(DType::kF32, w), bytes(DType::kBF16, e), ids}, {{"format", "pt"}})
                  .ok());
  ASSERT_TRUE(WriteSafetensorsFile((work / "ft.safetensors").string(), specs,
                                   {bytes(DType::kF32, w2), bytes(DType::kBF16, e2), ids}, {{"format", "pt"}})
                  .ok());
  { std::ofstream(work / "config.json") << R"({"hidden": 96})"; }

  RegistryOptions o;
  o.data_dir = out.string();
  auto reg = Registry::Open(o);
  ASSERT_TRUE(reg.ok());
  auto upload = [&](const fs::path& p) {
    std::string data = Read(p);
    auto u = (*reg)->CreateUpload();
    auto wr = (*reg)->AppendUpload((*u)["id"], 0);
    EXPECT_TRUE((*wr)->Write(data).ok());
    EXPECT_TRUE((*wr)->Commit().ok());
    wr->reset();
    EXPECT_TRUE((*reg)->SealUpload((*u)["id"], Sha256::Of(data).ToString()).ok());
    return (*u)["id"].get<std::string>();
  };
  auto add = [&](const std::string& model, const json& req) {
    auto job = (*reg)->CreateVersion(model, req);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    auto done = (*reg)->WaitJob((*job)["id"], 60);
    ASSERT_EQ((*done)["state"], "succeeded") << done->dump();
  };
  add("base", {{"files",
                {{{"path", "model.safetensors"}, {"upload", upload(work / "base.safetensors")}},
                 {{"path", "config.json"}, {"upload", upload(work / "config.json")}}}},
               {"tags", {"v1"}}});
  json base = {{"model", "base"}, {"version", "v1"}};
  add("ft", {{"files", {{{"path", "model.safetensors"}, {"upload", upload(work / "ft.safetensors")}}}},
             {"base", base},
             {"tags", {"lossless"}}});
  add("ft", {{"files", {{{"path", "model.safetensors"}, {"upload", upload(work / "ft.safetensors")}}}},
             {"base", base},
             {"policy", {{"mode", "lossy"}, {"ratio", 8}, {"min_elements", 1024}}},
             {"tags", {"lossy"}}});
  json expected = {{"files", json::array()}, {"versions", 3}};
  for (auto [model, ref, path] :
       std::vector<std::tuple<std::string, std::string, std::string>>{{"base", "v1", "model.safetensors"},
                                                                      {"base", "v1", "config.json"},
                                                                      {"ft", "lossless", "model.safetensors"},
                                                                      {"ft", "lossy", "model.safetensors"}}) {
    auto b = Download(reg->get(), model, ref, path);
    ASSERT_TRUE(b.ok());
    expected["files"].push_back(
        {{"model", model}, {"ref", ref}, {"path", path}, {"sha256", Sha256::Of(*b).ToString()}});
  }
  EXPECT_EQ(expected["files"][2]["sha256"], Sha256::Of(Read(work / "ft.safetensors")).ToString());
  reg->reset();
  std::ofstream(out / "expected.json") << expected.dump(2);
  for (const auto& f : fs::directory_iterator(out / "db")) {
    if (f.path().filename().string().rfind("LOG", 0) == 0) fs::remove(f.path());  // RocksDB's text logs
  }
  fs::remove_all(work);
}

}  // namespace
}  // namespace deltastore
