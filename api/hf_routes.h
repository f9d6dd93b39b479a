// The Hugging Face–compatible read routes (docs/http_api.md): what huggingface_hub and the libraries on
// it (transformers, ...) ask a Hub for when HF_ENDPOINT points at deltastored. The mapping of repo ids
// and revisions to models and versions lives in service/hf_mapping.h.
#pragma once

#include "api/router.h"

namespace deltastore {
class Registry;
}

namespace deltastore::api {

// GET /api/models/{ns}/{name}, …/revision/{rev}, …/tree/{rev}[/{path}] and GET/HEAD
// /{ns}/{name}/resolve/{rev}/{path}; read scope. Add after the /v1 routes, which take precedence.
void RegisterHfRoutes(Router* router, Registry* registry);

}  // namespace deltastore::api
