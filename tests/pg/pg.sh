#!/usr/bin/env bash
# A throw-away PostgreSQL 15 server for the test suite (the ledger conformance tests, fleet mode).
# Debian's own binaries, a private data directory, loopback only, no system service touched.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tests/pg/pg.sh start|stop|status|--help

  start   install Debian's postgresql package if /usr/lib/postgresql/15/bin/postgres is missing,
          create a data directory under $CRASHFLEET_PG_DIR (default /tmp/crashfleet-pg), start a
          server on a free 127.0.0.1 port (unix socket inside the data directory), create a user
          with a password and a database. Already running: nothing is changed.
          The LAST line printed is always
            CRASHFLEET_TEST_DATABASE_URL=postgres://USER:PASS@127.0.0.1:PORT/DB
          so   eval "$(bash tests/pg/pg.sh start | tail -1)"   sets it (export it for cargo test).
  stop    stop that server (pg_ctl stop -m fast on its own data directory) and remove the
          directory. Safe to run twice, and when nothing was started.
  status  print the URL line and exit 0 when running; exit 3 when not.

The test user may create databases (every test gets a fresh one) and, being pg_signal_backend,
drop them WITH (FORCE) even while an autovacuum worker is inside.
Environment: CRASHFLEET_PG_DIR (state directory), CRASHFLEET_PG_BIN (server binaries,
default /usr/lib/postgresql/15/bin).
EOF
}

PG_BIN="${CRASHFLEET_PG_BIN:-/usr/lib/postgresql/15/bin}"
STATE="${CRASHFLEET_PG_DIR:-/tmp/crashfleet-pg}"
DATA="$STATE/data"
# The marker proves a directory is ours before `stop` deletes it (CRASHFLEET_PG_DIR could be a typo).
MARKER="$STATE/.crashfleet-pg"
URL_FILE="$STATE/url"
LOG="$STATE/postgres.log"
DB_USER=crashfleet
DB_NAME=crashfleet
# Tests run in parallel, each with its own pool (the concurrency test opens three); the default 100
# connections would be the first thing to run out.
MAX_CONNECTIONS=400

log() { echo "pg.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# PostgreSQL refuses to run as root: as root, server-side commands run as the postgres user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_postgres() {
  [ -x "$PG_BIN/postgres" ] && return 0
  log "installing Debian's postgresql package (no $PG_BIN/postgres)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  [ -x "$PG_BIN/postgres" ] || die "postgresql installed but $PG_BIN/postgres is missing (not version 15?)"
}

running() {
  [ -f "$DATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

free_port() {
  # Bind port 0 on loopback and report what the kernel chose; start retries if it is taken meanwhile.
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

print_url() { echo "CRASHFLEET_TEST_DATABASE_URL=$(cat "$URL_FILE")"; }

# Removes the state directory, but only one this script created.
remove_state() {
  [ -e "$STATE" ] || return 0
  [ -f "$MARKER" ] || die "$STATE exists but was not created by pg.sh (no $MARKER): not touching it"
  rm -rf -- "$STATE"
}

# Starts the server in a subshell that first closes every inherited descriptor but stdin/out/err:
# the server outlives this script and must hold neither our lock (fd 9) nor a caller's pipes.
launch() {
  (
    local fd
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    # fsync off: a test server's data is disposable, and the suite runs several times faster.
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -p $1 -k $DATA -c max_connections=$MAX_CONNECTIONS -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      </dev/null >/dev/null
  )
}

start() {
  install_postgres
  if running && [ -f "$URL_FILE" ]; then
    log "already running ($DATA)"
    print_url
    return 0
  fi
  # A directory left by a crash, a reboot or an interrupted start: clear it and start afresh.
  stop

  mkdir -p "$STATE"
  touch "$MARKER"
  chmod 700 "$STATE"
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$STATE"
    as_pg test -w "$DATA" || die "the postgres user cannot write $DATA (a parent directory is closed to it?)"
  fi

  local pass
  pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  # Local (socket) connections trust the OS user running the server; TCP needs a password.
  as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 ||
    { cat "$STATE/initdb.log" >&2; die "initdb failed"; }

  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if launch "$port"; then
      break
    fi
    log "start on port $port failed (attempt $attempt):"
    tail -n 5 "$LOG" >&2 || true
    port=""
  done
  [ -n "$port" ] || die "PostgreSQL did not start; see $LOG"

  as_pg "$PG_BIN/psql" -h "$DATA" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$pass'" \
    -c "GRANT pg_signal_backend TO $DB_USER" \
    -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null

  echo "postgres://$DB_USER:$pass@127.0.0.1:$port/$DB_NAME" >"$URL_FILE"
  chmod 600 "$URL_FILE"
  log "PostgreSQL $(as_pg "$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $DATA"
  print_url
}

stop() {
  if [ ! -e "$STATE" ]; then
    log "not running"
    return 0
  fi
  [ -f "$MARKER" ] || die "$STATE was not created by pg.sh (no $MARKER): not touching it"
  if running; then
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    log "stopped ($DATA)"
  fi
  remove_state
}

status() {
  if running && [ -f "$URL_FILE" ]; then
    log "running ($DATA)"
    print_url
  else
    log "not running"
    return 3
  fi
}

# Start and stop must not interleave (two test runs at once); the lock lives beside the state dir.
with_lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock 9
  "$@"
}

case "${1:-}" in
  start) with_lock start ;;
  stop) with_lock stop ;;
  status) status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
