#!/usr/bin/env bash
# The long chaos run (opt-in; CI runs the short default of 8 faults inside `tests/run.sh`):
#   bash tests/chaos/run.sh [FAULTS=200] [SEED]
# A 3-node fleet under load from crashfleet-load takes FAULTS random faults (kill -9 of the leader
# or any node, SIGSTOP past the lease, Redis and PostgreSQL restarts, cut and slowed links through
# per-node fault proxies); then every money invariant is checked and a summary table is printed.
# SEED replays a run's fault sequence (each run prints its seed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
bash "$ROOT/tests/install-deps.sh"
export CRASHFLEET_CHAOS_FAULTS="${1:-200}"
if [ -n "${2:-}" ]; then export CRASHFLEET_CHAOS_SEED="$2"; fi

# The suite starts its own Redis and PostgreSQL; the shared server answers the harness check.
source "$ROOT/tests/pg/harness-check.sh"

start=$(date +%s)
cargo test -p game-node --test fleet faults_under_load -- --nocapture
echo "chaos: ${CRASHFLEET_CHAOS_FAULTS} faults in $(( $(date +%s) - start ))s"
