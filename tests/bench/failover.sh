#!/usr/bin/env bash
# Failover figures of docs/BENCHMARKS.md (opt-in, ~5 min): the leader of a 3-node fleet is killed
# with -9 KILLS times (default 20) per election backend (Redis lock, Kubernetes Lease on the local
# control plane) under load; prints median/p90/max of kill → first leader event and kill → next
# round, and checks the money after the series. tests/run.sh starts PostgreSQL, Redis and the
# control plane and tears them down.
#   bash tests/bench/failover.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CRASHFLEET_FAILOVER_KILLS="${1:-20}"
bash tests/run.sh --test fleet failover_series -- --nocapture --test-threads 1 2>&1 | grep -E "FAILOVER SERIES|test result|panicked|SKIPPED"
