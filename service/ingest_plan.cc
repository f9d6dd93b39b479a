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

// The planning phase's progress, shared with the probes' threads: bytes_done counts the tensors passed
// over whole and each probed tensor's bytes times the fraction of its probes done, so the phase moves
// while the plan waits on the probes (the last ones took 4.4 s at 16x on a 4096 x 11008 tensor, with no
// progress). Reports stop when it closes; the probes' steps still ask whether to go on.
class PlanningProgress {
 public:
  PlanningProgress(IngestProgress p, ProgressFn report, std::function<bool()> cancelled)
      : p_(std::move(p)), report_(std::move(report)), cancelled_(std::move(cancelled)) {}

  // A tensor passed over (or found equal to its base), counted whole.
  void Passed(uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    p_.tensors_done++;
    Add(bytes);
  }
  // The step of a probed tensor of `size` bytes; the tensor is counted as done now, its bytes as probed.
  static LossyStep Probed(const std::shared_ptr<PlanningProgress>& self, uint64_t size) {
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->p_.tensors_done++;
    }
    return [self, size, counted = std::make_shared<uint64_t>(0)](double fraction) {
      const auto now = static_cast<uint64_t>(std::clamp(fraction, 0.0, 1.0) * static_cast<double>(size));
      std::lock_guard<std::mutex> lock(self->mu_);
      if (now > *counted) self->Add(now - std::exchange(*counted, now));
      return !(self->cancelled_ && self->cancelled_());
    };
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }

 private:
  void Add(uint64_t bytes) {
    p_.bytes_done += bytes;
    if (report_ && !closed_) report_(p_);
  }
  std::mutex mu_;
  IngestProgress p_;
  ProgressFn report_;
  std::function<bool()> cancelled_;
  bool closed_ = false;
};

}  // namespace

Status PlanLossy(const std::vector<IngestFile>& files, VersionReader* base, const IngestOptions& options,
                 IngestProgress p, const ProgressFn& report) {
  p.phase = "planning";
  auto progress = std::make_shared<PlanningProgress>(p, report, options.cancelled);
  struct Closer {
    PlanningProgress* p;
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
          LossyStep step = PlanningProgress::Probed(progress, t.size());
          DS_RETURN_IF_ERROR(LossyFailure(
              options,
              options.lossy_planner.probe(t, read, stream++, step).Annotate(f.path + ": tensor " + t.name)));
          continue;
        }
      }
      progress->Passed(t.size());
    }
  }
  return LossyFailure(options, options.lossy_planner.plan());
}

}  // namespace deltastore::ingest_detail
