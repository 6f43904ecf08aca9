#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on its committed corpus (fuzz/corpus/),
# installing cargo-fuzz into the cache when it is missing. tests/run.sh calls it with a bounded time
# (CRASHFLEET_FUZZ_SECONDS, 45 s; 0 skips) so CI replays the whole corpus and fuzzes a little more.
#   bash tests/fuzz/run.sh [SECONDS] [TARGET…]
#   bash tests/fuzz/run.sh --build     # only install cargo-fuzz and build every target
# Toolchain: nightly when rustup has it; otherwise the stable one with RUSTC_BOOTSTRAP=1 (cargo fuzz
# passes -Z flags; stable ships the sanitizer runtimes). The fuzz build (~8 min cold on 2 cores)
# keeps its target directory in the cache ($CRASHFLEET_CACHE_DIR or ~/.cache/crashfleet).
# CRASHFLEET_FUZZ_SCRATCH=1 (set by tests/run.sh) writes new inputs to a temporary folder instead of
# fuzz/corpus/, so a test run never changes the checkout; run without it to grow the corpus, then
# minimise it (cargo fuzz cmin) before committing.
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a regression test (copy it into
# fuzz/corpus/<target>/, which every run replays first, and add a unit test for the fix).
set -euo pipefail
cd "$(dirname "$0")/../.."
build_only=0
if [ "${1:-}" = --build ]; then
  build_only=1
  shift
fi
secs=${1:-60}
shift || true
CACHE=${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}
export PATH="$CACHE/cargo-bin/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz 0.13.2 into $CACHE/cargo-bin"
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$CACHE/cargo-bin"
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
fi
target_dir="$CACHE/fuzz-target"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo "${toolchain[@]}" fuzz list)
fi
start=$(date +%s)
(cd fuzz && cargo "${toolchain[@]}" fuzz build -O --target-dir "$target_dir") # every target
echo "fuzz: build took $(( $(date +%s) - start ))s"
[ "$build_only" = 0 ] || exit 0
scratch=""
if [ "${CRASHFLEET_FUZZ_SCRATCH:-0}" = 1 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  corpus=("fuzz/corpus/$t")
  if [ -n "$scratch" ]; then
    mkdir -p "$scratch/$t"
    corpus=("$scratch/$t" "fuzz/corpus/$t") # new inputs go to the first folder
  fi
  echo "== $t: ${secs}s on $(ls "fuzz/corpus/$t" | wc -l) committed inputs"
  # -max_len bounds inputs to what the surfaces accept (a WebSocket frame is at most 4 KiB).
  status=0
  (cd fuzz && cargo "${toolchain[@]}" fuzz run -O --target-dir "$target_dir" "$t" "${corpus[@]/#fuzz\//}" -- \
    -max_total_time="$secs" -max_len=4096 -print_final_stats=1) >"${scratch:-/tmp}/fuzz-$t.log" 2>&1 || status=$?
  grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY" \
    "${scratch:-/tmp}/fuzz-$t.log" || true
  if [ "$status" != 0 ] || [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    tail -n 60 "${scratch:-/tmp}/fuzz-$t.log" >&2
    echo "fuzz: $t failed (exit $status); its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no crash"
