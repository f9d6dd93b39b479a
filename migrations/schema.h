// The schema version of a data directory, checked at every start, and the numbered upgrade steps.
//
// The version lives in the metadata store (namespace "schema", key "version"). A new data directory
// gets the current version. An older one is upgraded step by step (each step in its own file, applied
// in one atomic batch with the new version number). A newer one is refused: this build cannot know
// what a later one wrote.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "storage/chunk_store.h"
#include "storage/meta_store.h"

namespace deltastore {

inline constexpr uint32_t kSchemaVersion = 1;

struct MigrationStep {
  uint32_t from;  // upgrades a store at `from` to `from + 1`
  std::string description;
  std::function<Status(MetaStore*, ChunkStore*, MetaBatch*)> apply;
};

// The steps this build knows, in order (empty while the schema is at its first version).
const std::vector<MigrationStep>& MigrationSteps();

// Reads the stored version, applies the steps up to kSchemaVersion, or refuses a newer store.
// Returns the version found before any step ran (0 for a new, empty directory).
StatusOr<uint32_t> CheckAndMigrate(MetaStore* meta, ChunkStore* chunks);

}  // namespace deltastore
