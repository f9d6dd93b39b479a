// Upload routes: one-shot, chunked (PATCH with Content-Range), resumable, sealed by digest.
#include <functional>
#include <optional>

#include "api/route_groups.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

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

}  // namespace

void AddUploadRoutes(Router* r, Registry* reg) {
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
  r->Add("DELETE", "/v1/uploads/{id}",
         [reg](Request& req) { return NoContent(reg->DeleteUpload(req.params[0])); });
}

}  // namespace deltastore::api
