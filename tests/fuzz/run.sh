#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on its committed corpus (fuzz/corpus/),
# installing cargo-fuzz into the cache when it is missing. Needs the nightly toolchain
# (rustup toolchain install nightly). A crash leaves its input in fuzz/artifacts/<target>/: turn it
# into a regression test (copy it into fuzz/corpus/<target>/ and add a unit test for the fix).
#   bash tests/fuzz/run.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
CACHE=${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}
export PATH="$CACHE/cargo-bin/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$CACHE/cargo-bin"
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${secs}s"
  # -max_len bounds inputs to what the surfaces accept (a WebSocket frame is at most 4 KiB).
  cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 |
    grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY" || true
  if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz: $t found a crash: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
