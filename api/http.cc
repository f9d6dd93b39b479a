#include "api/http.h"

#include <nlohmann/json.hpp>

namespace deltastore::api {

std::string Request::Header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::Query(std::string_view name, std::string fallback) const {
  auto it = query.find(std::string(name));
  return it == query.end() ? fallback : it->second;
}

Response Response::Json(int status, const std::string& json_text) {
  Response r;
  r.status = status;
  r.headers["content-type"] = "application/json";
  r.body = json_text;
  return r;
}

StatusOr<std::string> Response::ReadAll() {
  if (!stream) return body;
  std::string out;
  while (true) {
    DS_ASSIGN_OR_RETURN(std::string piece, stream());
    if (piece.empty()) break;
    out += piece;
  }
  if (out.size() != content_length) return Internal("stream produced a different length than announced");
  return out;
}

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists: return 409;
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kOutOfRange: return 416;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kUnimplemented: return 501;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kCorruption:
    case StatusCode::kDataLoss:
    case StatusCode::kIOError:
    case StatusCode::kInternal: return 500;
  }
  return 500;
}

Response Response::Error(int http_status, std::string_view code, std::string_view message) {
  nlohmann::json doc = {{"errors", {{{"code", code}, {"message", message}}}}};
  // Messages quote client input (paths, names), which need not be UTF-8: replace bad bytes, never throw.
  return Json(http_status, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Response Response::Error(const Status& status) {
  std::string_view code = status.reason().empty() ? StatusCodeName(status.code()) : status.reason();
  Response r = Error(HttpStatusFor(status.code()), code, status.message());
  if (r.status == 401)
    r.headers["www-authenticate"] = "Bearer realm=\"deltastore\", Basic realm=\"deltastore\"";
  return r;
}

}  // namespace deltastore::api
