// The HTTP API driven through the router, without sockets: request in, response out.
#include "api/routes.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "service/registry.h"

namespace deltastore::api {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
const std::string kFixtures = DS_FIXTURES_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class RoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ds_routes_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    router_.reset();
    reg_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    RegistryOptions o;
    o.data_dir = dir_.string();
    o.sync_writes = false;
    o.max_open_uploads = max_open_uploads_;
    auto r = Registry::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
    router_ = BuildRouter(reg_.get(), {"test", "cpu"});
  }
  void Reopen() {
    router_.reset();
    reg_.reset();
    Open();
  }

  Response Call(const std::string& method, const std::string& target, const std::string& body = "",
                Headers headers = {}) {
    Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.headers = std::move(headers);
    if (!req.body.empty()) req.headers.emplace("content-length", std::to_string(req.body.size()));
    EXPECT_TRUE(ParseTarget(target, &req.path, &req.query));
    return router_->Dispatch(req);
  }
  static json Body(Response& r) {
    auto b = r.ReadAll();
    EXPECT_TRUE(b.ok());
    return json::parse(*b, nullptr, false);
  }

  // Single-request upload of bytes; returns the upload id.
  std::string Upload(const std::string& bytes) {
    Response r = Call("POST", "/v1/uploads?digest=" + Sha256::Of(bytes).ToString(), bytes);
    EXPECT_EQ(r.status, 201) << r.body;
    return Body(r)["id"];
  }
  // Registers a version and waits for its job; returns the job.
  json AddVersion(const std::string& model, const json& request) {
    Response r = Call("POST", "/v1/models/" + model + "/versions", request.dump());
    EXPECT_EQ(r.status, 202) << r.body;
    std::string id = Body(r)["job"]["id"];
    auto job = reg_->WaitJob(id, 60);
    EXPECT_TRUE(job.ok());
    return *job;
  }

  size_t max_open_uploads_ = 1000;
  fs::path dir_;
  std::unique_ptr<Registry> reg_;
  std::shared_ptr<Router> router_;
};

bool HaveFixtures() {
  return fs::exists(kFixtures + "/faceres.bf16.safetensors");
}

TEST_F(RoutesTest, ChunkedUploadWithRangesSealsWithTheRightDigest) {
  std::string data(100000, 'a');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  Response r = Call("POST", "/v1/uploads");
  ASSERT_EQ(r.status, 202);
  std::string id = Body(r)["id"];
  EXPECT_EQ(r.headers["location"], "/v1/uploads/" + id);

  r = Call("PATCH", "/v1/uploads/" + id, data.substr(0, 40000), {{"content-range", "0-39999"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.headers["upload-offset"], "40000");
  // Out of order: refused, offset unchanged.
  r = Call("PATCH", "/v1/uploads/" + id, data.substr(50000, 10), {{"content-range", "bytes 50000-50009"}});
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "RANGE_INVALID");
  // Content-Range that disagrees with the body length.
  r = Call("PATCH", "/v1/uploads/" + id, data.substr(40000, 10), {{"content-range", "40000-40019"}});
  EXPECT_EQ(r.status, 400);

  Reopen();  // the committed offset survives a restart
  r = Call("GET", "/v1/uploads/" + id);
  ASSERT_EQ(r.status, 200);
  uint64_t offset = Body(r)["offset"];
  ASSERT_GE(offset, 40000u);
  r = Call("PATCH", "/v1/uploads/" + id, data.substr(offset),
           {{"content-range", std::to_string(offset) + "-99999"}});
  ASSERT_EQ(r.status, 202) << r.body;

  r = Call("PUT", "/v1/uploads/" + id + "?digest=" + Sha256::Of("wrong").ToString());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "DIGEST_INVALID");
  EXPECT_EQ(Body(*std::make_unique<Response>(Call("GET", "/v1/uploads/" + id)))["state"], "open");

  r = Call("PUT", "/v1/uploads/" + id + "?digest=" + Sha256::Of(data).ToString());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Body(r)["digest"], Sha256::Of(data).ToString());
  r = Call("PATCH", "/v1/uploads/" + id, "x");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Call("GET", "/v1/uploads/nope").status, 404);
}

TEST_F(RoutesTest, VersionsDownloadsTagsAndDeletion) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing at " << kFixtures;
  std::string base = ReadFile(kFixtures + "/faceres.bf16.safetensors");
  std::string ft = ReadFile(kFixtures + "/faceres-deep.bf16.safetensors");
  json stats0 = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));

  json job = AddVersion(
      "faceres", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(base)}}}}, {"tags", {"v1"}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  job = AddVersion("deep", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(ft)}}}},
                            {"base", {{"model", "faceres"}, {"version", "v1"}}},
                            {"tags", {"latest"}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["progress"]["tensors_done"], 128);
  std::string digest = job["version"];

  Response r = Call("GET", "/v1/models/deep/versions/latest/files/model.safetensors");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_length, ft.size());
  std::string etag = r.headers["etag"];
  EXPECT_EQ(etag, "\"" + Sha256::Of(ft).ToString() + "\"");
  EXPECT_EQ(*r.ReadAll(), ft);

  r = Call("GET", "/v1/models/deep/versions/" + digest + "/files/model.safetensors", "",
           {{"range", "bytes=1000-5999"}});
  ASSERT_EQ(r.status, 206);
  EXPECT_EQ(r.headers["content-range"], "bytes 1000-5999/" + std::to_string(ft.size()));
  EXPECT_EQ(*r.ReadAll(), ft.substr(1000, 5000));
  r = Call("GET", "/v1/models/deep/versions/latest/files/model.safetensors", "", {{"range", "bytes=-7"}});
  EXPECT_EQ(*r.ReadAll(), ft.substr(ft.size() - 7));
  r = Call("GET", "/v1/models/deep/versions/latest/files/model.safetensors", "",
           {{"range", "bytes=99999999-"}});
  EXPECT_EQ(r.status, 416);
  r = Call("GET", "/v1/models/deep/versions/latest/files/model.safetensors", "", {{"if-none-match", etag}});
  EXPECT_EQ(r.status, 304);
  EXPECT_EQ(Call("GET", "/v1/models/deep/versions/latest/files/nope.bin").status, 404);
  EXPECT_EQ(Call("GET", "/v1/models/nope/versions/latest").status, 404);

  r = Call("GET", "/v1/models/deep/versions/latest");
  json v = Body(r);
  EXPECT_EQ(v["base"]["model"], "faceres");
  EXPECT_EQ(v["tags"], json::array({"latest"}));
  EXPECT_LT(v["stored_bytes"].get<uint64_t>(), v["logical_bytes"].get<uint64_t>() / 19 * 10);  // > 1.9x

  r = Call("GET", "/v1/models?limit=1");
  json page = Body(r);
  ASSERT_EQ(page["models"].size(), 1u);
  EXPECT_EQ(page["next"], "deep");
  r = Call("GET", "/v1/models?limit=1&after=deep");
  EXPECT_EQ(Body(r)["models"][0]["name"], "faceres");
  EXPECT_EQ(Call("GET", "/v1/models?limit=0").status, 400);

  EXPECT_EQ(Call("PUT", "/v1/models/deep/tags/prod", json{{"version", digest}}.dump()).status, 200);
  EXPECT_EQ(Body(*std::make_unique<Response>(Call("GET", "/v1/models/deep/tags")))["tags"]["prod"], digest);
  EXPECT_EQ(Call("DELETE", "/v1/models/deep/tags/prod").status, 204);

  // The base is in use; the finetune goes first, then the base, then everything is collected.
  r = Call("DELETE", "/v1/models/faceres/versions/v1");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "VERSION_IN_USE");
  EXPECT_EQ(Call("DELETE", "/v1/models/deep/versions/latest").status, 200);
  r = Call("DELETE", "/v1/models/faceres/versions/v1");
  ASSERT_EQ(r.status, 200);
  EXPECT_GT(Body(r)["freed_bytes"].get<uint64_t>(), 0u);
  json stats = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  EXPECT_EQ(stats["stored_bytes"], stats0["stored_bytes"]);
  EXPECT_EQ(stats["versions"], 0);
}

TEST_F(RoutesTest, BadVersionRequestsAreClear4xx) {
  std::string good;
  {
    auto p = (dir_ / "a.safetensors").string();
    ASSERT_TRUE(WriteSafetensorsFile(p, {{"w", DType::kF32, {2, 2}}}, {std::string(16, '\1')}).ok());
    good = ReadFile(p);
  }
  std::string other;
  {
    auto p = (dir_ / "b.safetensors").string();
    ASSERT_TRUE(WriteSafetensorsFile(p, {{"w", DType::kF32, {4}}}, {std::string(16, '\2')}).ok());
    other = ReadFile(p);
  }
  auto files = [&](const std::string& upload) {
    return json{{{"path", "model.safetensors"}, {"upload", upload}}};
  };
  ASSERT_EQ(AddVersion("base", {{"files", files(Upload(good))}})["state"], "succeeded");

  auto expect = [&](const std::string& model, const json& body, int status, const std::string& code) {
    Response r = Call("POST", "/v1/models/" + model + "/versions", body.dump());
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.body;
    EXPECT_EQ(Body(r)["errors"][0]["code"], code) << r.body;
  };
  expect("ft",
         {{"files", files(Upload(other))},
          {"base", {{"model", "base"}, {"version", Sha256::Of("x").ToString()}}}},
         404, "VERSION_UNKNOWN");
  expect("ft", {{"files", files(Upload(other))}, {"base", {{"model", "nobody"}}}}, 404, "MODEL_UNKNOWN");
  std::string base_digest =
      Body(*std::make_unique<Response>(Call("GET", "/v1/models/base/versions")))["versions"][0]["digest"];
  expect("ft", {{"files", files(Upload(other))}, {"base", {{"model", "base"}, {"version", base_digest}}}},
         400, "BASE_MISMATCH");
  expect("bad name!", {{"files", files(Upload(good))}}, 400, "NAME_INVALID");
  expect("ft", {{"files", json::array()}}, 400, "INVALID_ARGUMENT");
  expect("ft", {{"files", {{{"path", "../x"}, {"upload", Upload(good)}}}}}, 400, "INVALID_ARGUMENT");
  std::string open_upload = Body(*std::make_unique<Response>(Call("POST", "/v1/uploads")))["id"];
  expect("ft", {{"files", files(open_upload)}}, 409, "UPLOAD_NOT_SEALED");
  std::string hostile = std::string("\xff\xff\xff\xff\xff\x00\x00\x00", 8) + "{}";
  expect("ft", {{"files", files(Upload(hostile))}}, 400, "SAFETENSORS_INVALID");
  Response r = Call("POST", "/v1/models/ft/versions", "{not json");
  EXPECT_EQ(r.status, 400);
  // Nothing above changed what is stored.
  json v = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  EXPECT_EQ(v["versions"], 1);
}

TEST_F(RoutesTest, InterruptedJobRunsAgainAfterRestartAndLeakedRefsAreRecounted) {
  std::string bytes;
  {
    auto p = (dir_ / "a.safetensors").string();
    ASSERT_TRUE(WriteSafetensorsFile(p, {{"w", DType::kF32, {64}}}, {std::string(256, '\3')}).ok());
    bytes = ReadFile(p);
  }
  std::string upload = Upload(bytes);
  // A job the previous process was running when it died, with a reference it had taken.
  json job = {
      {"id", "j1"},
      {"state", "running"},
      {"model", "m"},
      {"files",
       {{{"path", "model.safetensors"},
         {"upload", upload},
         {"size", bytes.size()},
         {"digest", Sha256::Of(bytes).ToString()}}}},
      {"base", nullptr},
      {"policy", {{"mode", "lossless"}}},
      {"tags", {"latest"}},
      {"progress", {{"tensors_done", 0}, {"tensors_total", 1}, {"bytes_done", 0}, {"bytes_total", 256}}},
      {"created_at", "x"},
      {"updated_at", "x"}};
  ASSERT_TRUE(reg_->meta()->Put("jobs", "j1", job.dump()).ok());
  auto leaked = reg_->chunks()->Put("orphan chunk of the dead job");
  ASSERT_TRUE(leaked.ok());
  Reopen();
  auto done = reg_->WaitJob("j1", 30);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ((*done)["state"], "succeeded") << done->dump();
  EXPECT_EQ((*done)["restarts"], 1);
  EXPECT_EQ(*reg_->chunks()->RefCount(leaked->digest), 0);
  EXPECT_EQ(Call("GET", "/v1/models/m/versions/latest/files/model.safetensors").ReadAll().value(), bytes);
}

TEST_F(RoutesTest, HeadAndUnknownRoutes) {
  EXPECT_EQ(Call("GET", "/nope").status, 404);
  Response r = Call("DELETE", "/healthz");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "GET, HEAD");
  EXPECT_EQ(Call("POST", "/v1/models/m/tags/t").headers["allow"], "PUT, DELETE");
  EXPECT_EQ(Call("HEAD", "/healthz").status, 200);
}

// http_fuzz: error messages quote the path, which need not be UTF-8; the JSON dump threw (type_error 316)
// and the connection ended without an answer.
TEST_F(RoutesTest, NonUtf8InThePathGetsAJsonError) {
  for (const char* target : {"/v1/models/%F8", "/v1/models/%C3%28/versions", "/nope/%FF%FE"}) {
    Response r = Call("GET", target);
    EXPECT_GE(r.status, 400) << target;
    EXPECT_LT(r.status, 500) << target;
    json doc = Body(r);
    ASSERT_FALSE(doc.is_discarded()) << target << ": " << r.body;
    EXPECT_TRUE(doc["errors"][0]["code"].is_string());
  }
}

// http_fuzz: a one-shot upload with a wrong digest answered 400 but stayed open (its id never reached
// the client), so max_open_uploads of them made every later upload a 429.
TEST_F(RoutesTest, FailedOneShotUploadsDoNotPileUp) {
  max_open_uploads_ = 2;
  Reopen();
  const std::string bytes = "some bytes";
  const std::string wrong = Sha256::Of("other bytes").ToString();
  for (int i = 0; i < 5; ++i) {
    Response r = Call("POST", "/v1/uploads?digest=" + wrong, bytes);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(Body(r)["errors"][0]["code"], "DIGEST_INVALID");
  }
  Upload(bytes);  // 201, not 429
}

TEST_F(RoutesTest, AuditMetricsAndUiAfterUploadsAndARestart) {
  if (!HaveFixtures()) GTEST_SKIP() << "fixtures missing";
  std::string base = ReadFile(kFixtures + "/faceres.bf16.safetensors");
  std::string ft = ReadFile(kFixtures + "/faceres-deep.bf16.safetensors");
  json job = AddVersion(
      "faceres", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(base)}}}}, {"tags", {"v1"}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  job = AddVersion("faceres-deep", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(ft)}}}},
                                    {"base", {{"model", "faceres"}, {"version", "v1"}}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  Reopen();  // the history is stored; the report is recomputed from the manifests
  Response r = Call("GET", "/v1/audit");
  ASSERT_EQ(r.status, 200) << r.body;
  json a = Body(r);
  Response st = Call("GET", "/v1/stats");
  EXPECT_EQ(a["totals"]["stored_bytes"], Body(st)["stored_bytes"]);
  EXPECT_EQ(a["totals"]["logical_bytes"], base.size() + ft.size());
  EXPECT_EQ(a["bases"].size(), 1u);
  EXPECT_GT(a["totals"]["same_as_base_bytes"].get<uint64_t>(), 0u);
  r = Call("GET", "/v1/audit/history");
  json h = Body(r);
  ASSERT_EQ(h["snapshots"].size(), 2u);
  EXPECT_EQ(h["snapshots"][1]["totals"], a["totals"]);
  r = Call("GET", "/v1/audit/models/faceres/versions/v1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["figures"]["logical_bytes"], base.size());
  r = Call("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r.body.find("deltastore_stored_bytes " + a["totals"]["stored_bytes"].dump() + "\n"),
            std::string::npos);
  r = Call("GET", "/ui");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("faceres-deep"), std::string::npos);
  EXPECT_EQ(Call("GET", "/v1/audit/models/none").status, 404);
  EXPECT_EQ(Call("GET", "/v1/audit/history?limit=5000").status, 400);
}

}  // namespace
}  // namespace deltastore::api
