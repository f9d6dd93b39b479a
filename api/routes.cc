#include "api/routes.h"

#include <nlohmann/json.hpp>

#include "api/hf_routes.h"
#include "api/metrics.h"
#include "api/tensor_routes.h"
#include "api/ui.h"
#include "gpu/gpu_api.h"
#include "service/container.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

Response JsonOk(int status, const json& body) {
  return Response::Json(status, body.dump());
}

template <typename T>
Response Reply(const StatusOr<T>& r, int status = 200) {
  if (!r.ok()) return Response::Error(r.status());
  return JsonOk(status, *r);
}

StatusOr<size_t> Limit(const Request& req) {
  std::string v = req.Query("limit", "100");
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 1 || n > 1000)
    return InvalidArgument("limit must be between 1 and 1000");
  return static_cast<size_t>(n);
}

void UploadHeaders(Response* r, const json& u) {
  uint64_t offset = u.value("offset", uint64_t{0});
  r->headers["location"] = "/v1/uploads/" + u["id"].get<std::string>();
  r->headers["upload-offset"] = std::to_string(offset);
  r->headers["range"] = "0-" + (offset == 0 ? std::string("0") : std::to_string(offset - 1));
  r->headers["docker-upload-uuid"] = u["id"].get<std::string>();
}

Response UploadReply(int status, const StatusOr<json>& u) {
  if (!u.ok()) return Response::Error(u.status());
  Response r = JsonOk(status, *u);
  UploadHeaders(&r, *u);
  return r;
}

// Content-Range: "bytes <start>-<end>[/<total>]" or the OCI form "<start>-<end>".
bool ParseContentRange(std::string v, uint64_t* start, uint64_t* end) {
  if (v.rfind("bytes ", 0) == 0) v = v.substr(6);
  size_t slash = v.find('/');
  if (slash != std::string::npos) v = v.substr(0, slash);
  size_t dash = v.find('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 >= v.size()) return false;
  try {
    size_t used = 0;
    *start = std::stoull(v.substr(0, dash), &used);
    if (used != dash) return false;
    *end = std::stoull(v.substr(dash + 1), &used);
    if (used != v.size() - dash - 1) return false;
  } catch (...) {
    return false;
  }
  return *end >= *start;
}

// Writes a request body into an upload, then finishes with `finish` (reply for PATCH, seal for PUT/POST).
class UploadBody : public BodyConsumer {
 public:
  // `discard`, when set, drops the whole upload if the body does not arrive or does not seal (one-shot
  // uploads: the client never learnt their id, so nobody could resume or delete them).
  UploadBody(std::unique_ptr<UploadWriter> writer, std::optional<uint64_t> expected_len,
             std::function<Response(const json&)> finish, std::function<void()> discard = nullptr)
      : writer_(std::move(writer)),
        expected_(expected_len),
        finish_(std::move(finish)),
        discard_(std::move(discard)) {}
  Status Write(std::string_view piece) override {
    received_ += piece.size();
    if (expected_ && received_ > *expected_) {
      return ContentRangeMismatch("body is longer than its Content-Range");
    }
    return writer_->Write(piece);
  }
  Response Finish() override {
    if (expected_ && received_ != *expected_) {
      (void)writer_->Commit();
      return Response::Error(ContentRangeMismatch("body length differs from its Content-Range"));
    }
    auto u = writer_->Commit();
    Response r = u.ok() ? finish_(*u) : Response::Error(u.status());
    if (r.status >= 400 && discard_) Discard();
    return r;
  }
  void Abort() override {
    (void)writer_->Commit();
    if (discard_) Discard();
  }

 private:
  void Discard() {
    writer_.reset();
    discard_();
  }
  std::unique_ptr<UploadWriter> writer_;
  std::optional<uint64_t> expected_;
  std::function<Response(const json&)> finish_;
  std::function<void()> discard_;
  uint64_t received_ = 0;
};

// Consumes (and refuses) a body on a route that takes none.
class NoBody : public BodyConsumer {
 public:
  explicit NoBody(Response r) : r_(std::move(r)) {}
  Status Write(std::string_view piece) override {
    if (!piece.empty())
      return InvalidArgument("this request takes no body (give ?digest= for a one-shot upload)");
    return OkStatus();
  }
  Response Finish() override { return r_; }

 private:
  Response r_;
};

// Answers with a refusal after reading (and dropping) a small body, so the client sees the answer
// rather than a reset; a larger body aborts with the same refusal and the connection closes.
class Discard : public BodyConsumer {
 public:
  Discard(Status refusal, Headers headers) : refusal_(std::move(refusal)), headers_(std::move(headers)) {}
  Status Write(std::string_view piece) override {
    seen_ += piece.size();
    if (seen_ > (1u << 20)) return refusal_;
    return OkStatus();
  }
  Response Finish() override {
    Response r = Response::Error(refusal_);
    for (auto& [k, v] : headers_) r.headers[k] = v;
    return r;
  }

 private:
  Status refusal_;
  Headers headers_;
  uint64_t seen_ = 0;
};

struct ByteRange {
  uint64_t begin, end;  // [begin, end)
};

// One "bytes=" range; nullopt when absent or not understood (serve the whole file); `unsatisfiable`
// when it lies outside the file.
std::optional<ByteRange> ParseRange(const std::string& v, uint64_t size, bool* unsatisfiable) {
  *unsatisfiable = false;
  if (v.rfind("bytes=", 0) != 0 || v.find(',') != std::string::npos) return std::nullopt;
  std::string spec = v.substr(6);
  size_t dash = spec.find('-');
  if (dash == std::string::npos) return std::nullopt;
  try {
    if (dash == 0) {
      uint64_t n = std::stoull(spec.substr(1));
      if (n == 0) {
        *unsatisfiable = true;
        return std::nullopt;
      }
      n = std::min(n, size);
      return ByteRange{size - n, size};
    }
    uint64_t a = std::stoull(spec.substr(0, dash));
    uint64_t b = dash + 1 < spec.size() ? std::stoull(spec.substr(dash + 1)) + 1 : size;
    if (a >= size) {
      *unsatisfiable = true;
      return std::nullopt;
    }
    if (b <= a) return std::nullopt;
    return ByteRange{a, std::min(b, size)};
  } catch (...) {
    return std::nullopt;
  }
}

bool EtagMatches(const std::string& if_none_match, const std::string& etag) {
  if (if_none_match.empty()) return false;
  if (if_none_match == "*") return true;
  size_t pos = 0;
  while (pos < if_none_match.size()) {
    size_t comma = if_none_match.find(',', pos);
    std::string item =
        if_none_match.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.rfind("W/", 0) == 0) item = item.substr(2);
    if (item == etag) return true;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return false;
}

Response DownloadFile(Registry* reg, Request& req) {
  if (req.query.count("tensors")) return DownloadTensors(reg, req);
  auto v = reg->OpenForRead(req.params[0], req.params[1]);
  if (!v.ok()) return Response::Error(v.status());
  const FileEntry* file = v->reader->manifest().FindFile(req.params[2]);
  if (file == nullptr) {
    return Response::Error(FileUnknown("version has no file " + req.params[2]));
  }
  std::string etag = "\"" + file->sha256.ToString() + "\"";
  Response r;
  r.headers["etag"] = etag;
  r.headers["accept-ranges"] = "bytes";
  r.headers["content-type"] = "application/octet-stream";
  r.headers["docker-content-digest"] = file->sha256.ToString();
  if (EtagMatches(req.Header("if-none-match"), etag)) {
    r.status = 304;
    return r;
  }
  uint64_t begin = 0, end = file->size;
  bool unsatisfiable = false;
  auto range = ParseRange(req.Header("range"), file->size, &unsatisfiable);
  if (unsatisfiable) {
    Response e = Response::Error(
        RangeNotSatisfiable("range outside of the file's " + std::to_string(file->size) + " bytes"));
    e.headers["content-range"] = "bytes */" + std::to_string(file->size);
    return e;
  }
  if (range) {
    begin = range->begin;
    end = range->end;
    r.status = 206;
    r.headers["content-range"] =
        "bytes " + std::to_string(begin) + "-" + std::to_string(end - 1) + "/" + std::to_string(file->size);
  }
  r.content_length = end - begin;
  auto reader = v->reader;
  auto streamer = std::make_shared<FileStreamer>(reader.get(), file, begin, end, /*verify=*/true);
  r.stream = [reader, streamer]() { return streamer->Next(); };
  return r;
}

Response DownloadDelta(Registry* reg, Request& req) {
  auto v = reg->OpenForRead(req.params[0], req.params[1]);
  if (!v.ok()) return Response::Error(v.status());
  auto streamer = std::make_shared<ContainerStreamer>(reg->chunks(), v->reader->manifest(), v->base_manifest);
  Response r;
  r.headers["content-type"] = "application/vnd.deltastore.container.v1";
  r.headers["content-disposition"] =
      "attachment; filename=\"" + v->model + "-" + v->digest.Hex().substr(0, 12) + ".dsc\"";
  r.headers["etag"] = "\"" + v->digest.ToString() + "\"";
  r.content_length = streamer->size();
  auto reader = v->reader;
  r.stream = [reader, streamer]() { return streamer->Next(); };
  return r;
}

Response MetricsPage(Registry* reg, const Metrics& metrics) {
  PromWriter w;
  metrics.Render(&w);
  Registry::JobCounts jobs = reg->Jobs();
  w.Family("deltastore_jobs_queued", "gauge", "Compression jobs waiting for a worker.");
  w.Sample("deltastore_jobs_queued", {}, double(jobs.queued));
  w.Family("deltastore_jobs_running", "gauge", "Compression jobs running.");
  w.Sample("deltastore_jobs_running", {}, double(jobs.running));
  auto audit = reg->Audit();
  w.Family("deltastore_audit_up", "gauge", "1 when the storage audit below could be computed.");
  w.Sample("deltastore_audit_up", {}, audit.ok() ? 1 : 0);
  if (audit.ok()) {
    const AuditReport& a = **audit;
    w.Family("deltastore_chunk_store_bytes", "gauge", "Encoded bytes in the chunk store.");
    w.Sample("deltastore_chunk_store_bytes", {}, double(a.chunk_store_bytes));
    w.Family("deltastore_chunk_store_chunks", "gauge", "Chunks in the chunk store.");
    w.Sample("deltastore_chunk_store_chunks", {}, double(a.chunk_store_chunks));
    w.Family("deltastore_models", "gauge", "Models with at least one version.");
    w.Sample("deltastore_models", {}, double(a.models.size()));
    w.Family("deltastore_versions", "gauge", "Stored versions.");
    w.Sample("deltastore_versions", {}, double(a.total.versions));
    w.Family("deltastore_logical_bytes", "gauge", "Bytes users uploaded, over every stored version.");
    w.Sample("deltastore_logical_bytes", {}, double(a.total.logical_bytes));
    w.Family("deltastore_stored_bytes", "gauge",
             "Encoded bytes of the chunks the stored versions reference.");
    w.Sample("deltastore_stored_bytes", {}, double(a.total.stored_bytes));
    w.Family("deltastore_saved_bytes", "gauge",
             "Bytes saved, by kind (dedup, lossless, lossy); see docs/audit.md.");
    w.Sample("deltastore_saved_bytes", {{"kind", "dedup"}}, double(a.total.saved_dedup_bytes));
    w.Sample("deltastore_saved_bytes", {{"kind", "lossless"}}, double(a.total.saved_lossless_bytes));
    w.Sample("deltastore_saved_bytes", {{"kind", "lossy"}}, double(a.total.saved_lossy_bytes));
    w.Family("deltastore_model_logical_bytes", "gauge", "Bytes users uploaded, per model.");
    for (const auto& [m, f] : a.models)
      w.Sample("deltastore_model_logical_bytes", {{"model", m}}, double(f.logical_bytes));
    w.Family("deltastore_model_stored_bytes", "gauge",
             "Encoded bytes stored first by each model's versions.");
    for (const auto& [m, f] : a.models)
      w.Sample("deltastore_model_stored_bytes", {{"model", m}}, double(f.stored_bytes));
    w.Family("deltastore_model_saved_bytes", "gauge", "Bytes saved per model, by kind.");
    for (const auto& [m, f] : a.models) {
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "dedup"}},
               double(f.saved_dedup_bytes));
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "lossless"}},
               double(f.saved_lossless_bytes));
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "lossy"}},
               double(f.saved_lossy_bytes));
    }
  }
  Response resp;
  resp.status = 200;
  resp.headers["content-type"] = kPrometheusContentType;
  resp.body = w.text();
  return resp;
}

}  // namespace

std::shared_ptr<Router> BuildRouter(Registry* reg, ApiInfo info, AuthOptions auth,
                                    std::shared_ptr<Metrics> metrics) {
  auto r = std::make_shared<Router>();
  if (!metrics) metrics = std::make_shared<Metrics>();
  if (reg != nullptr) r->SetAuthorizer(MakeAuthorizer(reg, auth));
  r->Add(
      "GET", "/healthz",
      [info](Request&) {
        return Response::Json(200, json{{"status", "ok"}, {"version", info.version}}.dump());
      },
      Scope::kNone);
  r->Add(
      "GET", "/readyz",
      [info, reg](Request&) {
        if (reg == nullptr) return Response::Error(Unavailable("registry is not open"));
        // The compute backend is loaded by the first lossy job; report its device once it is.
        std::string device = info.compute_device;
        if (GpuApiLoaded()) {
          auto d = (*LoadGpuApi())->probe();
          device = d.ok() ? d->name : "unavailable: " + d.status().message();
        }
        return Response::Json(200, json{{"status", "ready"}, {"compute_device", device}}.dump());
      },
      Scope::kNone);
  if (reg == nullptr) return r;

  // Uploads.
  r->AddStreaming("POST", "/v1/uploads", [reg](Request& req) -> StatusOr<std::unique_ptr<BodyConsumer>> {
    DS_ASSIGN_OR_RETURN(json u, reg->CreateUpload());
    std::string digest = req.Query("digest");
    if (digest.empty()) return std::unique_ptr<BodyConsumer>(new NoBody(UploadReply(202, u)));
    DS_ASSIGN_OR_RETURN(auto writer, reg->AppendUpload(u["id"], 0));
    std::string id = u["id"];
    return std::unique_ptr<BodyConsumer>(new UploadBody(
        std::move(writer), std::nullopt,
        [reg, id, digest](const json&) { return UploadReply(201, reg->SealUpload(id, digest)); },
        [reg, id] { (void)reg->DeleteUpload(id); }));
  });
  r->AddStreaming(
      "PATCH", "/v1/uploads/{id}", [reg](Request& req) -> StatusOr<std::unique_ptr<BodyConsumer>> {
        std::optional<uint64_t> start, len;
        std::string cr = req.Header("content-range");
        if (!cr.empty()) {
          uint64_t a = 0, b = 0;
          if (!ParseContentRange(cr, &a, &b)) {
            return BadRequest("malformed Content-Range '" + cr + "'");
          }
          start = a;
          len = b - a + 1;
        }
        auto writer = reg->AppendUpload(req.params[0], start);
        if (!writer.ok()) {
          Headers headers;
          if (auto u = reg->GetUpload(req.params[0]); u.ok()) {
            headers["upload-offset"] = std::to_string((*u)["offset"].get<uint64_t>());
            headers["location"] = "/v1/uploads/" + req.params[0];
          }
          return std::unique_ptr<BodyConsumer>(new Discard(writer.status(), std::move(headers)));
        }
        return std::unique_ptr<BodyConsumer>(
            new UploadBody(std::move(*writer), len, [](const json& u) { return UploadReply(202, u); }));
      });
  r->AddStreaming("PUT", "/v1/uploads/{id}", [reg](Request& req) -> StatusOr<std::unique_ptr<BodyConsumer>> {
    std::string id = req.params[0], digest = req.Query("digest");
    if (digest.empty()) return DigestInvalid("PUT needs ?digest=sha256:<hex>");
    auto seal = [reg, id, digest](const json&) { return UploadReply(201, reg->SealUpload(id, digest)); };
    std::string cl = req.Header("content-length");
    if (cl.empty() || cl == "0") {
      return std::unique_ptr<BodyConsumer>(new NoBody(seal(json::object())));
    }
    DS_ASSIGN_OR_RETURN(auto writer, reg->AppendUpload(id, std::nullopt));
    return std::unique_ptr<BodyConsumer>(new UploadBody(std::move(writer), std::nullopt, seal));
  });
  r->Add("GET", "/v1/uploads/{id}",
         [reg](Request& req) { return UploadReply(200, reg->GetUpload(req.params[0])); });
  r->Add("DELETE", "/v1/uploads/{id}", [reg](Request& req) {
    Status s = reg->DeleteUpload(req.params[0]);
    if (!s.ok()) return Response::Error(s);
    Response resp;
    resp.status = 204;
    return resp;
  });

  // Versions and jobs.
  r->Add("POST", "/v1/models/{model}/versions", [reg](Request& req) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) return Response::Error(BodyInvalid("body is not valid JSON"));
    auto job = reg->CreateVersion(req.params[0], body);
    if (!job.ok()) return Response::Error(job.status());
    Response resp = JsonOk(202, json{{"job", *job}});
    resp.headers["location"] = "/v1/jobs/" + (*job)["id"].get<std::string>();
    return resp;
  });
  r->Add("GET", "/v1/jobs/{id}", [reg](Request& req) { return Reply(reg->GetJob(req.params[0])); });

  // Reading.
  r->Add("GET", "/v1/models", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->ListModels(req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/models/{model}", [reg](Request& req) { return Reply(reg->GetModel(req.params[0])); });
  r->Add("GET", "/v1/models/{model}/versions", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->ListVersions(req.params[0], req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/models/{model}/versions/{ref}", [reg](Request& req) {
    return Reply(reg->GetVersion(req.params[0], req.params[1], /*with_manifest=*/true));
  });
  r->Add("GET", "/v1/models/{model}/versions/{ref}/files/{path...}",
         [reg](Request& req) { return DownloadFile(reg, req); });
  r->Add("GET", "/v1/models/{model}/versions/{ref}/delta",
         [reg](Request& req) { return DownloadDelta(reg, req); });
  r->Add("GET", "/v1/models/{model}/tags", [reg](Request& req) {
    auto m = reg->GetModel(req.params[0]);
    if (!m.ok()) return Response::Error(m.status());
    return Reply(reg->ListTags(req.params[0]));
  });
  r->Add("GET", "/v1/stats", [reg](Request&) { return Reply(reg->Stats()); });

  // Audit, metrics and the page.
  r->Add("GET", "/v1/audit", [reg](Request&) {
    auto a = reg->Audit();
    if (!a.ok()) return Response::Error(a.status());
    return JsonOk(200, (*a)->ToJson());
  });
  r->Add("GET", "/v1/audit/history", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->AuditHistory(req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/audit/models/{model}", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->AuditModel(req.params[0], req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/audit/models/{model}/versions/{ref}",
         [reg](Request& req) { return Reply(reg->AuditVersion(req.params[0], req.params[1])); });
  r->Add("GET", "/metrics", [reg, metrics](Request&) { return MetricsPage(reg, *metrics); });
  r->Add("GET", "/ui", [reg](Request&) {
    auto a = reg->Audit();
    if (!a.ok()) return Response::Error(a.status());
    auto history = reg->RecentAuditHistory(200);
    if (!history.ok()) return Response::Error(history.status());
    Response resp;
    resp.status = 200;
    resp.headers["content-type"] = "text/html; charset=utf-8";
    resp.headers["cache-control"] = "no-store";
    resp.body = RenderUiPage(**a, *history);
    return resp;
  });

  // Changing.
  r->Add("PUT", "/v1/models/{model}/tags/{tag}", [reg](Request& req) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("version") ||
        !body["version"].is_string()) {
      return Response::Error(BodyInvalid("body must be {\"version\": \"sha256:...\"}"));
    }
    Status s = reg->SetTag(req.params[0], req.params[1], body["version"]);
    if (!s.ok()) return Response::Error(s);
    return JsonOk(200, json{{"model", req.params[0]}, {"tag", req.params[1]}, {"version", body["version"]}});
  });
  r->Add("DELETE", "/v1/models/{model}/tags/{tag}", [reg](Request& req) {
    Status s = reg->DeleteTag(req.params[0], req.params[1]);
    if (!s.ok()) return Response::Error(s);
    Response resp;
    resp.status = 204;
    return resp;
  });
  r->Add("DELETE", "/v1/models/{model}/versions/{ref}",
         [reg](Request& req) { return Reply(reg->DeleteVersion(req.params[0], req.params[1])); });
  r->Add(
      "POST", "/v1/gc",
      [reg](Request&) {
        auto gc = reg->CollectGarbage();
        if (!gc.ok()) return Response::Error(gc.status());
        return JsonOk(200, json{{"chunks_deleted", gc->chunks_deleted}, {"bytes_freed", gc->bytes_freed}});
      },
      Scope::kAdmin);

  // Tokens (admin).
  r->Add(
      "POST", "/v1/tokens",
      [reg](Request& req) {
        json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body["scope"].is_string() ||
            (body.contains("name") && !body["name"].is_string())) {
          return Response::Error(
              BodyInvalid("body must be {\"name\": \"...\", \"scope\": \"read|write|admin\"}"));
        }
        auto scope = ParseScope(body["scope"].get<std::string>());
        if (!scope) return Response::Error(BodyInvalid("scope must be read, write or admin"));
        return Reply(reg->tokens().Create(body.value("name", ""), *scope), 201);
      },
      Scope::kAdmin);
  r->Add(
      "GET", "/v1/tokens", [reg](Request&) { return Reply(reg->tokens().List()); }, Scope::kAdmin);
  r->Add(
      "DELETE", "/v1/tokens/{id}",
      [reg](Request& req) {
        Status s = reg->tokens().Revoke(req.params[0]);
        if (!s.ok()) return Response::Error(s);
        Response resp;
        resp.status = 204;
        return resp;
      },
      Scope::kAdmin);

  RegisterHfRoutes(r.get(), reg);  // after /v1, whose routes take precedence
  return r;
}

}  // namespace deltastore::api
