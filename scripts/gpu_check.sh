#!/usr/bin/env bash
# The GPU path, checked in one go on a machine with a device (and its CPU part anywhere):
#   1. builds against the CUDA libtorch of the pinned torch wheel (scripts/setup.sh, scripts/build.sh),
#   2. runs the gpu/ GoogleTest suite on the CPU (DS_COMPUTE_DEVICE=cpu) and, when libtorch sees a GPU,
#      on cuda:0,
#   3. times the lossy benchmark (build/bench/lossy_pair, deltadq at 16x and 128x) on each device,
#   4. bench/gpu_cpu_check.py: a lossy version made through the server on each device; the served file
#      equals the offline CPU rebuild, and the GPU version equals the CPU one (same masks and codes),
#      with the job time and weights per second.
# Without a GPU it says so and exits 0 after the CPU part. Budget: 8 minutes on the lent machines.
set -euo pipefail
cd "$(dirname "$0")/.."
DS_HOME="${DS_HOME:-/opt/deltastore}"
PY="$DS_HOME/venv/bin/python"
F="$(cd .. && pwd)/shared/fixtures"
scripts/setup.sh >&2
scripts/build.sh >&2
CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
echo "== torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'), CUDA device: $CUDA"
devices=(cpu)
[ "$CUDA" = 1 ] && devices+=(cuda)
for d in "${devices[@]}"; do
  echo "== gpu/ suite on $d"
  DS_COMPUTE_DEVICE="$d" build/tests/gpu_test --gtest_brief=1
  echo "== lossy_pair on $d (faceres f32, seconds per method and ratio in the last column)"
  DS_COMPUTE_DEVICE="$d" build/bench/lossy_pair "$F/faceres.f32.safetensors" "$F/faceres-deep.f32.safetensors" \
    --ratios 16,128 --methods deltadq
done
echo "== the same lossy versions through the server"
"$PY" bench/gpu_cpu_check.py --ratios 16,128
[ "$CUDA" = 1 ] || echo "no CUDA device: the CPU part passed; run this again where one is lent"
