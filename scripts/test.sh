#!/usr/bin/env bash
# Installs what is missing, builds, runs clang-tidy on the C++ files of the last commit
# (scripts/tidy.sh), and runs every test: GoogleTest through CTest, then pytest (end-to-end tests
# start the real server on 127.0.0.1 themselves; once on the embedded store, once on PostgreSQL + S3
# servers the tests start), then the GoogleTest suites again under ASan + UBSan
# (scripts/sanitize.sh, in build-asan/) and a short run of every libFuzzer target (scripts/fuzz.sh,
# in build-fuzz/). Any failure fails the script; with CI set (.ci/run), so does a skipped test.
#   DS_TEST_SANITIZE=0           skip the ASan + UBSan suites
#   DS_TEST_FUZZ_SECONDS=N       seconds per fuzz target (default 5; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
DS_HOME="${DS_HOME:-/opt/deltastore}"
scripts/setup.sh
scripts/build.sh
scripts/tidy.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" | tee build/ctest.log
if [ -n "${CI:-}" ] && grep -q "(Skipped)" build/ctest.log; then
  echo "error: GoogleTest cases were skipped, which fails CI (a fixture or tool is missing):" >&2
  grep "(Skipped)" build/ctest.log >&2
  exit 1
fi
if compgen -G "tests/e2e/test_*.py" >/dev/null || compgen -G "clients/python/tests/test_*.py" >/dev/null; then
  DS_BUILD_DIR="$PWD/build" "$DS_HOME/venv/bin/python" -m pytest -q --rootdir "$PWD" tests/e2e $( [ -d clients/python/tests ] && echo clients/python/tests )
  # The end-to-end suite again on the scale-out stores: metadata in a real PostgreSQL, chunks in a real
  # S3 server (SeaweedFS), both started by the tests on free ports (tests/e2e/stores.py).
  DS_E2E_STORES=servers DS_BUILD_DIR="$PWD/build" "$DS_HOME/venv/bin/python" -m pytest -q --rootdir "$PWD" tests/e2e
fi
if [ "${DS_TEST_SANITIZE:-1}" != 0 ]; then
  scripts/sanitize.sh address
fi
if [ "${DS_TEST_FUZZ_SECONDS:-5}" != 0 ]; then
  scripts/fuzz.sh "${DS_TEST_FUZZ_SECONDS:-5}"
fi
