#!/usr/bin/env bash
# Builds Traefik (the Gateway API and Ingress controller the edge tests put in front of the fleet)
# from its Go module into the harness cache, once, and prints the binary's path on the last line.
#   bash tests/k8s/traefik.sh          # build if missing, print the path
#   bash tests/k8s/traefik.sh path     # print the path if built, exit 1 otherwise
# Env: CRASHFLEET_CACHE_DIR (default ~/.cache/crashfleet). The version is TRAEFIK_VERSION in
# tests/k8s/versions.env.
#
# Why a build from source: no container registry or release download is reachable here, and the
# Go module proxy serves Traefik's module. `go install module@version` refuses it (its go.mod has
# replace directives), so the module's source is taken from the proxy and built as the main
# module, with a private GOPATH/GOCACHE that is deleted afterwards (~2 GB).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE=${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}
DIR=$CACHE/traefik-$TRAEFIK_VERSION
BIN=$DIR/traefik

log() { echo "traefik.sh: $*" >&2; }
die() { log "$*"; exit 1; }

if [ "${1:-}" = path ]; then
  [ -x "$BIN" ] || exit 1
  echo "$BIN"
  exit 0
fi
[ $# -eq 0 ] || die "usage: tests/k8s/traefik.sh [path]"

mkdir -p "$DIR"
exec {lock}>"$DIR/.lock"
flock "$lock"
# The version is read whole first: `grep -q` closing the pipe early would fail it under pipefail.
if [ -x "$BIN" ] && [[ $("$BIN" version 2>/dev/null) =~ Version:\ *${TRAEFIK_VERSION#v} ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "needs Go (the Go module proxy serves Traefik's module)"
TMP=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
export GOPATH=$TMP/gopath GOMODCACHE=$TMP/gopath/pkg/mod GOCACHE=$TMP/gocache
export GOFLAGS="-modcacherw -buildvcs=false -trimpath" CGO_ENABLED=0 GOTOOLCHAIN=local
started=$SECONDS
log "building Traefik $TRAEFIK_VERSION into $DIR (once; minutes on 2 cores; log: $DIR/build.log)"
src=$(cd "$TMP" && go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] && [ -d "$src" ] || die "the Go module proxy did not give github.com/traefik/traefik/v3@$TRAEFIK_VERSION"
cp -r "$src" "$TMP/src"
chmod -R u+w "$TMP/src"
# The version stamp `traefik version` prints (the release pipeline sets it the same way).
ld="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}"
ld+=" -X github.com/traefik/traefik/v3/pkg/version.Codename=crashfleet-tests"
if ! (cd "$TMP/src" && nice -n 10 go build -ldflags "$ld" -o "$TMP/traefik" ./cmd/traefik) >"$DIR/build.log" 2>&1; then
  tail -n 20 "$DIR/build.log" >&2
  die "go build of Traefik $TRAEFIK_VERSION failed (log: $DIR/build.log)"
fi
mv -f "$TMP/traefik" "$BIN"
log "built in $((SECONDS - started)) s: $("$BIN" version | head -n 1)"
echo "$BIN"
