// The shared fixtures (real model weights at ../shared/fixtures, DS_FIXTURES_DIR) for GoogleTest suites.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

// Skips the test when `path` is missing, locally; fails it when CI is set, where the fixtures are
// always present: in CI a skipped test would hide a check that no longer runs.
#define DS_REQUIRE_FIXTURE(path)                                                                   \
  do {                                                                                             \
    if (!std::filesystem::exists(path)) {                                                          \
      if (std::getenv("CI") != nullptr) GTEST_FAIL() << "fixture missing in CI: " << (path);       \
      GTEST_SKIP() << "fixture missing: " << (path) << " (the shared fixtures folder next to the " \
                   << "clone)";                                                                    \
    }                                                                                              \
  } while (0)
