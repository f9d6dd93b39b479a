#include "service/records.h"

#include <chrono>
#include <cstdio>
#include <random>

namespace deltastore {

using json = nlohmann::json;

namespace {

// Checked access to the fields of one stored object: the first wrong or missing field is remembered
// and reported as kCorruption; accessors then return empty values.
class Fields {
 public:
  Fields(const json& j, std::string_view what) : j_(j), what_(what) {}

  std::string Str(const char* key, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return {};
    if (!v->is_string()) return Fail(key, "a string"), std::string();
    return v->get<std::string>();
  }
  uint64_t U64(const char* key, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return 0;
    if (!v->is_number_unsigned()) return Fail(key, "a non-negative integer"), 0;
    return v->get<uint64_t>();
  }
  bool Bool(const char* key, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return false;
    if (!v->is_boolean()) return Fail(key, "true or false"), false;
    return v->get<bool>();
  }
  // Any JSON value; null when absent and not required.
  json Any(const char* key, bool required = true) {
    const json* v = Find(key, required);
    return v == nullptr ? json(nullptr) : *v;
  }
  std::optional<BaseRef> Base(const char* key) {
    const json* v = Find(key, false);
    if (v == nullptr || v->is_null()) return std::nullopt;
    Fields b(*v, what_);
    BaseRef r{b.Str("model"), b.Str("digest")};
    if (!b.status().ok() && status_.ok()) status_ = b.status();
    return r;
  }
  const Status& status() const { return status_; }

 private:
  const json* Find(const char* key, bool required) {
    if (!j_.is_object()) return Fail(key, "in an object"), nullptr;
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) Fail(key, "present");
      return nullptr;
    }
    return &*it;
  }
  void Fail(const char* key, const char* expected) {
    if (status_.ok()) status_ = Corruption(std::string(what_) + " record: '" + key + "' is not " + expected);
  }

  const json& j_;
  std::string_view what_;
  Status status_;
};

json BaseJson(const std::optional<BaseRef>& base) {
  if (!base) return nullptr;
  return {{"model", base->model}, {"digest", base->digest}};
}

}  // namespace

std::string Key(std::string_view a, std::string_view b) {
  std::string k(a);
  k.push_back('\0');
  k.append(b);
  return k;
}

std::string NewId() {
  static thread_local std::mt19937_64 rng(
      std::random_device{}() ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016lx%016lx", (unsigned long)rng(), (unsigned long)rng());
  return buf;
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

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

bool ValidPath(std::string_view p) {
  if (p.empty() || p.size() > 255 || p.front() == '/' || p.find('\0') != std::string_view::npos) return false;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view seg = p.substr(i, j - i);
    if (seg.empty() || seg == "." || seg == "..") return false;
    i = j + 1;
  }
  return true;
}

StatusOr<json> ParseRecordJson(std::string_view text, std::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Corruption(std::string(what) + " record is not a JSON object");
  return j;
}

json UploadRecord::ToJson() const {
  json u = {
      {"id", id}, {"offset", offset}, {"state", sealed ? "sealed" : "open"}, {"created_at", created_at}};
  if (!updated_at.empty()) u["updated_at"] = updated_at;
  if (sealed) {
    u["digest"] = digest;
    u["size"] = size;
  }
  return u;
}

StatusOr<UploadRecord> UploadRecord::Parse(std::string_view text) {
  DS_ASSIGN_OR_RETURN(json j, ParseRecordJson(text, "upload"));
  Fields f(j, "upload");
  UploadRecord u;
  u.id = f.Str("id");
  u.offset = f.U64("offset");
  std::string state = f.Str("state");
  u.sealed = state == "sealed";
  if (state != "open" && state != "sealed" && f.status().ok()) return Corruption("upload record: bad state");
  u.created_at = f.Str("created_at");
  u.updated_at = f.Str("updated_at", false);
  if (u.sealed) {
    u.digest = f.Str("digest");
    u.size = f.U64("size");
  }
  DS_RETURN_IF_ERROR(f.status());
  return u;
}

json JobRecord::ToJson() const {
  json jf = json::array();
  for (const auto& f : files)
    jf.push_back({{"path", f.path}, {"upload", f.upload}, {"size", f.size}, {"digest", f.digest}});
  json p = {{"tensors_done", progress.tensors_done},
            {"tensors_total", progress.tensors_total},
            {"bytes_done", progress.bytes_done},
            {"bytes_total", progress.bytes_total}};
  if (!progress.phase.empty()) p["phase"] = progress.phase;
  json j = {{"id", id},
            {"state", state},
            {"model", model},
            {"files", jf},
            {"base", BaseJson(base)},
            {"policy", policy},
            {"tags", tags},
            {"progress", p},
            {"created_at", created_at},
            {"updated_at", updated_at}};
  if (!started_at.empty()) j["started_at"] = started_at;
  if (!version.empty()) j["version"] = version;
  if (!error_code.empty()) j["error"] = {{"code", error_code}, {"message", error_message}};
  if (restarts > 0) j["restarts"] = restarts;
  if (!node.empty()) j["node"] = node;
  if (lease_until_ms > 0) j["lease_until_ms"] = lease_until_ms;
  if (cancel_requested) j["cancel_requested"] = true;
  return j;
}

StatusOr<JobRecord> JobRecord::Parse(std::string_view text) {
  DS_ASSIGN_OR_RETURN(json j, ParseRecordJson(text, "job"));
  Fields f(j, "job");
  JobRecord r;
  r.id = f.Str("id");
  r.state = f.Str("state");
  r.model = f.Str("model");
  json files = f.Any("files");
  if (files.is_array()) {
    for (const auto& e : files) {
      Fields ff(e, "job file");
      r.files.push_back({ff.Str("path"), ff.Str("upload"), ff.U64("size"), ff.Str("digest")});
      DS_RETURN_IF_ERROR(ff.status());
    }
  } else if (f.status().ok()) {
    return Corruption("job record: 'files' is not an array");
  }
  r.base = f.Base("base");
  r.policy = f.Any("policy");
  json tags = f.Any("tags");
  for (const auto& t : tags) {
    if (!t.is_string()) return Corruption("job record: a tag is not a string");
    r.tags.push_back(t.get<std::string>());
  }
  json p = f.Any("progress");
  Fields pf(p, "job progress");
  r.progress = {pf.Str("phase", false), pf.U64("tensors_done"), pf.U64("tensors_total"), pf.U64("bytes_done"),
                pf.U64("bytes_total")};
  DS_RETURN_IF_ERROR(pf.status());
  r.created_at = f.Str("created_at");
  r.updated_at = f.Str("updated_at");
  r.started_at = f.Str("started_at", false);
  r.version = f.Str("version", false);
  json err = f.Any("error", false);
  if (!err.is_null()) {
    Fields ef(err, "job error");
    r.error_code = ef.Str("code");
    r.error_message = ef.Str("message");
    DS_RETURN_IF_ERROR(ef.status());
  }
  r.restarts = f.U64("restarts", false);
  r.node = f.Str("node", false);
  r.lease_until_ms = f.U64("lease_until_ms", false);
  r.cancel_requested = f.Bool("cancel_requested", false);  // absent in records written before DELETE
  DS_RETURN_IF_ERROR(f.status());
  return r;
}

json VersionRecord::ToJson() const {
  json j = {{"model", model},           {"digest", digest.ToString()},
            {"created_at", created_at}, {"committed_ns", committed_ns},
            {"base", BaseJson(base)},   {"mode", mode},
            {"stats", stats},           {"manifest", manifest}};
  if (!quality.is_null()) j["quality"] = quality;
  return j;
}

StatusOr<VersionRecord> VersionRecord::Parse(std::string_view text) {
  DS_ASSIGN_OR_RETURN(json j, ParseRecordJson(text, "version"));
  Fields f(j, "version");
  VersionRecord r;
  r.model = f.Str("model");
  std::string digest = f.Str("digest");
  r.created_at = f.Str("created_at");
  r.committed_ns = f.U64("committed_ns", false);  // absent in records of format version 1 stores
  r.base = f.Base("base");
  r.mode = f.Str("mode");
  r.stats = f.Any("stats");
  r.manifest = f.Str("manifest");
  r.quality = f.Any("quality", false);
  DS_RETURN_IF_ERROR(f.status());
  auto d = Digest::Parse(digest);
  if (!d.ok()) return Corruption("version record: malformed digest");
  r.digest = *d;
  return r;
}

json ModelRecord::ToJson() const {
  return {{"name", name}, {"created_at", created_at}};
}

StatusOr<ModelRecord> ModelRecord::Parse(std::string_view text) {
  DS_ASSIGN_OR_RETURN(json j, ParseRecordJson(text, "model"));
  Fields f(j, "model");
  ModelRecord r{f.Str("name"), f.Str("created_at")};
  DS_RETURN_IF_ERROR(f.status());
  return r;
}

}  // namespace deltastore
