#!/usr/bin/env bash
# Stops the local fleet tests/fleet/up.sh started and removes its state directory.
set -euo pipefail

# shellcheck disable=SC2034 # read by common.sh
FLEET_SCRIPT=down.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: tests/fleet/down.sh | --help

Stops what tests/fleet/up.sh started, in this order: the game-nodes (SIGTERM, SIGKILL after 5 s),
Redis (tests/redis/redis.sh stop), PostgreSQL (tests/pg/pg.sh stop), and the control plane
'fleet' only if up.sh started it (--backend kubernetes); then removes the fleet directory.
Safe to run twice, and when no fleet runs.

Environment: CRASHFLEET_FLEET_DIR (default /tmp/crashfleet-fleet).
EOF
}

case ${1:-} in
  "") ;;
  -h | --help | help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

main() {
  if [ ! -e "$FLEET_DIR" ]; then
    flog "no fleet in $FLEET_DIR; nothing to stop"
    return 0
  fi
  [ -f "$FLEET_MARKER" ] || fdie "$FLEET_DIR was not created by up.sh (no $FLEET_MARKER): not touching it"
  with_fleet_lock
  [ -e "$FLEET_DIR" ] || return 0
  local t0=$SECONDS
  stop_nodes
  CRASHFLEET_REDIS_DIR=$FLEET_DIR/redis bash "$FLEET_ROOT/tests/redis/redis.sh" stop 8>&- ||
    fdie "redis.sh stop failed; $FLEET_DIR is left in place"
  CRASHFLEET_PG_DIR=$FLEET_DIR/pg bash "$FLEET_ROOT/tests/pg/pg.sh" stop 8>&- ||
    fdie "pg.sh stop failed; $FLEET_DIR is left in place"
  if [ -f "$FLEET_K8S_OURS" ]; then
    CRASHFLEET_K8S_NAME=$FLEET_K8S_NAME bash "$FLEET_ROOT/tests/k8s/cluster.sh" down 8>&- ||
      fdie "tests/k8s/cluster.sh down failed; $FLEET_DIR is left in place"
  fi
  rm -rf -- "$FLEET_DIR"
  flog "fleet stopped and $FLEET_DIR removed in $((SECONDS - t0))s"
}

main
