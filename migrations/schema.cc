#include "migrations/schema.h"

namespace deltastore {

namespace {
constexpr char kNs[] = "schema";
constexpr char kKey[] = "version";
}  // namespace

const std::vector<MigrationStep>& MigrationSteps() {
  static const std::vector<MigrationStep> steps = {};
  return steps;
}

StatusOr<uint32_t> CheckAndMigrate(MetaStore* meta, ChunkStore* chunks) {
  auto stored = meta->Get(kNs, kKey);
  uint32_t version = 0;
  if (stored.ok()) {
    try {
      version = static_cast<uint32_t>(std::stoul(*stored));
    } catch (...) {
      return Corruption("schema version '" + *stored + "' is not a number");
    }
  } else if (stored.status().code() != StatusCode::kNotFound) {
    return stored.status();
  } else {
    // No version: a new directory (nothing stored yet) starts at the current schema.
    bool empty = true;
    for (const char* ns : {"models", "versions", "uploads", "jobs"}) {
      DS_RETURN_IF_ERROR(meta->Scan(ns, "", "", [&](std::string_view, std::string_view) {
        empty = false;
        return false;
      }));
    }
    // Records without a version were written by the first builds, before the key existed: their
    // layout is version 1.
    DS_RETURN_IF_ERROR(meta->Put(kNs, kKey, std::to_string(empty ? kSchemaVersion : 1)));
    if (empty) return 0u;
    version = 1;
  }
  if (version > kSchemaVersion) {
    return SchemaTooNew("the data directory has schema version " + std::to_string(version) +
                        ", written by a newer deltastored; this build knows versions up to " +
                        std::to_string(kSchemaVersion) + ". Run the newer build, or restore a backup.");
  }
  const uint32_t found = version;
  for (const auto& step : MigrationSteps()) {
    if (step.from != version) continue;
    MetaBatch batch;
    DS_RETURN_IF_ERROR(step.apply(meta, chunks, &batch).Annotate("migration " + step.description));
    batch.Put(kNs, kKey, std::to_string(version + 1));
    DS_RETURN_IF_ERROR(meta->Commit(batch));
    ++version;
  }
  if (version != kSchemaVersion) {
    return Internal("no migration step from schema version " + std::to_string(version));
  }
  return found;
}

}  // namespace deltastore
