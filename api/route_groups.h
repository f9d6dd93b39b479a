// The route groups of the registry's HTTP API (routes.cc lists them in BuildRouter); internal to api/.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>

#include "api/router.h"
#include "common/status.h"

namespace deltastore {
class Registry;
}

namespace deltastore::api {

class Metrics;

// Uploads: POST /v1/uploads, PATCH/PUT/GET/DELETE /v1/uploads/{id} (routes_uploads.cc).
void AddUploadRoutes(Router* r, Registry* reg);
// Versions, jobs, reads, downloads, tags and deletion (routes_versions.cc).
void AddVersionRoutes(Router* r, Registry* reg);
// The storage audit, /metrics and the /ui page (routes_audit.cc).
void AddAuditRoutes(Router* r, Registry* reg, const std::shared_ptr<Metrics>& metrics);
// Admin: garbage collection and tokens (routes_admin.cc).
void AddAdminRoutes(Router* r, Registry* reg);

// Helpers the groups share.
inline Response JsonOk(int status, const nlohmann::json& body) {
  return Response::Json(status, body.dump());
}

template <typename T>
Response Reply(const StatusOr<T>& r, int status = 200) {
  if (!r.ok()) return Response::Error(r.status());
  return JsonOk(status, *r);
}

// ?limit= of list routes: 1..1000, default 100.
StatusOr<size_t> Limit(const Request& req);

// 204 No Content when `s` is ok, its error otherwise.
Response NoContent(const Status& s);

}  // namespace deltastore::api
