#!/usr/bin/env bash
# The soak run (opt-in, not in CI): a 3-node fleet (Redis election, PostgreSQL ledger, fault proxies)
# under steady load for MINUTES (default 30) with a random fault every FAULT_EVERY seconds (default
# 60), sampled every 10 s: each node's RSS and open descriptors, WebSocket connections, Redis
# used_memory and keys, PostgreSQL database size and bets kept.
#   bash tests/soak/run.sh [MINUTES] [FAULT_EVERY]
# Then the money invariants are checked as in the chaos suite, and flatness: the median of the last
# fifth of the nodes' summed RSS and descriptors and of Redis' memory and keys may not exceed the middle
# fifth's by more than 25 % (+ a small slack; round keys expire after 10 minutes, so runs shorter
# than ~25 minutes see Redis still filling); PostgreSQL must grow at a steady size per bet kept.
# The samples go to docs/bench/results/soak.csv and the charts to docs/bench/soak-*.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
bash "$ROOT/tests/install-deps.sh"
minutes="${1:-30}"
export CRASHFLEET_SOAK_SECS=$(( minutes * 60 ))
export CRASHFLEET_SOAK_FAULT_EVERY_SECS="${2:-60}"
mkdir -p "$ROOT/docs/bench/results"
export CRASHFLEET_SOAK_CSV="$ROOT/docs/bench/results/soak.csv"

# The suite starts its own Redis and PostgreSQL; the shared server answers the harness check.
source "$ROOT/tests/pg/harness-check.sh"

start=$(date +%s)
cargo test --release -p game-node --test fleet soak_ -- --nocapture
echo "soak: ${minutes} min in $(( $(date +%s) - start ))s"
python3 "$ROOT/tests/bench/chart.py" "$ROOT/docs/bench/results" "$ROOT/docs/bench" | tail -n 1
