// Version routes: creation (a job), jobs, reads, downloads (Range, ETag), tags and deletion.
#include <optional>

#include "api/route_groups.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

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

}  // namespace

void AddVersionRoutes(Router* r, Registry* reg) {
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
  r->Add("DELETE", "/v1/models/{model}/tags/{tag}",
         [reg](Request& req) { return NoContent(reg->DeleteTag(req.params[0], req.params[1])); });
  r->Add("DELETE", "/v1/models/{model}/versions/{ref}",
         [reg](Request& req) { return Reply(reg->DeleteVersion(req.params[0], req.params[1])); });
}

}  // namespace deltastore::api
