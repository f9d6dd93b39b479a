// The pause before a try runs again after a conflict with another writer: random, so that writers that
// collided do not collide again in step, and growing with each try (up to the seventh).
#pragma once

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

namespace deltastore {

// Sleeps `floor` plus a random part below `spread` * 2^min(attempt, 6), attempt counted from 0.
inline void PauseBeforeRetry(int attempt, std::chrono::microseconds floor, std::chrono::microseconds spread) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const auto top = static_cast<uint64_t>(spread.count()) << std::min(attempt, 6);
  std::this_thread::sleep_for(floor + std::chrono::microseconds(rng() % top));
}

}  // namespace deltastore
