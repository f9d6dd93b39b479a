#!/usr/bin/env bash
# clang-tidy (.clang-tidy at the root) on the C++ files the last commit changed, with the compile
# commands of build/ (scripts/build.sh writes them). A finding fails the script.
#   scripts/tidy.sh                  files changed by HEAD (all files when that diff cannot be made)
#   scripts/tidy.sh FILE...          those files
#   DS_TIDY_ALL=1 scripts/tidy.sh    every .cc file of the sources
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
TIDY="$(command -v clang-tidy-14 || command -v clang-tidy || true)"
if [ -z "$TIDY" ]; then
  echo "error: clang-tidy-14 is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
if [ ! -f "$BUILD_DIR/compile_commands.json" ]; then
  echo "error: $BUILD_DIR/compile_commands.json is missing (run scripts/build.sh)" >&2
  exit 1
fi
SOURCES='^(api|codec|common|gpu|migrations|server|service|storage|tools)/.*\.cc$'
if [ "$#" -gt 0 ]; then
  files=("$@")
elif [ "${DS_TIDY_ALL:-0}" = 1 ] || ! changed="$(git diff --name-only HEAD~1 -- '*.cc' 2>/dev/null)"; then
  mapfile -t files < <(git ls-files '*.cc' | grep -E "$SOURCES")
else
  mapfile -t files < <(printf '%s\n' "$changed" | grep -E "$SOURCES" || true)
fi
existing=()
for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
if [ "${#existing[@]}" -eq 0 ]; then
  echo "[tidy] no C++ source changed"
  exit 0
fi
echo "[tidy] ${#existing[@]} file(s): ${existing[*]}"
"$TIDY" -p "$BUILD_DIR" --quiet --warnings-as-errors='*' "${existing[@]}" 2> >(grep -v "warnings generated" >&2)
