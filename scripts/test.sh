#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: GoogleTest through CTest, then pytest
# (end-to-end tests start the real server on 127.0.0.1 themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
DS_HOME="${DS_HOME:-/opt/deltastore}"
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
if compgen -G "tests/e2e/test_*.py" >/dev/null || compgen -G "clients/python/tests/test_*.py" >/dev/null; then
  DS_BUILD_DIR="$PWD/build" "$DS_HOME/venv/bin/python" -m pytest -q --rootdir "$PWD" tests/e2e $( [ -d clients/python/tests ] && echo clients/python/tests )
fi
