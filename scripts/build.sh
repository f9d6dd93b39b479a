#!/usr/bin/env bash
# Configures and builds into ./build (Ninja, ccache under $DS_HOME so clean clones rebuild fast).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
source scripts/ccache_env.sh
TORCH_PREFIX="$("$DS_HOME/venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DTORCH_CMAKE_PREFIX="$TORCH_PREFIX" \
    -DDELTASTORE_WERROR="${DELTASTORE_WERROR:-OFF}" "$@" >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
