#include "api/routes.h"

#include <nlohmann/json.hpp>

#include "api/hf_routes.h"
#include "api/metrics.h"
#include "api/route_groups.h"
#include "service/compute_device.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

StatusOr<size_t> Limit(const Request& req) {
  std::string v = req.Query("limit", "100");
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 1 || n > 1000)
    return InvalidArgument("limit must be between 1 and 1000");
  return static_cast<size_t>(n);
}

Response NoContent(const Status& s) {
  if (!s.ok()) return Response::Error(s);
  Response resp;
  resp.status = 204;
  return resp;
}

namespace {

void AddHealthRoutes(Router* r, Registry* reg, const ApiInfo& info) {
  r->Add(
      "GET", "/healthz",
      [info](Request&) {
        return Response::Json(200, json{{"status", "ok"}, {"version", info.version}}.dump());
      },
      Scope::kNone);
  r->Add(
      "GET", "/readyz",
      [reg](Request&) {
        if (reg == nullptr) return Response::Error(Unavailable("registry is not open"));
        if (Status s = reg->Ready(); !s.ok()) return Response::Error(s);
        const Registry::NodeInfo node = reg->Node();
        return Response::Json(200, json{{"status", "ready"},
                                        {"compute_device", ComputeDeviceName()},
                                        {"node", node.node},
                                        {"meta_store", node.meta_store},
                                        {"chunk_store", node.chunk_store}}
                                       .dump());
      },
      Scope::kNone);
}

}  // namespace

std::shared_ptr<Router> BuildRouter(Registry* reg, const ApiInfo& info, AuthOptions auth,
                                    std::shared_ptr<Metrics> metrics) {
  auto r = std::make_shared<Router>();
  if (!metrics) metrics = std::make_shared<Metrics>();
  if (reg != nullptr) r->SetAuthorizer(MakeAuthorizer(reg, auth));
  AddHealthRoutes(r.get(), reg, info);
  if (reg == nullptr) return r;
  AddUploadRoutes(r.get(), reg);
  AddVersionRoutes(r.get(), reg);
  AddAuditRoutes(r.get(), reg, metrics);
  AddAdminRoutes(r.get(), reg);
  RegisterHfRoutes(r.get(), reg);  // after /v1, whose routes take precedence
  return r;
}

}  // namespace deltastore::api
