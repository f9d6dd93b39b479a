#!/usr/bin/env bash
# Packs into .gpu/ (git-ignored) what scripts/gpu_check.sh needs on a lent GPU machine, which reaches no
# package registry and has no Debian packages of ours, only its image's CUDA torch:
#   .gpu/build/   deltastored, deltastore-tool, gpu_test, lossy_pair, lossy_probe_timing and
#                 gpu/libdeltastore_gpu.so (the server opens it from ../gpu), stripped, built here into
#                 build-gpu/ against the torch version of that image (DS_DEVICE_TORCH, default 2.11.0, the
#                 one /work/.library/device/KINDS.md records): there they load the image's own libtorch,
#   .gpu/lib/     every shared library they need beyond glibc, libstdc++ and libtorch (ldd's closure),
#   .gpu/fixtures the faceres f32 pair, .gpu/TORCH_VERSION the version they were built against;
#   build/ and lib/ travel packed as .gpu/bin.tar.xz.
# Then, on the device: DS_GPU_BUNDLE=.gpu scripts/gpu_check.sh (the device tool's run with carry [".gpu"]).
# The bundle must stay under the tool's 64 MiB with the working tree; the script says its size.
set -euo pipefail
cd "$(dirname "$0")/.."
DS_HOME="${DS_HOME:-/opt/deltastore}"
VER="${DS_DEVICE_TORCH:-2.11.0}"
VENV="$DS_HOME/torch-$VER"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "gpu_bundle: installing torch==$VER into $VENV (a few GB, once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$VER"
fi
PREFIX="$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
FULL="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
source scripts/ccache_env.sh
B=build-gpu
if [ ! -f "$B/build.ninja" ]; then
  cmake -S . -B "$B" -G Ninja -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DTORCH_CMAKE_PREFIX="$PREFIX" >/dev/null
fi
cmake --build "$B" -j "$(nproc)" --target deltastored deltastore-tool gpu_test lossy_pair lossy_probe_timing >&2

rm -rf .gpu
mkdir -p .gpu/build/server .gpu/build/tools .gpu/build/tests .gpu/build/bench .gpu/build/gpu .gpu/lib .gpu/fixtures
bins=(server/deltastored tools/deltastore-tool tests/gpu_test bench/lossy_pair bench/lossy_probe_timing)
for b in "${bins[@]}"; do strip -o ".gpu/build/$b" "$B/$b"; done
# The libraries the binaries load from outside the torch wheel and the base system. glibc and libstdc++
# stay the device's own (newer than Debian 12's; libtorch needs its libstdc++).
system='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s)\.'
for b in "${bins[@]}"; do ldd "$B/$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    case "$path" in */torch/lib/* | */nvidia/*) continue ;; esac
    [[ "$name" =~ $system ]] && continue
    if [[ "$path" == "$PWD/$B/"* ]]; then strip -o ".gpu/build/gpu/$name" "$path"; else cp -L "$path" ".gpu/lib/$name"; fi
  done
F="${DS_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
cp "$F/faceres.f32.safetensors" "$F/faceres-deep.f32.safetensors" .gpu/fixtures/
echo "$FULL" >.gpu/TORCH_VERSION
# Packed, or the bundle and the working tree would not fit the tool's 64 MiB (gpu_check.sh unpacks it).
tar -C .gpu -cJf .gpu/bin.tar.xz build lib
rm -rf .gpu/build .gpu/lib
echo "gpu_bundle: .gpu holds $(du -sm .gpu | cut -f1) MiB for torch $FULL"
