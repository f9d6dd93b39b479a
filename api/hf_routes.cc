#include "api/hf_routes.h"

#include <nlohmann/json.hpp>

#include "api/byte_ranges.h"
#include "service/file_download.h"
#include "service/hf_mapping.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

constexpr size_t kTreePageSize = 1000;

// An error as huggingface_hub reads it: X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound)
// decides which exception it raises, "error" in the body is its message; our envelope is kept beside.
Response HfError(const Status& s, const std::string& commit = "") {
  Response r = Response::Error(s);
  std::string code;
  if (s.reason() == Reason::kRepoUnknown) code = "RepoNotFound";
  if (s.reason() == Reason::kRevisionUnknown) code = "RevisionNotFound";
  if (s.reason() == Reason::kEntryUnknown) code = "EntryNotFound";
  if (!code.empty()) r.headers["x-error-code"] = code;
  if (!commit.empty()) r.headers["x-repo-commit"] = commit;
  json body = json::parse(r.body, nullptr, false);
  if (body.is_object()) {
    body["error"] = s.message();
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return r;
}

// The repo's model and the revision's version, or the error to answer.
StatusOr<hf::HfRevision> Open(Registry* reg, const Request& req, const std::string& revision) {
  DS_ASSIGN_OR_RETURN(std::string model, hf::ModelForRepo(reg, req.params[0], req.params[1]));
  return hf::ResolveRevision(reg, model, revision);
}

Response Info(Registry* reg, const Request& req, const std::string& revision) {
  auto rev = Open(reg, req, revision);
  if (!rev.ok()) return HfError(rev.status());
  auto info = hf::RepoInfo(reg, *rev);
  if (!info.ok()) return HfError(info.status(), rev->commit);
  return Response::Json(200, info->dump(-1, ' ', false, json::error_handler_t::replace));
}

bool Unreserved(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '~';
}

std::string PercentEncode(std::string_view s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    if (Unreserved(c) || (keep_slash && c == '/')) {
      out.push_back(c);
    } else {
      auto u = static_cast<unsigned char>(c);
      out += {'%', hex[u >> 4], hex[u & 15]};
    }
  }
  return out;
}

// A Host header safe to put back into a URL (host, IPv4, [IPv6], optional port).
bool SafeHost(const std::string& host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' && c != '[' &&
        c != ']')
      return false;
  }
  return true;
}

StatusOr<size_t> QueryNumber(const Request& req, const char* name, size_t fallback, size_t lo, size_t hi) {
  std::string v = req.Query(name);
  if (v.empty()) return fallback;
  size_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9' || n > (SIZE_MAX - 9) / 10)
      return InvalidArgument(std::string(name) + " must be a number");
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n < lo || n > hi) {
    return InvalidArgument(std::string(name) + " must be between " + std::to_string(lo) + " and " +
                           std::to_string(hi));
  }
  return n;
}

bool Truthy(const std::string& v) {
  return v == "1" || v == "true" || v == "True";
}

// GET /api/models/{ns}/{name}/tree/{rev}[/{path}]: one page of entries; a Link header (rel="next", an
// absolute URL at the commit, as the client follows it) when more follow.
Response Tree(Registry* reg, const Request& req) {
  auto rev = Open(reg, req, req.params[2]);
  if (!rev.ok()) return HfError(rev.status());
  std::string dir = req.params.size() > 3 ? req.params[3] : "";
  auto limit = QueryNumber(req, "limit", kTreePageSize, 1, kTreePageSize);
  if (!limit.ok()) return HfError(limit.status(), rev->commit);
  auto cursor = QueryNumber(req, "cursor", 0, 0, SIZE_MAX / 2);
  if (!cursor.ok()) return HfError(cursor.status(), rev->commit);
  auto manifest = reg->LoadManifest(rev->digest);
  if (!manifest.ok()) return HfError(manifest.status(), rev->commit);
  bool recursive = Truthy(req.Query("recursive"));
  auto entries = hf::TreeEntries(*manifest, *rev, dir, recursive);
  if (!entries.ok()) return HfError(entries.status(), rev->commit);
  size_t begin = std::min(*cursor, entries->size());
  size_t end = std::min(begin + *limit, entries->size());
  json page = json::array();
  for (size_t i = begin; i < end; ++i) page.push_back((*entries)[i]);
  Response r = Response::Json(200, page.dump(-1, ' ', false, json::error_handler_t::replace));
  r.headers["x-repo-commit"] = rev->commit;
  if (end < entries->size()) {
    std::string host = req.Header("host");
    if (!SafeHost(host)) return HfError(InvalidArgument("a valid Host header is needed to page the tree"));
    std::string url = std::string(req.secure ? "https" : "http") + "://" + host + "/api/models/" +
                      PercentEncode(req.params[0], false) + "/" + PercentEncode(req.params[1], false) +
                      "/tree/" + rev->commit + (dir.empty() ? "" : "/" + PercentEncode(dir, true)) +
                      "?recursive=" + (recursive ? "true" : "false") + "&limit=" + std::to_string(*limit) +
                      "&cursor=" + std::to_string(end);
    r.headers["link"] = "<" + url + ">; rel=\"next\"";
  }
  return r;
}

// GET/HEAD /{ns}/{name}/resolve/{rev}/{path}: the file, with the headers hf_hub_download reads.
Response Resolve(Registry* reg, const Request& req) {
  auto rev = Open(reg, req, req.params[2]);
  if (!rev.ok()) return HfError(rev.status());
  const std::string& path = req.params[3];
  if (Status s = hf::CheckRepoPath(path); !s.ok()) return HfError(s, rev->commit);
  auto v = reg->OpenForRead(rev->model, rev->digest.ToString());
  if (!v.ok()) return HfError(v.status(), rev->commit);
  std::shared_ptr<VersionReader> reader = v->reader;
  const FileEntry* file = reader->manifest().FindFile(path);
  if (file == nullptr) {
    return HfError(EntryUnknown("revision " + rev->commit + " has no file " + path.substr(0, 300)),
                   rev->commit);
  }
  std::string etag = "\"" + file->sha256.Hex() + "\"";
  Headers h = {{"content-type", "application/octet-stream"},
               {"x-repo-commit", rev->commit},
               {"x-linked-etag", etag},
               {"x-linked-size", std::to_string(file->size)},
               {"docker-content-digest", file->sha256.ToString()}};
  return ServeBytes(req, std::move(h), file->size, etag, [reg, reader, file](uint64_t begin, uint64_t end) {
    return OpenFileBody(reader, file, begin, end, reg->file_cache());
  });
}

}  // namespace

void RegisterHfRoutes(Router* r, Registry* reg) {
  r->Add("GET", "/api/models/{ns}/{name}", [reg](Request& req) { return Info(reg, req, "main"); });
  r->Add("GET", "/api/models/{ns}/{name}/revision/{rev...}",
         [reg](Request& req) { return Info(reg, req, req.params[2]); });
  r->Add("GET", "/api/models/{ns}/{name}/tree/{rev}", [reg](Request& req) { return Tree(reg, req); });
  r->Add("GET", "/api/models/{ns}/{name}/tree/{rev}/{path...}",
         [reg](Request& req) { return Tree(reg, req); });
  r->Add("GET", "/{ns}/{name}/resolve/{rev}/{path...}", [reg](Request& req) { return Resolve(reg, req); });
}

}  // namespace deltastore::api
