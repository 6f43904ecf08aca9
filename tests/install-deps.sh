#!/usr/bin/env bash
# Installs the Debian packages the test suite needs when they are missing (CI machines start bare).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# redis-server: the fleet tests start private servers, tests/redis/redis.sh the suite's shared one.
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need+=(redis-server)
# nginx: the reverse proxy in front of a node in game-node/tests/proxy.rs (client address behind a proxy).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
