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

struct ApiInfo {
  std::string version;         // deltastored's version
  std::string compute_device;  // "cpu" or "cuda:0"
};

std::shared_ptr<Router> BuildRouter(Registry* registry, ApiInfo info, AuthOptions auth = {});

}  // namespace deltastore::api
