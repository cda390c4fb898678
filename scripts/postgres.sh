#!/usr/bin/env bash
# A throwaway PostgreSQL server for MLflow (the tests' and the load test's cluster-style tracking store), on
# 127.0.0.1 only, trust authentication, its data and socket in DIR. Debian's server (installed here if missing
# and we are root), run as the `postgres` user when we are root (postgres refuses to run as root); the Python
# driver psycopg (v3, the one SQLAlchemy 2.1 takes for postgresql:// URIs; the `postgres` extra) goes into
# $PYTHON's environment (default .venv/bin/python). DIR's parent folders must be open to the postgres user (a
# folder made under /tmp is).
#   bash scripts/postgres.sh start DIR PORT   -> prints the MLflow URI postgresql://postgres@127.0.0.1:PORT/mlflow
#   bash scripts/postgres.sh stop DIR         -> stops it (fast shutdown); DIR may then be deleted
# Exit status 3 (with the reason on stderr) where no server can be had: callers skip on it.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?start DIR PORT | stop DIR}
python=${PYTHON:-.venv/bin/python}
dir=$(realpath -m "${2:?DIR}")
unavailable() { echo "postgres.sh: $*" >&2; exit 3; }

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$found" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[postgres] installing Debian's postgresql" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 \
      || unavailable "apt-get install postgresql failed"
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$found" ] || unavailable "no PostgreSQL server here (/usr/lib/postgresql/*/bin) and none could be installed"
  echo "$found"
}

as_owner() {  # run a server command as the data folder's owner (postgres when we are root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

driver() {
  "$python" -c "import psycopg" 2>/dev/null && return 0
  echo "[postgres] installing psycopg[binary] for $python" >&2
  "$python" -m pip install --quiet --progress-bar off "psycopg[binary]" >&2 \
    || unavailable "pip install psycopg[binary] failed"
}

case "$cmd" in
  start)
    port=${3:?PORT}
    bin=$(bindir)
    driver
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || unavailable "initdb failed: $(tail -3 "$dir/initdb.log")"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" >/dev/null \
      || unavailable "the server did not start: $(tail -3 "$dir/server.log")"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres mlflow
    echo "postgresql://postgres@127.0.0.1:$port/mlflow"
    ;;
  stop)
    bin=$(bindir)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
