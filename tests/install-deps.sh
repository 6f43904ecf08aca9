#!/usr/bin/env bash
# Installs the Debian packages the test suite needs when they are missing (CI machines start bare).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# redis-server: the fleet tests start private servers, tests/redis/redis.sh the suite's shared one.
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need+=(redis-server)
# nginx: the reverse proxy in front of a node in game-node/tests/node/proxy.rs (client address behind a proxy).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# The real node of tests/k8s/cluster.sh (containerd, runc, CNI plugins, iptables/nft for the
# kubelet and kube-proxy) and tests/k8s/images.sh (buildah; objcopy from binutils).
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
# The real node's pause image is a static C program (gcc -static needs libc.a).
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
# prometheus (with promtool): the alert rules and the dashboard are checked against a real
# Prometheus scraping a fleet (game-node/tests/fleet/prometheus.rs).
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# python3-venv: tests/settlement/pyenv.sh makes a virtual environment for the PyNaCl checker.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
