#!/usr/bin/env bash
# Reproduces the load figures of docs/BENCHMARKS.md (opt-in; ~15 min on 2 cores per mode):
#   bash tests/bench/run.sh [bets|fanout|fleetfanout|standalone|fleet|ws|all]
# Builds game-node and crashfleet-load in release, starts the nodes with load-test settings
# (no per-IP or per-player rate limit, 100 bets per player per round), runs crashfleet-load, writes
# one JSON report per run to docs/bench/results/ and redraws the charts (tests/bench/chart.py).
#
# Per core: the node side (the node, and in a fleet its Redis and PostgreSQL) is pinned to
# NODE_CPU and the generator to LOAD_CPU with taskset, and the generator reads both sides' CPU
# time from /proc (--node-pid), so every report has CPU µs per bet/cash-out and per delivered
# WebSocket message for each side. A pinned node runs one runtime worker (tokio sizes its pool by
# the CPUs the process may use).
#   bets    one pinned node, 5 sockets, bets and cash-outs over REST at BET_RATES: the bet path
#   fanout  one pinned node, CONNS sockets, no bets: CPU per delivered tick, lag and spread
#   fleetfanout  the same sockets over a 3-node fleet (nodes, Redis, PostgreSQL on NODE_CPU):
#           the nodes' CPU per delivered message and Redis's per relayed event (not in `all`)
#   standalone / fleet / ws: the earlier sweeps (300 players watching; fleet: 3 nodes), pinned too
# Environment: RUNS (runs per point, default 3), DURATION (per run, default 30s),
# RATES (default "200 1000 3000 5000"), BET_RATES (default "2000 5000 10000 15000"),
# CONNS (WebSocket steps, default "1000 2500 5000 10000 15000 20000"), NODE_CPU (default 0),
# LOAD_CPU (default 1), BENCH_NODE (a game-node binary to measure instead of this build's, e.g. an
# older commit's for a before/after) and BENCH_LABEL (prefix of the per-core result files,
# default "core").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
what=${1:-all}
RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
RATES=${RATES:-"200 1000 3000 5000"}
BET_RATES=${BET_RATES:-"2000 5000 10000 15000"}
CONNS=${CONNS:-"1000 2500 5000 10000 15000 20000"}
NODE_CPU=${NODE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=$ROOT/docs/bench/results
mkdir -p "$OUT"
ADMIN=bench-admin-token-0123456789

cargo build --release -p game-node -p crashfleet-tests --bins
NODE=${BENCH_NODE:-$ROOT/target/release/game-node}
LABEL=${BENCH_LABEL:-core}
LOAD=$ROOT/target/release/crashfleet-load
WORK=$(mktemp -d /tmp/crashfleet-bench.XXXXXX)
chmod 755 "$WORK" # PostgreSQL (fleet) runs as the postgres user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$WORK/fleet-up" ]; then CRASHFLEET_FLEET_DIR=$WORK/fleet bash "$ROOT/tests/fleet/down.sh" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The fleet's processes: its nodes (tests/fleet/up.sh's pid files), Redis (its pid file) and the
# PostgreSQL postmaster with its children.
fleet_pids() {
  local pm
  cat "$WORK"/fleet/node-*/pid
  cat "$WORK"/fleet/redis/redis.pid 2>/dev/null || true
  pm=$(head -n 1 "$WORK"/fleet/pg/data/postmaster.pid 2>/dev/null || true)
  if [ -n "$pm" ]; then echo "$pm"; pgrep -P "$pm" || true; fi
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "node on port $1 never came up" >&2; exit 1
}

# Load-test settings shared by every node (see docs/BENCHMARKS.md).
export CRASHFLEET_RATE_LIMIT_IP=0 CRASHFLEET_RATE_LIMIT_PLAYER=0 CRASHFLEET_BETS_PER_PLAYER=100
export CRASHFLEET_ADMIN_TOKEN=$ADMIN CRASHFLEET_MAX_CONNECTIONS=50000
# The load client's sockets all come from 127.0.0.1: no per-address caps.
export CRASHFLEET_MAX_CONNECTIONS_PER_IP=0 CRASHFLEET_MAX_WS_PER_IP=0
# Short rounds, so every run sees several betting windows: 5 s of bets, flights of at most ~9 s
# (doubling every 2 s, capped at 20x), 1 s between rounds.
export CRASHFLEET_BETTING_WINDOW_MS=5000 CRASHFLEET_PAUSE_MS=1000 CRASHFLEET_DOUBLING_MS=2000
export CRASHFLEET_MAX_MULTIPLIER_X100=2000

# The generator, on its own core.
load() { taskset -c "$LOAD_CPU" "$LOAD" "$@"; }

standalone_node() { # $1: name → sets PORT and NODE_PID (no subshell: the pid must reach the clean-up list)
  PORT=$(free_port)
  taskset -c "$NODE_CPU" "$NODE" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  NODE_PID=$!
  pids+=($NODE_PID)
  wait_ready "$PORT"
}

stop_node() { kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; }

rates() { # $1: label, $2..: --url and --node-pid flags
  local label=$1; shift
  for rate in $RATES; do
    for run in $(seq 1 "$RUNS"); do
      echo "== $label: $rate bets/s, run $run"
      load "$@" --connections 300 --players 300 --bets-per-player 100 --bet-rate "$rate" \
        --duration "$DURATION" --quiet --json "$OUT/$label-rate$rate-run$run.json"
    done
  done
}

# The bet path per core: a fresh node per run, 5 sockets watching (the feed still batches every
# bet to them), players enough for the rate (100 bets each per round, 5 s windows).
if [ "$what" = bets ] || [ "$what" = all ]; then
  for rate in $BET_RATES; do
    players=$(( rate * 5 / 100 + 50 ))
    for run in $(seq 1 "$RUNS"); do
      standalone_node "bets$rate-$run"
      echo "== per core: bets at $rate/s, run $run ($players players)"
      load --url "http://127.0.0.1:$PORT" --node-pid "$NODE_PID" --connections 5 \
        --players "$players" --bets-per-player 100 --bet-rate "$rate" --duration "$DURATION" \
        --quiet --json "$OUT/$LABEL-bets-rate$rate-run$run.json" | tail -n 8
      stop_node
    done
  done
fi

# Fan-out per core: sockets only (no bets), pinging every 30 s; the node's CPU over the run
# divided by the messages delivered is the cost of one delivered message.
if [ "$what" = fanout ] || [ "$what" = all ]; then
  for c in $CONNS; do
    for run in $(seq 1 "$RUNS"); do
      standalone_node "fanout$c-$run"
      echo "== per core: fan-out to $c sockets, run $run"
      load --url "http://127.0.0.1:$PORT" --node-pid "$NODE_PID" --connections "$c" \
        --players 500 --bet-rate 0 --ping-interval 30s --duration "$DURATION" \
        --quiet --json "$OUT/$LABEL-fanout-conn$c-run$run.json" | tail -n 6
      stop_node
    done
  done
fi

if [ "$what" = standalone ] || [ "$what" = all ]; then
  standalone_node standalone
  rates standalone --url "http://127.0.0.1:$PORT" --node-pid "$NODE_PID"
  stop_node
fi

if [ "$what" = ws ] || [ "$what" = all ]; then
  for c in $CONNS; do
    standalone_node "ws$c"
    echo "== websocket ceiling: $c connections"
    load --url "http://127.0.0.1:$PORT" --node-pid "$NODE_PID" --connections "$c" --players 500 \
      --bets-per-player 100 --via ws --bet-rate 50 --ping-interval 5s --duration "$DURATION" \
      --quiet --json "$OUT/ws-conn$c.json"
    stop_node
    p99=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ws']['tick_p99_ms'])" "$OUT/ws-conn$c.json")
    echo "   tick p99 ${p99} ms"
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 50 else 1)" "$p99"; then
      echo "   past the 50 ms aim: the ceiling is below $c connections"; break
    fi
  done
fi

if [ "$what" = fleet ] || [ "$what" = all ]; then
  CRASHFLEET_FLEET_DIR=$WORK/fleet CRASHFLEET_BIN=$NODE bash "$ROOT/tests/fleet/up.sh" 3 | tee "$WORK/fleet.txt"
  touch "$WORK/fleet-up"
  mapfile -t urls <"$WORK/fleet/urls"
  flags=()
  for u in "${urls[@]}"; do flags+=(--url "$u"); done
  # The fleet's side on one core: the nodes, Redis and every PostgreSQL process (backends fork
  # from the postmaster and inherit its CPU set).
  for p in $(fleet_pids); do
    taskset -a -p -c "$NODE_CPU" "$p" >/dev/null
    flags+=(--node-pid "$p")
  done
  rates fleet "${flags[@]}"
fi

# Fan-out across a 3-node fleet: the same sockets as `fanout`, spread over three nodes that each
# relay the leader's events from one Redis subscription. The nodes, Redis and PostgreSQL share
# NODE_CPU; the report gives the nodes' CPU per delivered message and Redis's per relayed event.
if [ "$what" = fleetfanout ]; then
  CRASHFLEET_FLEET_DIR=$WORK/fleet CRASHFLEET_BIN=$NODE bash "$ROOT/tests/fleet/up.sh" 3 >"$WORK/fleet.txt"
  touch "$WORK/fleet-up"
  mapfile -t urls <"$WORK/fleet/urls"
  flags=()
  for u in "${urls[@]}"; do flags+=(--url "$u"); done
  for p in $(fleet_pids); do taskset -a -p -c "$NODE_CPU" "$p" >/dev/null; done
  for p in $(cat "$WORK"/fleet/node-*/pid); do flags+=(--node-pid "$p"); done
  flags+=(--relay-pid "$(cat "$WORK/fleet/redis/redis.pid")")
  for c in $CONNS; do
    for run in $(seq 1 "$RUNS"); do
      echo "== fleet fan-out: $c sockets over 3 nodes, run $run"
      load "${flags[@]}" --connections "$c" --players 500 --bet-rate 0 --ping-interval 30s \
        --duration "$DURATION" --quiet --json "$OUT/$LABEL-fleetfanout-conn$c-run$run.json" | tail -n 7
    done
  done
fi

python3 "$ROOT/tests/bench/chart.py" "$OUT" "$ROOT/docs/bench"
