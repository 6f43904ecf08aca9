#!/usr/bin/env bash
# Runs a browser end-to-end test against a running game-node: by default e2e.mjs (the game and
# verifier pages); `lobby.mjs` tests the lobby page of a fleet of several tables.
#   CRASHFLEET_URL=http://127.0.0.1:8080 bash tests/web/run.sh [e2e.mjs|lobby.mjs]
# Env: CRASHFLEET_URL (required), CRASHFLEET_ARTIFACTS (screenshots; default /tmp/crashfleet-artifacts),
# CRASHFLEET_CACHE_DIR (npm cache; default ~/.cache/crashfleet), CRASHFLEET_CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")"
: "${CRASHFLEET_URL:?set CRASHFLEET_URL to the base URL of a running game-node}"

# Debian's chromium is the browser (nothing is downloaded at test time).
if [ ! -x "${CRASHFLEET_CHROMIUM:-/usr/bin/chromium}" ]; then
  bash ../install-deps.sh
fi

cache="${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}/npm"
mkdir -p "$cache"
# playwright-core never downloads browsers; the variable is belt and braces.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --prefer-offline --cache "$cache" --loglevel=error
script="${1:-e2e.mjs}"
case "$script" in
  e2e.mjs|lobby.mjs) ;;
  *) echo "run.sh: unknown test $script (e2e.mjs or lobby.mjs)" >&2; exit 2 ;;
esac
exec node "$script"
