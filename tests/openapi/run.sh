#!/usr/bin/env bash
# The OpenAPI document against the code, judged from outside: Schemathesis (a pinned version in a
# venv under $CRASHFLEET_CACHE_DIR) generates requests from docs/openapi.json — valid and invalid —
# (as the node serves it; the openapi drift test keeps the file equal to it) and sends them to a
# standalone node started here on loopback (admin token set, a registered player's token for the
# player operations). It fails on any answer the document does not allow: a 5xx, a status not
# listed for the operation, a wrong content type, a body off its schema, an invalid request taken.
#
# Checks: not_a_server_error (a 503 is documented, anything else 5xx fails), status_code_conformance,
# content_type_conformance, response_schema_conformance, negative_data_rejection (a request the
# document calls invalid must be refused, e.g. `limit=0`).
# Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per operation (default 100: ~2,300 requests, ~25 s of
# fuzzing on two shared cores; 0 skips the run); SCHEMATHESIS_SEED (default 1: the same cases each
# run, so a failure reproduces; set another to explore).
# Usage: tests/openapi/run.sh            (builds game-node, starts it, fuzzes, stops it)
set -euo pipefail
[ "${SCHEMATHESIS_MAX_EXAMPLES:-100}" = 0 ] && { echo "openapi fuzzing skipped"; exit 0; }
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE="${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}"
VERSION=4.32.5
VENV="$CACHE/venv"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $VERSION\$"; then
  echo "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi

cargo build -q -p game-node
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/debug/game-node"

work=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
export CRASHFLEET_ST_ADMIN_TOKEN="openapi-admin-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# No per-IP or per-player limit: the fuzzer's requests would otherwise mostly meet a (documented)
# 429 and never reach the handlers. Short rounds so bets and cash-outs meet every phase.
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --admin-token "$CRASHFLEET_ST_ADMIN_TOKEN" --jwt-secret "openapi-jwt-secret-0123456789" \
  --chain-length 10000 --rate-limit-ip 0 --rate-limit-player 0 \
  --betting-window-ms 1000 --pause-ms 300 --doubling-ms 1000 >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 200); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url/readyz" 2>/dev/null && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log"; echo "the node exited" >&2; exit 1; }
  sleep 0.1
done
CRASHFLEET_ST_PLAYER_TOKEN=$(python3 - "$url/api/v1/auth/register" <<'PY'
import json, sys, urllib.request
body = json.dumps({"username": "openapi", "password": "openapi-password"}).encode()
req = urllib.request.Request(sys.argv[1], data=body, headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["token"])
PY
)
export CRASHFLEET_ST_PLAYER_TOKEN

started=$(date +%s)
status=0
# From the scratch dir: Schemathesis keeps a cache in its working directory, never in the checkout.
(cd "$work" && "$VENV/bin/schemathesis" --config-file "$ROOT/tests/openapi/schemathesis.toml" run "$url/api/v1/openapi.json" \
  --url "$url" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
  --max-examples "$MAX_EXAMPLES" --seed "${SCHEMATHESIS_SEED:-1}" --workers 2 --request-timeout 10 \
  --suppress-health-check too_slow --warnings off) || status=$?
echo "schemathesis: $(( $(date +%s) - started )) s, exit $status"
if [ "$status" != 0 ]; then
  echo "--- node log (last 40 lines)"; tail -n 40 "$work/node.log"
fi
exit "$status"
