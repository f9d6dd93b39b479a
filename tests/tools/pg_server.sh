#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, in a directory of the caller's (Debian's postgresql package,
# see scripts/setup.sh). PostgreSQL refuses to run as root: as root it runs as the `postgres` user.
#   pg_server.sh start DIR        initdb (first time) and start on a free port of 127.0.0.1 (the same
#                                 port again when DIR was started before); prints the URL of an empty
#                                 database `deltastore` owned by user `deltastore` (trust auth)
#   pg_server.sh stop DIR         fast shutdown (no-op when not running)
#   pg_server.sh kill DIR         immediate shutdown, as a crash would
set -euo pipefail
cmd="${1:?start|stop|kill}" dir="${2:?directory}"
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir/data" -U deltastore --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
      fresh=1
    fi
    # A port taken between the pick and the server's bind (tests run in parallel) makes a first start
    # pick again; a restart keeps the port of the first start.
    for _ in 1 2 3 4 5; do
      picked=0
      if [ ! -f "$dir/port" ]; then
        python3 "$(dirname "$0")/free_ports.py" 1 >"$dir/port"
        picked=1
      fi
      port="$(cat "$dir/port")"
      # fsync off: a test server's data is thrown away; the registry's own durability is not tested here.
      if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null 2>&1; then
        break
      fi
      if [ "$picked" = 1 ] && tail -5 "$dir/server.log" | grep -q 'could not bind'; then
        rm -f "$dir/port"
        continue
      fi
      tail -20 "$dir/server.log" >&2
      exit 1
    done
    if [ "${fresh:-0}" = 1 ]; then
      as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U deltastore -d postgres -c 'CREATE DATABASE deltastore' >/dev/null
    fi
    echo "postgresql://deltastore@127.0.0.1:$port/deltastore"
    ;;
  stop | kill)
    mode=fast
    [ "$cmd" = kill ] && mode=immediate
    [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 start DIR | stop DIR | kill DIR" >&2; exit 2 ;;
esac
