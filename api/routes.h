// The registry's HTTP API: builds the router over the service layer (api/openapi.yaml documents it).
#pragma once

#include <memory>
#include <string>

#include "api/auth.h"
#include "api/router.h"

namespace deltastore {
class Registry;
}

namespace deltastore::api {

class Metrics;

struct ApiInfo {
  std::string version;  // deltastored's version (GET /healthz)
};

// `auth`: who may call which route (off by default). `metrics`: the request metrics GET /metrics shows,
// fed by the server's on_request hook (an empty set when null).
std::shared_ptr<Router> BuildRouter(Registry* registry, const ApiInfo& info, AuthOptions auth = {},
                                    std::shared_ptr<Metrics> metrics = nullptr);

}  // namespace deltastore::api
