// The compression job queue: ids of queued jobs in memory (their records are in the MetaStore, so a
// restart rebuilds the queue) and the worker threads that run them one at a time each.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace deltastore {

class JobQueue {
 public:
  using Runner = std::function<void(const std::string& job_id)>;
  ~JobQueue() { Shutdown(); }

  // Starts `workers` threads that take ids in order and call `run` with each.
  void Start(int workers, Runner run);
  void Push(const std::string& job_id);
  // Stops taking jobs and joins the workers once their current job returns; queued ids stay queued in
  // the store and run after the next start.
  void Shutdown();

  uint64_t queued();

 private:
  void WorkerLoop();

  Runner run_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace deltastore
