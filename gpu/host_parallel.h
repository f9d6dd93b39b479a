// The compressor's loops that run on the host whatever the compute device (drawing a tensor's shuffle
// orders, widening the pair's bytes, rebuilding rows), split into contiguous pieces on several threads
// (LossyOptions::host_threads). Each element is computed on its own, so the bytes are the same at any
// thread count. Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace deltastore {

// Calls f(first, last) on contiguous pieces covering [0, n), each at least `grain` long, on up to
// `threads` threads (this one among them), and returns when every piece is done; an exception from a
// piece is rethrown here (the first piece's that threw). One piece, on this thread, when n < 2 * grain.
template <class F>
void HostParallelFor(int threads, int64_t n, int64_t grain, F&& f) {
  const int64_t pieces = std::clamp<int64_t>(n / std::max<int64_t>(grain, 1), 1, std::max(threads, 1));
  if (pieces == 1) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(pieces));
  auto run = [&](int64_t k) {
    try {
      f(k * n / pieces, (k + 1) * n / pieces);  // n / pieces >= grain elements each
    } catch (...) {
      errors[static_cast<size_t>(k)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(pieces - 1));
  for (int64_t k = 1; k < pieces; ++k) pool.emplace_back(run, k);
  run(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace deltastore
