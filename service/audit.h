// The storage-savings audit (docs/audit.md): what users uploaded, what the store holds, and what
// dedup, the lossless codec and lossy compression saved, per version, per model, per base family and
// in total. AuditBuilder is pure (manifests in, figures out); the registry feeds it every version in
// commit order and caches the report until the store changes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/manifest.h"

namespace deltastore {

// Always: logical = stored + saved_dedup + saved_lossless + saved_lossy (the codec savings are
// signed: a chunk that encodes larger than its raw bytes saves a negative amount).
struct AuditFigures {
  uint64_t logical_bytes = 0;        // file sizes of what users uploaded
  uint64_t stored_bytes = 0;         // encoded bytes of the chunks this version stored first
  uint64_t saved_dedup_bytes = 0;    // raw bytes not stored again: same-as-base tensors, shared chunks
  uint64_t same_as_base_bytes = 0;   // the part of saved_dedup_bytes that is same-as-base tensors
  int64_t saved_lossless_bytes = 0;  // raw - encoded of stored lossless chunks (incl. deltas)
  int64_t saved_lossy_bytes = 0;     // raw - encoded of stored lossy chunks
  uint64_t versions = 0;

  void Add(const AuditFigures& o);
  nlohmann::json ToJson() const;
};

// One version as the builder needs it.
struct AuditVersionInfo {
  std::string model;
  Digest digest;
  std::string created_at;
  std::string mode;
  std::vector<std::string> tags;
  nlohmann::json quality;  // the version record's quality report, or null
};

struct AuditVersion {
  AuditVersionInfo info;
  std::optional<Digest> base;  // direct base version
  Digest family;               // the root of its chain of bases (itself for a base version)
  AuditFigures figures;
};

struct AuditFamily {
  std::string model;  // the root base version
  Digest digest;
  std::set<std::string> models;  // every model with a version in the family
  AuditFigures figures;
};

struct AuditReport {
  std::string generated_at;
  AuditFigures total;
  std::map<std::string, AuditFigures> models;
  std::map<Digest, AuditFamily> families;  // keyed by the root base's digest
  std::vector<AuditVersion> versions;      // in commit order
  uint64_t chunk_store_bytes = 0;          // the chunk store's own count (ChunkStore::Stats)
  uint64_t chunk_store_chunks = 0;

  // Quality figures of a lossy version's report, without the per-tensor list; null otherwise.
  static nlohmann::json QualitySummary(const nlohmann::json& quality);
  nlohmann::json TotalsJson() const;  // total figures + store counts (history snapshots use this)
  nlohmann::json ToJson() const;      // totals, models and families (no per-version list)
  nlohmann::json VersionJson(const AuditVersion& v) const;
};

// Feed versions in commit order (a base before its finetunes): a chunk counts as stored by the first
// version that references it, and as dedup for every later reference.
class AuditBuilder {
 public:
  void Add(const AuditVersionInfo& info, const Manifest& manifest);
  AuditReport Finish(std::string generated_at, uint64_t chunk_store_bytes, uint64_t chunk_store_chunks);

 private:
  AuditReport report_;
  std::unordered_set<Digest> seen_;
  std::unordered_map<Digest, Digest> family_of_;  // version digest -> root base digest
};

}  // namespace deltastore
