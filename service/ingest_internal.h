// Pieces of the ingest (service/ingest.cc) that its planning pass (service/ingest_plan.cc) and its lossy
// tensors (service/ingest_lossy.cc) share.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "codec/safetensors.h"
#include "common/sha256.h"
#include "service/ingest.h"

namespace deltastore::ingest_detail {

// The ingest's status when its cancellation stopped it.
Status Cancelled();
bool IsCancelled(const IngestOptions& options);
// Whether the lossy hook may take tensor `t` (see LossyFilter).
bool Takes(const IngestOptions& options, const TensorInfo& t);
// A failure of a lossy step is the ingest's cancellation when that is what stopped it.
Status LossyFailure(const IngestOptions& options, const Status& s);
bool SameLayout(const TensorEntry& base, const TensorInfo& t);

// The planning pass: offers the planner the tensors pass 2 of the ingest will offer the lossy hook, with
// the same stream numbers, then has it plan; returns the plan's lossy reach. Progress (phase "planning")
// starts from `p`.
StatusOr<uint64_t> PlanLossy(const std::vector<IngestFile>& files, VersionReader* base,
                             const IngestOptions& options, IngestProgress p, const ProgressFn& report);

// An ingest phase's progress, shared with the threads that work for it (the planner's probes, the lossy
// hooks): bytes_done counts the tensors passed over whole and each tensor worked on elsewhere by the
// fraction of its work done, so the phase moves while the ingest waits on that work. Reports stop when it
// closes; the steps still ask whether to go on.
class SharedProgress : public std::enable_shared_from_this<SharedProgress> {
 public:
  SharedProgress(IngestProgress p, ProgressFn report, std::function<bool()> cancelled)
      : p_(std::move(p)), report_(std::move(report)), cancelled_(std::move(cancelled)) {}
  // Bytes (and whole tensors) done.
  void Add(uint64_t bytes, uint64_t tensors = 0);
  // The step of a tensor of `size` bytes worked on elsewhere: its bytes count as the fraction grows, never
  // back, into *counted. It asks to stop when the ingest is cancelled or *stop is set.
  LossyStep Step(uint64_t size, std::shared_ptr<uint64_t> counted, std::shared_ptr<std::atomic<bool>> stop);
  // That tensor done: the rest of its bytes, and the tensor.
  void Finish(uint64_t size, const std::shared_ptr<uint64_t>& counted);
  IngestProgress Now();
  void Close();

 private:
  void Report();  // with mu_ held
  std::mutex mu_;
  IngestProgress p_;
  ProgressFn report_;
  std::function<bool()> cancelled_;
  bool closed_ = false;
};

// The lossy tensors of one file, compressed ahead of the ingest's loop on a pool of worker threads (up to
// `threads` running), started in file order; the loop takes their outcomes in file order. A tensor starts
// once every offered tensor ending IngestOptions::lossy_reach bytes or more before it is done, so the
// hook's bytes are those of a serial run. Each tensor's rebuilt rows go to its own hash and to the file's
// served hash in order: a tensor taken streams them there, one started ahead buffers them until it is
// taken (decoding them again from the chunk when taken cost minilm 9 CPU s more at 16x: the base's
// lossless chunks are decoded again too).
// Memory: beside the largest running tensor (read whole as base and finetune, released when its hook
// returns), the others running stay within kLossyBytesBeside; no tensor starts while the rows buffered by
// tensors done and not taken exceed kLossyRowsWaiting, or while the tensors the loop stores losslessly
// before it exceed kLossyBytesBeside (a large lossless embedding is stored before the tensors after it
// start). So a version of large tensors runs one at a time, as its peak (set by its largest tensor) is
// what matters there, and small tensors run beside each other and beside a large one. Where no offered
// tensor is small enough to run beside another, each runs on the ingest's own thread when taken, as
// before LossyAhead: on a worker thread, one at a time, the 1 B pair peaked at 651 and 655 MiB beyond the
// compute library at 16x on a quiet machine, against 536 and 576 on the ingest's thread (per-thread
// allocator arenas or MKL buffers; not isolated).
class LossyAhead {
 public:
  struct Offer {
    size_t index;           // in the file's tensors
    const TensorEntry* bt;  // its base tensor
    uint32_t stream;
  };
  LossyAhead(const SafetensorsFile& file, VersionReader* base, const IngestOptions& options,
             std::vector<Offer> offers, std::shared_ptr<SharedProgress> progress);
  LossyAhead(const LossyAhead&) = delete;
  LossyAhead& operator=(const LossyAhead&) = delete;
  ~LossyAhead();  // stops the tensors still running and waits for them

  // The ingest's loop is at tensor `index` (those before it are stored): starts the tensors ahead that the
  // reach, the threads and the bytes leave room for.
  Status Reach(size_t index);
  // The outcome of the next offer, in file order (a lossless one: nullopt); its rebuilt rows are hashed
  // into *served_hash, their sha256 put in *sha256.
  StatusOr<std::optional<LossyOutcome>> Take(Sha256* served_hash, Digest* sha256);

 private:
  struct Task;
  const TensorInfo& Tensor(size_t offer) const { return file_.header().tensors[offers_[offer].index]; }
  Status StartAhead();
  // Starts the next offer on a worker, or runs it here (taken: its rows go straight to *taken).
  Status Start(Sha256* taken = nullptr);
  struct Worker;
  // Runs the task's hook and marks it done (with `worker`, the worker idle again).
  void Run(const std::shared_ptr<Task>& task, Worker* worker);
  void Loop(Worker* worker);

  const SafetensorsFile& file_;
  VersionReader* base_;
  const IngestOptions& options_;
  std::vector<Offer> offers_;
  std::shared_ptr<SharedProgress> progress_;
  std::vector<uint64_t> begins_;  // of each offer: the bytes of the offers before it
  std::vector<uint64_t> others_;  // of each tensor: the bytes of the tensors before it not offered
  size_t position_ = 0;           // the tensor the ingest's loop is at
  size_t threads_;
  std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
  size_t next_ = 0;                            // the next offer to start
  std::deque<std::shared_ptr<Task>> started_;  // started, not taken, in file order
  // Threads that run the tasks, created as needed; a task goes to the first idle one, so that one tensor at a
  // time runs on the same thread (and malloc arena) throughout.
  std::vector<std::unique_ptr<Worker>> workers_;
  bool closing_ = false;
  std::mutex mu_;  // guards the tasks' and workers' state and the served hash the tasks stream to
  std::condition_variable finished_;  // a task done
  std::condition_variable work_;      // a worker's task, or closing
};

// Bytes of lossy tensors that may run beside the largest one running (see LossyAhead). With two 4096 x 4096
// bf16 tensors (32 MiB each) allowed to run at once, the 1 B pair of bench/gen_pair.py peaked at 660 MiB
// beyond the compute library at 16x (the target: 564).
constexpr uint64_t kLossyBytesBeside = uint64_t{16} << 20;
// Bytes of rebuilt rows that may wait for the tensors before them (see LossyAhead): minilm's 2.4 MB
// tensors done beside its embedding.
constexpr uint64_t kLossyRowsWaiting = uint64_t{64} << 20;

}  // namespace deltastore::ingest_detail
