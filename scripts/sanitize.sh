#!/usr/bin/env bash
# Builds the GoogleTest suites with sanitizers (gcc) in a separate build dir and runs them with CTest.
#   scripts/sanitize.sh            ASan + UBSan (DELTASTORE_SANITIZE) in ./build-asan
#   scripts/sanitize.sh thread     ThreadSanitizer (DELTASTORE_TSAN) in ./build-tsan: storage_test, api_test
# ASan runs every suite, the libtorch ones included (gpu_test links libdeltastore_gpu.so, the others
# load it on lossy jobs), leak check on; scripts/lsan.supp drops one static allocation of libtorch_cuda.so.
# TSan runs the suites with concurrency of our own (RocksDB stores, registry workers, HTTP handlers);
# RocksDB is not TSan-built, scripts/tsan.supp drops its internal false positives.
# On the 2-core machine, from scratch: ASan ~18 min cold ccache (1m15 warm), of which the tests ~1 min;
# TSan ~6 min, of which the tests ~3.5 min (RoutesTest.VersionsDownloadsTagsAndDeletion). Measured again
# while other builds shared the machine (load 6-9): ASan 44.5 min cold, 3 min warm (docs/hardening.md).
# scripts/test.sh (CI) runs the ASan suites.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-address}"
source scripts/ccache_env.sh
case "$MODE" in
  address)
    BUILD_DIR="${BUILD_DIR:-build-asan}"
    OPTION=-DDELTASTORE_SANITIZE=ON
    SUITES=(common_test codec_test storage_test service_test gpu_test api_test migrations_test)
    ;;
  thread)
    BUILD_DIR="${BUILD_DIR:-build-tsan}"
    OPTION=-DDELTASTORE_TSAN=ON
    SUITES=(storage_test api_test)
    ;;
  *) echo "usage: scripts/sanitize.sh [address|thread]" >&2; exit 2 ;;
esac
LABELS="$(printf '%s\n' "${SUITES[@]}" | sed 's/_test$//' | paste -sd'|')"

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  TORCH_PREFIX="$("$DS_HOME/venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake -S . -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DTORCH_CMAKE_PREFIX="$TORCH_PREFIX" "$OPTION" >/dev/null
fi
JOBS=$(( $(nproc) < 2 ? $(nproc) : 2 ))
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${SUITES[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp}"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -L "^($LABELS)\$"
