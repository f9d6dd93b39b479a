// `deltastored check`: verifies every stored chunk against its digest, every manifest reference
// against the store, every reference count against the manifests, and the metadata indexes (digest
// and child entries, model records, tags) against the version records.
#pragma once

#include <nlohmann/json.hpp>

#include "service/catalog.h"
#include "service/registry_state.h"

namespace deltastore {

// Reports problems; changes nothing unless `repair`, which rewrites reference counts and the indexes
// from the version records (what a half-applied metadata batch leaves). Unreadable or missing data
// cannot be repaired here.
StatusOr<nlohmann::json> CheckStore(RegistryState* state, Catalog* catalog, bool repair);

}  // namespace deltastore
