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
          with a password and a database. Already running (it accepts connections on its port):
          nothing is changed. A server that died (killed from outside) is started again on the
          same data directory and port, so its URL stays valid; when that fails, the directory
          is removed and a new server is created (new port and password).
          The LAST line printed is always
            CRASHFLEET_TEST_DATABASE_URL=postgres://USER:PASS@127.0.0.1:PORT/DB
          so   eval "$(bash tests/pg/pg.sh start | tail -1)"   sets it (export it for cargo test).
  stop    stop that server (pg_ctl stop -m fast on its own data directory) and remove the
          directory. Safe to run twice, and when nothing was started.
  status  print the URL line and exit 0 when the server runs and accepts connections
          (pg_isready on its port); exit 3 when not.

The test user may create databases (every test gets a fresh one) and, being pg_signal_backend,
drop them WITH (FORCE) even while an autovacuum worker is inside.
Environment: CRASHFLEET_PG_DIR (state directory), CRASHFLEET_PG_BIN (server binaries,
default /usr/lib/postgresql/15/bin), CRASHFLEET_PG_EXTRA_LISTEN (one more IPv4 address to listen
on besides 127.0.0.1, e.g. the host end of a test cluster's node link, so pods reach the server;
password logins are then accepted from CRASHFLEET_PG_ALLOW, default 10.0.0.0/8, the private range
the test cluster's pods and node link use). A server keeps the addresses it was created with.
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
EXTRA_LISTEN="${CRASHFLEET_PG_EXTRA_LISTEN:-}"
ALLOW="${CRASHFLEET_PG_ALLOW:-10.0.0.0/8}"
LISTEN_FILE="$STATE/extra-listen"

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

# Seconds to wait for a dead postmaster's pid to vanish: killed from outside, it stays a zombie
# until its parent (here the init process, every ~2 s) reaps it, and PostgreSQL will not start
# while the pid in its lock file exists.
REAP_TIMEOUT=15

url_port() { sed -n 's#.*@127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$URL_FILE" 2>/dev/null || true; }

zombie() { grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# The postmaster's pid from its lock file while that process lives (not a zombie) and serves our
# data directory. pg_ctl status alone counts a zombie or a reused pid as a running server.
postmaster_pid() {
  local pid
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] && ! zombie "$pid" &&
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-D $DATA " && echo "$pid"
}

# Alive = our postmaster runs and accepts connections on the URL's port.
running() {
  local port
  port=$(url_port)
  [ -n "$port" ] && postmaster_pid >/dev/null &&
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -t 5 >/dev/null 2>&1
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
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    local listen=127.0.0.1 extra
    extra=$(cat "$LISTEN_FILE" 2>/dev/null || true)
    [ -z "$extra" ] || listen="127.0.0.1,$extra"
    # fsync off: a test server's data is disposable, and the suite runs several times faster.
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start -o \
      "-c listen_addresses=$listen -p $1 -k $DATA -c max_connections=$MAX_CONNECTIONS -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      </dev/null >/dev/null
  )
}

# Kills a postmaster that lives but does not answer, and waits until its pid is gone.
bury_postmaster() {
  local pid
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  if postmaster_pid >/dev/null; then
    log "postmaster pid $pid runs but does not accept connections; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  local deadline=$((SECONDS + REAP_TIMEOUT))
  # Any process with that pid counts: a dying one has lost its command line before it is a zombie.
  while [ -e "/proc/$pid" ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# Starts a dead server again on its data directory and port (the URL, password included, stays).
# PostgreSQL itself checks the stale lock file (and that no orphaned backend still holds its
# shared memory) once the old pid is gone.
revive() {
  local port
  port=$(url_port)
  [ -n "$port" ] && [ -f "$DATA/PG_VERSION" ] || return 1
  log "found a dead server in $DATA (port $port); starting it again"
  bury_postmaster || { log "the old postmaster's pid did not go away in ${REAP_TIMEOUT}s"; return 1; }
  if ! launch "$port"; then
    log "could not start it again on port $port:"
    tail -n 5 "$LOG" >&2 || true
    return 1
  fi
  running || return 1
  log "started again on 127.0.0.1:$port, data in $DATA"
}

start() {
  install_postgres
  if running; then
    log "already running ($DATA)"
    print_url
    return 0
  fi
  if [ -f "$MARKER" ] && revive; then
    print_url
    return 0
  fi
  # A directory left by a crash, a reboot or an interrupted start that cannot be revived: clear it
  # and start afresh.
  if [ -e "$STATE" ]; then log "recreating $STATE"; fi
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
  if [ -n "$EXTRA_LISTEN" ]; then
    [[ $EXTRA_LISTEN =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] ||
      die "CRASHFLEET_PG_EXTRA_LISTEN='$EXTRA_LISTEN' must be one IPv4 address"
    [[ $ALLOW =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] ||
      die "CRASHFLEET_PG_ALLOW='$ALLOW' must be an IPv4 CIDR like 10.0.0.0/8"
    echo "$EXTRA_LISTEN" >"$LISTEN_FILE"
    # Clients from outside loopback (pods) log in with the password, never trusted.
    echo "host all all $ALLOW scram-sha-256" >>"$DATA/pg_hba.conf"
  fi

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
  log "PostgreSQL $(as_pg "$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port${EXTRA_LISTEN:+ and $EXTRA_LISTEN:$port}, data in $DATA"
  print_url
}

stop() {
  if [ ! -e "$STATE" ]; then
    log "not running"
    return 0
  fi
  [ -f "$MARKER" ] || die "$STATE was not created by pg.sh (no $MARKER): not touching it"
  local pid
  if pid=$(postmaster_pid); then
    if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null; then
      log "pg_ctl stop failed; killing postmaster pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped ($DATA)"
  fi
  remove_state
}

status() {
  if running; then
    log "running ($DATA)"
    print_url
  elif [ -f "$MARKER" ]; then
    log "not running: $STATE is there but its server does not accept connections ('start' starts it again)"
    return 3
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
