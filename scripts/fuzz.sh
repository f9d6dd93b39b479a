#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang-14, ASan and UBSan into ./build-fuzz and runs each
# for SECONDS_PER_TARGET (default 10) on its seed corpus; prints executions per target and fails when
# a target crashes (the input lands in build-fuzz/artifacts/).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]       FUZZ_TARGETS="manifest http" limits the targets
# New corpus entries go to build-fuzz/corpus/<target>/ (kept between runs); fuzz/corpus/<target>/ holds
# the committed seeds and is only read. Longer runs and reproducing crashes: fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-10}"
BUILD_DIR="${BUILD_DIR:-build-fuzz}"
TARGETS=(${FUZZ_TARGETS:-safetensors_header manifest chunk_decode float_rans lossy_chunk container http})
source scripts/ccache_env.sh

if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
    clang++-14 -x c++ -fsanitize=fuzzer,address,undefined - -o /dev/null 2>/dev/null; then
  echo "fuzz.sh needs clang-14 with libFuzzer: apt-get install -y clang-14 libclang-rt-14-dev" >&2
  exit 2
fi
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  TORCH_PREFIX="$("$DS_HOME/venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake -S . -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DTORCH_CMAKE_PREFIX="$TORCH_PREFIX" -DDELTASTORE_FUZZ=ON >/dev/null
fi
# Two cores, shared with other builds: never more than two jobs.
JOBS=$(( $(nproc) < 2 ? $(nproc) : 2 ))
cmake --build "$BUILD_DIR" -j "$JOBS" --target $(printf '%s_fuzz ' "${TARGETS[@]}")

mkdir -p "$BUILD_DIR/artifacts"
# The container and http targets write temp files (a registry's data dir); a crash leaves them behind.
export TMPDIR="$PWD/$BUILD_DIR/tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
failed=()
printf '%-20s %12s %s\n' target executions result
for t in "${TARGETS[@]}"; do
  work="$BUILD_DIR/corpus/$t"
  mkdir -p "$work"
  log="$BUILD_DIR/artifacts/$t.log"
  args=(-max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096
        -artifact_prefix="$BUILD_DIR/artifacts/$t-")
  [ -f "fuzz/$t.dict" ] && args+=(-dict="fuzz/$t.dict")
  rc=0
  # ASan's leak check stays on; UBSan findings abort (-fno-sanitize-recover) and count as crashes.
  ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}" \
  LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" \
    "$BUILD_DIR/fuzz/${t}_fuzz" "${args[@]}" "$work" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    printf '%-20s %12s ok\n' "$t" "${execs:-?}"
  else
    printf '%-20s %12s CRASH (exit %d): see %s\n' "$t" "${execs:-?}" "$rc" "$log"
    grep -m1 -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|FUZZ INVARIANT FAILED|terminate called' "$log" | sed 's/^/    /' || true
    grep -m1 -E '^artifact_prefix|Test unit written to' "$log" | sed 's/^/    /' || true
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
