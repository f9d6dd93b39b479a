#include "service/registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <random>
#include <tuple>

#include "common/clock.h"
#include "migrations/schema.h"
#include "service/lossy_policy.h"

namespace deltastore {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr char kUploads[] = "uploads";
constexpr char kJobs[] = "jobs";
constexpr char kModels[] = "models";
constexpr char kVersions[] = "versions";
constexpr char kDigests[] = "digests";
constexpr char kTags[] = "tags";
constexpr char kChildren[] = "children";
constexpr char kReleases[] = "releases";  // versions deleted whose chunk references are being dropped
constexpr char kAuditHistory[] = "audit_history";  // audit snapshots (docs/audit.md)

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string NewId() {
  static thread_local std::mt19937_64 rng(
      std::random_device{}() ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016lx%016lx", (unsigned long)rng(), (unsigned long)rng());
  return buf;
}

std::string Key(std::string_view a, std::string_view b) {
  std::string k(a);
  k.push_back('\0');
  k.append(b);
  return k;
}

StatusOr<json> ParseRecord(std::string_view text, std::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corruption(std::string(what) + " record is not JSON");
  return j;
}

StatusOr<json> GetRecord(MetaStore* meta, std::string_view ns, std::string_view key, std::string_view what) {
  DS_ASSIGN_OR_RETURN(std::string text, meta->Get(ns, key));
  return ParseRecord(text, what);
}

Status Invalid(std::string message) {
  return InvalidArgument(std::move(message));
}

bool ValidPath(const std::string& p) {
  if (p.empty() || p.size() > 255 || p.front() == '/' || p.find('\0') != std::string::npos) return false;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string_view seg(p.data() + i, j - i);
    if (seg.empty() || seg == "." || seg == "..") return false;
    i = j + 1;
  }
  return true;
}

bool IsSafetensors(const std::string& path) {
  return path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
}

}  // namespace

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto ok = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!ok(c)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Opening and recovery

Registry::Registry(RegistryOptions options, Stores stores)
    : options_(std::move(options)), stores_(std::move(stores)) {}

StatusOr<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& options) {
  std::error_code ec;
  fs::create_directories(fs::path(options.data_dir) / "uploads", ec);
  if (ec) return IOError("cannot create data dir " + options.data_dir + ": " + ec.message());
  DS_ASSIGN_OR_RETURN(Stores stores, OpenRocksStores({options.data_dir + "/db", options.sync_writes}));
  if (options.wrap_stores) stores = options.wrap_stores(std::move(stores));
  std::unique_ptr<Registry> r(new Registry(options, std::move(stores)));
  DS_RETURN_IF_ERROR(CheckAndMigrate(r->meta(), r->chunks()).status());
  if (!options.recover) return r;
  DS_RETURN_IF_ERROR(r->Recover());
  for (int i = 0; i < std::max(1, options.workers); ++i)
    r->workers_.emplace_back([p = r.get()] { p->WorkerLoop(); });
  return r;
}

Registry::~Registry() {
  Shutdown();
}

void Registry::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

Status Registry::Recover() {
  // Jobs that were queued or running when the process stopped run again from the start.
  bool interrupted = false;
  std::vector<json> requeue;
  DS_RETURN_IF_ERROR(meta()->Scan(kJobs, "", "", [&](std::string_view, std::string_view value) {
    auto j = ParseRecord(value, "job");
    if (j.ok()) {
      std::string state = (*j).value("state", "");
      if (state == "running") interrupted = true;
      if (state == "running" || state == "queued") requeue.push_back(*j);
    }
    return true;
  }));
  for (auto& j : requeue) {
    if (j["state"] == "running") {
      j["state"] = "queued";
      j["restarts"] = j.value("restarts", 0) + 1;
      DS_RETURN_IF_ERROR(UpdateJob(j));
    }
    queue_.push_back(j["id"].get<std::string>());
  }
  // A deletion cut short may have dropped only some of its references.
  std::vector<std::string> releases;
  DS_RETURN_IF_ERROR(meta()->Scan(kReleases, "", "", [&](std::string_view key, std::string_view) {
    releases.emplace_back(key);
    return true;
  }));
  if (interrupted || !releases.empty()) {
    // An interrupted ingest or deletion leaves reference counts off: recount from the manifests.
    DS_ASSIGN_OR_RETURN(uint64_t fixed, RecomputeRefcounts());
    (void)fixed;
    MetaBatch done;
    for (const auto& k : releases) done.Delete(kReleases, k);
    if (!done.empty()) DS_RETURN_IF_ERROR(meta()->Commit(done));
  }
  // Spool files whose upload record is gone (a crash between commit and unlink) are garbage.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(options_.data_dir) / "uploads", ec)) {
    auto rec = meta()->Get(kUploads, entry.path().filename().string());
    if (!rec.ok() && rec.status().code() == StatusCode::kNotFound) fs::remove(entry.path(), ec);
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------------
// Uploads

std::string Registry::SpoolPath(const std::string& id) const {
  return (fs::path(options_.data_dir) / "uploads" / id).string();
}

StatusOr<json> Registry::CreateUpload() {
  size_t open = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kUploads, "", "", [&](std::string_view, std::string_view v) {
    auto j = ParseRecord(v, "upload");
    if (j.ok() && (*j).value("state", "") == "open") ++open;
    return true;
  }));
  if (open >= options_.max_open_uploads) {
    return TooManyUploads("too many open uploads (" + std::to_string(open) + "); seal or delete some first");
  }
  json u = {{"id", NewId()}, {"offset", 0}, {"state", "open"}, {"created_at", NowIso()}};
  int fd = ::open(SpoolPath(u["id"]).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return IOError("cannot create spool file: " + std::string(std::strerror(errno)));
  ::close(fd);
  DS_RETURN_IF_ERROR(meta()->Put(kUploads, u["id"].get<std::string>(), u.dump()));
  return u;
}

StatusOr<json> Registry::GetUpload(const std::string& id) {
  auto u = GetRecord(meta(), kUploads, id, "upload");
  if (!u.ok() && u.status().code() == StatusCode::kNotFound) {
    return UploadUnknown("upload " + id + " not found");
  }
  return u;
}

class SpoolWriter : public UploadWriter {
 public:
  SpoolWriter(Registry* r, json upload, int fd) : r_(r), upload_(std::move(upload)), fd_(fd) {
    offset_ = upload_["offset"].get<uint64_t>();
  }
  ~SpoolWriter() override {
    if (!committed_) (void)Commit();
    if (fd_ >= 0) ::close(fd_);
  }
  Status Write(std::string_view piece) override {
    while (!piece.empty()) {
      ssize_t n = ::pwrite(fd_, piece.data(), piece.size(), static_cast<off_t>(offset_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        if (errno == ENOSPC) return DiskFull("disk full while writing the upload");
        return IOError(std::string("writing upload: ") + std::strerror(errno));
      }
      offset_ += n;
      piece.remove_prefix(n);
    }
    return OkStatus();
  }
  StatusOr<json> Commit() override {
    if (committed_) return upload_;
    committed_ = true;
    Status s;
    if (::fdatasync(fd_) != 0) s = IOError(std::string("fsync of upload failed: ") + std::strerror(errno));
    if (s.ok()) {
      upload_["offset"] = offset_;
      upload_["updated_at"] = NowIso();
      s = r_->meta()->Put(kUploads, upload_["id"].get<std::string>(), upload_.dump());
    }
    {
      std::lock_guard<std::mutex> lock(r_->mu_);
      r_->writing_.erase(upload_["id"].get<std::string>());
    }
    if (!s.ok()) return s;
    return upload_;
  }

 private:
  Registry* r_;
  json upload_;
  int fd_;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

StatusOr<std::unique_ptr<UploadWriter>> Registry::AppendUpload(const std::string& id,
                                                               std::optional<uint64_t> start) {
  std::lock_guard<std::mutex> lock(mu_);
  DS_ASSIGN_OR_RETURN(json u, GetUpload(id));
  if (u["state"] != "open") return UploadSealed("upload " + id + " is sealed");
  if (writing_.count(id)) {
    return UploadBusy("another request is writing upload " + id);
  }
  uint64_t offset = u["offset"].get<uint64_t>();
  if (start && *start != offset) {
    return RangeInvalid("range starts at " + std::to_string(*start) +
                        " but the upload's committed offset is " + std::to_string(offset));
  }
  int fd = ::open(SpoolPath(id).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return IOError("cannot open spool file of upload " + id);
  // Bytes past the committed offset are leftovers of an interrupted request: drop them.
  if (::ftruncate(fd, static_cast<off_t>(offset)) != 0) {
    ::close(fd);
    return IOError("cannot truncate spool file of upload " + id);
  }
  writing_.insert(id);
  return std::unique_ptr<UploadWriter>(new SpoolWriter(this, std::move(u), fd));
}

StatusOr<json> Registry::SealUpload(const std::string& id, const std::string& digest_text) {
  auto expected = Digest::Parse(digest_text);
  if (!expected.ok()) return DigestInvalid("digest must be sha256:<64 hex>");
  std::lock_guard<std::mutex> lock(mu_);
  DS_ASSIGN_OR_RETURN(json u, GetUpload(id));
  if (writing_.count(id)) return UploadBusy("upload " + id + " is being written");
  if (u["state"] == "sealed") {
    if (u["digest"] == expected->ToString()) return u;
    return UploadSealed("upload " + id + " is already sealed");
  }
  uint64_t size = u["offset"].get<uint64_t>();
  int fd = ::open(SpoolPath(id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return DataLoss("spool file of upload " + id + " is missing");
  Sha256 hash;
  std::string buf(1 << 20, '\0');
  uint64_t pos = 0;
  while (pos < size) {
    ssize_t n = ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), size - pos), static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return DataLoss("spool file of upload " + id + " is shorter than its committed offset");
    }
    hash.Update(buf.data(), n);
    pos += n;
  }
  ::close(fd);
  Digest actual = hash.Finish();
  if (actual != *expected) {
    return DigestInvalid("digest mismatch: the " + std::to_string(size) + " bytes received hash to " +
                         actual.ToString());
  }
  u["state"] = "sealed";
  u["digest"] = actual.ToString();
  u["size"] = size;
  u["updated_at"] = NowIso();
  DS_RETURN_IF_ERROR(meta()->Put(kUploads, id, u.dump()));
  return u;
}

Status Registry::DeleteUpload(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DS_ASSIGN_OR_RETURN(json u, GetUpload(id));
  if (writing_.count(id)) return UploadBusy("upload " + id + " is being written");
  DS_RETURN_IF_ERROR(meta()->Delete(kUploads, id));
  std::error_code ec;
  fs::remove(SpoolPath(id), ec);
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------------
// Versions and jobs

StatusOr<Manifest> Registry::LoadManifest(const Digest& digest) {
  {
    std::lock_guard<std::mutex> lock(manifest_cache_mu_);
    auto it = manifest_cache_.find(digest);
    if (it != manifest_cache_.end()) return it->second;
  }
  std::string model;
  DS_RETURN_IF_ERROR(
      meta()->Scan(kDigests, Key(digest.Hex(), ""), "", [&](std::string_view key, std::string_view) {
        model = std::string(key.substr(65));
        return false;
      }));
  if (model.empty()) return NotFound("version " + digest.ToString() + " not found");
  DS_ASSIGN_OR_RETURN(json rec, VersionRecord(model, digest));
  DS_ASSIGN_OR_RETURN(Manifest m, ParseManifest(rec["manifest"].get<std::string>()));
  std::lock_guard<std::mutex> lock(manifest_cache_mu_);
  if (manifest_cache_.size() > 256) manifest_cache_.clear();
  manifest_cache_[digest] = m;
  return m;
}

StatusOr<json> Registry::VersionRecord(const std::string& model, const Digest& digest) {
  auto rec = GetRecord(meta(), kVersions, Key(model, digest.Hex()), "version");
  if (!rec.ok() && rec.status().code() == StatusCode::kNotFound) {
    return VersionUnknown("model " + model + " has no version " + digest.ToString());
  }
  return rec;
}

StatusOr<VersionRef> Registry::Resolve(const std::string& model, const std::string& ref) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  auto m = meta()->Get(kModels, model);
  if (!m.ok()) {
    if (m.status().code() == StatusCode::kNotFound) {
      return ModelUnknown("model " + model + " not found");
    }
    return m.status();
  }
  Digest d;
  if (ref.rfind("sha256:", 0) == 0) {
    auto parsed = Digest::Parse(ref);
    if (!parsed.ok()) return DigestInvalid("malformed digest " + ref);
    d = *parsed;
  } else {
    auto tag = meta()->Get(kTags, Key(model, ref));
    if (!tag.ok()) {
      if (tag.status().code() == StatusCode::kNotFound) {
        return TagUnknown("model " + model + " has no tag " + ref);
      }
      return tag.status();
    }
    DS_ASSIGN_OR_RETURN(d, Digest::Parse(*tag));
  }
  DS_RETURN_IF_ERROR(VersionRecord(model, d).status());
  return VersionRef{model, d};
}

StatusOr<json> Registry::CreateVersion(const std::string& model, const json& request) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  if (!request.is_object()) return Invalid("body must be a JSON object");
  auto files_it = request.find("files");
  if (files_it == request.end() || !files_it->is_array() || files_it->empty()) {
    return Invalid("files must be a non-empty array of {path, upload}");
  }
  json files = json::array();
  std::set<std::string> paths;
  for (const auto& f : *files_it) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("upload") ||
        !f["upload"].is_string()) {
      return Invalid("each file must be {\"path\": string, \"upload\": upload id}");
    }
    std::string path = f["path"], upload = f["upload"];
    if (!ValidPath(path)) return Invalid("invalid file path '" + path + "'");
    if (!paths.insert(path).second) return Invalid("file " + path + " appears twice");
    DS_ASSIGN_OR_RETURN(json u, GetUpload(upload));
    if (u["state"] != "sealed") {
      return UploadNotSealed("upload " + upload + " is not sealed");
    }
    files.push_back({{"path", path}, {"upload", upload}, {"size", u["size"]}, {"digest", u["digest"]}});
  }
  json policy = request.value("policy", json::object());
  if (!policy.is_object()) return Invalid("policy must be an object");
  if (policy.contains("mode") && !policy["mode"].is_string()) return Invalid("policy.mode must be a string");
  std::string mode = policy.value("mode", "lossless");
  if (mode != "lossless" && mode != "lossy") return Invalid("policy.mode must be lossless or lossy");
  if (policy.contains("allow_mismatched_shapes") && !policy["allow_mismatched_shapes"].is_boolean()) {
    return Invalid("policy.allow_mismatched_shapes must be true or false");
  }
  bool allow_mismatch = policy.value("allow_mismatched_shapes", false);
  json policy_record = {{"mode", mode}, {"allow_mismatched_shapes", allow_mismatch}};
  if (mode == "lossy") {
    if (!request.contains("base") || request["base"].is_null()) {
      return PolicyInvalid("lossy mode stores a delta: give a base");
    }
    DS_ASSIGN_OR_RETURN(LossyPolicy lp, ParseLossyPolicy(policy));
    if (!lp.calibration_upload.empty()) {
      DS_ASSIGN_OR_RETURN(json cu, GetUpload(lp.calibration_upload));
      if (cu["state"] != "sealed") {
        return UploadNotSealed("calibration upload is not sealed");
      }
      DS_RETURN_IF_ERROR(Calibration::Open(SpoolPath(lp.calibration_upload)).status());
    }
    policy_record = LossyPolicyJson(lp);
    policy_record["allow_mismatched_shapes"] = allow_mismatch;
  } else {
    for (auto it = policy.begin(); it != policy.end(); ++it) {
      if (it.key() != "mode" && it.key() != "allow_mismatched_shapes") {
        return PolicyInvalid("policy field '" + it.key() + "' applies to lossy mode only");
      }
    }
  }

  json tags = request.value("tags", json::array());
  if (!tags.is_array()) return Invalid("tags must be an array of names");
  for (const auto& t : tags) {
    if (!t.is_string() || !ValidName(t.get<std::string>())) return Invalid("invalid tag " + t.dump());
  }

  json base = nullptr;
  std::optional<Manifest> base_manifest;
  if (request.contains("base") && !request["base"].is_null()) {
    const json& b = request["base"];
    if (!b.is_object() || !b.contains("model") || !b["model"].is_string()) {
      return Invalid("base must be {\"model\": name, \"version\": tag or digest}");
    }
    std::string bref =
        b.contains("version") && b["version"].is_string() ? b["version"].get<std::string>() : "latest";
    DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(b["model"], bref));
    base = {{"model", r.model}, {"digest", r.digest.ToString()}};
    DS_ASSIGN_OR_RETURN(base_manifest, LoadManifest(r.digest));
  }

  // Check the checkpoints now so bad input is a 4xx, not a failed job: headers, and shapes vs the base.
  std::map<std::string, const TensorEntry*> base_tensors;
  if (base_manifest) {
    for (const auto& f : base_manifest->files)
      for (const auto& t : f.tensors) base_tensors[t.name] = &t;
  }
  size_t shared = 0, total = 0;
  std::vector<std::string> mismatched;
  for (const auto& f : files) {
    std::string path = f["path"];
    if (!IsSafetensors(path)) continue;
    auto st = SafetensorsFile::Open(SpoolPath(f["upload"]));
    if (!st.ok()) return st.status().Annotate(path);
    for (const auto& t : (*st)->header().tensors) {
      ++total;
      auto it = base_tensors.find(t.name);
      if (it == base_tensors.end()) continue;
      ++shared;
      if (it->second->dtype != t.dtype || it->second->shape != t.shape) mismatched.push_back(t.name);
    }
  }
  if (base_manifest && total > 0 && shared == 0) {
    return BaseMismatch("the checkpoint shares no tensor name with the base");
  }
  if (!mismatched.empty() && !allow_mismatch) {
    std::string names;
    for (size_t i = 0; i < mismatched.size() && i < 5; ++i) names += (i ? ", " : "") + mismatched[i];
    return BaseMismatch(std::to_string(mismatched.size()) +
                        " tensors differ in dtype or shape from the base (" + names +
                        "); set policy.allow_mismatched_shapes to store them standalone");
  }

  std::string now = NowIso();
  json job = {
      {"id", NewId()},
      {"state", "queued"},
      {"model", model},
      {"files", files},
      {"base", base},
      {"policy", policy_record},
      {"tags", tags},
      {"progress", {{"tensors_done", 0}, {"tensors_total", 0}, {"bytes_done", 0}, {"bytes_total", 0}}},
      {"created_at", now},
      {"updated_at", now}};
  DS_RETURN_IF_ERROR(UpdateJob(job));
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job["id"]);
  }
  cv_.notify_one();
  return job;
}

Status Registry::UpdateJob(const json& job) {
  return meta()->Put(kJobs, job["id"].get<std::string>(), job.dump());
}

StatusOr<json> Registry::GetJob(const std::string& id) {
  auto j = GetRecord(meta(), kJobs, id, "job");
  if (!j.ok() && j.status().code() == StatusCode::kNotFound) {
    return JobUnknown("job " + id + " not found");
  }
  return j;
}

StatusOr<json> Registry::WaitJob(const std::string& id, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    DS_ASSIGN_OR_RETURN(json j, GetJob(id));
    if (j["state"] != "queued" && j["state"] != "running") return j;
    if (std::chrono::steady_clock::now() > deadline) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Registry::WorkerLoop() {
  while (true) {
    std::string id;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // queued jobs stay queued in the store and run after the next start
      id = queue_.front();
      queue_.pop_front();
    }
    RunJob(id);
  }
}

void Registry::RunJob(const std::string& id) {
  auto j = GetJob(id);
  if (!j.ok() || (*j)["state"] != "queued") return;
  json job = *j;
  job["state"] = "running";
  job["started_at"] = NowIso();
  if (!UpdateJob(job).ok()) return;
  ++running_jobs_;
  Status s = ExecuteJob(id, &job);
  --running_jobs_;
  if (s.ok()) {
    ++generation_;
    RecordAuditSnapshot({{"event", "ingest"}, {"model", job["model"]}, {"version", job["version"]}});
  }
  if (!s.ok() && stopping_ && s.code() == StatusCode::kUnavailable) {
    // Parked: the references it took are dropped; it runs from the start after the next start.
    job["state"] = "queued";
    job["updated_at"] = NowIso();
    (void)UpdateJob(job);
    return;
  }
  if (!s.ok()) {
    job["state"] = "failed";
    job["error"] = {{"code", s.wire_code()}, {"message", s.message()}};
    job["updated_at"] = NowIso();
    (void)UpdateJob(job);
  }
}

Status Registry::ExecuteJob(const std::string& id, json* job) {
  const std::string model = (*job)["model"];
  std::unique_ptr<VersionReader> base_reader;
  std::optional<VersionRef> base_ref;
  if (!(*job)["base"].is_null()) {
    DS_ASSIGN_OR_RETURN(Digest bd, Digest::Parse((*job)["base"]["digest"].get<std::string>()));
    base_ref = VersionRef{(*job)["base"]["model"], bd};
    DS_ASSIGN_OR_RETURN(Manifest bm, LoadManifest(bd));
    base_reader = std::make_unique<VersionReader>(chunks(), std::move(bm),
                                                  [this](const Digest& d) { return LoadManifest(d); });
  }
  std::vector<IngestFile> files;
  for (const auto& f : (*job)["files"]) {
    std::string upload = f["upload"];
    DS_ASSIGN_OR_RETURN(json u, GetUpload(upload));
    if (u["state"] != "sealed" || u["digest"] != f["digest"]) {
      return UploadNotSealed("upload " + upload + " changed or was deleted");
    }
    files.push_back({SpoolPath(upload), f["path"]});
  }

  IngestOptions ingest_options;
  std::optional<LossyPolicy> lossy;
  if ((*job)["policy"].value("mode", "lossless") == "lossy") {
    json p = (*job)["policy"];
    p.erase("allow_mismatched_shapes");
    DS_ASSIGN_OR_RETURN(lossy, ParseLossyPolicy(p));
    std::shared_ptr<Calibration> calib;
    if (!lossy->calibration_upload.empty()) {
      DS_ASSIGN_OR_RETURN(calib, Calibration::Open(SpoolPath(lossy->calibration_upload)));
    }
    LossyHooks hooks = MakeLossyHooks(*lossy, calib);
    ingest_options.lossy = std::move(hooks.encode);
    ingest_options.lossy_planner = std::move(hooks.planner);
  }
  ingest_options.cancelled = [this] { return stopping_.load(); };
  IngestStats stats;
  auto last = std::chrono::steady_clock::now();
  ProgressFn progress = [&](const IngestProgress& p) {
    auto now = std::chrono::steady_clock::now();
    if (p.tensors_done != p.tensors_total && now - last < std::chrono::milliseconds(250)) return;
    last = now;
    (*job)["progress"] = {{"phase", p.phase},
                          {"tensors_done", p.tensors_done},
                          {"tensors_total", p.tensors_total},
                          {"bytes_done", p.bytes_done},
                          {"bytes_total", p.bytes_total}};
    (*job)["updated_at"] = NowIso();
    (void)UpdateJob(*job);
  };
  DS_ASSIGN_OR_RETURN(Manifest m,
                      IngestFiles(chunks(), files, base_reader.get(), ingest_options, &stats, progress));
  if (lossy) m.mode = "lossy";
  Digest digest = ManifestDigest(m);

  std::lock_guard<std::mutex> lock(commit_mu_);
  auto release = [&] { (void)ReleaseManifest(chunks(), m); };
  if (base_ref) {
    auto still = VersionRecord(base_ref->model, base_ref->digest);
    if (!still.ok()) {
      release();
      return BaseDeleted("the base version was deleted while the job ran");
    }
  }
  MetaBatch batch;
  auto existing = VersionRecord(model, digest);
  std::string now = NowIso();
  if (existing.ok()) {
    release();  // the same content is already a version of this model: keep one set of references
  } else {
    json stats_json = {{"new_bytes", stats.new_bytes},
                       {"encoded_bytes", stats.encoded_bytes},
                       {"logical_bytes", stats.logical_bytes},
                       {"chunks", stats.chunks},
                       {"new_chunks", stats.new_chunks},
                       {"tensors", stats.tensors},
                       {"tensors_delta", stats.tensors_delta},
                       {"tensors_same", stats.tensors_same},
                       {"tensors_standalone", stats.tensors_standalone},
                       {"tensors_lossy", stats.tensors_lossy}};
    json rec = {{"model", model},
                {"digest", digest.ToString()},
                {"created_at", now},
                {"committed_ns", NowNs()},  // orders versions committed within one second (audit)
                {"base", (*job)["base"]},
                {"mode", m.mode},
                {"stats", stats_json},
                {"manifest", SerializeManifest(m)}};
    if (lossy) rec["quality"] = QualityReport(*lossy, stats, m);
    batch.Put(kVersions, Key(model, digest.Hex()), rec.dump());
  }
  // The index entries go in every time: a re-run after a crash that half-applied this batch puts back
  // what is missing (the version record may have made it without them).
  if (!meta()->Get(kModels, model).ok())
    batch.Put(kModels, model, json{{"name", model}, {"created_at", now}}.dump());
  batch.Put(kDigests, Key(digest.Hex(), model), "");
  if (base_ref) batch.Put(kChildren, Key(base_ref->digest.Hex(), Key(model, digest.Hex())), "");
  for (const auto& t : (*job)["tags"]) batch.Put(kTags, Key(model, t.get<std::string>()), digest.ToString());
  (*job)["state"] = "succeeded";
  (*job)["version"] = digest.ToString();
  (*job)["updated_at"] = now;
  (*job)["progress"]["tensors_done"] = (*job)["progress"]["tensors_total"];
  (*job)["progress"]["bytes_done"] = (*job)["progress"]["bytes_total"];
  batch.Put(kJobs, id, job->dump());
  // The uploads are now stored content: consume them (and a calibration upload, used only here).
  std::vector<std::string> consumed;
  for (const auto& f : (*job)["files"]) consumed.push_back(f["upload"]);
  if (lossy && !lossy->calibration_upload.empty()) consumed.push_back(lossy->calibration_upload);
  for (const auto& u : consumed) batch.Delete(kUploads, u);
  Status s = meta()->Commit(batch);
  if (!s.ok()) {
    if (!existing.ok()) release();
    (*job)["state"] = "running";
    return s;
  }
  std::error_code ec;
  for (const auto& u : consumed) fs::remove(SpoolPath(u), ec);
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------------
// Reading

json Registry::Summary(const json& rec) {
  json out = {{"model", rec["model"]}, {"digest", rec["digest"]}, {"created_at", rec["created_at"]},
              {"base", rec["base"]},   {"mode", rec["mode"]},     {"stats", rec["stats"]}};
  if (rec.contains("quality")) out["quality"] = rec["quality"];
  auto m = ParseManifest(rec["manifest"].get<std::string>());
  if (m.ok()) {
    out["logical_bytes"] = m->LogicalBytes();
    out["stored_bytes"] = m->EncodedBytes();
    json files = json::array();
    for (const auto& f : m->files) {
      files.push_back({{"path", f.path},
                       {"kind", f.kind == FileKind::kSafetensors ? "safetensors" : "blob"},
                       {"size", f.size},
                       {"sha256", f.sha256.ToString()}});
    }
    out["files"] = files;
  }
  json tags = json::array();
  std::string model = rec["model"], digest = rec["digest"];
  (void)meta()->Scan(kTags, Key(model, ""), "", [&](std::string_view key, std::string_view value) {
    if (value == digest) tags.push_back(std::string(key.substr(model.size() + 1)));
    return true;
  });
  out["tags"] = tags;
  return out;
}

StatusOr<json> Registry::ListModels(const std::string& after, size_t limit) {
  json models = json::array();
  std::string next;
  DS_RETURN_IF_ERROR(meta()->Scan(kModels, "", after, [&](std::string_view key, std::string_view value) {
    if (models.size() == limit) {
      next = models.back()["name"];
      return false;
    }
    auto j = ParseRecord(value, "model");
    if (j.ok()) {
      size_t n = 0;
      (void)meta()->Scan(kVersions, Key(key, ""), "", [&](std::string_view, std::string_view) {
        ++n;
        return true;
      });
      models.push_back({{"name", std::string(key)}, {"created_at", (*j)["created_at"]}, {"versions", n}});
    }
    return true;
  }));
  return json{{"models", models}, {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<json> Registry::GetModel(const std::string& model) {
  if (!ValidName(model)) return NameInvalid("invalid model name '" + model + "'");
  auto rec = GetRecord(meta(), kModels, model, "model");
  if (!rec.ok()) {
    if (rec.status().code() == StatusCode::kNotFound) {
      return ModelUnknown("model " + model + " not found");
    }
    return rec.status();
  }
  size_t n = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, Key(model, ""), "", [&](std::string_view, std::string_view) {
    ++n;
    return true;
  }));
  DS_ASSIGN_OR_RETURN(json tags, ListTags(model));
  return json{{"name", model}, {"created_at", (*rec)["created_at"]}, {"versions", n}, {"tags", tags["tags"]}};
}

StatusOr<json> Registry::ListVersions(const std::string& model, const std::string& after, size_t limit) {
  DS_RETURN_IF_ERROR(GetModel(model).status());
  std::string start;
  if (!after.empty()) {
    auto d = Digest::Parse(after);
    if (!d.ok()) return Invalid("after must be a version digest");
    start = Key(model, d->Hex());
  }
  json versions = json::array();
  std::string next;
  DS_RETURN_IF_ERROR(
      meta()->Scan(kVersions, Key(model, ""), start, [&](std::string_view, std::string_view value) {
        if (versions.size() == limit) {
          next = versions.back()["digest"];
          return false;
        }
        auto j = ParseRecord(value, "version");
        if (j.ok()) versions.push_back(Summary(*j));
        return true;
      }));
  return json{{"versions", versions}, {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<json> Registry::GetVersion(const std::string& model, const std::string& ref, bool with_manifest) {
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(json rec, VersionRecord(r.model, r.digest));
  json out = Summary(rec);
  if (with_manifest) out["manifest"] = json::parse(rec["manifest"].get<std::string>());
  return out;
}

StatusOr<OpenVersion> Registry::OpenForRead(const std::string& model, const std::string& ref) {
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(Manifest m, LoadManifest(r.digest));
  OpenVersion v{r.model, r.digest, nullptr, std::nullopt};
  if (m.base) {
    DS_ASSIGN_OR_RETURN(Manifest bm, LoadManifest(*m.base));
    v.base_manifest = std::move(bm);
  }
  v.reader = std::make_shared<VersionReader>(chunks(), std::move(m),
                                             [this](const Digest& d) { return LoadManifest(d); });
  return v;
}

StatusOr<json> Registry::ListTags(const std::string& model) {
  json tags = json::object();
  DS_RETURN_IF_ERROR(
      meta()->Scan(kTags, Key(model, ""), "", [&](std::string_view key, std::string_view value) {
        tags[std::string(key.substr(model.size() + 1))] = std::string(value);
        return true;
      }));
  return json{{"tags", tags}};
}

StatusOr<json> Registry::Stats() {
  DS_ASSIGN_OR_RETURN(ChunkStoreStats cs, chunks()->Stats());
  size_t models = 0, versions = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kModels, "", "", [&](std::string_view, std::string_view) {
    ++models;
    return true;
  }));
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, "", "", [&](std::string_view, std::string_view) {
    ++versions;
    return true;
  }));
  return json{{"chunks", cs.chunks}, {"stored_bytes", cs.bytes}, {"models", models}, {"versions", versions}};
}

// ---------------------------------------------------------------------------------------------------
// Audit

StatusOr<std::shared_ptr<const AuditReport>> Registry::Audit() {
  std::lock_guard<std::mutex> lock(audit_mu_);
  const uint64_t generation = generation_.load();
  if (audit_cache_ && audit_generation_ == generation) return audit_cache_;
  // Pass 1: the commit order of every version (records hold their manifests, so keep only the keys).
  struct Entry {
    std::string created_at;
    uint64_t committed_ns;
    std::string key;
  };
  std::vector<Entry> order;
  Status bad;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, "", "", [&](std::string_view key, std::string_view value) {
    auto rec = ParseRecord(value, "version");
    if (!rec.ok()) {
      bad = rec.status();
      return false;
    }
    const json& c = (*rec)["committed_ns"];
    order.push_back(
        {(*rec).value("created_at", ""), c.is_number_unsigned() ? c.get<uint64_t>() : 0, std::string(key)});
    return true;
  }));
  DS_RETURN_IF_ERROR(bad);
  std::sort(order.begin(), order.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.created_at, a.committed_ns, a.key) < std::tie(b.created_at, b.committed_ns, b.key);
  });
  std::map<std::string, std::vector<std::string>> tags;  // model '\0' digest hex -> tags
  DS_RETURN_IF_ERROR(meta()->Scan(kTags, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    auto d = Digest::Parse(value);
    if (z != std::string_view::npos && d.ok())
      tags[Key(key.substr(0, z), d->Hex())].emplace_back(key.substr(z + 1));
    return true;
  }));
  // Pass 2: each manifest in that order.
  AuditBuilder builder;
  for (const auto& e : order) {
    auto text = meta()->Get(kVersions, e.key);
    if (!text.ok() && text.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
    DS_RETURN_IF_ERROR(text.status());
    DS_ASSIGN_OR_RETURN(json rec, ParseRecord(*text, "version"));
    if (!rec["manifest"].is_string() || !rec["digest"].is_string() || !rec["model"].is_string())
      return Corruption("version record without manifest, digest or model");
    DS_ASSIGN_OR_RETURN(Manifest m, ParseManifest(rec["manifest"].get<std::string>()));
    DS_ASSIGN_OR_RETURN(Digest digest, Digest::Parse(rec["digest"].get<std::string>()));
    AuditVersionInfo info;
    info.model = rec["model"];
    info.digest = digest;
    info.created_at = rec.value("created_at", "");
    info.mode = m.mode;
    if (auto it = tags.find(e.key); it != tags.end()) info.tags = it->second;
    info.quality = rec.contains("quality") ? rec["quality"] : json(nullptr);
    builder.Add(info, m);
  }
  DS_ASSIGN_OR_RETURN(ChunkStoreStats cs, chunks()->Stats());
  audit_cache_ = std::make_shared<const AuditReport>(builder.Finish(NowIso(), cs.bytes, cs.chunks));
  audit_generation_ = generation;
  return audit_cache_;
}

StatusOr<json> Registry::AuditModel(const std::string& model, const std::string& after, size_t limit) {
  DS_RETURN_IF_ERROR(GetModel(model).status());
  if (!after.empty() && !Digest::Parse(after).ok()) return Invalid("after must be a version digest");
  DS_ASSIGN_OR_RETURN(auto report, Audit());
  json versions = json::array();
  std::string next;
  bool started = after.empty();
  for (const auto& v : report->versions) {
    if (v.info.model != model) continue;
    if (!started) {
      started = v.info.digest.ToString() == after;
      continue;
    }
    if (versions.size() == limit) {
      next = versions.back()["digest"];
      break;
    }
    versions.push_back(report->VersionJson(v));
  }
  auto it = report->models.find(model);
  AuditFigures figures = it == report->models.end() ? AuditFigures{} : it->second;
  return json{{"model", model},
              {"generated_at", report->generated_at},
              {"figures", figures.ToJson()},
              {"versions", versions},
              {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<json> Registry::AuditVersion(const std::string& model, const std::string& ref) {
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(auto report, Audit());
  for (const auto& v : report->versions) {
    if (v.info.model == r.model && v.info.digest == r.digest) {
      json out = report->VersionJson(v);
      out["generated_at"] = report->generated_at;
      return out;
    }
  }
  return VersionUnknown("model " + model + " has no version " + r.digest.ToString());
}

StatusOr<json> Registry::AuditHistory(const std::string& after, size_t limit) {
  json snapshots = json::array();
  std::string next;
  DS_RETURN_IF_ERROR(
      meta()->Scan(kAuditHistory, "", after, [&](std::string_view key, std::string_view value) {
        if (snapshots.size() == limit) {
          next = snapshots.back()["id"];
          return false;
        }
        auto j = ParseRecord(value, "audit snapshot");
        if (j.ok()) {
          (*j)["id"] = std::string(key);
          snapshots.push_back(std::move(*j));
        }
        return true;
      }));
  return json{{"snapshots", snapshots}, {"next", next.empty() ? json(nullptr) : json(next)}};
}

StatusOr<std::vector<json>> Registry::RecentAuditHistory(size_t n) {
  std::deque<std::string> keys;
  DS_RETURN_IF_ERROR(meta()->Scan(kAuditHistory, "", "", [&](std::string_view key, std::string_view) {
    keys.emplace_back(key);
    if (keys.size() > n) keys.pop_front();
    return true;
  }));
  std::vector<json> out;
  for (const auto& k : keys) {
    auto j = GetRecord(meta(), kAuditHistory, k, "audit snapshot");
    if (!j.ok()) continue;
    (*j)["id"] = k;
    out.push_back(std::move(*j));
  }
  return out;
}

void Registry::RecordAuditSnapshot(json event) {
  auto report = Audit();
  if (!report.ok()) return;
  json snap = (*report)->TotalsJson();
  snap["at"] = NowIso();
  snap["event"] = std::move(event);
  uint64_t ns;
  {
    std::lock_guard<std::mutex> lock(history_mu_);
    ns = std::max(NowNs(), last_history_ns_ + 1);
    last_history_ns_ = ns;
  }
  char key[24];
  std::snprintf(key, sizeof(key), "%020llu", static_cast<unsigned long long>(ns));
  (void)meta()->Put(kAuditHistory, key, snap.dump());
}

Registry::JobCounts Registry::Jobs() {
  JobCounts c;
  {
    std::lock_guard<std::mutex> lock(mu_);
    c.queued = queue_.size();
  }
  c.running = running_jobs_.load();
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Changing

Status Registry::SetTag(const std::string& model, const std::string& tag, const std::string& version) {
  if (!ValidName(tag)) return NameInvalid("invalid tag '" + tag + "'");
  if (version.rfind("sha256:", 0) != 0) return Invalid("version must be a digest sha256:<hex>");
  std::lock_guard<std::mutex> lock(commit_mu_);
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, version));
  return meta()->Put(kTags, Key(model, tag), r.digest.ToString());
}

Status Registry::DeleteTag(const std::string& model, const std::string& tag) {
  std::lock_guard<std::mutex> lock(commit_mu_);
  DS_RETURN_IF_ERROR(Resolve(model, tag).status());
  return meta()->Delete(kTags, Key(model, tag));
}

StatusOr<json> Registry::DeleteVersion(const std::string& model, const std::string& ref) {
  std::unique_lock<std::mutex> lock(commit_mu_);
  DS_ASSIGN_OR_RETURN(VersionRef r, Resolve(model, ref));
  DS_ASSIGN_OR_RETURN(json rec, VersionRecord(r.model, r.digest));
  std::string child;
  DS_RETURN_IF_ERROR(
      meta()->Scan(kChildren, Key(r.digest.Hex(), ""), "", [&](std::string_view key, std::string_view) {
        std::string_view rest = key.substr(65);
        size_t z = rest.find('\0');
        child = std::string(rest.substr(0, z)) + "@sha256:" + std::string(rest.substr(z + 1));
        return false;
      }));
  if (!child.empty()) {
    return VersionInUse("version is the base of " + child + "; delete that first");
  }
  DS_ASSIGN_OR_RETURN(Manifest m, ParseManifest(rec["manifest"].get<std::string>()));
  MetaBatch batch;
  batch.Delete(kVersions, Key(model, r.digest.Hex()));
  batch.Delete(kDigests, Key(r.digest.Hex(), model));
  if (rec["base"].is_object()) {
    auto bd = Digest::Parse(rec["base"]["digest"].get<std::string>());
    if (bd.ok()) batch.Delete(kChildren, Key(bd->Hex(), Key(model, r.digest.Hex())));
  }
  DS_RETURN_IF_ERROR(
      meta()->Scan(kTags, Key(model, ""), "", [&](std::string_view key, std::string_view value) {
        if (value == r.digest.ToString()) batch.Delete(kTags, key);
        return true;
      }));
  size_t remaining = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, Key(model, ""), "", [&](std::string_view, std::string_view) {
    ++remaining;
    return true;
  }));
  if (remaining <= 1) batch.Delete(kModels, model);
  const std::string release_key = Key(r.digest.Hex(), model);
  batch.Put(kReleases, release_key, "");
  DS_RETURN_IF_ERROR(meta()->Commit(batch));
  {
    std::lock_guard<std::mutex> cache_lock(manifest_cache_mu_);
    manifest_cache_.erase(r.digest);
  }
  DS_RETURN_IF_ERROR(ReleaseManifest(chunks(), m));
  DS_RETURN_IF_ERROR(meta()->Delete(kReleases, release_key));
  lock.unlock();
  ++generation_;
  DS_ASSIGN_OR_RETURN(
      GcStats gc, CollectGarbage({{"event", "delete"}, {"model", model}, {"version", r.digest.ToString()}}));
  return json{{"deleted", r.digest.ToString()}, {"model", model}, {"freed_bytes", gc.bytes_freed}};
}

StatusOr<GcStats> Registry::CollectGarbage() {
  return CollectGarbage({{"event", "gc"}});
}

StatusOr<GcStats> Registry::CollectGarbage(json event) {
  DS_ASSIGN_OR_RETURN(GcStats gc, chunks()->Gc());
  ++generation_;
  event["chunks_deleted"] = gc.chunks_deleted;
  event["bytes_freed"] = gc.bytes_freed;
  RecordAuditSnapshot(std::move(event));
  return gc;
}

StatusOr<json> Registry::Check(bool repair) {
  json problems = json::array();
  std::map<Digest, int64_t> expected;
  uint64_t versions = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, "", "", [&](std::string_view key, std::string_view value) {
    ++versions;
    std::string where(key);
    std::replace(where.begin(), where.end(), '\0', '@');
    auto rec = ParseRecord(value, "version");
    if (!rec.ok() || !(*rec).contains("manifest") || !(*rec)["manifest"].is_string()) {
      problems.push_back({{"kind", "bad_version_record"}, {"version", where}});
      return true;
    }
    auto m = ParseManifest((*rec)["manifest"].get<std::string>());
    if (!m.ok()) {
      problems.push_back({{"kind", "bad_manifest"}, {"version", where}, {"message", m.status().message()}});
      return true;
    }
    if (m->base && !LoadManifest(*m->base).ok()) {
      problems.push_back({{"kind", "missing_base"}, {"version", where}, {"base", m->base->ToString()}});
    }
    for (const auto& d : m->ChunkDigests()) expected[d]++;
    return true;
  }));
  uint64_t nchunks = 0, bytes = 0, garbage = 0, fixed = 0;
  std::set<Digest> present;
  std::vector<std::pair<Digest, int64_t>> fixes;
  DS_RETURN_IF_ERROR(chunks()->ForEach([&](const Digest& d, int64_t count, uint64_t size) {
    ++nchunks;
    bytes += size;
    present.insert(d);
    auto got = chunks()->Get(d);  // verifies the digest
    if (!got.ok()) {
      problems.push_back(
          {{"kind", got.status().code() == StatusCode::kCorruption ? "corrupt_chunk" : "unreadable_chunk"},
           {"chunk", d.ToString()},
           {"message", got.status().message()}});
    }
    auto it = expected.find(d);
    int64_t want = it == expected.end() ? 0 : it->second;
    if (want == 0 && count <= 0) ++garbage;
    if (want != count) {
      problems.push_back(
          {{"kind", "refcount_mismatch"}, {"chunk", d.ToString()}, {"stored", count}, {"expected", want}});
      fixes.emplace_back(d, want);
    }
    return OkStatus();
  }));
  for (const auto& [d, n] : expected) {
    if (!present.count(d))
      problems.push_back({{"kind", "missing_chunk"}, {"chunk", d.ToString()}, {"references", n}});
  }
  if (repair) {
    for (const auto& [d, n] : fixes) {
      DS_RETURN_IF_ERROR(chunks()->SetRefCount(d, n));
      ++fixed;
    }
  }
  DS_ASSIGN_OR_RETURN(uint64_t index_fixed, CheckIndexes(repair, &problems));
  uint64_t pending = 0;
  DS_RETURN_IF_ERROR(meta()->Scan(kReleases, "", "", [&](std::string_view, std::string_view) {
    ++pending;
    return true;
  }));
  DS_RETURN_IF_ERROR(meta()->Scan(kJobs, "", "", [&](std::string_view, std::string_view v) {
    auto j = ParseRecord(v, "job");
    if (j.ok() && (*j).value("state", "") == "running") ++pending;
    return true;
  }));
  json notes = json::array();
  if (pending > 0) {
    notes.push_back(std::to_string(pending) +
                    " interrupted job(s) or deletion(s): the next start runs them again and "
                    "recounts references, which repairs refcount mismatches they caused");
  }
  return json{{"ok", problems.empty()},      {"versions", versions},
              {"chunks", nchunks},           {"notes", notes},
              {"stored_bytes", bytes},       {"garbage_chunks", garbage},
              {"refcounts_repaired", fixed}, {"index_entries_repaired", index_fixed},
              {"problems", problems}};
}

StatusOr<uint64_t> Registry::CheckIndexes(bool repair, json* problems) {
  // What the version records say the indexes must hold...
  struct Want {
    std::set<std::string> models, digests, children, versions;  // keys as stored
  } want;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    if (z == std::string_view::npos) return true;
    const std::string model(key.substr(0, z)), hex(key.substr(z + 1));
    want.versions.insert(std::string(key));
    want.models.insert(model);
    want.digests.insert(Key(hex, model));
    auto rec = ParseRecord(value, "version");
    if (rec.ok() && (*rec)["base"].is_object() && (*rec)["base"]["digest"].is_string()) {
      auto bd = Digest::Parse((*rec)["base"]["digest"].get<std::string>());
      if (bd.ok()) want.children.insert(Key(bd->Hex(), Key(model, hex)));
    }
    return true;
  }));
  // ...against what they hold. Entries without a version go (a deletion cut short); missing ones come
  // back (a version commit cut short).
  MetaBatch fix;
  auto report = [&](const char* kind, const std::string& ns, std::string_view key) {
    std::string where(key);
    std::replace(where.begin(), where.end(), '\0', '@');
    problems->push_back({{"kind", kind}, {"namespace", ns}, {"key", where}});
  };
  auto compare = [&](const char* ns, const std::set<std::string>& expected, bool extra_is_problem) -> Status {
    std::set<std::string> seen;
    DS_RETURN_IF_ERROR(meta()->Scan(ns, "", "", [&](std::string_view key, std::string_view) {
      seen.emplace(key);
      if (extra_is_problem && !expected.count(std::string(key))) {
        report("dangling_index_entry", ns, key);
        fix.Delete(ns, key);
      }
      return true;
    }));
    for (const auto& k : expected) {
      if (seen.count(k)) continue;
      report("missing_index_entry", ns, k);
      if (std::string_view(ns) == kModels) {
        fix.Put(ns, k, json{{"name", k}, {"created_at", NowIso()}}.dump());
      } else {
        fix.Put(ns, k, "");
      }
    }
    return OkStatus();
  };
  DS_RETURN_IF_ERROR(compare(kModels, want.models, true));
  DS_RETURN_IF_ERROR(compare(kDigests, want.digests, true));
  DS_RETURN_IF_ERROR(compare(kChildren, want.children, true));
  // Tags must name a version of their model.
  DS_RETURN_IF_ERROR(meta()->Scan(kTags, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    auto d = Digest::Parse(value);
    if (z == std::string_view::npos || !d.ok() || !want.versions.count(Key(key.substr(0, z), d->Hex()))) {
      report("dangling_tag", kTags, key);
      fix.Delete(kTags, key);
    }
    return true;
  }));
  if (!repair || fix.empty()) return 0;
  DS_RETURN_IF_ERROR(meta()->Commit(fix));
  return fix.ops.size();
}

StatusOr<uint64_t> Registry::RecomputeRefcounts() {
  std::map<Digest, int64_t> expected;
  Status parse_error;
  DS_RETURN_IF_ERROR(meta()->Scan(kVersions, "", "", [&](std::string_view, std::string_view value) {
    auto rec = ParseRecord(value, "version");
    if (!rec.ok()) {
      parse_error = rec.status();
      return false;
    }
    auto m = ParseManifest((*rec)["manifest"].get<std::string>());
    if (!m.ok()) {
      parse_error = m.status();
      return false;
    }
    for (const auto& d : m->ChunkDigests()) expected[d]++;
    return true;
  }));
  DS_RETURN_IF_ERROR(parse_error);
  std::vector<std::pair<Digest, int64_t>> fixes;
  DS_RETURN_IF_ERROR(chunks()->ForEach([&](const Digest& d, int64_t count, uint64_t) {
    auto it = expected.find(d);
    int64_t want = it == expected.end() ? 0 : it->second;
    if (want != count) fixes.emplace_back(d, want);
    return OkStatus();
  }));
  for (const auto& [d, n] : fixes) DS_RETURN_IF_ERROR(chunks()->SetRefCount(d, n));
  return fixes.size();
}

}  // namespace deltastore
