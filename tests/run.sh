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

# One trap tears down everything started below (PostgreSQL, Redis, the Kubernetes control plane).
# A PostgreSQL or Redis that was already running (a developer's, via pg.sh/redis.sh) is left running.
pg_ours=1
bash "$ROOT/tests/pg/pg.sh" status >/dev/null 2>&1 && pg_ours=0
redis_ours=1
bash "$ROOT/tests/redis/redis.sh" status >/dev/null 2>&1 && redis_ours=0
# Likewise a control plane already running under this CRASHFLEET_K8S_NAME (a developer's).
k8s_ours=1
[ -f "$ROOT/tests/k8s/cluster.sh" ] && bash "$ROOT/tests/k8s/cluster.sh" status >/dev/null 2>&1 && k8s_ours=0
# Background builds run in a CPU cgroup of their own marked idle (`cpu.idle`, cgroup v1 or v2): the
# kernel runs them only when no other group wants the core. nice alone is not enough: the real
# node's pods sit in cgroups whose weight the kubelet sets from their requests, and measured beside
# a nice-19 build their start took twice as long (pods Ready 77 s, first round 168 s, against 48 s
# and 78 s alone; 63 s and 84 s with the build in an idle cgroup).
idle_cgroup=""
idle_cgroup_make() {
  local name=crashfleet-idle-$$ dir=""
  if [ -f /sys/fs/cgroup/cpu/cgroup.procs ]; then
    dir=/sys/fs/cgroup/cpu/$name # v1: the cpu hierarchy
  elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    dir=/sys/fs/cgroup/$name # v2 with the cpu controller enabled below the root
  fi
  [ -n "$dir" ] && mkdir "$dir" 2>/dev/null || return 0
  if echo 1 >"$dir/cpu.idle" 2>/dev/null; then
    idle_cgroup=$dir
  else
    rmdir "$dir" 2>/dev/null || true
  fi
}
# Runs "$@" in the idle cgroup (or, without one, at nice 19 alone) in a process group of its own.
idle_start() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs"; shift; exec nice -n 19 "$@"' _ "$idle_cgroup" "$@" &
}
idle_cgroup_remove() {
  [ -n "$idle_cgroup" ] || return 0
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    rmdir "$idle_cgroup" 2>/dev/null && break
    sleep 0.5
  done
  idle_cgroup=""
}
fuzz_build=""
cleanup() {
  if [ -n "$fuzz_build" ]; then kill -- -"$fuzz_build" 2>/dev/null || true; fi
  idle_cgroup_remove
  if [ "$pg_ours" = 1 ]; then bash "$ROOT/tests/pg/pg.sh" stop >/dev/null 2>&1 || true; fi
  if [ "$redis_ours" = 1 ]; then bash "$ROOT/tests/redis/redis.sh" stop >/dev/null 2>&1 || true; fi
  if [ "$k8s_ours" = 1 ] && [ -f "$ROOT/tests/k8s/cluster.sh" ]; then
    # stderr stays: it lists what the real node left on the host and down removed.
    bash "$ROOT/tests/k8s/cluster.sh" down >/dev/null || true
  fi
}
trap cleanup EXIT

# --- PostgreSQL (tests/pg: the ledger conformance suite runs against it and SQLite) -------------
pg_line=$(bash "$ROOT/tests/pg/pg.sh" start | tail -n 1)
export "${pg_line?}"
echo "PostgreSQL up: ${pg_line%%://*}://…@${pg_line##*@}"

# --- Redis (tests/redis: fleet tests, the Redis arbiter and bus) ---------------------------------
redis_line=$(bash "$ROOT/tests/redis/redis.sh" start | tail -n 1)
export "${redis_line?}"
echo "Redis up: ${redis_line#*=}"

# --- Python with PyNaCl: the independent settlement checker (tests/settlement/check.py) ----------
py_line=$(bash "$ROOT/tests/settlement/pyenv.sh" | tail -n 1)
export "${py_line?}"
echo "settlement checker: ${py_line#*=}"

# --- Kubernetes control plane (tests/k8s, issue #4) ---------------------------------------------
if [ -x "$ROOT/tests/k8s/cluster.sh" ] || [ -f "$ROOT/tests/k8s/cluster.sh" ]; then
  kc_line=$(bash "$ROOT/tests/k8s/cluster.sh" up | tail -n 1)
  export "${kc_line?}"
  echo "control plane up: $kc_line"
fi

# --- the edge: Traefik, the Gateway API controller in front of the fleet (tests/k8s/traefik.sh,
# issue #16), built from its Go module into the cache once (~6 min on 2 cores the first time).
if [ -f "$ROOT/tests/k8s/traefik.sh" ]; then
  echo "Traefik: $(bash "$ROOT/tests/k8s/traefik.sh" | tail -n 1)"
fi

# --- our images on the real node (tests/k8s/images.sh, issue #14) --------------------------------
# The suite's own build comes first: the images take the game-node and operator binaries it makes
# (debug, dependencies optimised), so the workspace is compiled once.
# (The real node needs root; cluster.sh starts none for another user unless told to.)
if [ "${CRASHFLEET_REAL_NODE:-1}" != 0 ] && [ "$(id -u)" = 0 ] && [ -f "$ROOT/tests/k8s/images.sh" ]; then
  cargo test --workspace --no-run
  CRASHFLEET_IMAGES_CARGO_BUILD=0 bash "$ROOT/tests/k8s/images.sh"
fi

# --- fuzzing, part 1 (issue #7): the fuzz build (cargo-fuzz, sanitizers, release: ~15 min cold on
# 2 cores, ~5 min after a change to the node) runs in the background, in the idle cgroup, while the
# suite runs: the suite spends most of its time waiting on pods, browsers and sockets, and the
# build takes only the cycles it leaves.
# CRASHFLEET_FUZZ_SECONDS per target (0 skips; skipped too when arguments narrow the suite).
fuzz_secs="${CRASHFLEET_FUZZ_SECONDS:-45}"
fuzz_log=""
if [ "$fuzz_secs" != 0 ] && [ $# -eq 0 ]; then
  fuzz_log=$(mktemp)
  idle_cgroup_make
  idle_start bash "$ROOT/tests/fuzz/run.sh" --build >"$fuzz_log" 2>&1
  fuzz_build=$!
  echo "fuzz: building the targets in the background (${idle_cgroup:-nice 19, no idle cgroup})"
fi

# --- the suite ----------------------------------------------------------------------------------
cargo test --workspace --no-fail-fast "$@"

# --- the OpenAPI document against the code, from outside (Schemathesis; skipped when arguments
# narrow the suite). SCHEMATHESIS_MAX_EXAMPLES per operation (0 skips).
if [ $# -eq 0 ]; then
  bash "$ROOT/tests/openapi/run.sh"
fi

# --- fuzzing, part 2: every target replays its committed corpus, then fuzzes a little more -------
if [ -n "$fuzz_log" ]; then
  if ! wait "$fuzz_build"; then
    fuzz_build=""
    tail -n 60 "$fuzz_log" >&2
    echo "run.sh: the fuzz build failed (above)" >&2
    exit 1
  fi
  fuzz_build=""
  idle_cgroup_remove
  cat "$fuzz_log"
  rm -f "$fuzz_log"
  CRASHFLEET_FUZZ_SCRATCH=1 bash "$ROOT/tests/fuzz/run.sh" "$fuzz_secs"
fi
