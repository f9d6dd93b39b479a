// Wall-clock timestamps for records (RFC 3339, UTC, seconds).
#pragma once

#include <chrono>
#include <ctime>
#include <string>

namespace deltastore {

inline std::string NowIso() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace deltastore
