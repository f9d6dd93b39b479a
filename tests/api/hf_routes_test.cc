// The Hugging Face–compatible routes and per-tensor downloads, driven through the router without
// sockets (the real huggingface_hub and transformers run against the server in tests/e2e/test_hf.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "api/byte_ranges.h"
#include "api/routes.h"
#include "codec/safetensors.h"
#include "service/hf_mapping.h"
#include "service/registry.h"
#include "service/tensor_subset.h"

namespace deltastore::api {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class HfRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ds_hf_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    RegistryOptions o;
    o.data_dir = dir_.string();
    o.sync_writes = false;
    auto r = Registry::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
    router_ = BuildRouter(reg_.get(), {"test"});
  }
  void TearDown() override {
    router_.reset();
    reg_.reset();
    fs::remove_all(dir_);
  }

  Response Call(const std::string& method, const std::string& target, const std::string& body = "",
                Headers headers = {}) {
    Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.headers = std::move(headers);
    req.headers.emplace("host", "registry.test:8080");
    if (!req.body.empty()) req.headers.emplace("content-length", std::to_string(req.body.size()));
    EXPECT_TRUE(ParseTarget(target, &req.path, &req.query));
    return router_->Dispatch(req);
  }
  static json Body(Response& r) {
    auto b = r.ReadAll();
    EXPECT_TRUE(b.ok());
    return json::parse(*b, nullptr, false);
  }
  std::string Upload(const std::string& bytes) {
    Response r = Call("POST", "/v1/uploads?digest=" + Sha256::Of(bytes).ToString(), bytes);
    EXPECT_EQ(r.status, 201) << r.body;
    return Body(r)["id"];
  }
  // Registers a version from {path: bytes} and waits for it; returns its digest.
  std::string AddVersion(const std::string& model, const std::map<std::string, std::string>& files,
                         json extra = json::object()) {
    json req = extra;
    req["files"] = json::array();
    for (const auto& [path, bytes] : files)
      req["files"].push_back({{"path", path}, {"upload", Upload(bytes)}});
    Response r = Call("POST", "/v1/models/" + model + "/versions", req.dump());
    EXPECT_EQ(r.status, 202) << r.body;
    auto job = reg_->WaitJob(Body(r)["job"]["id"], 60);
    EXPECT_TRUE(job.ok());
    EXPECT_EQ((*job)["state"], "succeeded") << job->dump();
    return (*job)["version"];
  }
  // A checkpoint of `n` F32 tensors "t<i>" of `elems` pseudo-random floats each.
  std::string Checkpoint(uint64_t seed, int n, uint64_t elems) {
    std::mt19937_64 rng(seed);
    std::vector<TensorSpec> specs;
    std::vector<std::string> data;
    for (int i = 0; i < n; ++i) {
      specs.push_back({"t" + std::to_string(i), DType::kF32, {elems}});
      std::string d(elems * 4, '\0');
      for (auto& c : d) c = static_cast<char>(rng());
      data.push_back(std::move(d));
    }
    auto p = (dir_.parent_path() / (dir_.filename().string() + "_ckpt.safetensors")).string();
    EXPECT_TRUE(WriteSafetensorsFile(p, specs, data, {{"format", "pt"}}).ok());
    std::string bytes = ReadFile(p);
    fs::remove(p);
    return bytes;
  }

  fs::path dir_;
  std::unique_ptr<Registry> reg_;
  std::shared_ptr<Router> router_;
};

TEST(ByteRanges, ParsesOneRange) {
  bool bad = false;
  auto r = ParseByteRange("bytes=10-19", 100, &bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->begin, 10u);
  EXPECT_EQ(r->end, 20u);
  r = ParseByteRange("bytes=90-", 100, &bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->end, 100u);
  r = ParseByteRange("bytes=-5", 100, &bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->begin, 95u);
  EXPECT_FALSE(ParseByteRange("bytes=100-", 100, &bad));
  EXPECT_TRUE(bad);
  EXPECT_FALSE(ParseByteRange("bytes=5-1", 100, &bad));
  EXPECT_FALSE(bad);
  EXPECT_FALSE(ParseByteRange("bytes=1-2,4-5", 100, &bad));
  EXPECT_FALSE(ParseByteRange("bytes=x-", 100, &bad));
  EXPECT_TRUE(EtagMatches("W/\"a\", \"b\"", "\"b\""));
  EXPECT_FALSE(EtagMatches("\"c\"", "\"b\""));
}

TEST(HfMapping, ChecksPaths) {
  EXPECT_TRUE(hf::CheckRepoPath("a/b.json").ok());
  for (const std::string& bad : std::vector<std::string>{"", "../x", "a/../b", "a//b", "/a", "a/", "./a",
                                                         "a\\b", "a\nb", std::string(2000, 'a')}) {
    Status s = hf::CheckRepoPath(bad);
    EXPECT_EQ(s.reason(), Reason::kPathInvalid) << bad;
  }
  std::string pointer = hf::LfsPointer(Sha256::Of("x"), 1);
  EXPECT_EQ(pointer,
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + Sha256::Of("x").Hex() + "\nsize 1\n");
  // git hash-object of the empty file.
  EXPECT_EQ(hf::GitBlobId(""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}

TEST_F(HfRoutesTest, RepoInfoRevisionsAndLineage) {
  std::string base = AddVersion("base", {{"model.safetensors", Checkpoint(1, 3, 1000)}});
  std::string d1 = AddVersion("ft", {{"model.safetensors", Checkpoint(2, 3, 1000)}, {"config.json", "{}"}},
                              {{"base", {{"model", "base"}, {"version", base}}}, {"tags", {"v1"}}});
  std::string d2 =
      AddVersion("ft", {{"model.safetensors", Checkpoint(3, 3, 1000)}, {"config.json", "{\"a\":1}"}});

  // main without a tag "main": the newest version.
  Response r = Call("GET", "/api/models/deltastore/ft");
  ASSERT_EQ(r.status, 200) << r.body;
  json info = Body(r);
  EXPECT_EQ(info["id"], "deltastore/ft");
  EXPECT_EQ(info["sha"], d2.substr(7, 40));
  ASSERT_EQ(info["siblings"].size(), 2u);
  EXPECT_EQ(info["siblings"][0]["rfilename"], "config.json");
  EXPECT_EQ(info["siblings"][0]["size"], 7);
  EXPECT_EQ(info["siblings"][0]["lfs"]["sha256"], Sha256::Of("{\"a\":1}").Hex());
  EXPECT_EQ(info["safetensors"]["total"], 3000);
  EXPECT_FALSE(info["cardData"].contains("base_model"));

  // By tag, by digest in its three forms: the finetune with its lineage.
  for (std::string rev : {std::string("v1"), d1, d1.substr(7), d1.substr(7, 40)}) {
    r = Call("GET", "/api/models/deltastore/ft/revision/" + rev);
    ASSERT_EQ(r.status, 200) << rev << " " << r.body;
    info = Body(r);
    EXPECT_EQ(info["sha"], d1.substr(7, 40)) << rev;
    EXPECT_EQ(info["cardData"]["base_model"], "deltastore/base");
    EXPECT_EQ(info["cardData"]["deltastore"]["base"]["version"], base);
    EXPECT_EQ(info["cardData"]["deltastore"]["mode"], "lossless");
    EXPECT_EQ(info["tags"], json({"deltastore", "deltastore:lossless", "base_model:deltastore/base",
                                  "base_model:finetune:deltastore/base"}));
  }

  // A tag "main" wins over the newest version.
  ASSERT_EQ(Call("PUT", "/v1/models/ft/tags/main", json{{"version", d1}}.dump()).status, 200);
  r = Call("GET", "/api/models/deltastore/ft/revision/main");
  EXPECT_EQ(Body(r)["sha"], d1.substr(7, 40));

  // Errors carry huggingface_hub's X-Error-Code.
  struct Case {
    std::string target;
    int status;
    std::string code;
  };
  for (const Case& c : std::vector<Case>{
           {"/api/models/deltastore/nope", 404, "RepoNotFound"},
           {"/api/models/other/ft", 404, "RepoNotFound"},
           {"/api/models/deltastore/" + std::string(300, 'a'), 404, "RepoNotFound"},
           {"/api/models/deltastore/ft/revision/nope", 404, "RevisionNotFound"},
           {"/api/models/deltastore/ft/revision/" + std::string(40, 'f'), 404, "RevisionNotFound"},
           {"/api/models/deltastore/ft/revision/refs%2Fpr%2F1", 404, "RevisionNotFound"},
           {"/api/models/deltastore/ft/revision/" + std::string(5000, 'v'), 404, "RevisionNotFound"},
           {"/deltastore/ft/resolve/main/missing.json", 404, "EntryNotFound"},
           {"/deltastore/ft/resolve/nope/config.json", 404, "RevisionNotFound"},
           {"/deltastore/nope/resolve/main/config.json", 404, "RepoNotFound"},
           {"/deltastore/ft/resolve/main/..%2Fconfig.json", 400, ""},
           {"/deltastore/ft/resolve/main/a/../config.json", 400, ""},
           {"/api/models/deltastore/ft/tree/main/nope", 404, "EntryNotFound"},
           {"/api/models/deltastore/ft/tree/main?limit=0", 400, ""},
       }) {
    r = Call("GET", c.target);
    EXPECT_EQ(r.status, c.status) << c.target << " " << r.body;
    EXPECT_EQ(r.headers.count("x-error-code") ? r.headers["x-error-code"] : "", c.code) << c.target;
    EXPECT_TRUE(Body(r).contains("error")) << c.target;
  }
}

TEST_F(HfRoutesTest, ResolveServesFilesWithHubHeaders) {
  std::string ckpt = Checkpoint(4, 2, 500);
  std::string d = AddVersion("m", {{"model.safetensors", ckpt}, {"sub/dir/tok.json", "[1,2,3]"}});
  std::string commit = d.substr(7, 40);
  Response r = Call("HEAD", "/deltastore/m/resolve/main/model.safetensors");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-repo-commit"], commit);
  EXPECT_EQ(r.headers["etag"], "\"" + Sha256::Of(ckpt).Hex() + "\"");
  EXPECT_EQ(r.headers["x-linked-etag"], r.headers["etag"]);
  EXPECT_EQ(r.headers["x-linked-size"], std::to_string(ckpt.size()));
  EXPECT_EQ(r.content_length, ckpt.size());

  r = Call("GET", "/deltastore/m/resolve/" + commit + "/model.safetensors");
  EXPECT_EQ(*r.ReadAll(), ckpt);
  r = Call("GET", "/deltastore/m/resolve/main/model.safetensors", "", {{"range", "bytes=100-"}});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.headers["content-range"],
            "bytes 100-" + std::to_string(ckpt.size() - 1) + "/" + std::to_string(ckpt.size()));
  EXPECT_EQ(*r.ReadAll(), ckpt.substr(100));
  r = Call("GET", "/deltastore/m/resolve/main/sub/dir/tok.json");
  EXPECT_EQ(*r.ReadAll(), "[1,2,3]");
  r = Call("GET", "/deltastore/m/resolve/main/model.safetensors", "",
           {{"if-none-match", "\"" + Sha256::Of(ckpt).Hex() + "\""}});
  EXPECT_EQ(r.status, 304);
}

TEST_F(HfRoutesTest, TreeListsAndPages) {
  std::string d = AddVersion("m", {{"a.json", "1"}, {"sub/b.json", "2"}, {"sub/c/d.json", "3"}});
  Response r = Call("GET", "/api/models/deltastore/m/tree/main");
  json t = Body(r);
  ASSERT_EQ(t.size(), 2u) << t.dump();
  EXPECT_EQ(t[0]["path"], "a.json");
  EXPECT_EQ(t[0]["type"], "file");
  EXPECT_EQ(t[0]["lfs"]["oid"], Sha256::Of("1").Hex());
  EXPECT_EQ(t[0]["lfs"]["pointerSize"], hf::LfsPointer(Sha256::Of("1"), 1).size());
  EXPECT_EQ(t[0]["oid"], hf::GitBlobId(hf::LfsPointer(Sha256::Of("1"), 1)));
  EXPECT_EQ(t[1]["path"], "sub");
  EXPECT_EQ(t[1]["type"], "directory");

  r = Call("GET", "/api/models/deltastore/m/tree/main/sub?recursive=true");
  t = Body(r);
  std::vector<std::string> paths;
  for (const auto& e : t) paths.push_back(e["path"]);
  EXPECT_EQ(paths, (std::vector<std::string>{"sub/b.json", "sub/c", "sub/c/d.json"}));

  // Pages of one entry, each pointing at the next at the commit.
  std::string next = "/api/models/deltastore/m/tree/main?recursive=true&limit=1";
  paths.clear();
  for (int i = 0; i < 10 && !next.empty(); ++i) {
    r = Call("GET", next);
    ASSERT_EQ(r.status, 200) << r.body;
    for (const auto& e : Body(r)) paths.push_back(e["path"]);
    next.clear();
    if (r.headers.count("link")) {
      std::string link = r.headers["link"];
      std::string prefix = "<http://registry.test:8080";
      ASSERT_EQ(link.rfind(prefix, 0), 0u) << link;
      next = link.substr(prefix.size(), link.find('>') - prefix.size());
      EXPECT_NE(next.find("/tree/" + d.substr(7, 40) + "?"), std::string::npos) << next;
    }
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"a.json", "sub", "sub/b.json", "sub/c", "sub/c/d.json"}));
}

TEST_F(HfRoutesTest, PerTensorDownloadReadsOnlyTheirChunks) {
  // Three tensors of 6 MiB: two chunks each (4 MiB + 2 MiB).
  const uint64_t elems = (6u << 20) / 4;
  std::string ckpt = Checkpoint(5, 3, elems);
  std::string d = AddVersion("big", {{"model.safetensors", ckpt}});
  Response r = Call("GET", "/v1/models/big/versions/" + d + "/files/model.safetensors?tensors=t1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-deltastore-chunks-read"], "3");  // the header chunk and t1's two
  std::string body = *r.ReadAll();
  EXPECT_EQ(r.headers["etag"], "\"" + Sha256::Of(body).ToString() + "\"");
  auto original = ParseSafetensorsHeader(ckpt.substr(0, 8 + *ParseSafetensorsHeaderLength(ckpt, ckpt.size())),
                                         ckpt.size());
  auto h = ParseSafetensorsHeader(body.substr(0, 8 + *ParseSafetensorsHeaderLength(body, body.size())),
                                  body.size());
  ASSERT_TRUE(original.ok() && h.ok()) << h.status().ToString();
  ASSERT_EQ(h->tensors.size(), 1u);
  EXPECT_EQ(h->tensors[0].name, "t1");
  EXPECT_EQ(h->metadata.at("format"), "pt");
  const TensorInfo* t1 = original->Find("t1");
  EXPECT_EQ(body.substr(h->data_start()), ckpt.substr(original->data_start() + t1->begin, t1->size()));

  r = Call("GET", "/v1/models/big/versions/" + d + "/files/model.safetensors?tensors=t2,t0,t2");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["x-deltastore-chunks-read"], "5");
  EXPECT_EQ(r.headers["x-deltastore-tensors"], "2");

  r = Call("GET", "/v1/models/big/versions/" + d + "/files/model.safetensors?tensors=t0,nope,zz");
  EXPECT_EQ(r.status, 400);
  json e = Body(r);
  EXPECT_EQ(e["errors"][0]["code"], "TENSOR_UNKNOWN");
  EXPECT_EQ(e["errors"][0]["message"], "model.safetensors has no tensors nope, zz");
  r = Call("GET", "/v1/models/big/versions/" + d + "/files/model.safetensors?tensors=,");
  EXPECT_EQ(r.status, 400);
}

}  // namespace
}  // namespace deltastore::api
