#!/usr/bin/env bash
# Optional peers for bench/peers.py: the Python packages of bench/requirements.txt into the project venv
# and Debian's nginx-light (the static file server of the streaming comparison). Not part of
# scripts/setup.sh: nothing in the build or the tests needs them. Set DS_SKIP_APT=1 to skip apt.
set -euo pipefail
cd "$(dirname "$0")/.."
DS_HOME="${DS_HOME:-/opt/deltastore}"
"$DS_HOME/venv/bin/pip" install -r bench/requirements.txt
if [ -z "${DS_SKIP_APT:-}" ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y --no-install-recommends nginx-light
fi
