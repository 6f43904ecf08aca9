# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this file
# What tests/fleet/up.sh and down.sh share: the state directory's layout, finding our nodes, and
# stopping them. Sourced, never run.

FLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FLEET_DIR=${CRASHFLEET_FLEET_DIR:-/tmp/crashfleet-fleet}
# The marker proves a directory is ours before down.sh deletes it (CRASHFLEET_FLEET_DIR could be a typo).
FLEET_MARKER=$FLEET_DIR/.crashfleet-fleet
# N and backend of the running fleet, and the addresses the nodes were started with.
FLEET_CONFIG=$FLEET_DIR/fleet.conf
# Written only when up.sh started the control plane itself; down.sh stops it only then.
FLEET_K8S_OURS=$FLEET_DIR/k8s-started-by-up
FLEET_K8S_NAME=fleet
# Seconds between SIGTERM and SIGKILL for a node (it drains its sockets and hands off the round).
NODE_STOP_TIMEOUT=5

flog() { echo "${FLEET_SCRIPT:-fleet}: $*" >&2; }
fdie() {
  flog "error: $*"
  exit 1
}

node_dir() { echo "$FLEET_DIR/node-$1"; }

# A node's pid from its pid file, while that process lives (not a zombie) and its command line still
# names its data directory (pids get reused).
node_pid() {
  local dir pid
  dir=$(node_dir "$1")
  pid=$(cat "$dir/pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null &&
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--data-dir $dir/data " && echo "$pid"
}

# Every live game-node started on this fleet directory, pid file or not (an up.sh interrupted
# between starting a node and writing its pid file): its --data-dir lies in our directory.
fleet_pids() {
  local f pid
  # One grep over every command line picks the candidates; each is then checked exactly.
  while read -r f; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "--data-dir $FLEET_DIR/node-[0-9]*/data " || continue
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null || echo "$pid"
  done < <(grep -lasF -- "$FLEET_DIR/node-" /proc/[0-9]*/cmdline 2>/dev/null)
}

# SIGTERM to every node, SIGKILL to those still running NODE_STOP_TIMEOUT seconds later.
stop_nodes() {
  local pids pid left _
  pids=$(fleet_pids | xargs)
  [ -n "$pids" ] || return 0
  flog "stopping game-node pids $pids (SIGTERM)"
  # shellcheck disable=SC2086 # one pid per word
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq $((NODE_STOP_TIMEOUT * 10))); do
    left=""
    for pid in $pids; do
      [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && left+=" $pid"
    done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  flog "still running after ${NODE_STOP_TIMEOUT}s:$left (SIGKILL)"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
}

# One up.sh or down.sh at a time per fleet directory; the lock lives beside it. Children that
# outlive the script (servers, nodes) are started with fd 8 closed, so they never hold it.
with_fleet_lock() {
  mkdir -p "$(dirname "$FLEET_DIR")"
  exec 8>"$FLEET_DIR.lock"
  flock -n 8 && return 0
  flog "waiting for another up.sh/down.sh on $FLEET_DIR"
  flock -w 600 8 || fdie "timed out waiting for the lock $FLEET_DIR.lock"
}
