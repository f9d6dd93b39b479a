#include "service/job_queue.h"

namespace deltastore {

void JobQueue::Start(int workers, Runner run) {
  run_ = std::move(run);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

void JobQueue::Push(const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job_id);
  }
  cv_.notify_one();
}

void JobQueue::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
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
    }
    run_(id);
  }
}

}  // namespace deltastore
