#!/usr/bin/env bash
# Every benchmark table of bench/README.md in one run (figures only, no assertions).
#   bench/run_all.sh            peers (lossless, ZipNN, streaming, deltatensors, plots) + lossy_pair
#   bench/run_all.sh --lossy    also bench/lossy_bench.py on the self-trained pairs (makes them if absent)
# Needs: a build (scripts/build.sh), bench/setup.sh for the peers. Environment: SIZE_GB (generated pair,
# default 1), REPS (default 2), GEN_REPS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${DS_HOME:-/opt/deltastore}/venv/bin/python"
BUILD="${DS_BUILD_DIR:-build}"
FIX=../shared/fixtures
cmake --build "$BUILD" -j2 --target codec_peers lossy_pair deltastored
"$PY" bench/peers.py --build-dir "$BUILD" --size-gb "${SIZE_GB:-1}" --reps "${REPS:-2}" --gen-reps "${GEN_REPS:-1}"
if [ -f "$FIX/faceres.f32.safetensors" ]; then
  "$BUILD/bench/lossy_pair" "$FIX/faceres.f32.safetensors" "$FIX/faceres-deep.f32.safetensors" \
    --ratios 8,16,32 --methods deltadq,lowbit,bitdelta,groupk4 | tee bench/results/lossy_faceres_f32.txt
fi
if [ "${1:-}" = "--lossy" ]; then
  [ -f /tmp/deltastore-pairs/mlp.json ] || "$PY" bench/pairs/make_pairs.py --out /tmp/deltastore-pairs
  "$PY" bench/lossy_bench.py --pairs mlp --calibrated --out bench/results/lossy_mlp_before_rule.md
  "$PY" bench/lossy_bench.py --pairs mlp --calibrated --ratios 16,32,64,128 --methods deltadq,deltadq-nodbms \
    --out bench/results/lossy_mlp_ours.md
  "$PY" bench/peers.py --only plots
fi
