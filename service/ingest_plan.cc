// The planning pass of a lossy version with rate allocation: the tensors the lossy hook will be offered go
// to the planner's probes (on their threads), then the planner plans; progress moves as the probes go.
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "service/ingest_internal.h"

namespace deltastore::ingest_detail {
namespace {

// Whether tensor `t` of `file` differs from base tensor `bt` (of the same layout), compared a chunk at a
// time up to the first difference.
StatusOr<bool> DiffersFromBase(const SafetensorsFile& file, const TensorInfo& t, VersionReader* base,
                               const TensorEntry& bt) {
  std::string a, b;
  for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
    const uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
    a.resize(len), b.resize(len);
    DS_RETURN_IF_ERROR(file.ReadTensorRange(t, off, len, a.data()));
    DS_RETURN_IF_ERROR(base->ReadTensor(bt, off, len, b.data()));
    if (a != b) return true;
  }
  return false;
}

}  // namespace

StatusOr<uint64_t> PlanLossy(const std::vector<IngestFile>& files, VersionReader* base,
                             const IngestOptions& options, IngestProgress p, const ProgressFn& report) {
  p.phase = "planning";
  // Probed tensors count as done when offered, their bytes as their probes go: the last ones took 4.4 s
  // at 16x on a 4096 x 11008 tensor, with no progress while the plan waited on them.
  auto progress = std::make_shared<SharedProgress>(p, report, options.cancelled);
  struct Closer {
    SharedProgress* p;
    ~Closer() { p->Close(); }
  } closer{progress.get()};
  for (const auto& f : files) {
    if (!IsSafetensorsPath(f.path)) continue;
    DS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(f.source_path));
    uint32_t stream = 0;
    for (const TensorInfo& t : file->header().tensors) {
      if (IsCancelled(options)) return Cancelled();
      const TensorEntry* bt = base ? base->FindTensor(t.name) : nullptr;
      if (bt != nullptr && !SameLayout(*bt, t)) bt = nullptr;
      if (bt != nullptr) {
        DS_ASSIGN_OR_RETURN(bool differs, DiffersFromBase(*file, t, base, *bt));
        if (differs && !Takes(options, t)) {
          ++stream;  // numbered as pass 2 numbers it
        } else if (differs) {
          // Read when the planner has room for what it keeps (the probes before hold theirs), a chunk at
          // a time.
          TensorPairReader read = [&](const TensorPairVisitor& visit) -> Status {
            std::string ft_piece, base_piece;
            for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
              const uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
              ft_piece.resize(len), base_piece.resize(len);
              DS_RETURN_IF_ERROR(file->ReadTensorRange(t, off, len, ft_piece.data()));
              DS_RETURN_IF_ERROR(base->ReadTensor(*bt, off, len, base_piece.data()));
              visit(off, base_piece, ft_piece);
            }
            return OkStatus();
          };
          progress->Add(0, 1);
          LossyStep step = progress->Step(t.size(), std::make_shared<uint64_t>(0), nullptr);
          DS_RETURN_IF_ERROR(LossyFailure(
              options,
              options.lossy_planner.probe(t, read, stream++, step).Annotate(f.path + ": tensor " + t.name)));
          continue;
        }
      }
      progress->Add(t.size(), 1);
    }
  }
  StatusOr<uint64_t> reach = options.lossy_planner.plan();
  if (!reach.ok()) return LossyFailure(options, reach.status());
  return reach;
}

}  // namespace deltastore::ingest_detail
