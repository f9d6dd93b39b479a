#!/usr/bin/env bash
# The GPU path, checked in one go on a machine with a device (and its CPU part anywhere):
#   1. builds against the CUDA libtorch of the pinned torch wheel (scripts/setup.sh, scripts/build.sh),
#      or, with DS_GPU_BUNDLE=DIR, takes the binaries scripts/gpu_bundle.sh packed for a lent machine
#      that reaches no registry (built against its image's torch, which they load there),
#   2. runs the gpu/ GoogleTest suite on the CPU (DS_COMPUTE_DEVICE=cpu) and, when libtorch sees a GPU,
#      on cuda:0,
#   3. times the lossy benchmark (bench/lossy_pair, deltadq at 16x and 128x) on each device,
#   4. bench/gpu_cpu_check.py: a lossy version made through the server on each device; the served file
#      equals the offline CPU rebuild, and the GPU version keeps the CPU one's masks (whether the codes
#      are the same too is printed), with the job time and weights per second,
#   5. with a GPU: at LLM shapes (bench/gen_pair.py --llm-layers $DS_LLM_LAYERS, default 1: 0.46 B
#      weights; 0 skips this part): step 4 at 128x on that pair (the job's weights per second: probes in
#      parallel, each tensor over 16 MiB searched alone with the host's cores for its host loops), then the
#      rate allocation's probes and the final search of every tensor in turn (bench/lossy_probe_timing,
#      which takes DS_HOST_THREADS=N from the environment) on cuda:0 and, as the baseline of the same run,
#      on the machine's CPU cores: seconds per tensor.
# Every step runs even when one before it failed; the exit status says whether all passed. Without a GPU
# it says so and exits 0 after the CPU part. Budget: 8 minutes on the lent machines.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
step() {  # step NAME SECONDS COMMAND...: runs it under a time limit, notes a failure, goes on
  local name="$1" secs="$2"
  shift 2
  echo "== $name"
  timeout "$secs" "$@" || { echo "!! $name failed (rc $?; 124: over ${secs} s)"; failed+=("$name"); }
}

if [ -n "${DS_GPU_BUNDLE:-}" ]; then
  BUNDLE="$(cd "$DS_GPU_BUNDLE" && pwd)"
  PY="${PY:-python3}"
  if [ -f "$BUNDLE/bin.tar.xz" ]; then  # tarfile: the device image may lack an xz binary
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE/bin.tar.xz" "$BUNDLE"
  fi
  BUILD="$BUNDLE/build"
  F="$BUNDLE/fixtures"
  have="$("$PY" -c 'import torch; print(torch.__version__)')"
  if [ "$have" != "$(cat "$BUNDLE/TORCH_VERSION")" ]; then
    echo "the bundle was built for torch $(cat "$BUNDLE/TORCH_VERSION") and this machine's is $have:" \
      "run DS_DEVICE_TORCH=${have%%+*} scripts/gpu_bundle.sh" >&2
    exit 2
  fi
  TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  # For the bundle's binaries alone: python3 keeps the image's own libssl, libz and libffi.
  export DS_BIN_LIBRARY_PATH="$BUNDLE/lib:$BUILD/gpu:$TORCH_LIB"
  missing="$(LD_LIBRARY_PATH="$DS_BIN_LIBRARY_PATH" ldd "$BUILD"/*/* | grep 'not found' | sort -u)"
  [ -z "$missing" ] || { echo "libraries not found: $missing" >&2; exit 2; }
else
  DS_HOME="${DS_HOME:-/opt/deltastore}"
  PY="$DS_HOME/venv/bin/python"
  BUILD=build
  F="${DS_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
  scripts/setup.sh >&2
  scripts/build.sh >&2
fi
export DS_BUILD_DIR="$BUILD" DS_FIXTURES="$F"
# The bundle's libraries for its binaries alone (empty otherwise: the build's RUNPATH finds libtorch).
BIN=(env "LD_LIBRARY_PATH=${DS_BIN_LIBRARY_PATH:-${LD_LIBRARY_PATH:-}}")
CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
echo "== torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'), CUDA device: $CUDA"
[ "$CUDA" = 1 ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
devices=(cpu)
[ "$CUDA" = 1 ] && devices+=(cuda)
for d in "${devices[@]}"; do
  step "gpu/ suite on $d" 120 "${BIN[@]}" DS_COMPUTE_DEVICE="$d" "$BUILD/tests/gpu_test" --gtest_brief=1
  step "lossy_pair on $d (faceres f32, seconds per method and ratio in the last column)" 90 \
    "${BIN[@]}" DS_COMPUTE_DEVICE="$d" "$BUILD/bench/lossy_pair" "$F/faceres.f32.safetensors" \
    "$F/faceres-deep.f32.safetensors" --ratios 16,128 --methods deltadq
done
step "the same lossy versions through the server" 180 "$PY" bench/gpu_cpu_check.py --ratios 16,128
LAYERS="${DS_LLM_LAYERS:-1}"  # 0: no LLM-shaped part
if [ "$CUDA" = 1 ] && [ "$LAYERS" -gt 0 ]; then
  llm="$(mktemp -d)"
  step "an LLM-shaped pair ($LAYERS decoder layer(s); 1: 0.46 B weights)" 60 \
    "$PY" bench/gen_pair.py "$llm" --llm-layers "$LAYERS" --fixtures "$F"
  step "the same lossy versions through the server at LLM shapes, 128x" 240 \
    "$PY" bench/gpu_cpu_check.py --ratios 128 --pair-dir "$llm"
  for d in cuda cpu; do  # the job's work per tensor (probes, final search) on each, at 128x
    step "lossy_probe_timing on $d at LLM shapes, 128x (weights per second on the last line)" 150 \
      "${BIN[@]}" DS_COMPUTE_DEVICE=$d "$BUILD/bench/lossy_probe_timing" "$llm/base.safetensors" \
      "$llm/finetune.safetensors" 128
  done
  rm -rf "$llm"
elif [ "$CUDA" != 1 ]; then
  echo "no CUDA device: the CPU part ran; run this again where one is lent"
fi
[ ${#failed[@]} = 0 ] || { printf 'failed: %s\n' "${failed[@]}"; exit 1; }
echo "gpu_check: all steps passed"
