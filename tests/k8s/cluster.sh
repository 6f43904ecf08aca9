#!/usr/bin/env bash
# A real Kubernetes control plane for the test suite: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and the kwok controller (fake nodes), run as local processes on loopback by
# `kwokctl --runtime binary`. Binaries are built once from the Go module proxy into a cache keyed by
# version (tests/k8s/versions.env) and reused afterwards. See docs/TESTING.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE_DIR=${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}
VERSION_DIR=$CACHE_DIR/k8s-$K8S_VERSION
BIN_DIR=$VERSION_DIR/bin
BUILD_LOG=$VERSION_DIR/build.log
NAME=${CRASHFLEET_K8S_NAME:-crashfleet}
CLUSTERS_DIR=$CACHE_DIR/clusters
WORK_DIR=$CLUSTERS_DIR/$NAME
KUBECONFIG_FILE=$WORK_DIR/kubeconfig.yaml
# 0 lets kwokctl pick a free port; a fixed port makes `up` fail early when something holds it.
APISERVER_PORT=${CRASHFLEET_K8S_APISERVER_PORT:-0}
# Seconds for the whole control plane and the fake nodes to become ready. A warm start takes a few
# seconds; the margin is for a machine busy compiling.
READY_TIMEOUT=${CRASHFLEET_K8S_READY_TIMEOUT:-180}
# The zones of the fake nodes, one node per zone (topology.kubernetes.io/zone).
ZONES=(a b c)

# The real node's kubelet and kube-proxy are built in the same `go build` as the control plane: they
# share most packages, so they add minutes to a cold build, not another full build.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
ALL_BINARIES=("${K8S_BINARIES[@]}" etcd kwok kwokctl helm)

# shellcheck source=real-node.sh
source "$HERE/real-node.sh"

usage() {
  cat <<EOF
Usage: tests/k8s/cluster.sh up | down | status | build | --help

A Kubernetes $K8S_VERSION control plane for tests, started by kwokctl $KWOK_VERSION (--runtime binary):
etcd $ETCD_VERSION, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, all on
127.0.0.1, with ${#ZONES[@]} Ready fake nodes in zones ${ZONES[*]} (label topology.kubernetes.io/zone),
and a real node $REAL_NODE_NAME (containerd + kubelet + kube-proxy, label crashfleet.dev/real-node=true,
taint crashfleet.dev/real-node=true:NoSchedule) in a network namespace of its own. With the real
node the apiserver binds the host end of the node's link ($RN_HOST_IP; 127.0.0.1:PORT is rewritten
to it for local processes), so pods reach it at \$KUBERNETES_SERVICE_HOST ($KUBERNETES_SERVICE_IP)
through kube-proxy.

Commands:
  up      Build missing binaries (first run: 10-30 min, needs Go), start the cluster, wait until
          /readyz is ok and the nodes are Ready, and print KUBECONFIG=<path> as the last line
          (everything else goes to stderr). On a running cluster it only prints that line.
          Typical use:  eval "export \$(tests/k8s/cluster.sh up | tail -n 1)"
  down    Stop every process 'up' started, remove what the real node left on the host (containers,
          shims, mounts, cgroups, its network namespace with bridge, veths, nft and iptables
          rules, the host's nft table, CNI cache and IPAM files; each listed) and the cluster's
          work dir. Safe to repeat.
  status  Say what runs, the real node included (exit 0 when the cluster is ready, 3 when not).
  build   Only build/verify the cached binaries (kubectl and helm there are usable directly).

Environment:
  CRASHFLEET_CACHE_DIR            cache root (default \$HOME/.cache/crashfleet; now $CACHE_DIR)
                                  binaries: \$CRASHFLEET_CACHE_DIR/k8s-$K8S_VERSION/bin
  CRASHFLEET_K8S_NAME             cluster name, one work dir per name (default crashfleet)
                                  work dir: \$CRASHFLEET_CACHE_DIR/clusters/<name>
  CRASHFLEET_K8S_APISERVER_PORT   fixed apiserver port (default 0: a free port)
  CRASHFLEET_K8S_READY_TIMEOUT    seconds to wait for readiness (default 180)
  CRASHFLEET_REAL_NODE            1 (default as root): start the real node; 0 (default otherwise):
                                  fake nodes only
  CRASHFLEET_REAL_NODE_BRIDGE     its bridge (default cfreal0 for cluster 'crashfleet', else derived
                                  from the name; now $REAL_NODE_BRIDGE)
  CRASHFLEET_REAL_NODE_CIDR       bridge address and pod /24, 10.X.Y.1/24 (default 10.244.0.1/24 for
                                  'crashfleet', else derived from the name; now $REAL_NODE_CIDR)
  CRASHFLEET_REAL_NODE_CGROUP     cgroup parent of its pods (default /crashfleet-<name>)
Each cluster's real node has a network namespace of its own (crashfleet-<name>), so clusters
on one machine do not meet; give them different bridges and CIDRs (derived from the name).
Versions are pinned in tests/k8s/versions.env.
EOF
}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
  printf 'cluster.sh: error: %s\n' "$*" >&2
  exit 1
}

validate_name() {
  # The name becomes a directory and part of kwokctl's process names.
  [[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$ ]] ||
    die "CRASHFLEET_K8S_NAME='$NAME' must be lowercase letters, digits and '-' (at most 40)"
}

# --- binaries ---------------------------------------------------------------------------------------

binary_version() {
  case $1 in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) echo "$K8S_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    # kwokctl is stamped with the Kubernetes version it defaults to, so it belongs to both.
    kwok | kwokctl) echo "$KWOK_VERSION+k8s-$K8S_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
  esac
}

# A binary counts as present when it is executable and its stamp file names the pinned version, so a
# bump of etcd, kwok or helm in versions.env rebuilds just that binary.
binary_present() {
  [ -x "$BIN_DIR/$1" ] && [ "$(cat "$BIN_DIR/.$1.version" 2>/dev/null)" = "$(binary_version "$1")" ]
}

missing_binaries() {
  local b
  for b in "${ALL_BINARIES[@]}"; do
    binary_present "$b" || echo "$b"
  done
}

# A fresh Debian machine has Go but possibly not these: flock guards the cache and the cluster,
# and Go needs CA certificates to reach the module proxy.
ensure_host_tools() {
  local need=()
  command -v flock >/dev/null 2>&1 || need+=(util-linux)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get to install them"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing ${need[*]}"
  $sudo apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2 ||
    die "apt-get install ${need[*]} failed"
}

ensure_binaries() {
  ensure_host_tools
  mkdir -p "$BIN_DIR"
  [ -z "$(missing_binaries)" ] && return 0
  command -v go >/dev/null 2>&1 ||
    die "Go is needed to build the control plane binaries ($(missing_binaries | xargs)) but 'go' is not on PATH. Install Go >= 1.26 (https://go.dev/dl/ or apt-get install golang-go) and retry."

  # One builder per cache: a second `up` waits here and then finds the binaries in place.
  exec {BUILD_LOCK_FD}>"$VERSION_DIR/.build.lock"
  if ! flock -n "$BUILD_LOCK_FD"; then
    log "another cluster.sh is building into $BIN_DIR; waiting for it"
    flock "$BUILD_LOCK_FD"
  fi
  local missing
  missing=$(missing_binaries)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one binary name per word
    build_binaries $missing
  fi
  exec {BUILD_LOCK_FD}>&-
  BUILD_LOCK_FD=""
}

BUILD_TMP=""
BUILD_LOCK_FD=""
# Removes the build's private GOPATH/GOCACHE (~8 GB in ~100k files; minutes on a busy disk). It is
# renamed away at once and deleted in the background, so `up` need not wait for it.
cleanup_build_tmp() {
  if [ -n "$BUILD_TMP" ] && [ -d "$BUILD_TMP" ]; then
    local trash="$VERSION_DIR/.trash.${BUILD_TMP##*.build.}"
    mv "$BUILD_TMP" "$trash" 2>/dev/null || trash=$BUILD_TMP
    remove_in_background "$trash"
  fi
  BUILD_TMP=""
}

remove_in_background() {
  # chmod: an interrupted `go` can leave read-only module dirs behind despite -modcacherw.
  # The build lock is not handed down: the next build must not wait for this.
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  if [ -n "$BUILD_LOCK_FD" ]; then
    nohup bash -c 'chmod -R u+w "$1" 2>/dev/null; rm -rf "$1"' _ "$1" </dev/null >/dev/null 2>&1 {BUILD_LOCK_FD}>&- &
  else
    nohup bash -c 'chmod -R u+w "$1" 2>/dev/null; rm -rf "$1"' _ "$1" </dev/null >/dev/null 2>&1 &
  fi
}

# Build dirs of a build that was killed (the build lock is ours, so no build is running) and trash
# whose background removal died with its machine.
remove_stale_build_dirs() {
  local d
  for d in "$VERSION_DIR"/.build.* "$VERSION_DIR"/.trash.*; do
    [ -d "$d" ] || continue
    log "removing the leftovers of an earlier build: $d"
    remove_in_background "$d"
  done
}

# step DESCRIPTION COMMAND... : runs one build step with its output in the build log, and turns a
# failure into an error naming the step and the log.
step() {
  local what=$1 t0=$SECONDS
  shift
  log "  $what"
  printf '\n=== %s: %s\n$ %s\n' "$(date -u +%FT%TZ)" "$what" "$*" >>"$BUILD_LOG"
  if ! "$@" >>"$BUILD_LOG" 2>&1; then
    tail -n 25 "$BUILD_LOG" >&2 || true
    die "building the control plane failed at: $what. Full log: $BUILD_LOG"
  fi
  printf '=== done in %ss\n' $((SECONDS - t0)) >>"$BUILD_LOG"
}

wants() {
  local b
  for b in "${@:2}"; do [ "$b" = "$1" ] && return 0; done
  return 1
}

# The replace lines of a wrapper module: every local-path replace of the upstream go.mod (staging
# modules of k8s.io/kubernetes, sibling modules of etcd) pointed at the published module instead.
# $1 upstream go.mod, $2 local-path prefix regex, $3 version to pin.
generate_replaces() {
  sed -E -n "s#^(replace)?[[:space:]]*([^[:space:]]+)[[:space:]]+=>[[:space:]]+$2[^[:space:]]*[[:space:]]*\$#\t\2 => \2 $3#p" "$1"
}

# write_wrapper_module DIR MODULE VERSION LOCAL_PREFIX_REGEX PINNED_VERSION PACKAGES...
write_wrapper_module() {
  local dir=$1 module=$2 version=$3 prefix=$4 pin=$5
  shift 5
  local json gomod replaces
  mkdir -p "$dir"
  json=$(cd "$dir" && go mod download -json "$module@$version") || return 1
  gomod=$(sed -n -E 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p' <<<"$json")
  [ -f "$gomod" ] || {
    echo "no go.mod for $module@$version in: $json"
    return 1
  }
  replaces=$(generate_replaces "$gomod" "$prefix" "$pin")
  [ -n "$replaces" ] || {
    echo "found no local replace lines in $gomod"
    return 1
  }
  {
    echo "// Generated by tests/k8s/cluster.sh from $module@$version's go.mod; throwaway."
    echo "module crashfleet.test/build"
    echo
    grep -m1 -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require $module $version"
    echo
    echo "replace ("
    echo "$replaces"
    echo ")"
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools only pins the programs to build; it is never compiled."
    echo "package tools"
    echo
    echo "import ("
    local p
    for p in "$@"; do echo "	_ \"$p\""; done
    echo ")"
  } >"$dir/tools.go"
  echo "wrapper module for $module@$version: $(wc -l <<<"$replaces") replace lines"
  cat "$dir/go.mod"
}

build_binaries() {
  local wanted=("$@") t_all=$SECONDS
  log "building ${wanted[*]} into $BIN_DIR (all of them: 15-50 min on 2 cores, see docs/TESTING.md; log: $BUILD_LOG)"
  mkdir -p "$VERSION_DIR"
  remove_stale_build_dirs
  : >"$BUILD_LOG"
  # Built on the cache's filesystem so the final mv is an atomic rename.
  BUILD_TMP=$(mktemp -d "$VERSION_DIR/.build.XXXXXX")
  trap cleanup_build_tmp EXIT
  trap 'cleanup_build_tmp; exit 130' INT TERM
  local out=$BUILD_TMP/bin
  mkdir -p "$out"

  # A private GOPATH/GOCACHE: the build cache alone is ~5 GB and is deleted with BUILD_TMP.
  # CGO off: static binaries, and no C toolchain needed on a fresh machine.
  export GOPATH=$BUILD_TMP/gopath GOMODCACHE=$BUILD_TMP/gopath/pkg/mod GOCACHE=$BUILD_TMP/gocache
  export GOFLAGS="-modcacherw -buildvcs=false -trimpath" CGO_ENABLED=0 GOBIN=$out
  # Nice: this is a background chore on machines that also compile Rust.
  local go="nice -n 10 go"
  local today
  today=$(date -u +%Y-%m-%dT%H:%M:%SZ)

  local k8s_pkgs=() b
  for b in "${K8S_BINARIES[@]}"; do
    wants "$b" "${wanted[@]}" && k8s_pkgs+=("k8s.io/kubernetes/cmd/$b")
  done
  if [ ${#k8s_pkgs[@]} -gt 0 ]; then
    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local staging=v0.${K8S_VERSION#v1.} ld="-s -w" pkg
    # Without the stamp the servers report v0.0.0-master and version checks (kwokctl, helm) break.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$today"
    done
    step "k8s.io/kubernetes $K8S_VERSION wrapper module (replaces from its go.mod)" \
      write_wrapper_module "$BUILD_TMP/k8s" k8s.io/kubernetes "$K8S_VERSION" '\./staging/src/' "$staging" "${k8s_pkgs[@]}"
    step "go mod tidy (k8s.io/kubernetes)" bash -c "cd '$BUILD_TMP/k8s' && $go mod tidy"
    step "go build ${k8s_pkgs[*]##*/}" bash -c "cd '$BUILD_TMP/k8s' && $go build -ldflags '$ld' -o '$out/' ${k8s_pkgs[*]}"
  fi
  if wants etcd "${wanted[@]}"; then
    step "go.etcd.io/etcd/server/v3 $ETCD_VERSION wrapper module" \
      write_wrapper_module "$BUILD_TMP/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" '\.\./' "$ETCD_VERSION" go.etcd.io/etcd/server/v3
    step "go mod tidy (etcd)" bash -c "cd '$BUILD_TMP/etcd' && $go mod tidy"
    step "go build etcd" bash -c "cd '$BUILD_TMP/etcd' && $go build -ldflags '-s -w' -o '$out/etcd' go.etcd.io/etcd/server/v3"
  fi
  local kwok_pkgs=()
  for b in kwok kwokctl; do
    wants "$b" "${wanted[@]}" && kwok_pkgs+=("sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION")
  done
  if [ ${#kwok_pkgs[@]} -gt 0 ]; then
    step "go install ${kwok_pkgs[*]##*/}" bash -c "cd '$BUILD_TMP' && $go install \
      -ldflags '-s -w -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}' ${kwok_pkgs[*]}"
  fi
  if wants helm "${wanted[@]}"; then
    step "go install helm $HELM_VERSION" bash -c "cd '$BUILD_TMP' && $go install \
      -ldflags '-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean' \
      helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  fi

  step "check the binaries report their pinned versions" check_versions "$out" "${wanted[@]}"
  for b in "${wanted[@]}"; do
    [ -x "$out/$b" ] || die "build produced no $b (log: $BUILD_LOG)"
    mv -f "$out/$b" "$BIN_DIR/$b"
    binary_version "$b" >"$BIN_DIR/.$b.version.tmp"
    mv -f "$BIN_DIR/.$b.version.tmp" "$BIN_DIR/.$b.version"
  done
  cleanup_build_tmp
  trap - EXIT INT TERM
  log "built ${wanted[*]} in $((SECONDS - t_all))s ($(du -sh "$BIN_DIR" | cut -f1) in $BIN_DIR)"
}

# A binary that reports another version than the pinned one (a missing -X stamp, say) is refused:
# kwokctl and helm read the servers' versions.
check_versions() {
  local dir=$1 b out want
  shift
  for b in "$@"; do
    case $b in
      kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy)
        out=$("$dir/$b" --version) want="Kubernetes $K8S_VERSION" ;;
      kubectl) out=$("$dir/$b" version --client) want="Client Version: $K8S_VERSION" ;;
      etcd) out=$("$dir/$b" --version) want="etcd Version: ${ETCD_VERSION#v}" ;;
      helm) out=$("$dir/$b" version --short) want=$HELM_VERSION ;;
      *) continue ;;
    esac
    echo "$b: $out"
    grep -qF "$want" <<<"$out" || {
      echo "$b reports '$out', expected '$want'"
      return 1
    }
  done
}

# --- the cluster ------------------------------------------------------------------------------------

kctl() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

apiserver_ready() {
  [ -f "$KUBECONFIG_FILE" ] && [ -x "$BIN_DIR/kubectl" ] &&
    [ "$(kctl get --raw /readyz --request-timeout=5s 2>/dev/null)" = ok ]
}

kwok_workdir() { echo "$WORK_DIR/kwok"; }
component_dir() { echo "$(kwok_workdir)/clusters/$NAME"; }

# kwokctl writes one pid file per component; a pid counts as ours only while its command line still
# names our work dir (pids get reused).
our_pids() {
  local f pid
  for f in "$(component_dir)"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK_DIR"; then
      echo "$(basename "$f" .pid) $pid"
    fi
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

logs_tail() {
  local f
  for f in "$(component_dir)"/logs/*.log "$WORK_DIR/kwokctl.log"; do
    [ -s "$f" ] || continue
    printf -- '--- %s (last 15 lines)\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
}

# Keep the logs of a failed start outside the work dir that `down` removes, then stop what started.
fail_up() {
  local saved=$CLUSTERS_DIR/$NAME.failed-logs
  rm -rf "$saved"
  mkdir -p "$saved"
  cp -r "$(component_dir)/logs/." "$saved/" 2>/dev/null || true
  cp "$WORK_DIR/kwokctl.log" "$saved/" 2>/dev/null || true
  if [ -d "$WORK_DIR/$REAL_NODE_NAME/logs" ]; then
    mkdir -p "$saved/$REAL_NODE_NAME"
    cp -r "$WORK_DIR/$REAL_NODE_NAME/logs/." "$WORK_DIR/$REAL_NODE_NAME"/*/config.* "$WORK_DIR/$REAL_NODE_NAME"/*.yaml "$saved/$REAL_NODE_NAME/" 2>/dev/null || true
  fi
  logs_tail
  stop_cluster
  die "$1 (component logs kept in $saved)"
}

write_nodes_manifest() {
  local zone
  for zone in "${ZONES[@]}"; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$zone
  annotations:
    # kwokctl's kwok controller manages exactly the nodes carrying this annotation.
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$zone
    topology.kubernetes.io/zone: "$zone"
spec:
  taints: []
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until apiserver_ready; do
    [ $SECONDS -lt $deadline ] || fail_up "the apiserver's /readyz was not ok within ${READY_TIMEOUT}s"
    sleep 1
  done
  kctl apply -f "$WORK_DIR/nodes.yaml" >>"$WORK_DIR/kwokctl.log" 2>&1 ||
    fail_up "could not create the fake nodes"
  local left=$((deadline - SECONDS))
  [ $left -gt 0 ] || left=1
  kctl wait --for=condition=Ready node -l type=kwok --timeout="${left}s" >>"$WORK_DIR/kwokctl.log" 2>&1 ||
    fail_up "the fake nodes did not become Ready within ${READY_TIMEOUT}s"
  # Pods of a new namespace need its "default" ServiceAccount; prove the controllers run.
  until kctl -n default get serviceaccount default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail_up "kube-controller-manager made no default ServiceAccount within ${READY_TIMEOUT}s"
    sleep 1
  done
}

stop_cluster() {
  # The real node whatever CRASHFLEET_REAL_NODE says now (it may have been started with another
  # value), and even without a work dir: a bridge or table may outlive a removed directory.
  if [ "$(id -u)" = 0 ] && rn_present; then rn_down; fi
  [ -d "$WORK_DIR" ] || return 0
  if [ -x "$BIN_DIR/kwokctl" ] && [ -d "$(component_dir)" ]; then
    KWOK_WORKDIR=$(kwok_workdir) "$BIN_DIR/kwokctl" --name "$NAME" delete cluster \
      --kubeconfig "$KUBECONFIG_FILE" >>"$WORK_DIR/kwokctl.log" 2>&1 ||
      log "kwokctl delete cluster failed; stopping the components by pid"
  fi
  # Whatever kwokctl left running (a crashed delete, a half-started create) is stopped by pid.
  local comp pid n
  while read -r comp pid; do
    [ -n "$pid" ] || continue
    log "stopping leftover $comp (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  done < <(our_pids)
  rm -rf "$WORK_DIR"
}

# Pids of the processes that have $1 open, other than this shell.
lock_holders() {
  local fd
  for fd in /proc/[0-9]*/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$1" ] || continue
    fd=${fd#/proc/}
    fd=${fd%%/*}
    [ "$fd" = $$ ] || echo "$fd"
  done | sort -u
}

# One cluster.sh at a time per cluster name: two concurrent `up`s start one cluster.
with_cluster_lock() {
  mkdir -p "$CLUSTERS_DIR"
  local lock=$CLUSTERS_DIR/.$NAME.lock
  exec {CLUSTER_LOCK_FD}>"$lock"
  flock -n "$CLUSTER_LOCK_FD" && return 0
  # Components started by an older cluster.sh inherited the lock; they must not block `down`.
  local holders pid ours=1
  holders=$(lock_holders "$lock")
  for pid in $holders; do
    our_pids | awk '{print $2}' | grep -qx "$pid" || ours=""
  done
  if [ -n "$holders" ] && [ -n "$ours" ]; then
    log "the lock on cluster '$NAME' is held only by its own components; going ahead"
    return 0
  fi
  log "waiting for another cluster.sh on cluster '$NAME'"
  flock -w 600 "$CLUSTER_LOCK_FD" || die "timed out waiting for another cluster.sh on cluster '$NAME' (lock $lock)"
}

cmd_up() {
  validate_name
  ensure_binaries
  with_cluster_lock
  rn_validate
  [ -z "$RN_NOTE" ] || log "$RN_NOTE"
  [ "$REAL_NODE" = 0 ] || rn_require_host
  if apiserver_ready && [ -n "$(our_pids)" ] && { [ "$REAL_NODE" = 0 ] || rn_pid_alive kubelet; }; then
    log "cluster '$NAME' already running"
    echo "KUBECONFIG=$KUBECONFIG_FILE"
    return 0
  fi
  if [ -d "$WORK_DIR" ]; then
    log "cluster '$NAME' has a work dir but is not ready; recreating it"
    stop_cluster
  fi
  if [ "$APISERVER_PORT" != 0 ] && port_in_use "$APISERVER_PORT"; then
    die "port $APISERVER_PORT (CRASHFLEET_K8S_APISERVER_PORT) is in use on 127.0.0.1; free it or unset the variable to use a free port"
  fi

  local t0=$SECONDS port=$APISERVER_PORT
  mkdir -p "$(kwok_workdir)"
  write_nodes_manifest >"$WORK_DIR/nodes.yaml"
  if [ "$REAL_NODE" = 1 ]; then
    mkdir -p "$(rn_dir)"
    rn_create_bridge
    # The port is needed before the apiserver starts, for the 127.0.0.1 -> bridge rewrite.
    [ "$port" != 0 ] || port=$(rn_free_port)
    rn_apiserver_dnat "$port"
    rn_kwokctl_config >"$WORK_DIR/kwokctl.yaml"
  else
    # kwokctl binds every component to 0.0.0.0 unless told otherwise; tests stay on loopback.
    cat >"$WORK_DIR/kwokctl.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
EOF
  fi
  log "starting cluster '$NAME' (Kubernetes $K8S_VERSION) in $WORK_DIR"
  # The lock fd is closed for kwokctl: the components it leaves running would inherit it and hold
  # the lock for the cluster's lifetime.
  if ! KWOK_WORKDIR=$(kwok_workdir) "$BIN_DIR/kwokctl" --name "$NAME" --config "$WORK_DIR/kwokctl.yaml" \
    create cluster --runtime binary \
    --kube-apiserver-port "$port" \
    --etcd-binary "$BIN_DIR/etcd" \
    --kube-apiserver-binary "$BIN_DIR/kube-apiserver" \
    --kube-controller-manager-binary "$BIN_DIR/kube-controller-manager" \
    --kube-scheduler-binary "$BIN_DIR/kube-scheduler" \
    --kwok-controller-binary "$BIN_DIR/kwok" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --wait "${READY_TIMEOUT}s" >"$WORK_DIR/kwokctl.log" 2>&1 {CLUSTER_LOCK_FD}>&-; then
    if grep -qi 'address already in use' "$WORK_DIR/kwokctl.log" "$(component_dir)"/logs/*.log 2>/dev/null; then
      fail_up "a port the cluster needs is already in use (see 'address already in use' above)"
    fi
    fail_up "kwokctl could not start cluster '$NAME'"
  fi
  wait_ready
  [ "$REAL_NODE" = 0 ] || rn_up
  log "cluster '$NAME' ready in $((SECONDS - t0))s: ${#ZONES[@]} fake nodes$([ "$REAL_NODE" = 0 ] || echo " and $REAL_NODE_NAME") Ready; kubectl and helm: $BIN_DIR"
  echo "KUBECONFIG=$KUBECONFIG_FILE"
}

cmd_down() {
  validate_name
  # Checked before the lock too, so `down` after an `up` that failed early needs nothing installed.
  if [ ! -d "$WORK_DIR" ] && ! rn_present; then
    log "cluster '$NAME' is not running; nothing to stop"
    return 0
  fi
  with_cluster_lock
  stop_cluster
  log "cluster '$NAME' stopped and $WORK_DIR removed"
}

cmd_status() {
  validate_name
  local b
  echo "binaries ($BIN_DIR):"
  for b in "${ALL_BINARIES[@]}"; do
    if binary_present "$b"; then echo "  $b $(binary_version "$b")"; else echo "  $b missing (built by 'up')"; fi
  done
  if [ ! -d "$WORK_DIR" ]; then
    echo "cluster '$NAME': not running"
    return 3
  fi
  echo "cluster '$NAME': work dir $WORK_DIR"
  local comp pid any=""
  while read -r comp pid; do
    [ -n "$pid" ] || continue
    any=1
    echo "  $comp pid $pid rss $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) / 1024)) MiB"
  done < <(our_pids)
  [ -n "$any" ] || echo "  no component process runs"
  if apiserver_ready; then
    echo "  apiserver: $(kctl config view --minify -o jsonpath='{.clusters[0].cluster.server}') /readyz ok"
    kctl get nodes -L topology.kubernetes.io/zone 2>/dev/null | sed 's/^/  /'
    if rn_present; then rn_status; fi
    echo "KUBECONFIG=$KUBECONFIG_FILE"
    return 0
  fi
  echo "  apiserver: not ready"
  return 3
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  build)
    ensure_binaries
    log "binaries ready in $BIN_DIR"
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
