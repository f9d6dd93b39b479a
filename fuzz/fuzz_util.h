// Shared helpers for the libFuzzer targets in this folder (see README.md).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/status.h"

// A broken invariant: print where and why, then abort so libFuzzer records the input as a crash.
#define DS_FUZZ_CHECK(cond, ...)                                                            \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "FUZZ INVARIANT FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, "  " __VA_ARGS__);                                               \
      std::fprintf(stderr, "\n");                                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace deltastore::fuzz {

// Per-iteration sizes stay small so a run does many executions; callers of the parsers bound sizes
// the same way (a manifest's raw size, kChunkSize).
inline constexpr uint64_t kMaxRawSize = 1 << 20;

inline uint64_t LoadLE(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// `n` bytes made from `material` repeated (zeros when it is empty): a base of a size the input chose.
inline std::string Cyclic(std::string_view material, uint64_t n) {
  std::string out(n, '\0');
  if (!material.empty()) {
    for (uint64_t i = 0; i < n; ++i) out[i] = material[i % material.size()];
  }
  return out;
}

// An error must be a real Status: not ok, and one of the codes the function documents.
inline bool IsOneOf(const deltastore::Status& s, std::initializer_list<deltastore::StatusCode> codes) {
  for (auto c : codes) {
    if (s.code() == c) return true;
  }
  return false;
}

}  // namespace deltastore::fuzz
