#include "api/http.h"

#include <nlohmann/json.hpp>

namespace deltastore::api {

std::string Request::Header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::Query(std::string_view name, const std::string& fallback) const {
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

Response Response::Error(const Status& status) {
  nlohmann::json doc = {{"errors", {{{"code", status.wire_code()}, {"message", status.message()}}}}};
  // Messages quote client input (paths, names), which need not be UTF-8: replace bad bytes, never throw.
  Response r = Json(status.http_status(), doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (r.status == 401)
    r.headers["www-authenticate"] = "Bearer realm=\"deltastore\", Basic realm=\"deltastore\"";
  return r;
}

}  // namespace deltastore::api
