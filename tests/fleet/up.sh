#!/usr/bin/env bash
# A local crashfleet fleet for testers: Redis, PostgreSQL and N game-node processes on 127.0.0.1,
# one table (or several, each in its own region, for the lobby), sessions and wallets shared by
# every node. See docs/TESTING.md.
set -euo pipefail

# shellcheck disable=SC2034 # read by common.sh
FLEET_SCRIPT=up.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: tests/fleet/up.sh [N] [--backend redis|kubernetes] [--tables T] | --help

Starts a fleet of N game-nodes (default 3) serving table "main" on this machine:
  - --tables T (1 to N, default 1): T tables instead, each in its own region, node-K serving
    table number ((K-1) mod T)+1: "main" in region-1, "table-2" in region-2, ...; each table
    with its own chain seed and signing key (table-I/ in the fleet directory; main's stay where
    they are). Every node advertises its own address (--public-url), so /lobby on any node lists
    every table, measures it and links to it;
  - builds game-node (cargo build --release -p game-node) unless CRASHFLEET_BIN names a binary;
  - starts Redis (tests/redis/redis.sh) and PostgreSQL (tests/pg/pg.sh) with their state inside
    the fleet directory, installing Debian's packages when they are missing;
  - backend redis (default): the nodes elect the round leader with a Redis lock;
    backend kubernetes: with a Lease in namespace "default" of the local control plane, started
    by tests/k8s/cluster.sh up (CRASHFLEET_K8S_NAME=fleet) unless it already runs (the first
    start builds the control plane's binaries: ~10 min, needs Go);
  - one JWT secret, one admin token and one chain seed (game-node chain new) for all nodes, and
    one signing key: signing.key beside the seed, written whole by whichever node starts first;
  - node-K on a free 127.0.0.1 port, data dir and log in the fleet directory; waits until every
    node's /readyz answers 200 (60 s each, else an error naming its log).
Prints each node's URL (node-K http://127.0.0.1:PORT/), the logs, the admin token and how to stop.

Run again: starts whatever died (a node on its old port when free, Redis and PostgreSQL on their
old ports) and prints the same summary; N and the backend must match the running fleet
(tests/fleet/down.sh first to change them). Nodes are restarted when Redis or PostgreSQL came
back on a new address.

Environment:
  CRASHFLEET_FLEET_DIR           state directory (default /tmp/crashfleet-fleet)
  CRASHFLEET_BIN                 a game-node binary to use instead of building one
  CRASHFLEET_FLEET_CHAIN_LENGTH  rounds the table's chain covers (default 1000000)
  CRASHFLEET_FLEET_READY_TIMEOUT seconds to wait for each node's /readyz (default 60)
  other CRASHFLEET_* settings of game-node serve (e.g. CRASHFLEET_BETTING_WINDOW_MS) reach the
  nodes through the environment.
Stop everything with tests/fleet/down.sh.
EOF
}

READY_TIMEOUT=${CRASHFLEET_FLEET_READY_TIMEOUT:-60}
CHAIN_LENGTH=${CRASHFLEET_FLEET_CHAIN_LENGTH:-1000000}
MAX_NODES=20

n=""
backend=""
tables=""
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help | help) usage; exit 0 ;;
    --backend) [ $# -ge 2 ] || fdie "--backend needs redis or kubernetes"; backend=$2; shift 2 ;;
    --backend=*) backend=${1#--backend=}; shift ;;
    --tables) [ $# -ge 2 ] || fdie "--tables needs a number"; tables=$2; shift 2 ;;
    --tables=*) tables=${1#--tables=}; shift ;;
    [0-9]*) [ -z "$n" ] || fdie "one node count only (got $n and $1)"; n=$1; shift ;;
    *) usage >&2; exit 2 ;;
  esac
done
case ${backend:-redis} in
  redis | kubernetes) ;;
  *) fdie "--backend must be redis or kubernetes, not '$backend'" ;;
esac
if [ -n "$n" ] && { ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt $MAX_NODES ]; }; then
  fdie "N must be a number from 1 to $MAX_NODES, not '$n'"
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The HTTP status of GET http://127.0.0.1:$1$2 (no curl on a bare machine: bash's /dev/tcp).
http_status() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
    local _ code
    read -r -t 2 _ code _ <&3 || exit 1
    echo "$code"
  ) 2>/dev/null
}

secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# Writes $2 to file $1 (mode 0600) unless it exists.
keep_secret() {
  [ -s "$1" ] && return 0
  (umask 077 && echo "$2" >"$1")
}

build_binary() {
  if [ -n "${CRASHFLEET_BIN:-}" ]; then
    [ -x "$CRASHFLEET_BIN" ] || fdie "CRASHFLEET_BIN=$CRASHFLEET_BIN is not an executable file"
    BIN=$(cd "$(dirname "$CRASHFLEET_BIN")" && pwd)/$(basename "$CRASHFLEET_BIN")
    return
  fi
  command -v cargo >/dev/null 2>&1 || fdie "cargo is not on PATH; install Rust or set CRASHFLEET_BIN to a game-node binary"
  flog "building game-node (cargo build --release -p game-node; the first build takes minutes)"
  (cd "$FLEET_ROOT" && cargo build --release -p game-node 8>&-) >&2 || fdie "cargo build --release -p game-node failed"
  local target
  target=$(cd "$FLEET_ROOT" && cargo metadata --format-version 1 --no-deps 8>&- |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$target/release/game-node
  [ -x "$BIN" ] || fdie "the build produced no $BIN"
}

# "KEY=VALUE" lines of the fleet's config; $1 the key.
config_get() { sed -n "s/^$1=//p" "$FLEET_CONFIG" 2>/dev/null || true; }

redis_sh() { CRASHFLEET_REDIS_DIR=$FLEET_DIR/redis bash "$FLEET_ROOT/tests/redis/redis.sh" "$@" 8>&-; }
pg_sh() { CRASHFLEET_PG_DIR=$FLEET_DIR/pg bash "$FLEET_ROOT/tests/pg/pg.sh" "$@" 8>&-; }
cluster_sh() { CRASHFLEET_K8S_NAME=$FLEET_K8S_NAME bash "$FLEET_ROOT/tests/k8s/cluster.sh" "$@" 8>&-; }

start_kubernetes() {
  if ! cluster_sh status >/dev/null 2>&1; then
    touch "$FLEET_K8S_OURS"
    flog "starting the control plane '$FLEET_K8S_NAME' (tests/k8s/cluster.sh up)"
  elif [ ! -f "$FLEET_K8S_OURS" ]; then
    flog "control plane '$FLEET_K8S_NAME' already runs; using it (down.sh leaves it running)"
  fi
  local line
  line=$(cluster_sh up | tail -n 1) || fdie "tests/k8s/cluster.sh up failed (see above)"
  [[ $line == KUBECONFIG=* ]] || fdie "tests/k8s/cluster.sh up printed no KUBECONFIG line"
  export KUBECONFIG=${line#KUBECONFIG=}
}

# Table number (1..TABLES) node $1 serves, and that table's name, region and chain seed.
table_of() { echo $((($1 - 1) % TABLES + 1)); }
table_name() { if [ "$1" = 1 ]; then echo main; else echo "table-$1"; fi; }
table_region() { if [ "$TABLES" = 1 ]; then echo local; else echo "region-$1"; fi; }
table_seed() { if [ "$1" = 1 ]; then echo "$FLEET_DIR/chain.seed"; else echo "$FLEET_DIR/table-$1/chain.seed"; fi; }

# Starts node $1 on port $2 in its own session (a Ctrl-C in the tester's terminal does not reach
# it), with every inherited descriptor but stdin/out/err closed (our lock, a caller's pipes).
launch_node() {
  local k=$1 port=$2 dir i
  dir=$(node_dir "$k")
  mkdir -p "$dir/data"
  echo "$port" >"$dir/port"
  i=$(table_of "$k")
  local args=(serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --node-id "node-$k"
    --table "$(table_name "$i")" --region "$(table_region "$i")" --redis-url "$REDIS_URL"
    --leader-election "$BACKEND" --public-url "http://127.0.0.1:$port/"
    --chain-seed-file "$(table_seed "$i")" --chain-length "$CHAIN_LENGTH")
  [ "$BACKEND" = kubernetes ] && args+=(--lease-namespace default)
  printf '\n=== %s: starting node-%s on 127.0.0.1:%s\n' "$(date -u +%FT%TZ)" "$k" "$port" >>"$dir/node.log"
  (
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    # Secrets go through the environment, not the command line that every user can read in ps.
    # NO_COLOR: plain log files, for grep.
    NO_COLOR=1 CRASHFLEET_DATABASE_URL=$DATABASE_URL CRASHFLEET_JWT_SECRET=$JWT_SECRET \
      CRASHFLEET_ADMIN_TOKEN=$ADMIN_TOKEN exec setsid "$BIN" "${args[@]}" </dev/null >>"$dir/node.log" 2>&1
  ) &
  echo $! >"$dir/pid"
}

# Waits for node $1's /readyz to answer 200. Returns 2 when the node exited because its port was
# taken (the caller picks another), fails with the log's tail otherwise.
wait_ready() {
  local k=$1 dir port deadline
  dir=$(node_dir "$k")
  port=$(cat "$dir/port")
  deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(http_status "$port" /readyz)" = 200 ]; do
    if ! node_pid "$k" >/dev/null; then
      if tail -n 5 "$dir/node.log" | grep -q "cannot listen on"; then
        return 2
      fi
      tail -n 20 "$dir/node.log" >&2 || true
      fdie "node-$k exited before it was ready; its log: $dir/node.log (tests/fleet/down.sh cleans up)"
    fi
    if [ $SECONDS -ge "$deadline" ]; then
      tail -n 20 "$dir/node.log" >&2 || true
      fdie "node-$k (127.0.0.1:$port) did not answer GET /readyz with 200 within ${READY_TIMEOUT}s; its log: $dir/node.log (tests/fleet/down.sh stops the fleet)"
    fi
    sleep 0.2
  done
}

TAKEN_PORTS=" "
# A port for node $1: its old one while free, else a free one no other node of this run took.
pick_port() {
  local old p
  old=$(cat "$(node_dir "$1")/port" 2>/dev/null || true)
  if [ -n "$old" ] && [[ $TAKEN_PORTS != *" $old "* ]] && port_free "$old"; then
    p=$old
  else
    p=$(free_port)
    while [[ $TAKEN_PORTS == *" $p "* ]]; do p=$(free_port); done
  fi
  TAKEN_PORTS+="$p "
  echo "$p"
}

# Starts node $1 unless it runs; a start that loses its port to another process is retried.
start_node() {
  local k=$1 attempt rc
  if node_pid "$k" >/dev/null; then
    TAKEN_PORTS+="$(cat "$(node_dir "$k")/port") "
    return 0
  fi
  for attempt in 1 2 3; do
    launch_node "$k" "$(pick_port "$k")"
    flog "node-$k: started on 127.0.0.1:$(cat "$(node_dir "$k")/port"), pid $(cat "$(node_dir "$k")/pid")"
    [ "${2:-}" = nowait ] && return 0
    rc=0
    wait_ready "$k" || rc=$?
    [ $rc = 2 ] || return 0
    flog "node-$k: port $(cat "$(node_dir "$k")/port") was taken (attempt $attempt); picking another"
    rm -f "$(node_dir "$k")/port"
  done
  fdie "node-$k found no free port; its log: $(node_dir "$k")/node.log"
}

main() {
  with_fleet_lock
  if [ -e "$FLEET_DIR" ] && [ ! -f "$FLEET_MARKER" ]; then
    fdie "$FLEET_DIR exists but was not created by up.sh (no $FLEET_MARKER): not touching it"
  fi
  local old_n old_backend old_tables
  old_n=$(config_get NODES)
  old_backend=$(config_get BACKEND)
  old_tables=$(config_get TABLES)
  if [ -n "$old_n" ]; then
    if [ -n "$n" ] && [ "$n" != "$old_n" ] || [ -n "$backend" ] && [ "$backend" != "$old_backend" ] ||
      [ -n "$tables" ] && [ "$tables" != "${old_tables:-1}" ]; then
      fdie "a fleet of $old_n node(s) with backend $old_backend and ${old_tables:-1} table(s) is up in $FLEET_DIR; run tests/fleet/down.sh first to change it"
    fi
  fi
  N=${n:-${old_n:-3}}
  BACKEND=${backend:-${old_backend:-redis}}
  TABLES=${tables:-${old_tables:-1}}
  if ! [[ $TABLES =~ ^[0-9]+$ ]] || [ "$TABLES" -lt 1 ] || [ "$TABLES" -gt "$N" ]; then
    fdie "--tables must be a number from 1 to N ($N), not '$TABLES'"
  fi
  local t0=$SECONDS

  build_binary
  mkdir -p "$FLEET_DIR"
  touch "$FLEET_MARKER"
  # 0711: the postgres user must reach pg/ inside; nobody else may list it. Secrets are 0600.
  chmod 711 "$FLEET_DIR"
  printf 'NODES=%s\nBACKEND=%s\nTABLES=%s\n' "$N" "$BACKEND" "$TABLES" >"$FLEET_CONFIG.new"
  grep -v '^NODES=\|^BACKEND=\|^TABLES=' "$FLEET_CONFIG" >>"$FLEET_CONFIG.new" 2>/dev/null || true
  mv -f "$FLEET_CONFIG.new" "$FLEET_CONFIG"

  local line redis_was_up=0
  redis_sh status >/dev/null 2>&1 && redis_was_up=1
  line=$(redis_sh start | tail -n 1) || fdie "tests/redis/redis.sh start failed (see above)"
  REDIS_URL=${line#CRASHFLEET_TEST_REDIS_URL=}
  if ! line=$(pg_sh start | tail -n 1); then
    # Leave nothing half-started behind: the Redis this call started goes too.
    [ "$redis_was_up" = 1 ] || redis_sh stop >/dev/null 2>&1 || true
    fdie "tests/pg/pg.sh start failed (see above)"
  fi
  DATABASE_URL=${line#CRASHFLEET_TEST_DATABASE_URL=}
  [ "$BACKEND" = kubernetes ] && start_kubernetes

  keep_secret "$FLEET_DIR/jwt-secret" "$(secret)"
  keep_secret "$FLEET_DIR/admin-token" "$(secret)"
  JWT_SECRET=$(cat "$FLEET_DIR/jwt-secret")
  ADMIN_TOKEN=$(cat "$FLEET_DIR/admin-token")
  local i seed
  for i in $(seq 1 "$TABLES"); do
    seed=$(table_seed "$i")
    [ -s "$seed" ] && continue
    rm -f "$seed"
    mkdir -p "$(dirname "$seed")"
    flog "creating table $(table_name "$i")'s chain seed ($CHAIN_LENGTH rounds)"
    "$BIN" chain new --length "$CHAIN_LENGTH" --out "$seed" 8>&- >&2 ||
      fdie "game-node chain new failed"
  done

  # Nodes hold the addresses they were started with: when Redis or PostgreSQL came back elsewhere
  # (their old port was taken), the running nodes are restarted.
  local addresses
  addresses="$REDIS_URL $DATABASE_URL ${KUBECONFIG:-}"
  if [ -n "$(fleet_pids)" ] && [ "$(config_get ADDRESSES)" != "$addresses" ]; then
    flog "Redis or PostgreSQL changed address; restarting the nodes"
    stop_nodes
  fi
  grep -v '^ADDRESSES=' "$FLEET_CONFIG" >"$FLEET_CONFIG.new" || true
  echo "ADDRESSES=$addresses" >>"$FLEET_CONFIG.new"
  chmod 600 "$FLEET_CONFIG.new"
  mv -f "$FLEET_CONFIG.new" "$FLEET_CONFIG"

  # The first node of each table commits its fairness (and the first migrates the database)
  # alone; the others start together once they are ready.
  local k
  flog "$N game-node(s), $TABLES table(s), leader election $BACKEND; starting those not running"
  for k in $(seq 1 "$TABLES"); do start_node "$k"; done
  for k in $(seq $((TABLES + 1)) "$N"); do start_node "$k" nowait; done
  for k in $(seq $((TABLES + 1)) "$N"); do
    local rc=0
    wait_ready "$k" || rc=$?
    if [ $rc = 2 ]; then
      flog "node-$k: port $(cat "$(node_dir "$k")/port") was taken; picking another"
      rm -f "$(node_dir "$k")/port"
      start_node "$k"
    fi
  done

  : >"$FLEET_DIR/urls"
  for k in $(seq 1 "$N"); do echo "http://127.0.0.1:$(cat "$(node_dir "$k")/port")/" >>"$FLEET_DIR/urls"; done
  flog "fleet up in $((SECONDS - t0))s"

  local first
  first=$(head -n 1 "$FLEET_DIR/urls")
  if [ "$TABLES" = 1 ]; then
    echo "crashfleet fleet: $N game-node(s), table main, leader election $BACKEND ($FLEET_DIR)"
  else
    echo "crashfleet fleet: $N game-node(s), $TABLES tables in $TABLES regions, leader election $BACKEND ($FLEET_DIR)"
  fi
  for k in $(seq 1 "$N"); do
    i=$(table_of "$k")
    echo "node-$k $(sed -n "${k}p" "$FLEET_DIR/urls") (table $(table_name "$i"), $(table_region "$i"))"
  done
  echo "logs:"
  for k in $(seq 1 "$N"); do echo "  node-$k $(node_dir "$k")/node.log"; done
  echo "  redis  $FLEET_DIR/redis/redis.log"
  echo "  postgres $FLEET_DIR/pg/postgres.log"
  echo "redis: $REDIS_URL"
  echo "postgres: $DATABASE_URL"
  [ "$BACKEND" = kubernetes ] && echo "KUBECONFIG=$KUBECONFIG (Lease crashfleet-main in namespace default)"
  echo "admin token: $ADMIN_TOKEN"
  echo "  curl -H 'Authorization: Bearer $ADMIN_TOKEN' ${first}api/v1/admin/audit"
  echo "  curl ${first}api/v1/fleet"
  echo "lobby: ${first}lobby"
  echo "stop: tests/fleet/down.sh"
}

main
