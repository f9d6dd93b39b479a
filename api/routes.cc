#include "api/routes.h"

#include <nlohmann/json.hpp>

namespace deltastore::api {

using json = nlohmann::json;

std::shared_ptr<Router> BuildRouter(Registry* registry, ApiInfo info) {
  auto r = std::make_shared<Router>();
  r->Add("GET", "/healthz", [info](Request&) {
    return Response::Json(200, json{{"status", "ok"}, {"version", info.version}}.dump());
  });
  r->Add("GET", "/readyz", [info, registry](Request&) {
    if (registry == nullptr) return Response::Error(503, "UNAVAILABLE", "registry is not open");
    return Response::Json(200, json{{"status", "ready"}, {"compute_device", info.compute_device}}.dump());
  });
  return r;
}

}  // namespace deltastore::api
