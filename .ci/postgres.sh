#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the distributed optimizer tests.
#
#   eval "$(bash .ci/postgres.sh)"          # start; exports FUSION_DSPY_TEST_POSTGRES_URL and FUSION_DSPY_PG_DIR
#   bash .ci/postgres.sh stop "$FUSION_DSPY_PG_DIR"
#
# Installs the Debian postgresql package when no server binaries are found, and the psycopg2 driver into the
# active Python when it is missing (the URL names it: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3).
# Only `export ...` lines go to stdout; progress goes to stderr.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

as_owner() {
  # initdb and postgres refuse to run as root: run them as the `postgres` system user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ "${1:-}" = "stop" ]; then
  dir="${2:?usage: postgres.sh stop DIR}"
  as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
  exit 0
fi

if [ -z "$(pg_bin)" ]; then
  log "installing postgresql from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN="$(pg_bin)"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import psycopg2" 2>/dev/null; then
  log "installing psycopg2-binary into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
  "$PYTHON" -m pip install -q psycopg2-binary >&2
fi

DIR="$(mktemp -d /tmp/fusion-pg.XXXXXX)"
chmod 755 "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

as_owner "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --no-locale >/dev/null
as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-h 127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=off" start >&2
as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres fusion_test
log "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (data in $DIR)"

echo "export FUSION_DSPY_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:$PORT/fusion_test"
echo "export FUSION_DSPY_PG_DIR=$DIR"
