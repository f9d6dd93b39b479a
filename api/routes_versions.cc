// Version routes: creation (a job), jobs, reads, downloads (Range, ETag), tags and deletion.
#include <optional>

#include "api/byte_ranges.h"
#include "api/route_groups.h"
#include "api/tensor_routes.h"
#include "service/container.h"
#include "service/file_download.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

Response DownloadFile(Registry* reg, Request& req) {
  if (req.query.count("tensors")) return DownloadTensors(reg, req);
  auto v = reg->OpenForRead(req.params[0], req.params[1]);
  if (!v.ok()) return Response::Error(v.status());
  const FileEntry* file = v->reader->manifest().FindFile(req.params[2]);
  if (file == nullptr) return Response::Error(FileUnknown("version has no file " + req.params[2]));
  Headers headers{{"content-type", "application/octet-stream"},
                  {"docker-content-digest", file->sha256.ToString()}};
  auto reader = v->reader;
  return ServeBytes(req, std::move(headers), file->size, "\"" + file->sha256.ToString() + "\"",
                    [reg, reader, file](uint64_t begin, uint64_t end) -> Body {
                      return OpenFileBody(reader, file, begin, end, reg->file_cache());
                    });
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
  // 202 while a running job stops; 200 once it ended cancelled (a queued job, or a repeated DELETE).
  r->Add("DELETE", "/v1/jobs/{id}", [reg](Request& req) {
    auto c = reg->CancelJob(req.params[0]);
    if (!c.ok()) return Response::Error(c.status());
    return JsonOk(c->second ? 202 : 200, c->first);
  });

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
