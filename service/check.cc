#include "service/check.h"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "common/clock.h"
#include "service/deletion.h"

namespace deltastore {

using json = nlohmann::json;

namespace {

std::string Printable(std::string_view key) {
  std::string where(key);
  std::replace(where.begin(), where.end(), '\0', '@');
  return where;
}

struct ChunkFindings {
  uint64_t chunks = 0, bytes = 0, garbage = 0, repaired = 0;
};

// Reads every chunk (verifying its digest) and compares its count with `expected`.
StatusOr<ChunkFindings> CheckChunks(ChunkStore* chunks, const std::map<Digest, int64_t>& expected,
                                    bool repair, json* problems) {
  ChunkFindings f;
  std::set<Digest> present;
  std::vector<std::pair<Digest, int64_t>> fixes;
  DS_RETURN_IF_ERROR(chunks->ForEach([&](const Digest& d, int64_t count, uint64_t size) {
    ++f.chunks;
    f.bytes += size;
    present.insert(d);
    auto got = chunks->Get(d);  // verifies the digest
    if (!got.ok()) {
      problems->push_back(
          {{"kind", got.status().code() == StatusCode::kCorruption ? "corrupt_chunk" : "unreadable_chunk"},
           {"chunk", d.ToString()},
           {"message", got.status().message()}});
    }
    auto it = expected.find(d);
    int64_t want = it == expected.end() ? 0 : it->second;
    if (want == 0 && count <= 0) ++f.garbage;
    if (want != count) {
      problems->push_back(
          {{"kind", "refcount_mismatch"}, {"chunk", d.ToString()}, {"stored", count}, {"expected", want}});
      fixes.emplace_back(d, want);
    }
    return OkStatus();
  }));
  for (const auto& [d, n] : expected) {
    if (!present.count(d))
      problems->push_back({{"kind", "missing_chunk"}, {"chunk", d.ToString()}, {"references", n}});
  }
  if (repair) {
    for (const auto& [d, n] : fixes) {
      DS_RETURN_IF_ERROR(chunks->SetRefCount(d, n));
      ++f.repaired;
    }
  }
  return f;
}

// What the version records say the indexes must hold (keys as stored).
struct WantedIndexes {
  std::set<std::string> models, digests, children, versions;
};

StatusOr<WantedIndexes> Wanted(MetaStore* meta) {
  WantedIndexes want;
  DS_RETURN_IF_ERROR(meta->Scan(ns::kVersions, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    if (z == std::string_view::npos) return true;
    const std::string model(key.substr(0, z)), hex(key.substr(z + 1));
    want.versions.insert(std::string(key));
    want.models.insert(model);
    want.digests.insert(Key(hex, model));
    auto rec = VersionRecord::Parse(value);
    if (rec.ok() && rec->base) {
      auto bd = Digest::Parse(rec->base->digest);
      if (bd.ok()) want.children.insert(Key(bd->Hex(), Key(model, hex)));
    }
    return true;
  }));
  return want;
}

// The metadata part of the check: appends problems, repairs them when asked; returns the entries fixed.
// Entries without a version go (a deletion cut short); missing ones come back (a commit cut short).
StatusOr<uint64_t> CheckIndexes(MetaStore* meta, bool repair, json* problems) {
  DS_ASSIGN_OR_RETURN(WantedIndexes want, Wanted(meta));
  MetaBatch fix;
  auto report = [&](const char* kind, const std::string& ns, std::string_view key) {
    problems->push_back({{"kind", kind}, {"namespace", ns}, {"key", Printable(key)}});
  };
  auto compare = [&](const char* ns, const std::set<std::string>& expected) -> Status {
    std::set<std::string> seen;
    DS_RETURN_IF_ERROR(meta->Scan(ns, "", "", [&](std::string_view key, std::string_view) {
      seen.emplace(key);
      if (!expected.count(std::string(key))) {
        report("dangling_index_entry", ns, key);
        fix.Delete(ns, key);
      }
      return true;
    }));
    for (const auto& k : expected) {
      if (seen.count(k)) continue;
      report("missing_index_entry", ns, k);
      fix.Put(ns, k, std::string_view(ns) == ns::kModels ? ModelRecord{k, NowIso()}.ToJson().dump() : "");
    }
    return OkStatus();
  };
  DS_RETURN_IF_ERROR(compare(ns::kModels, want.models));
  DS_RETURN_IF_ERROR(compare(ns::kDigests, want.digests));
  DS_RETURN_IF_ERROR(compare(ns::kChildren, want.children));
  // Tags must name a version of their model.
  DS_RETURN_IF_ERROR(meta->Scan(ns::kTags, "", "", [&](std::string_view key, std::string_view value) {
    size_t z = key.find('\0');
    auto d = Digest::Parse(value);
    if (z == std::string_view::npos || !d.ok() || !want.versions.count(Key(key.substr(0, z), d->Hex()))) {
      report("dangling_tag", ns::kTags, key);
      fix.Delete(ns::kTags, key);
    }
    return true;
  }));
  if (!repair || fix.empty()) return 0;
  DS_RETURN_IF_ERROR(meta->Commit(fix));
  return fix.ops.size();
}

// Interrupted jobs and deletions, which the next start completes.
StatusOr<uint64_t> PendingWork(MetaStore* meta) {
  uint64_t pending = 0;
  DS_RETURN_IF_ERROR(meta->Scan(ns::kReleases, "", "", [&](std::string_view, std::string_view) {
    ++pending;
    return true;
  }));
  DS_RETURN_IF_ERROR(meta->Scan(ns::kJobs, "", "", [&](std::string_view, std::string_view v) {
    auto j = JobRecord::Parse(v);
    if (j.ok() && j->state == "running") ++pending;
    return true;
  }));
  return pending;
}

}  // namespace

StatusOr<json> CheckStore(RegistryState* state, Catalog* catalog, bool repair) {
  json problems = json::array();
  uint64_t versions = 0;
  auto on_bad = [&](std::string_view key, const Status& s) {
    ++versions;
    problems.push_back({{"kind", "bad_manifest"}, {"version", Printable(key)}, {"message", s.message()}});
  };
  auto on_manifest = [&](std::string_view key, const Manifest& m) {
    ++versions;
    if (m.base && !catalog->LoadManifest(*m.base).ok())
      problems.push_back(
          {{"kind", "missing_base"}, {"version", Printable(key)}, {"base", m.base->ToString()}});
  };
  DS_ASSIGN_OR_RETURN(auto expected, CountReferences(state->meta(), on_bad, on_manifest));
  DS_ASSIGN_OR_RETURN(ChunkFindings chunks, CheckChunks(state->chunks(), expected, repair, &problems));
  DS_ASSIGN_OR_RETURN(uint64_t index_fixed, CheckIndexes(state->meta(), repair, &problems));
  DS_ASSIGN_OR_RETURN(uint64_t pending, PendingWork(state->meta()));
  json notes = json::array();
  if (pending > 0) {
    notes.push_back(std::to_string(pending) +
                    " interrupted job(s) or deletion(s): the next start runs them again and "
                    "recounts references, which repairs refcount mismatches they caused");
  }
  return json{{"ok", problems.empty()},
              {"versions", versions},
              {"chunks", chunks.chunks},
              {"notes", notes},
              {"stored_bytes", chunks.bytes},
              {"garbage_chunks", chunks.garbage},
              {"refcounts_repaired", chunks.repaired},
              {"index_entries_repaired", index_fixed},
              {"problems", problems}};
}

}  // namespace deltastore
