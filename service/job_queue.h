// The compression job queue: ids of queued jobs in memory (their records are in the MetaStore, so a
// restart rebuilds the queue) and the worker threads that run them one at a time each. A poller adds
// the jobs that other nodes sharing the store queued, or left behind when they died.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace deltastore {

class JobQueue {
 public:
  using Runner = std::function<void(const std::string& job_id)>;
  using Poller = std::function<std::vector<std::string>()>;
  ~JobQueue() { Shutdown(); }

  // Starts `workers` threads that take ids in order and call `run` with each, and a thread that pushes
  // what `poll` returns every `every`.
  void Start(int workers, Runner run, Poller poll, std::chrono::milliseconds every);
  // Queues an id unless it is queued already.
  void Push(const std::string& job_id);
  // Stops taking jobs and joins the workers once their current job returns; queued ids stay queued in
  // the store and run after the next start.
  void Shutdown();

  uint64_t queued();

 private:
  void WorkerLoop();
  void PollLoop(const Poller& poll, std::chrono::milliseconds every);

  Runner run_;
  std::mutex mu_;
  std::condition_variable cv_;       // workers
  std::condition_variable poll_cv_;  // the poller (its own, so a Push never wakes it instead of a worker)
  std::deque<std::string> queue_;
  std::set<std::string> queued_;  // the ids in queue_
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // and the poller
};

}  // namespace deltastore
