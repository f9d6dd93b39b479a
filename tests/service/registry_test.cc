// The registry's rooms through its front: read-your-writes of the audit, typed records that refuse
// malformed input instead of throwing, and uploads claimed by one writer or sealer at a time.
#include "service/registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "codec/safetensors.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Forwards to the inner store and calls `after` with every batch it committed.
class ObservingMetaStore : public MetaStore {
 public:
  ObservingMetaStore(std::shared_ptr<MetaStore> inner, std::function<void(const MetaBatch&)> after)
      : inner_(std::move(inner)), after_(std::move(after)) {}
  StatusOr<std::string> Get(std::string_view ns, std::string_view key) override {
    return inner_->Get(ns, key);
  }
  Status Commit(const MetaBatch& batch) override {
    Status s = inner_->Commit(batch);
    if (s.ok()) after_(batch);
    return s;
  }
  Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view, std::string_view)>& fn) override {
    return inner_->Scan(ns, prefix, start_after, fn);
  }

 private:
  std::shared_ptr<MetaStore> inner_;
  std::function<void(const MetaBatch&)> after_;
};

// True when the batch makes a job visible as succeeded.
bool SucceedsAJob(const MetaBatch& batch) {
  for (const auto& op : batch.ops) {
    if (op.put && op.ns == ns::kJobs && json::parse(op.value)["state"] == "succeeded") return true;
  }
  return false;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ds_registry_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    reg_.reset();
    fs::remove_all(dir_);
  }
  void Open(const std::function<void(const MetaBatch&)>& after = {}) {
    RegistryOptions o;
    o.data_dir = (dir_ / "data").string();
    o.sync_writes = false;
    if (after) {
      o.wrap_stores = [after](Stores s) {
        s.meta = std::make_shared<ObservingMetaStore>(s.meta, after);
        return s;
      };
    }
    auto r = Registry::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
  }
  // A sealed upload of a one-tensor F32 checkpoint holding `raw`.
  std::string UploadTensor(const std::string& raw) {
    auto path = (dir_ / "in.safetensors").string();
    EXPECT_TRUE(WriteSafetensorsFile(path, {{"w", DType::kF32, {raw.size() / 4}}}, {raw}).ok());
    std::ifstream f(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto u = reg_->CreateUpload();
    EXPECT_TRUE(u.ok());
    std::string id = (*u)["id"];
    auto w = reg_->AppendUpload(id, std::nullopt);
    EXPECT_TRUE(w.ok());
    EXPECT_TRUE((*w)->Write(bytes).ok());
    EXPECT_TRUE((*w)->Commit().ok());
    w->reset();
    EXPECT_TRUE(reg_->SealUpload(id, Sha256::Of(bytes).ToString()).ok());
    return id;
  }
  // A sealed upload of a one-tensor checkpoint whose bytes are `fill`.
  std::string Upload(char fill) { return UploadTensor(std::string(256, fill)); }
  // A sealed upload of a one-tensor checkpoint of 4096 varied F32 values (worth coding).
  std::string UploadFloats() {
    std::string raw(4096 * 4, '\0');
    for (uint32_t i = 0; i < 4096; ++i) {
      const float v = 0.001f * static_cast<float>(i % 97) - 0.03f * static_cast<float>(i % 13);
      std::memcpy(raw.data() + 4 * i, &v, 4);
    }
    return UploadTensor(raw);
  }
  // The codec id byte of the first chunk of the version's first tensor.
  int FirstTensorCodec(const std::string& model) {
    auto ref = reg_->Resolve(model, "latest");
    EXPECT_TRUE(ref.ok()) << ref.status().ToString();
    auto m = reg_->LoadManifest(ref->digest);
    EXPECT_TRUE(m.ok());
    const auto& chunks = m->files.at(0).tensors.at(0).chunks;
    EXPECT_FALSE(chunks.empty());
    auto bytes = reg_->chunks()->Get(chunks.at(0).digest);
    EXPECT_TRUE(bytes.ok());
    return bytes->empty() ? -1 : static_cast<uint8_t>((*bytes)[0]);
  }
  json AddVersion(const std::string& model, char fill) {
    json req = {{"files", {{{"path", "model.safetensors"}, {"upload", Upload(fill)}}}}};
    auto job = reg_->CreateVersion(model, req);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    auto done = reg_->WaitJob((*job)["id"], 60);
    EXPECT_TRUE(done.ok());
    return *done;
  }

  fs::path dir_;
  std::unique_ptr<Registry> reg_;
};

TEST_F(RegistryTest, AuditIsReadYourWritesAtTheMomentAJobSucceeds) {
  // What a client sees right when the job's `succeeded` becomes visible, before anything else runs. The
  // observer runs on the job's thread after the commit, so the waiting client may see the job succeed
  // first: the test waits for the observation too.
  std::mutex mu;
  std::condition_variable cv;
  size_t versions_seen = 0, history_seen = 0, observed = 0;
  Open([&](const MetaBatch& batch) {
    if (!SucceedsAJob(batch)) return;
    auto model = reg_->AuditModel("m", "", 100);
    auto history = reg_->AuditHistory("", 100);
    std::lock_guard<std::mutex> lock(mu);
    versions_seen = model.ok() ? (*model)["versions"].size() : 0;
    history_seen = history.ok() ? (*history)["snapshots"].size() : 0;
    ++observed;
    cv.notify_all();
  });
  auto wait_observed = [&](size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return observed >= n; });
  };
  ASSERT_EQ(AddVersion("m", '\1')["state"], "succeeded");
  wait_observed(1);
  EXPECT_EQ(versions_seen, 1u);
  EXPECT_EQ(history_seen, 1u);
  ASSERT_TRUE(reg_->Audit().ok());  // a cached report from before the second version
  ASSERT_EQ(AddVersion("m", '\2')["state"], "succeeded");
  wait_observed(2);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(observed, 2u);
  EXPECT_EQ(versions_seen, 2u);
  EXPECT_EQ(history_seen, 2u);
}

TEST_F(RegistryTest, AuditSeesADeletionOnceItIsAnswered) {
  Open();
  ASSERT_EQ(AddVersion("m", '\1')["state"], "succeeded");
  json second = AddVersion("m", '\2');
  ASSERT_EQ(second["state"], "succeeded");
  ASSERT_EQ((*reg_->AuditModel("m", "", 100))["versions"].size(), 2u);
  ASSERT_TRUE(reg_->DeleteVersion("m", second["version"]).ok());
  EXPECT_EQ((*reg_->AuditModel("m", "", 100))["versions"].size(), 1u);
}

TEST_F(RegistryTest, MalformedRecordsAreCorruptionNotExceptions) {
  EXPECT_EQ(JobRecord::Parse("[]").status().code(), StatusCode::kCorruption);
  EXPECT_EQ(JobRecord::Parse(R"({"id":"x","state":"queued","model":"m","files":"no"})").status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(UploadRecord::Parse(R"({"id":"x","offset":-1,"state":"open","created_at":""})").status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(VersionRecord::Parse(R"({"model":"m","digest":"sha256:zz","created_at":"","mode":"lossless",
                                     "stats":{},"manifest":"{}","base":null})")
                .status()
                .code(),
            StatusCode::kCorruption);
  EXPECT_EQ(ModelRecord::Parse("not json").status().code(), StatusCode::kCorruption);
  UploadRecord u{"abc", 10, true, Sha256::Of("x").ToString(), 10, "t0", "t1"};
  auto back = UploadRecord::Parse(u.ToJson().dump());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ToJson(), u.ToJson());
}

TEST_F(RegistryTest, ACorruptJobRecordFailsItsReadsWithoutTakingTheServerDown) {
  Open();
  ASSERT_TRUE(reg_->meta()->Put(ns::kJobs, "j1", R"({"id":"j1","state":"queued"})").ok());
  auto j = reg_->GetJob("j1");
  EXPECT_EQ(j.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(reg_->GetJob("j2").status().reason(), Reason::kJobUnknown);
}

TEST_F(RegistryTest, AnUploadHasOneWriterOrSealerAtATime) {
  Open();
  auto u = reg_->CreateUpload();
  ASSERT_TRUE(u.ok());
  std::string id = (*u)["id"];
  auto w = reg_->AppendUpload(id, std::nullopt);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(reg_->AppendUpload(id, std::nullopt).status().reason(), Reason::kUploadBusy);
  EXPECT_EQ(reg_->SealUpload(id, Sha256::Of("").ToString()).status().reason(), Reason::kUploadBusy);
  EXPECT_EQ(reg_->DeleteUpload(id).reason(), Reason::kUploadBusy);
  ASSERT_TRUE((*w)->Write("abc").ok());
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ(reg_->SealUpload(id, Sha256::Of("abd").ToString()).status().reason(), Reason::kDigestInvalid);
  auto sealed = reg_->SealUpload(id, Sha256::Of("abc").ToString());
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ((*sealed)["size"], 3);
  EXPECT_EQ(reg_->AppendUpload(id, std::nullopt).status().reason(), Reason::kUploadSealed);
}

TEST_F(RegistryTest, PolicyLevelPicksTheFloatCoder) {
  Open();
  for (const char* level : {"", "fast", "max"}) {
    const std::string model = std::string("lvl") + level;
    json req = {{"files", {{{"path", "model.safetensors"}, {"upload", UploadFloats()}}}},
                {"tags", {"latest"}}};
    if (*level != '\0') req["policy"] = {{"level", level}};
    auto job = reg_->CreateVersion(model, req);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    EXPECT_EQ((*job)["policy"]["level"], *level == '\0' ? "fast" : level);
    auto done = reg_->WaitJob((*job)["id"], 60);
    ASSERT_TRUE(done.ok());
    ASSERT_EQ((*done)["state"], "succeeded") << done->dump();
    EXPECT_EQ(FirstTensorCodec(model), std::string(level) == "max" ? 0x03 : 0x04) << level;
  }
  for (const json& bad : {json("slow"), json(3), json(nullptr)}) {
    json req = {{"files", {{{"path", "model.safetensors"}, {"upload", UploadFloats()}}}},
                {"policy", {{"level", bad}}}};
    auto job = reg_->CreateVersion("bad", req);
    ASSERT_FALSE(job.ok());
    EXPECT_EQ(job.status().reason(), Reason::kPolicyInvalid) << job.status().ToString();
  }
}

namespace cancel {

// True when the batch claims a job (puts its record in the running state without a cancel request).
bool ClaimsAJob(const MetaBatch& batch) {
  for (const auto& op : batch.ops) {
    if (!op.put || op.ns != ns::kJobs) continue;
    json j = json::parse(op.value);
    if (j["state"] == "running" && !j.contains("cancel_requested")) return true;
  }
  return false;
}

// Holds the worker in the first job claim it commits until Release(): Open(gate.Hook()), then
// WaitClaimed() finds that job running.
class ClaimGate {
 public:
  std::function<void(const MetaBatch&)> Hook() {
    return [this](const MetaBatch& batch) {
      if (!ClaimsAJob(batch)) return;
      std::unique_lock<std::mutex> lock(mu_);
      if (claimed_) return;  // the first claim only
      claimed_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    };
  }
  void WaitClaimed() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return claimed_; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool claimed_ = false, released_ = false;
};

}  // namespace cancel

TEST_F(RegistryTest, DeletingARunningJobStopsItWithoutAVersionAndKeepsItsUpload) {
  // The worker is held right after it claims the job, so the DELETE finds it running.
  cancel::ClaimGate gate;
  Open(gate.Hook());
  const std::string upload = UploadFloats();
  json req = {{"files", {{{"path", "model.safetensors"}, {"upload", upload}}}}};
  auto job = reg_->CreateVersion("m", req);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  const std::string id = (*job)["id"];
  gate.WaitClaimed();
  auto c = reg_->CancelJob(id);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->second) << "a running job stops later: 202";
  EXPECT_EQ(c->first["state"], "running");
  EXPECT_EQ(c->first["cancel_requested"], true);
  gate.Release();
  auto done = reg_->WaitJob(id, 60);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ((*done)["state"], "failed");
  EXPECT_EQ((*done)["error"]["code"], "JOB_CANCELLED");
  EXPECT_FALSE(reg_->Resolve("m", "latest").ok()) << "a cancelled job commits no version";
  auto again = reg_->CancelJob(id);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->second) << "a repeated DELETE answers the cancelled job: 200";
  auto report = reg_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ((*report)["ok"], true) << report->dump();
  // The upload was not consumed: the same request succeeds now.
  auto retry = reg_->CreateVersion("m", req);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  auto retried = reg_->WaitJob((*retry)["id"], 60);
  ASSERT_TRUE(retried.ok());
  EXPECT_EQ((*retried)["state"], "succeeded") << retried->dump();
  EXPECT_EQ(reg_->CancelJob((*retry)["id"]).status().reason(), Reason::kJobFinished);
  EXPECT_EQ(reg_->CancelJob("nope").status().reason(), Reason::kJobUnknown);
}

TEST_F(RegistryTest, DeletingAQueuedJobEndsItAtOnce) {
  // The only worker is held on a first job, so a second one stays queued.
  cancel::ClaimGate gate;
  Open(gate.Hook());
  json first = {{"files", {{{"path", "model.safetensors"}, {"upload", Upload('a')}}}}};
  json second = {{"files", {{{"path", "model.safetensors"}, {"upload", Upload('b')}}}}};
  auto j1 = reg_->CreateVersion("m", first);
  ASSERT_TRUE(j1.ok());
  gate.WaitClaimed();
  auto j2 = reg_->CreateVersion("m", second);
  ASSERT_TRUE(j2.ok());
  auto c = reg_->CancelJob((*j2)["id"]);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->second) << "a queued job ends at once: 200";
  EXPECT_EQ(c->first["state"], "failed");
  EXPECT_EQ(c->first["error"]["code"], "JOB_CANCELLED");
  gate.Release();
  auto done1 = reg_->WaitJob((*j1)["id"], 60);
  ASSERT_TRUE(done1.ok());
  EXPECT_EQ((*done1)["state"], "succeeded");
  auto done2 = reg_->GetJob((*j2)["id"]);
  ASSERT_TRUE(done2.ok());
  EXPECT_EQ((*done2)["error"]["code"], "JOB_CANCELLED") << "the worker did not run it after all";
}

TEST_F(RegistryTest, JobRecordsWithoutCancelRequestedStillRead) {
  auto old = JobRecord::Parse(
      R"({"id":"j","state":"running","model":"m","files":[],"base":null,"policy":{},"tags":[],)"
      R"("progress":{"tensors_done":0,"tensors_total":0,"bytes_done":0,"bytes_total":0},)"
      R"("created_at":"t","updated_at":"t"})");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_FALSE(old->cancel_requested);
  EXPECT_FALSE(old->ToJson().contains("cancel_requested"));
  old->cancel_requested = true;
  auto again = JobRecord::Parse(old->ToJson().dump());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->cancel_requested);
}

}  // namespace
}  // namespace deltastore
