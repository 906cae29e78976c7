#!/usr/bin/env bash
# Local services for tests and `sundial dev`, on loopback only:
#   * a throwaway PostgreSQL cluster under .services/pg (port $PGPORT, 55432)
#   * moto's server as the SQS emulator (port $MOTO_PORT, 54566) from ./.venv
#
#   scripts/services.sh up              start both (idempotent), print env
#   scripts/services.sh pg              start Postgres only, print its env
#   scripts/services.sh env [--pg-only] print the env without starting anything
#   scripts/services.sh run [--pg-only] -- CMD...
#                                       start, export the env, exec CMD
#   scripts/services.sh status          say what is running (stderr)
#   scripts/services.sh stop            stop both
#
# stdout carries ONLY `export NAME=value` lines, so
#   eval "$(scripts/services.sh up)"
# works; progress and errors go to stderr. A second `up` reuses what runs
# and returns in well under a second. If the port already answers with a
# Postgres (or moto) that this checkout did not start -- e.g. another
# worktree's -- it is reused rather than fought over.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${SUNDIAL_SERVICES_DIR:-$ROOT/.services}"
PGPORT="${PGPORT:-55432}"
PGDATABASE_NAME="${SUNDIAL_PG_DATABASE:-sundial}"
MOTO_PORT="${MOTO_PORT:-54566}"
HOST=127.0.0.1

MOTO_PID="$SERVICES_DIR/moto.pid"
MOTO_LOG="$SERVICES_DIR/moto.log"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# --- environment -------------------------------------------------------------

print_env() {
  local pg_only="${1:-}"
  printf 'export %s=%s\n' \
    DATABASE_URL "postgres://postgres@$HOST:$PGPORT/$PGDATABASE_NAME" \
    SUNDIAL_ALLOW_TARGETS "127.0.0.1/32,::1/128"
  [[ "$pg_only" == "--pg-only" ]] && return
  printf 'export %s=%s\n' \
    AWS_ENDPOINT_URL_SQS "http://$HOST:$MOTO_PORT" \
    AWS_ENDPOINT_URL_SNS "http://$HOST:$MOTO_PORT" \
    AWS_ACCESS_KEY_ID test \
    AWS_SECRET_ACCESS_KEY test \
    AWS_REGION us-east-1 \
    AWS_DEFAULT_REGION us-east-1 \
    AWS_EC2_METADATA_DISABLED true
}

# --- PostgreSQL --------------------------------------------------------------

PG_BIN=""

find_pg_bin() {
  local d
  if [[ -n "${PG_BIN_DIR:-}" ]]; then
    [[ -x "$PG_BIN_DIR/pg_ctl" ]] || die "PG_BIN_DIR=$PG_BIN_DIR has no pg_ctl"
    PG_BIN="$PG_BIN_DIR"
    return
  fi
  # Debian keeps server binaries out of PATH; prefer the newest installed.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/pg_ctl" && -x "$d/initdb" && -x "$d/psql" ]]; then
      PG_BIN="$d"
      return
    fi
  done
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null && command -v psql >/dev/null; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    [[ -x "$PG_BIN/psql" ]] || PG_BIN="$(dirname "$(command -v pg_ctl)")"
    return
  fi
  return 1
}

install_pg() {
  if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "PostgreSQL server binaries not found; install them (Debian: apt-get install postgresql-15) or set PG_BIN_DIR"
  fi
  log "PostgreSQL not found: installing postgresql-15 with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql-15 >&2 ||
    apt-get install -y -qq --no-install-recommends postgresql >&2 ||
    die "apt-get install postgresql failed"
}

# Run a command as the cluster owner: initdb and pg_ctl refuse root.
as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

PG_DIR=""
PG_DATA=""
PG_LOG=""

setup_pg_dirs() {
  PG_DIR="$SERVICES_DIR/pg"
  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "user 'postgres' missing (it comes with the Debian postgresql packages)"
    # The cluster owner must be able to reach the data directory. In a
    # checkout under a private home (e.g. /root) it cannot: keep the cluster
    # in /var/tmp then and leave a symlink behind so `stop` finds it.
    if [[ -L "$PG_DIR" ]]; then
      PG_DIR="$(readlink -f "$PG_DIR")"
    elif [[ ! -d "$PG_DIR" ]]; then
      mkdir -p "$PG_DIR"
      chown postgres:postgres "$PG_DIR"
      if ! runuser -u postgres -- test -w "$PG_DIR"; then
        rmdir "$PG_DIR"
        local alt
        alt="/var/tmp/sundial-pg-$(printf "%s" "$SERVICES_DIR" | sha256sum | cut -c1-12)"
        log "postgres cannot reach $SERVICES_DIR; keeping the cluster in $alt"
        mkdir -p "$alt"
        chown postgres:postgres "$alt"
        ln -s "$alt" "$SERVICES_DIR/pg"
        PG_DIR="$alt"
      fi
    fi
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
  else
    mkdir -p "$PG_DIR"
  fi
  PG_DATA="$PG_DIR/data"
  PG_LOG="$PG_DIR/postgres.log"
}

pg_initdb() {
  [[ -f "$PG_DATA/PG_VERSION" ]] && return
  log "initdb $PG_DATA"
  rm -rf "$PG_DATA"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
    --encoding=UTF8 --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
    { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  # A disposable cluster for tests: durability off, many connections
  # (every #[sqlx::test] gets its own database and pool), TCP on loopback
  # only, no Unix socket (avoids socket path length and ownership issues).
  as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<'EOF'

# --- sundial test cluster (scripts/services.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

pg_is_running() {
  as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

pg_running_port() {
  # Line 4 of postmaster.pid is the port.
  sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true
}

pg_answers() {
  "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PGPORT" -t 2 >/dev/null 2>&1
}

psql_admin() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PGPORT" -U postgres -d postgres "$@"
}

ensure_database() {
  local exists
  exists="$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PGDATABASE_NAME'")" ||
    die "cannot connect to Postgres on $HOST:$PGPORT as postgres (trust auth expected)"
  if [[ "$exists" != "1" ]]; then
    log "creating database $PGDATABASE_NAME"
    # Another invocation may win the race; only fail if it still is missing.
    psql_admin -c "CREATE DATABASE \"$PGDATABASE_NAME\" OWNER postgres" >/dev/null 2>&1 ||
      [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PGDATABASE_NAME'")" == "1" ]] ||
      die "could not create database $PGDATABASE_NAME"
  fi
}

start_pg() {
  find_pg_bin || { install_pg; find_pg_bin || die "PostgreSQL binaries still not found after install"; }
  setup_pg_dirs
  pg_initdb
  if pg_is_running; then
    local port
    port="$(pg_running_port)"
    if [[ "$port" != "$PGPORT" ]]; then
      log "cluster runs on port $port, wanted $PGPORT: restarting"
      as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w >&2
    fi
  fi
  if ! pg_is_running; then
    if pg_answers; then
      log "reusing the Postgres that already answers on $HOST:$PGPORT (not started by this checkout)"
    else
      log "starting Postgres on $HOST:$PGPORT"
      # pg_ctl removes a stale postmaster.pid itself; -w waits until ready.
      if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
        -o "-p $PGPORT" >&2 9>&-; then
        tail -n 30 "$PG_LOG" >&2 || true
        die "Postgres did not start (port $PGPORT busy? set PGPORT=...)"
      fi
    fi
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    pg_answers && break
    sleep 0.1
  done
  pg_answers || die "Postgres does not answer on $HOST:$PGPORT"
  ensure_database
}

stop_pg() {
  find_pg_bin || { log "no PostgreSQL binaries: nothing to stop"; return; }
  setup_pg_dirs
  if [[ -f "$PG_DATA/PG_VERSION" ]] && pg_is_running; then
    log "stopping Postgres"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w >&2
  else
    log "Postgres (this checkout's) is not running"
  fi
}

# --- SQS emulator (moto) -----------------------------------------------------

moto_pid_alive() {
  local pid
  [[ -f "$MOTO_PID" ]] || return 1
  pid="$(cat "$MOTO_PID" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid belonging to something else.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto
}

moto_answers() {
  local url="http://$HOST:$MOTO_PORT/moto-api/"
  if command -v curl >/dev/null; then
    curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null
  else
    "$("$ROOT/scripts/venv.sh" path)/python" - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read(1)
EOF
  fi
}

start_moto() {
  mkdir -p "$SERVICES_DIR"
  if moto_pid_alive; then
    if moto_answers; then
      return
    fi
  elif [[ -f "$MOTO_PID" ]]; then
    log "removing stale $MOTO_PID"
    rm -f "$MOTO_PID"
  fi
  if ! moto_pid_alive && moto_answers; then
    log "reusing the moto server that already answers on $HOST:$MOTO_PORT (not started by this checkout)"
    return
  fi
  if ! moto_pid_alive; then
    "$ROOT/scripts/venv.sh" ensure requirements-dev.txt
    local venv_bin
    venv_bin="$("$ROOT/scripts/venv.sh" path)"
    log "starting moto (SQS emulator) on $HOST:$MOTO_PORT"
    # setsid: survives Ctrl-C of the make that started it. The child writes
    # its own pid, so the pid file is right whether or not setsid forks.
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$MOTO_PID" \
      "$venv_bin/moto_server" -H "$HOST" -p "$MOTO_PORT" \
      </dev/null >>"$MOTO_LOG" 2>&1 9>&- &
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    moto_answers && return
    if ((i > 5)) && ! moto_pid_alive; then
      tail -n 30 "$MOTO_LOG" >&2 || true
      die "moto exited during start (port $MOTO_PORT busy? set MOTO_PORT=...)"
    fi
    sleep 0.1
  done
  tail -n 30 "$MOTO_LOG" >&2 || true
  die "moto does not answer on $HOST:$MOTO_PORT after 30 s"
}

stop_moto() {
  if ! moto_pid_alive; then
    [[ -f "$MOTO_PID" ]] && rm -f "$MOTO_PID"
    log "moto (this checkout's) is not running"
    return
  fi
  local pid i
  pid="$(cat "$MOTO_PID")"
  log "stopping moto (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$MOTO_PID"
}

# --- main --------------------------------------------------------------------

with_lock() {
  # Serialise concurrent invocations from the same checkout.
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.lock"
  flock 9
}

cmd="${1:-up}"
shift || true
pg_only=""
if [[ "${1:-}" == "--pg-only" ]]; then
  pg_only="--pg-only"
  shift
fi

case "$cmd" in
  up)
    with_lock
    start_pg
    [[ -n "$pg_only" ]] || start_moto
    log "ready"
    print_env "$pg_only"
    ;;
  pg)
    with_lock
    start_pg
    log "ready"
    print_env --pg-only
    ;;
  env)
    print_env "$pg_only"
    ;;
  run)
    [[ "${1:-}" == "--" ]] && shift
    (($# > 0)) || die "usage: $0 run [--pg-only] -- CMD..."
    with_lock
    start_pg
    [[ -n "$pg_only" ]] || start_moto
    exec 9>&-
    eval "$(print_env "$pg_only")"
    exec "$@"
    ;;
  status)
    if find_pg_bin && pg_answers; then log "Postgres: answering on $HOST:$PGPORT"; else log "Postgres: down"; fi
    if moto_answers; then log "moto: answering on $HOST:$MOTO_PORT"; else log "moto: down"; fi
    ;;
  stop)
    with_lock
    stop_moto
    stop_pg
    ;;
  *)
    die "usage: $0 up|pg|env [--pg-only]|run [--pg-only] -- CMD|status|stop"
    ;;
esac
