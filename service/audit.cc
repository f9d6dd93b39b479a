#include "service/audit.h"

namespace deltastore {

using json = nlohmann::json;

void AuditFigures::Add(const AuditFigures& o) {
  logical_bytes += o.logical_bytes;
  stored_bytes += o.stored_bytes;
  saved_dedup_bytes += o.saved_dedup_bytes;
  same_as_base_bytes += o.same_as_base_bytes;
  saved_lossless_bytes += o.saved_lossless_bytes;
  saved_lossy_bytes += o.saved_lossy_bytes;
  versions += o.versions;
}

json AuditFigures::ToJson() const {
  return json{{"logical_bytes", logical_bytes},
              {"stored_bytes", stored_bytes},
              {"saved_dedup_bytes", saved_dedup_bytes},
              {"same_as_base_bytes", same_as_base_bytes},
              {"saved_lossless_bytes", saved_lossless_bytes},
              {"saved_lossy_bytes", saved_lossy_bytes},
              {"versions", versions}};
}

json AuditReport::QualitySummary(const json& quality) {
  if (!quality.is_object()) return nullptr;
  json out = json::object();
  for (const char* k : {"policy", "ratio", "lossy_ratio", "weight_error", "output_error", "tensors_lossy",
                        "tensors_lossless", "stored_bytes", "delta_bytes"}) {
    if (quality.contains(k)) out[k] = quality[k];
  }
  return out;
}

json AuditReport::TotalsJson() const {
  int64_t unattributed = static_cast<int64_t>(chunk_store_bytes) - static_cast<int64_t>(total.stored_bytes);
  return json{{"totals", total.ToJson()},
              {"models", models.size()},
              {"store",
               {{"chunk_bytes", chunk_store_bytes},
                {"chunks", chunk_store_chunks},
                {"unattributed_bytes", unattributed}}}};
}

json AuditReport::ToJson() const {
  json out = TotalsJson();
  out["generated_at"] = generated_at;
  json ms = json::array();
  for (const auto& [name, f] : models) ms.push_back({{"model", name}, {"figures", f.ToJson()}});
  out["models"] = ms;
  json fs = json::array();
  for (const auto& [d, fam] : families) {
    json models_in = json::array();
    for (const auto& m : fam.models) models_in.push_back(m);
    fs.push_back({{"base", {{"model", fam.model}, {"digest", d.ToString()}}},
                  {"models", models_in},
                  {"figures", fam.figures.ToJson()}});
  }
  out["bases"] = fs;
  return out;
}

json AuditReport::VersionJson(const AuditVersion& v) const {
  json base = nullptr;
  if (v.base) base = v.base->ToString();
  return json{{"model", v.info.model},
              {"digest", v.info.digest.ToString()},
              {"created_at", v.info.created_at},
              {"mode", v.info.mode},
              {"tags", v.info.tags},
              {"base", base},
              {"family", v.family.ToString()},
              {"figures", v.figures.ToJson()},
              {"quality", QualitySummary(v.info.quality)}};
}

void AuditBuilder::Add(const AuditVersionInfo& info, const Manifest& m) {
  AuditVersion v;
  v.info = info;
  v.base = m.base;
  AuditFigures& f = v.figures;
  f.versions = 1;
  f.logical_bytes = m.LogicalBytes();
  uint64_t accounted = 0;
  auto chunk = [&](const ChunkRef& c, bool lossy) {
    accounted += c.raw_size;
    if (seen_.insert(c.digest).second) {
      f.stored_bytes += c.stored_size;
      int64_t saved = static_cast<int64_t>(c.raw_size) - static_cast<int64_t>(c.stored_size);
      (lossy ? f.saved_lossy_bytes : f.saved_lossless_bytes) += saved;
    } else {
      f.saved_dedup_bytes += c.raw_size;
    }
  };
  for (const auto& file : m.files) {
    if (file.header) chunk(*file.header, false);
    for (const auto& t : file.tensors) {
      if (t.encoding == TensorEncoding::kSameAsBase) {
        f.saved_dedup_bytes += t.size;
        f.same_as_base_bytes += t.size;
        accounted += t.size;
      }
      for (const auto& c : t.chunks) chunk(c, t.encoding == TensorEncoding::kLossy);
    }
    for (const auto& c : file.chunks) chunk(c, false);
  }
  // Chunks cover every byte of a file (docs/manifest_format.md), so accounted == logical; should a
  // manifest ever disagree, the difference goes to the lossless figure so the sum still holds.
  f.saved_lossless_bytes += static_cast<int64_t>(f.logical_bytes) - static_cast<int64_t>(accounted);

  Digest family = info.digest;
  if (m.base) {
    auto it = family_of_.find(*m.base);
    family = it != family_of_.end() ? it->second : *m.base;
  }
  family_of_.emplace(info.digest, family);
  v.family = family;

  report_.total.Add(f);
  report_.models[info.model].Add(f);
  auto [fit, inserted] = report_.families.try_emplace(family);
  if (inserted) {
    fit->second.digest = family;
    fit->second.model = info.model;  // the root comes first: commit order puts a base before its finetunes
  }
  fit->second.models.insert(info.model);
  fit->second.figures.Add(f);
  report_.versions.push_back(std::move(v));
}

AuditReport AuditBuilder::Finish(std::string generated_at, uint64_t chunk_store_bytes,
                                 uint64_t chunk_store_chunks) {
  report_.generated_at = std::move(generated_at);
  report_.chunk_store_bytes = chunk_store_bytes;
  report_.chunk_store_chunks = chunk_store_chunks;
  seen_.clear();
  family_of_.clear();
  return std::move(report_);
}

}  // namespace deltastore
