#!/usr/bin/env bash
# Reproduces the load figures of docs/BENCHMARKS.md (opt-in; ~15 min on 2 cores):
#   bash tests/bench/run.sh [standalone|fleet|ws|all] 
# Builds game-node and crashfleet-load in release, starts the nodes with load-test settings
# (no per-IP or per-player rate limit, 100 bets per player per round), runs crashfleet-load, writes
# one JSON report per run to docs/bench/results/ and redraws the charts (tests/bench/chart.py).
# Environment: RUNS (runs per point, default 3), DURATION (per run, default 30s),
# RATES (default "200 1000 3000 5000"), CONNS (WebSocket steps, default "1000 2500 5000 10000 15000 20000").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
what=${1:-all}
RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
RATES=${RATES:-"200 1000 3000 5000"}
CONNS=${CONNS:-"1000 2500 5000 10000 15000 20000"}
OUT=$ROOT/docs/bench/results
mkdir -p "$OUT"
ADMIN=bench-admin-token-0123456789

cargo build --release -p game-node -p crashfleet-tests --bins
NODE=$ROOT/target/release/game-node
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

standalone_node() { # $1: name → sets PORT (no subshell: the pid must reach the clean-up list)
  PORT=$(free_port)
  "$NODE" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  pids+=($!)
  wait_ready "$PORT"
}

rates() { # $1: label, $2..: --url flags
  local label=$1; shift
  for rate in $RATES; do
    for run in $(seq 1 "$RUNS"); do
      echo "== $label: $rate bets/s, run $run"
      "$LOAD" "$@" --connections 300 --players 300 --bets-per-player 100 --bet-rate "$rate" \
        --duration "$DURATION" --quiet --json "$OUT/$label-rate$rate-run$run.json"
    done
  done
}

if [ "$what" = standalone ] || [ "$what" = all ]; then
  standalone_node standalone
  rates standalone --url "http://127.0.0.1:$PORT"
fi

if [ "$what" = ws ] || [ "$what" = all ]; then
  for c in $CONNS; do
    standalone_node "ws$c"
    echo "== websocket ceiling: $c connections"
    "$LOAD" --url "http://127.0.0.1:$PORT" --connections "$c" --players 500 --bets-per-player 100 \
      --via ws --bet-rate 50 --ping-interval 5s --duration "$DURATION" --quiet \
      --json "$OUT/ws-conn$c.json"
    kill "${pids[-1]}" 2>/dev/null || true
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
  rates fleet "${flags[@]}"
fi

python3 "$ROOT/tests/bench/chart.py" "$OUT" "$ROOT/docs/bench"
