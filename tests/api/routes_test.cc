// The HTTP API driven through the router, without sockets: request in, response out.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "service/registry.h"
#include "tests/api/router_test_util.h"
#include "tests/fixtures.h"

namespace deltastore::api {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
const std::string kFixtures = DS_FIXTURES_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class RoutesTest : public RouterTest {
 protected:
  RoutesTest() : RouterTest("ds_routes_") {}
  void SetUp() override {
    RouterTest::SetUp();
    Open();
  }
  static json Body(Response& r) { return BodyJson(r); }

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

  // A small checkpoint of `tensors` tensors of 16 KiB pseudo-random bytes each.
  std::string Checkpoint(uint64_t seed, int tensors = 4) {
    std::mt19937_64 rng(seed);
    std::vector<TensorSpec> specs;
    std::vector<std::string> data;
    for (int i = 0; i < tensors; ++i) {
      specs.push_back({"layer" + std::to_string(i) + ".weight", DType::kF32, {64, 64}});
      std::string d(64 * 64 * 4, '\0');
      for (auto& c : d) c = static_cast<char>(rng());
      data.push_back(std::move(d));
    }
    auto p = (dir_.parent_path() / (dir_.filename().string() + "_ckpt.safetensors")).string();
    EXPECT_TRUE(WriteSafetensorsFile(p, specs, data).ok());
    std::string bytes = ReadFile(p);
    fs::remove(p);
    return bytes;
  }
  static json OneFile(const std::string& upload) {
    return json{{{"path", "model.safetensors"}, {"upload", upload}}};
  }
  // The stored file of model@ref, or the status its download failed with.
  StatusOr<std::string> Download(const std::string& model, const std::string& ref) {
    Response r = Call("GET", "/v1/models/" + model + "/versions/" + ref + "/files/model.safetensors");
    if (r.status != 200) return Internal("download answered " + std::to_string(r.status) + ": " + r.body);
    return r.ReadAll();
  }
  // Problems of a kind in a Check report.
  static size_t Problems(const json& report, const std::string& kind) {
    size_t n = 0;
    for (const auto& p : report["problems"]) n += p["kind"] == kind;
    return n;
  }
};

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
  EXPECT_EQ(Body(r)["errors"][0]["code"], "CONTENT_RANGE_MISMATCH");

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
  DS_REQUIRE_FIXTURE(kFixtures + "/faceres-deep.bf16.safetensors");
  std::string base = ReadFile(kFixtures + "/faceres.bf16.safetensors");
  std::string ft = ReadFile(kFixtures + "/faceres-deep.bf16.safetensors");
  json stats0 = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  Response r0;

  json job = AddVersion(
      "faceres", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(base)}}}}, {"tags", {"v1"}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  job = AddVersion("deep", {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(ft)}}}},
                            {"base", {{"model", "faceres"}, {"version", "v1"}}},
                            {"tags", {"latest"}}});
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["progress"]["tensors_done"], 128);
  std::string digest = job["version"];
  // DELETE of a job: one that succeeded is not cancelled (docs/http_api.md, Jobs).
  r0 = Call("DELETE", "/v1/jobs/" + job["id"].get<std::string>());
  EXPECT_EQ(r0.status, 409);
  EXPECT_EQ(Body(r0)["errors"][0]["code"], "JOB_FINISHED");
  r0 = Call("DELETE", "/v1/jobs/" + std::string(32, '0'));
  EXPECT_EQ(r0.status, 404);
  EXPECT_EQ(Body(r0)["errors"][0]["code"], "JOB_UNKNOWN");

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
  expect("ft", {{"files", json::array()}}, 400, "BODY_INVALID");
  expect("ft", {{"files", {{{"path", "../x"}, {"upload", Upload(good)}}}}}, 400, "NAME_INVALID");
  std::string open_upload = Body(*std::make_unique<Response>(Call("POST", "/v1/uploads")))["id"];
  expect("ft", {{"files", files(open_upload)}}, 409, "UPLOAD_NOT_SEALED");
  std::string hostile = std::string("\xff\xff\xff\xff\xff\x00\x00\x00", 8) + "{}";
  expect("ft", {{"files", files(Upload(hostile))}}, 400, "SAFETENSORS_INVALID");
  Response r = Call("POST", "/v1/models/ft/versions", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "BODY_INVALID");
  expect("ft", json::array(), 400, "BODY_INVALID");  // one code for every malformed body
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
  options_.max_open_uploads = 2;
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
  DS_REQUIRE_FIXTURE(kFixtures + "/faceres-deep.bf16.safetensors");
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

// ---- torn writes (storage/fault_injection.cc): a write persists only in part, then the process dies

std::function<Stores(Stores)> Faults(FaultPlan plan) {
  return [plan](Stores s) { return NewFaultInjectingStores(std::move(s), plan); };
}

TEST_F(RoutesTest, TornChunkWriteDuringAJobIsReportedNeverServedAndHealedByTheRerun) {
  const std::string kept = Checkpoint(1), ft = Checkpoint(2);
  ASSERT_EQ(AddVersion("kept", {{"files", OneFile(Upload(kept))}})["state"], "succeeded");
  const std::string up = Upload(ft);

  FaultPlan plan;
  plan.torn_put_at = 1;  // the job's second chunk
  options_.wrap_stores = Faults(plan);
  Reopen();
  Response r = Call("POST", "/v1/models/ft/versions", json{{"files", OneFile(up)}, {"tags", {"v1"}}}.dump());
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string job_id = Body(r)["job"]["id"];
  // The job dies on the torn write; from then on every call fails with a clear status, also over HTTP.
  auto waited = reg_->WaitJob(job_id, 60);
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.status().code(), StatusCode::kIOError);
  r = Call("GET", "/v1/jobs/" + job_id);
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "IO_ERROR") << r.body;

  // Restart without recovery: `deltastored check` sees the torn chunk and its stray reference.
  options_.wrap_stores = nullptr;
  options_.recover = false;
  Reopen();
  auto report = reg_->Check(false);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE((*report)["ok"]) << report->dump();
  EXPECT_EQ(Problems(*report, "corrupt_chunk"), 1u) << report->dump();
  EXPECT_GE(Problems(*report, "refcount_mismatch"), 1u) << report->dump();
  EXPECT_EQ((*report)["notes"].size(), 1u) << report->dump();  // the interrupted job
  json versions = Body(*std::make_unique<Response>(Call("GET", "/v1/models/kept/versions")));
  const std::string kept_digest = versions["versions"][0]["digest"];
  EXPECT_EQ(*Download("kept", kept_digest), kept);  // nothing else damaged
  EXPECT_EQ(Call("GET", "/v1/models/ft/versions/v1").status, 404);

  // Normal restart: the job runs again, its Put of the same bytes rewrites the torn chunk.
  options_.recover = true;
  Reopen();
  auto done = reg_->WaitJob(job_id, 60);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ((*done)["state"], "succeeded") << done->dump();
  EXPECT_EQ((*done)["restarts"], 1);
  EXPECT_EQ(*Download("ft", "v1"), ft);
  EXPECT_EQ(*Download("kept", kept_digest), kept);
  report = reg_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE((*report)["ok"]) << report->dump();
}

TEST_F(RoutesTest, ChunkDamagedUnderACommittedVersionIsNeverServed) {
  const std::string bytes = Checkpoint(3);
  json job = AddVersion("m", {{"files", OneFile(Upload(bytes))}, {"tags", {"v1"}}});
  ASSERT_EQ(job["state"], "succeeded");
  auto m = reg_->LoadManifest(*Digest::Parse(job["version"].get<std::string>()));
  ASSERT_TRUE(m.ok());
  const Digest victim = m->ChunkDigests().at(1);
  auto good = reg_->chunks()->Get(victim);
  ASSERT_TRUE(good.ok());
  // What a torn rewrite leaves on disk: a prefix under the full digest.
  ASSERT_TRUE(reg_->chunks()->PutUnverified(victim, good->substr(0, good->size() / 3)).ok());
  auto served = Download("m", "v1");
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.status().code(), StatusCode::kCorruption) << served.status().ToString();
  auto report = reg_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(Problems(*report, "corrupt_chunk"), 1u) << report->dump();
  EXPECT_EQ(Problems(*report, "refcount_mismatch"), 0u) << report->dump();
  // Storing the same bytes again (any model) heals it.
  ASSERT_EQ(AddVersion("again", {{"files", OneFile(Upload(bytes))}})["state"], "succeeded");
  EXPECT_EQ(*Download("m", "v1"), bytes);
  EXPECT_TRUE((*reg_->Check(false))["ok"]);
}

// The version commit (record, model, digest index, tag, generation, job, open-jobs entry) cut after each
// of its operations.
TEST_F(RoutesTest, TornVersionCommitAtEveryCutIsFoundByCheckAndRepairedByTheRerun) {
  const std::string kept = Checkpoint(4), ft = Checkpoint(5);
  constexpr int kOps = 7;
  for (int cut = 1; cut < kOps; ++cut) {
    SCOPED_TRACE("operations applied: " + std::to_string(cut));
    router_.reset();
    reg_.reset();
    fs::remove_all(dir_);
    options_.wrap_stores = nullptr;
    Open();
    json kj = AddVersion("kept", {{"files", OneFile(Upload(kept))}, {"tags", {"v1"}}});
    ASSERT_EQ(kj["state"], "succeeded");
    const std::string up = Upload(ft);
    FaultPlan plan;
    size_t seen_ops = 0;
    plan.tear_commit_if = [&seen_ops](const MetaBatch& b) {
      for (const auto& op : b.ops) {
        if (op.put && op.ns == "versions") {
          seen_ops = b.ops.size();
          return true;
        }
      }
      return false;
    };
    plan.torn_keep = (cut + 0.5) / kOps;
    options_.wrap_stores = Faults(plan);
    Reopen();
    Response r =
        Call("POST", "/v1/models/ft/versions", json{{"files", OneFile(up)}, {"tags", {"v1"}}}.dump());
    ASSERT_EQ(r.status, 202) << r.body;
    const std::string job_id = Body(r)["job"]["id"];
    EXPECT_FALSE(reg_->WaitJob(job_id, 60).ok());
    ASSERT_EQ(seen_ops, static_cast<size_t>(kOps));

    options_.wrap_stores = nullptr;
    options_.recover = false;
    Reopen();
    auto report = reg_->Check(false);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    // Cuts inside the record + model + digest index leave the indexes short: check says which.
    const size_t missing = Problems(*report, "missing_index_entry");
    EXPECT_EQ(missing, cut < 3 ? static_cast<size_t>(3 - cut) : 0u) << report->dump();
    EXPECT_EQ(Problems(*report, "corrupt_chunk"), 0u) << report->dump();
    EXPECT_EQ(*Download("kept", "v1"), kept);

    options_.recover = true;
    Reopen();
    auto done = reg_->WaitJob(job_id, 60);
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    EXPECT_EQ((*done)["state"], "succeeded") << done->dump();
    EXPECT_EQ(*Download("ft", "v1"), ft);
    EXPECT_EQ(*Download("kept", "v1"), kept);
    report = reg_->Check(false);
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE((*report)["ok"]) << report->dump();
    EXPECT_EQ(Body(*std::make_unique<Response>(Call("GET", "/v1/stats")))["versions"], 2);
  }
}

// Disk full (simulated: the chunk store refuses writes after a number of them) while a job stores chunks.
TEST_F(RoutesTest, DiskFullDuringAJobFailsItWithAClearErrorAndChangesNothingStored) {
  const std::string kept = Checkpoint(8), ft = Checkpoint(9);
  json kj = AddVersion("kept", {{"files", OneFile(Upload(kept))}, {"tags", {"v1"}}});
  ASSERT_EQ(kj["state"], "succeeded");
  const std::string kept_manifest =
      Body(*std::make_unique<Response>(Call("GET", "/v1/models/kept/versions/v1"))).dump();
  json stats0 = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  FaultPlan plan;
  plan.fail_after_puts = 2;
  options_.wrap_stores = Faults(plan);
  Reopen();
  Response r = Call("POST", "/v1/models/ft/versions", json{{"files", OneFile(Upload(ft))}}.dump());
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string job_id = Body(r)["job"]["id"];
  auto job = reg_->WaitJob(job_id, 60);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ((*job)["state"], "failed");
  r = Call("GET", "/v1/jobs/" + job_id);
  ASSERT_EQ(r.status, 200);
  json doc = Body(r);
  EXPECT_EQ(doc["error"]["code"], "DISK_FULL") << doc.dump();
  EXPECT_EQ(doc["error"]["message"], "model.safetensors: disk full (injected)") << doc.dump();
  // The failed job dropped the references it took: nothing stored changed, check is clean.
  EXPECT_EQ(Call("GET", "/v1/models/ft").status, 404);
  EXPECT_EQ(Body(*std::make_unique<Response>(Call("GET", "/v1/models/kept/versions/v1"))).dump(),
            kept_manifest);
  EXPECT_EQ(*Download("kept", "v1"), kept);
  ASSERT_TRUE(reg_->CollectGarbage().ok());
  json stats = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  EXPECT_EQ(stats["stored_bytes"], stats0["stored_bytes"]);
  EXPECT_EQ(stats["versions"], 1);
  auto report = reg_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE((*report)["ok"]) << report->dump();
  // Space again: the same upload is stored (the failed job did not consume it).
  options_.wrap_stores = nullptr;
  Reopen();
  json retry = AddVersion("ft", {{"files", OneFile(Body(*std::make_unique<Response>(
                                               Call("GET", "/v1/jobs/" + job_id)))["files"][0]["upload"])}});
  EXPECT_EQ(retry["state"], "succeeded") << retry.dump();
  EXPECT_EQ(*Download("ft", retry["version"]), ft);
}

TEST_F(RoutesTest, TornDeletionIsFoundAndRepairedByCheck) {
  const std::string kept = Checkpoint(6), gone = Checkpoint(7);
  ASSERT_EQ(AddVersion("kept", {{"files", OneFile(Upload(kept))}, {"tags", {"v1"}}})["state"], "succeeded");
  ASSERT_EQ(AddVersion("gone", {{"files", OneFile(Upload(gone))}, {"tags", {"v1"}}})["state"], "succeeded");
  json stats0 = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));

  FaultPlan plan;
  plan.tear_commit_if = [](const MetaBatch& b) {
    for (const auto& op : b.ops)
      if (op.put && op.ns == "releases") return true;
    return false;
  };
  options_.wrap_stores = Faults(plan);
  Reopen();
  Response r = Call("DELETE", "/v1/models/gone/versions/v1");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(Body(r)["errors"][0]["code"], "IO_ERROR") << r.body;

  // The record went, its tag, model record and references stayed (no release was recorded).
  options_.wrap_stores = nullptr;
  Reopen();
  EXPECT_EQ(Call("GET", "/v1/models/gone/versions/v1").status, 404);
  auto report = reg_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE((*report)["ok"]);
  EXPECT_EQ(Problems(*report, "dangling_tag"), 1u) << report->dump();
  EXPECT_EQ(Problems(*report, "dangling_index_entry"), 1u) << report->dump();  // the model record
  // Every chunk of the deleted version kept its reference: its four tensors' (expected 0) and the one
  // it shares with "kept" (the identical safetensors header: expected 1, stored 2).
  size_t unshared = 0, shared = 0;
  for (const auto& p : (*report)["problems"]) {
    if (p["kind"] != "refcount_mismatch") continue;
    EXPECT_EQ(p["stored"].get<int64_t>(), p["expected"].get<int64_t>() + 1) << p.dump();
    ++(p["expected"] == 0 ? unshared : shared);
  }
  EXPECT_EQ(unshared, 4u) << report->dump();
  EXPECT_EQ(shared, 1u) << report->dump();
  report = reg_->Check(true);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ((*report)["refcounts_repaired"], 5);
  EXPECT_EQ((*report)["index_entries_repaired"], 2);
  report = reg_->Check(false);
  EXPECT_TRUE((*report)["ok"]) << report->dump();
  ASSERT_TRUE(reg_->CollectGarbage().ok());
  json stats = Body(*std::make_unique<Response>(Call("GET", "/v1/stats")));
  EXPECT_EQ(stats["versions"], 1);
  EXPECT_LT(stats["stored_bytes"].get<uint64_t>(), stats0["stored_bytes"].get<uint64_t>());
  EXPECT_EQ(*Download("kept", "v1"), kept);
  EXPECT_EQ(Call("GET", "/v1/models/gone").status, 404);
}

}  // namespace
}  // namespace deltastore::api
