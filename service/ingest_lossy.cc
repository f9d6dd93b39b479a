// The encoding pass's lossy tensors (LossyAhead: compressed ahead of the ingest's loop, taken in file
// order) and the progress the ingest's phases share with the threads that work for them.
#include <algorithm>
#include <system_error>
#include <thread>
#include <utility>

#include "service/ingest_internal.h"

namespace deltastore::ingest_detail {

void SharedProgress::Add(uint64_t bytes, uint64_t tensors) {
  std::lock_guard<std::mutex> lock(mu_);
  p_.bytes_done += bytes;
  p_.tensors_done += tensors;
  Report();
}

LossyStep SharedProgress::Step(uint64_t size, std::shared_ptr<uint64_t> counted,
                               std::shared_ptr<std::atomic<bool>> stop) {
  return [self = shared_from_this(), size, counted = std::move(counted),
          stop = std::move(stop)](double fraction) {
    const auto now = static_cast<uint64_t>(std::clamp(fraction, 0.0, 1.0) * static_cast<double>(size));
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (now > *counted) {
        self->p_.bytes_done += now - std::exchange(*counted, now);
        self->Report();
      }
    }
    return !(self->cancelled_ && self->cancelled_()) && !(stop && stop->load());
  };
}

void SharedProgress::Finish(uint64_t size, const std::shared_ptr<uint64_t>& counted) {
  std::lock_guard<std::mutex> lock(mu_);
  p_.bytes_done += size - std::min(size, *counted);
  *counted = size;
  p_.tensors_done++;
  Report();
}

IngestProgress SharedProgress::Now() {
  std::lock_guard<std::mutex> lock(mu_);
  return p_;
}

void SharedProgress::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
}

void SharedProgress::Report() {
  if (report_ && !closed_) report_(p_);
}

struct LossyAhead::Task {
  const Offer* offer = nullptr;
  std::string base, finetune;  // read whole when started, released when the hook returns
  std::shared_ptr<uint64_t> counted = std::make_shared<uint64_t>(0);  // bytes of progress (SharedProgress)
  LossyStep step;
  Sha256 hash;  // of the rebuilt rows (the hook's thread)
  uint64_t rebuilt_bytes = 0;
  // Guarded by the LossyAhead's mu_:
  std::string buffered;      // rows rebuilt before the tensor was taken
  Sha256* served = nullptr;  // where rows go once it is taken
  bool done = false;
  std::optional<StatusOr<std::optional<LossyOutcome>>> outcome;
};

struct LossyAhead::Worker {
  std::shared_ptr<Task> task;  // to run, until done (mu_)
  std::thread thread;
};

LossyAhead::LossyAhead(const SafetensorsFile& file, VersionReader* base, const IngestOptions& options,
                       std::vector<Offer> offers, std::shared_ptr<SharedProgress> progress)
    : file_(file),
      base_(base),
      options_(options),
      offers_(std::move(offers)),
      progress_(std::move(progress)),
      threads_(options.encode_threads != 0 ? options.encode_threads
                                           : std::max<size_t>(1, std::thread::hardware_concurrency())) {
  const std::vector<TensorInfo>& tensors = file_.header().tensors;
  uint64_t begin = 0;
  bool small = false;
  for (size_t k = 0; k < offers_.size(); ++k) {
    begins_.push_back(begin);
    begin += Tensor(k).size();
    small |= Tensor(k).size() <= kLossyBytesBeside;
  }
  // Where no tensor could run beside another (each over kLossyBytesBeside), each runs on this thread.
  if (!small) threads_ = 1;
  others_.assign(tensors.size() + 1, 0);
  for (size_t i = 0, k = 0; i < tensors.size(); ++i) {
    const bool offered = k < offers_.size() && offers_[k].index == i;
    k += offered ? 1 : 0;
    others_[i + 1] = others_[i] + (offered ? 0 : tensors[i].size());
  }
}

Status LossyAhead::Reach(size_t index) {
  position_ = index;
  return StartAhead();
}

LossyAhead::~LossyAhead() {
  stop_->store(true);  // the tasks running stop at their next step
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  work_.notify_all();
  for (auto& w : workers_) w->thread.join();
}

Status LossyAhead::StartAhead() {
  if (threads_ <= 1) return OkStatus();  // each tensor runs on the ingest's thread when taken
  while (next_ < offers_.size() &&
         others_[offers_[next_].index] - others_[std::min(position_, offers_[next_].index)] <=
             kLossyBytesBeside) {
    size_t running = 0;
    bool waits = false;  // on a tensor the hook may depend on
    uint64_t largest = Tensor(next_).size(), running_bytes = largest, buffered = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& task : started_) {
        if (task->done) {
          buffered += task->buffered.size();
          continue;
        }
        ++running;
        const size_t j = static_cast<size_t>(task->offer - offers_.data());
        running_bytes += Tensor(j).size();
        largest = std::max(largest, Tensor(j).size());
        waits |= begins_[next_] - (begins_[j] + Tensor(j).size()) >= options_.lossy_reach;
      }
    }
    if (waits || running >= threads_ || buffered > kLossyRowsWaiting ||
        (running > 0 && running_bytes - largest > kLossyBytesBeside))
      break;
    DS_RETURN_IF_ERROR(Start());
  }
  return OkStatus();
}

Status LossyAhead::Start(Sha256* taken) {
  auto task = std::make_shared<Task>();
  task->offer = &offers_[next_];
  const TensorInfo& t = file_.header().tensors[task->offer->index];
  task->finetune.assign(t.size(), '\0');
  task->base.assign(t.size(), '\0');
  DS_RETURN_IF_ERROR(file_.ReadTensorRange(t, 0, t.size(), task->finetune.data()));
  DS_RETURN_IF_ERROR(base_->ReadTensor(*task->offer->bt, 0, t.size(), task->base.data()));
  task->step = progress_->Step(t.size(), task->counted, stop_);
  ++next_;
  started_.push_back(task);
  if (taken != nullptr) {
    task->served = taken;  // serially: its rows go straight to the served hash
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    Worker* idle = nullptr;
    for (auto& w : workers_) {
      if (w->task == nullptr) {
        idle = w.get();
        break;
      }
    }
    if (idle == nullptr) {
      try {
        auto w = std::make_unique<Worker>();
        w->thread = std::thread([this, p = w.get()] { Loop(p); });
        idle = workers_.emplace_back(std::move(w)).get();
      } catch (const std::system_error&) {
        // no thread could be started: it runs here
      }
    }
    if (idle != nullptr) {
      idle->task = task;
      lock.unlock();
      work_.notify_all();
      return OkStatus();
    }
  }
  Run(task, nullptr);
  return OkStatus();
}

void LossyAhead::Loop(Worker* worker) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_.wait(lock, [&] { return closing_ || worker->task != nullptr; });
    if (worker->task == nullptr) return;
    std::shared_ptr<Task> task = worker->task;
    lock.unlock();
    Run(task, worker);
    lock.lock();
  }
}

void LossyAhead::Run(const std::shared_ptr<Task>& task, Worker* worker) {
  LossyRebuilt rebuilt = [this, &task](std::string_view rows) {
    task->hash.Update(rows);
    task->rebuilt_bytes += rows.size();
    std::lock_guard<std::mutex> lock(mu_);
    if (task->served != nullptr) {
      task->served->Update(rows);
    } else {
      task->buffered.append(rows);
    }
  };
  const Offer& o = *task->offer;
  auto outcome = options_.lossy(file_.header().tensors[o.index], task->base, task->finetune, o.stream,
                                task->step, rebuilt);
  std::string().swap(task->base);
  std::string().swap(task->finetune);
  std::lock_guard<std::mutex> lock(mu_);
  task->outcome = std::move(outcome);
  task->done = true;
  if (worker != nullptr) worker->task = nullptr;
  finished_.notify_all();
}

StatusOr<std::optional<LossyOutcome>> LossyAhead::Take(Sha256* served_hash, Digest* sha256) {
  if (started_.empty()) {
    if (next_ >= offers_.size()) return Internal("lossy tensor taken beyond those offered");
    DS_RETURN_IF_ERROR(Start(threads_ <= 1 ? served_hash : nullptr));
  }
  DS_RETURN_IF_ERROR(StartAhead());
  std::shared_ptr<Task> task = started_.front();
  {
    std::unique_lock<std::mutex> lock(mu_);
    served_hash->Update(task->buffered);
    std::string().swap(task->buffered);
    task->served = served_hash;
    while (!task->done) {
      finished_.wait(lock);
      if (task->done) break;
      // A tensor ahead finished: its thread can take the next one.
      lock.unlock();
      Status s = StartAhead();
      lock.lock();
      if (!s.ok()) return s;
    }
  }
  started_.pop_front();
  const TensorInfo& t = file_.header().tensors[task->offer->index];
  StatusOr<std::optional<LossyOutcome>> outcome = std::move(*task->outcome);
  if (!outcome.ok()) return LossyFailure(options_, outcome.status().Annotate("tensor " + t.name));
  if (task->rebuilt_bytes != (*outcome ? t.size() : 0)) {
    return Internal("lossy hook rebuilt " + std::to_string(task->rebuilt_bytes) + " bytes of tensor " +
                    t.name + (*outcome ? "" : ", then stored it losslessly"));
  }
  if (*outcome) *sha256 = task->hash.Finish();
  progress_->Finish(t.size(), task->counted);
  DS_RETURN_IF_ERROR(StartAhead());
  return std::move(*outcome);
}

}  // namespace deltastore::ingest_detail
