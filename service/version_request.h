// The body of `POST /v1/models/{model}/versions` (docs/http_api.md), checked before a job is queued so
// that bad input is a 4xx answer, not a failed job: file paths and sealed uploads, the policy, tags,
// the base, and the checkpoints' headers and shapes against the base.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "service/catalog.h"
#include "service/records.h"
#include "service/uploads.h"

namespace deltastore {

// A queued job record for the request (id and timestamps set, not yet stored).
StatusOr<JobRecord> PlanVersion(const std::string& model, const nlohmann::json& request, Uploads* uploads,
                                Catalog* catalog);

}  // namespace deltastore
