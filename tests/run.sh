#!/usr/bin/env bash
# The one test command (README): installs and starts everything the suite needs on a fresh machine,
# runs the whole workspace test suite, and tears down what it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CRASHFLEET_CACHE_DIR="${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}"
mkdir -p "$CRASHFLEET_CACHE_DIR"

# --- system packages (Debian) -------------------------------------------------------------------
bash "$ROOT/tests/install-deps.sh"

# --- Kubernetes control plane (tests/k8s, issue #4) ---------------------------------------------
cleanup() { bash "$ROOT/tests/k8s/cluster.sh" down >/dev/null 2>&1 || true; }
if [ -x "$ROOT/tests/k8s/cluster.sh" ] || [ -f "$ROOT/tests/k8s/cluster.sh" ]; then
  trap cleanup EXIT
  kc_line=$(bash "$ROOT/tests/k8s/cluster.sh" up | tail -n 1)
  export "${kc_line?}"
  echo "control plane up: $kc_line"
fi

# --- the suite ----------------------------------------------------------------------------------
cargo test --workspace "$@"
