#!/usr/bin/env bash
# A throw-away Redis server for the test suite and the local fleet (bus, arbiter, leader lock).
# Debian's own redis-server, a private state directory, loopback only, nothing on disk, no system
# service touched.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tests/redis/redis.sh start|stop|status|restart|--help

  start    install Debian's redis-server package if redis-server or redis-cli is missing, create
           a state directory $CRASHFLEET_REDIS_DIR (default /tmp/crashfleet-redis) and start a
           daemonized redis-server on a free 127.0.0.1 port: no persistence (--save "",
           --appendonly no), protected mode, pid file and log file in the state directory.
           Already running (it answers PING): nothing is changed. A server that died (killed from
           outside) is started again, on its old port when that is still free.
           The LAST line printed is always
             CRASHFLEET_TEST_REDIS_URL=redis://127.0.0.1:PORT
           so   eval "$(bash tests/redis/redis.sh start | tail -1)"   sets it (export it for cargo test).
  stop     stop that server (SIGTERM, SIGKILL after 5 s) and remove the state directory.
           Safe to run twice, and when nothing was started.
  status   print the URL line and exit 0 when the server answers PING; exit 3 when not.
  restart  stop the server and start it again on the SAME port (its data is gone: nothing is
           persisted), as a test that restarts Redis mid-round needs. Not running: like start.

Environment: CRASHFLEET_REDIS_DIR (state directory).
EOF
}

STATE="${CRASHFLEET_REDIS_DIR:-/tmp/crashfleet-redis}"
# The marker proves a directory is ours before `stop` deletes it (CRASHFLEET_REDIS_DIR could be a typo).
MARKER="$STATE/.crashfleet-redis"
PORT_FILE="$STATE/port"
PID_FILE="$STATE/redis.pid"
LOG="$STATE/redis.log"
# Seconds for a started server to answer PING, and for a stopped one to exit before SIGKILL.
START_TIMEOUT=10
STOP_TIMEOUT=5

log() { echo "redis.sh: $*" >&2; }
die() { log "$*"; exit 1; }

install_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  log "installing Debian's redis-server package (no redis-server or redis-cli on PATH)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 || die "redis-server installed but not on PATH"
}

free_port() {
  # Bind port 0 on loopback and report what the kernel chose; start retries if it is taken meanwhile.
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port() { cat "$PORT_FILE" 2>/dev/null || true; }

# The pid of our server: the pid file's process, while its command line still names our port
# (redis-server sets its title to "redis-server 127.0.0.1:PORT"; pids get reused).
our_pid() {
  local pid p
  p=$(port)
  pid=$(cat "$PID_FILE" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] && [ -n "$p" ] || return 1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "redis-server 127\.0\.0\.1:$p\( \|\$\)" &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null &&
    echo "$pid"
}

pong() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

# Alive = our process runs and answers PING on its port; the marker alone proves nothing.
running() {
  local p
  p=$(port)
  [ -f "$MARKER" ] && [ -n "$p" ] && our_pid >/dev/null && pong "$p"
}

print_url() { echo "CRASHFLEET_TEST_REDIS_URL=redis://127.0.0.1:$(port)"; }

# Starts the server in a subshell that first closes every inherited descriptor but stdin/out/err:
# the server outlives this script and must hold neither our lock (fd 9) nor a caller's pipes.
# Returns once the server answers PING on $1, or fails (the port taken, say).
launch() {
  local p=$1 deadline from
  rm -f "$PID_FILE"
  # Only this start's lines count when the log is searched for a bind failure.
  from=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
  (
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    # --save "" and --appendonly no: a test server's data is disposable, and a restart must lose it.
    redis-server --bind 127.0.0.1 --port "$p" --protected-mode yes \
      --save "" --appendonly no --dir "$STATE" \
      --daemonize yes --pidfile "$PID_FILE" --logfile "$LOG" </dev/null >/dev/null
  ) || return 1
  echo "$p" >"$PORT_FILE"
  deadline=$((SECONDS + START_TIMEOUT))
  until pong "$p" && our_pid >/dev/null; do
    # The daemon forks before it binds: a taken port shows only in its log, as an exit.
    if [ $SECONDS -ge "$deadline" ] || tail -c +"$from" "$LOG" 2>/dev/null | grep -q "Address already in use\|Could not create server TCP"; then
      stop_server
      return 1
    fi
    sleep 0.05
  done
}

# Stops our process (if any), keeping the state directory and its port file.
stop_server() {
  local pid
  pid=$(our_pid) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_TIMEOUT * 20))); do
    kill -0 "$pid" 2>/dev/null || break
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
    log "redis-server (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    # A port still held would make a restart on the same port fail.
    for _ in $(seq 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
  fi
  rm -f "$PID_FILE"
}

# Removes the state directory, but only one this script created.
remove_state() {
  [ -e "$STATE" ] || return 0
  [ -f "$MARKER" ] || die "$STATE exists but was not created by redis.sh (no $MARKER): not touching it"
  rm -rf -- "$STATE"
}

# Tries port $1 (when given and free), then free ports.
start_on() {
  local p attempt
  if [ -n "${1:-}" ] && launch "$1"; then
    return 0
  fi
  [ -n "${1:-}" ] && log "port $1 is no longer free; taking another"
  for attempt in 1 2 3 4 5; do
    p=$(free_port)
    launch "$p" && return 0
    log "start on port $p failed (attempt $attempt):"
    tail -n 5 "$LOG" >&2 || true
  done
  die "redis-server did not start; see $LOG"
}

start() {
  install_redis
  if running; then
    log "already running (127.0.0.1:$(port), state in $STATE)"
    print_url
    return 0
  fi
  local old=""
  if [ -e "$STATE" ]; then
    [ -f "$MARKER" ] || die "$STATE exists but was not created by redis.sh (no $MARKER): not touching it"
    # A server that died (kill -9, reboot) or an interrupted start: start afresh, on its port if free.
    old=$(port)
    log "found a dead server in $STATE${old:+ (port $old)}; starting it again"
    stop_server
  fi
  mkdir -p "$STATE"
  touch "$MARKER"
  chmod 700 "$STATE"
  : >"$LOG"
  start_on "$old"
  log "Redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$(port), pid $(cat "$PID_FILE"), log $LOG"
  print_url
}

restart() {
  local p
  p=$(port)
  if [ ! -f "$MARKER" ] || [ -z "$p" ]; then
    log "not running; starting"
    start
    return
  fi
  install_redis
  stop_server
  launch "$p" || die "could not start redis-server again on port $p (taken meanwhile?); see $LOG"
  log "restarted on 127.0.0.1:$p, pid $(cat "$PID_FILE") (data lost: nothing is persisted)"
  print_url
}

stop() {
  if [ ! -e "$STATE" ]; then
    log "not running"
    return 0
  fi
  [ -f "$MARKER" ] || die "$STATE was not created by redis.sh (no $MARKER): not touching it"
  if our_pid >/dev/null; then
    stop_server
    log "stopped (127.0.0.1:$(port))"
  fi
  remove_state
}

status() {
  local p
  p=$(port)
  if running; then
    log "running (127.0.0.1:$p, pid $(our_pid), state in $STATE)"
    print_url
  elif [ -f "$MARKER" ]; then
    log "not running: $STATE is there but no server of ours answers PING${p:+ on port $p} ('start' starts it again)"
    return 3
  else
    log "not running"
    return 3
  fi
}

# Start, stop and restart must not interleave; the lock lives beside the state dir.
with_lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock 9
  "$@"
}

case "${1:-}" in
  start) with_lock start ;;
  stop) with_lock stop ;;
  restart) with_lock restart ;;
  status) status ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
