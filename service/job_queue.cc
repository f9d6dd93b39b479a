#include "service/job_queue.h"

#include "common/allocator.h"

namespace deltastore {

void JobQueue::Start(int workers, Runner run, Poller poll, std::chrono::milliseconds every) {
  run_ = std::move(run);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  workers_.emplace_back([this, poll = std::move(poll), every] { PollLoop(poll, every); });
}

void JobQueue::Push(const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!queued_.insert(job_id).second) return;
    queue_.push_back(job_id);
  }
  cv_.notify_one();
}

void JobQueue::PollLoop(const Poller& poll, std::chrono::milliseconds every) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!poll_cv_.wait_for(lock, every, [this] { return stopping_; })) {
    lock.unlock();
    for (const auto& id : poll()) Push(id);
    lock.lock();
  }
}

void JobQueue::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  poll_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

uint64_t JobQueue::queued() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void JobQueue::WorkerLoop() {
  while (true) {
    std::string id;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
      queued_.erase(id);
    }
    run_(id);
    ReturnFreeMemory();
  }
}

}  // namespace deltastore
