#!/usr/bin/env bash
# Installs what is missing, builds, and starts deltastored on an embedded RocksDB under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
mkdir -p "${DS_DATA_DIR:-data}"
exec build/server/deltastored --data-dir "${DS_DATA_DIR:-data}" --listen "${DS_LISTEN:-127.0.0.1:8080}" "$@"
