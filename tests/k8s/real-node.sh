# shellcheck shell=bash
# The real node `real-0` of a test cluster: containerd + runc + CNI bridge from Debian's packages,
# kubelet and kube-proxy from the control plane's build. Sourced by cluster.sh (not run on its own);
# uses its NAME, WORK_DIR, CACHE_DIR, BIN_DIR, KUBECONFIG_FILE, log, die and kctl.
#
# Each cluster's node lives in a network namespace of its own (crashfleet-<name>): its bridge,
# pods, kube-proxy's nft table and the kubelet's iptables chains are there, so clusters on one
# machine (a developer's and a CI run) never meet, and `ip netns del` takes all of it away. A veth
# pair links it to the host, where the apiserver listens on the host end. The rest is per cluster
# too (containerd's root/state/socket, the kubelet's root, the pods' cgroup parent, the CNI cache
# and IPAM files, an nft table on the host), so `down` removes exactly what this cluster made.

# 1 (default) starts the real node; 0 gives the fake-nodes-only cluster of before (quicker, no root).
# Unset and not root: 0 with a note, so an unprivileged developer's `up` works as before; set to 1
# without root is an error.
REAL_NODE=${CRASHFLEET_REAL_NODE:-1}
# shellcheck disable=SC2034 # RN_NOTE is logged by cluster.sh
RN_NOTE=""
# shellcheck disable=SC2034
if [ -z "${CRASHFLEET_REAL_NODE:-}" ] && [ "$(id -u)" != 0 ]; then
  REAL_NODE=0
  RN_NOTE="not root, so no real node (fake nodes only); run as root for real pods"
fi
REAL_NODE_NAME=real-0

# The bridge and its /24 (bridge = .1 = node IP, pods .2-.254). The default cluster gets cfreal0 on
# 10.244.0.1/24; other names derive both from a checksum of the name, so a developer's cluster and a
# CI run pick different ones (set them explicitly when two derived values collide).
rn_default_net() {
  if [ "$NAME" = crashfleet ]; then
    echo "cfreal0 10.244.0.1/24"
  else
    local sum
    sum=$(printf '%s' "$NAME" | cksum | cut -d' ' -f1)
    printf 'cfr%08x 10.244.%d.1/24\n' $((sum & 0xffffffff)) $((sum % 250 + 1))
  fi
}
read -r _RN_BR _RN_CIDR <<<"$(rn_default_net)"
REAL_NODE_BRIDGE=${CRASHFLEET_REAL_NODE_BRIDGE:-$_RN_BR}
REAL_NODE_CIDR=${CRASHFLEET_REAL_NODE_CIDR:-$_RN_CIDR}
# The cgroup parent of the node's pods (kubelet cgroupRoot): kubepods lives under it, one per cluster.
REAL_NODE_CGROUP=${CRASHFLEET_REAL_NODE_CGROUP:-/crashfleet-$NAME}
# A running (or half-removed) node keeps the settings it was started with: `down` and `status`
# without the same variables must still find its bridge and cgroup.
# A new node (rn_create_bridge) takes the wanted values again.
_RN_WANT=("$REAL_NODE_BRIDGE" "$REAL_NODE_CIDR" "$REAL_NODE_CGROUP")
if [ -f "$WORK_DIR/$REAL_NODE_NAME/settings.env" ]; then
  # shellcheck source=/dev/null
  source "$WORK_DIR/$REAL_NODE_NAME/settings.env"
fi
# Addresses derived from the node's /24 10.A.B.1/24 (rn_derive): the link to the host is
# 10.245.B.1 (host end, where the apiserver listens) and 10.245.B.2 (node end); the Service range is
# 10.0.0.0/24 (the apiserver's default, `kubernetes` at 10.0.0.1) for B = 0, the default cluster,
# else 10.96.B.0/24: the host routes each cluster's Services into that cluster's namespace.
rn_derive() {
  REAL_NODE_IP=${REAL_NODE_CIDR%/*}
  local b=${REAL_NODE_IP#*.*.}
  b=${b%.*}
  REAL_NODE_NETNS=crashfleet-$NAME
  RN_VETH_HOST=${REAL_NODE_BRIDGE}h
  RN_VETH_NODE=${REAL_NODE_BRIDGE}n
  RN_HOST_IP=10.245.$b.1
  RN_LINK_IP=10.245.$b.2
  if [ "$b" = 0 ]; then
    SERVICE_CIDR=10.0.0.0/24 KUBERNETES_SERVICE_IP=10.0.0.1
  else
    SERVICE_CIDR=10.96.$b.0/24 KUBERNETES_SERVICE_IP=10.96.$b.1
  fi
}
rn_derive
# The pause image every pod sandbox starts from; built here (no registry is reachable).
PAUSE_IMAGE=crashfleet.test/pause:1

rn_dir() { echo "$WORK_DIR/$REAL_NODE_NAME"; }
rn_sock() { echo "$(rn_dir)/containerd/containerd.sock"; }
rn_ctr() { ctr --address "$(rn_sock)" -n k8s.io "$@"; }
rn_nft_table() { echo "crashfleet-$NAME"; }
rn_netns_exists() { [ -e "/run/netns/$REAL_NODE_NETNS" ]; }
# Runs a command inside the node's network namespace (only that: the mount namespace stays the
# host's, which the kubelet and containerd must share).
rn_in_ns() { nsenter --net="/run/netns/$REAL_NODE_NETNS" "$@"; }
rn_cni_network() { echo "crashfleet-$NAME"; }

# Whether this cluster has (or left) a real node: its dir, its bridge or its nft table.
rn_present() {
  [ -d "$(rn_dir)" ] || rn_netns_exists || nft list table ip "$(rn_nft_table)" >/dev/null 2>&1
}

rn_validate() {
  [[ $REAL_NODE =~ ^[01]$ ]] || die "CRASHFLEET_REAL_NODE must be 0 or 1, not '$REAL_NODE'"
  [ "$REAL_NODE" = 1 ] || return 0
  local bridge=${_RN_WANT[0]} cidr=${_RN_WANT[1]} cgroup=${_RN_WANT[2]}
  # Two characters fewer than an interface name: the veth pair is named after the bridge.
  [[ $bridge =~ ^[a-zA-Z0-9_-]{1,14}$ ]] ||
    die "CRASHFLEET_REAL_NODE_BRIDGE='$bridge' must be at most 14 letters, digits, '-' or '_'"
  local ok=""
  if [[ $cidr =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})\.1/24$ ]] && [ "${BASH_REMATCH[1]}" -le 255 ] &&
    [ "${BASH_REMATCH[2]}" -le 255 ] && [ "${BASH_REMATCH[1]}" != 245 ] && [ "${BASH_REMATCH[1]}" != 96 ]; then
    ok=1
  fi
  [ -n "$ok" ] ||
    die "CRASHFLEET_REAL_NODE_CIDR='$cidr' must be 10.A.B.1/24 (bridge address .1; A not 96 or 245, used for Services and the host link)"
  [[ $cgroup =~ ^/[a-zA-Z0-9_.-]+$ ]] ||
    die "CRASHFLEET_REAL_NODE_CGROUP='$cgroup' must be one path element like /crashfleet-dev"
}

rn_require_host() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (bridge, cgroups, containers); run as root or set CRASHFLEET_REAL_NODE=0"
  local c missing=()
  for c in containerd containerd-shim-runc-v2 ctr runc ip nsenter iptables ip6tables nft buildah; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge")
  [ ${#missing[@]} -eq 0 ] ||
    die "the real node needs ${missing[*]}: run tests/install-deps.sh (containerd runc containernetworking-plugins iptables nftables buildah), or set CRASHFLEET_REAL_NODE=0"
  [ -d /sys/fs/cgroup ] || die "no /sys/fs/cgroup"
}

# --- before kwokctl create: the bridge, and the apiserver reachable on it ---------------------------

# The node's network namespace, its bridge (node IP = bridge address) and the veth pair to the
# host. Made before the apiserver starts: it binds the host end and advertises it.
rn_create_bridge() {
  REAL_NODE_BRIDGE=${_RN_WANT[0]} REAL_NODE_CIDR=${_RN_WANT[1]} REAL_NODE_CGROUP=${_RN_WANT[2]}
  rn_derive
  printf 'REAL_NODE_BRIDGE=%q\nREAL_NODE_CIDR=%q\nREAL_NODE_CGROUP=%q\n' \
    "$REAL_NODE_BRIDGE" "$REAL_NODE_CIDR" "$REAL_NODE_CGROUP" >"$(rn_dir)/settings.env"
  ip link show "$RN_VETH_HOST" >/dev/null 2>&1 &&
    die "interface $RN_VETH_HOST exists already (another cluster with bridge $REAL_NODE_BRIDGE?): set CRASHFLEET_REAL_NODE_BRIDGE"
  if ip -o addr show | grep -qE "inet ($RN_HOST_IP|${REAL_NODE_IP%.1}\.[0-9]+)/"; then
    die "$RN_HOST_IP or ${REAL_NODE_IP%.1}.0/24 is in use on this machine (another cluster?): set CRASHFLEET_REAL_NODE_CIDR"
  fi
  rn_netns_exists || ip netns add "$REAL_NODE_NETNS"
  ip -n "$REAL_NODE_NETNS" link set lo up
  ip link add "$RN_VETH_HOST" type veth peer name "$RN_VETH_NODE" netns "$REAL_NODE_NETNS"
  ip addr add "$RN_HOST_IP/30" dev "$RN_VETH_HOST"
  ip link set "$RN_VETH_HOST" up
  ip -n "$REAL_NODE_NETNS" addr add "$RN_LINK_IP/30" dev "$RN_VETH_NODE"
  ip -n "$REAL_NODE_NETNS" link set "$RN_VETH_NODE" up
  ip -n "$REAL_NODE_NETNS" link add "$REAL_NODE_BRIDGE" type bridge
  ip -n "$REAL_NODE_NETNS" addr add "$REAL_NODE_CIDR" dev "$REAL_NODE_BRIDGE"
  ip -n "$REAL_NODE_NETNS" link set "$REAL_NODE_BRIDGE" up
  # The namespace answers the host and reaches the apiserver through the link; pods have no
  # default route of their own (CNI config), and the host does not forward, so nothing leaves
  # the machine. Forwarding inside the namespace carries the host's ClusterIP traffic to pods.
  ip -n "$REAL_NODE_NETNS" route add default via "$RN_HOST_IP"
  rn_in_ns sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
  # The host may also talk to a pod's own IP (tests watch one pod drain): pods have no route back
  # to the host end of the link, so such traffic leaves the bridge with the node IP as source.
  # Inside the namespace: removed with it.
  rn_in_ns nft -f - <<EOF
table ip crashfleet-host-to-pods {
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr $RN_HOST_IP oifname "$REAL_NODE_BRIDGE" masquerade
  }
}
EOF
  # The host reaches the node IP, the pods and the Services through the link.
  ip route replace "${REAL_NODE_IP%.1}.0/24" via "$RN_LINK_IP" dev "$RN_VETH_HOST"
  ip route replace "$SERVICE_CIDR" via "$RN_LINK_IP" dev "$RN_VETH_HOST" src "$RN_HOST_IP"
}

# The apiserver binds only the host end of the link (pods reach it there and through the
# `kubernetes` Service); kwokctl's components and the tests keep using 127.0.0.1:PORT, which this
# table rewrites to that address for local processes. No server listens on a route out.
rn_apiserver_dnat() {
  local port=$1 t
  t=$(rn_nft_table)
  nft -f - <<EOF
table ip $t
delete table ip $t
table ip $t {
  chain output {
    type nat hook output priority -110; policy accept;
    ip daddr 127.0.0.1 tcp dport $port dnat to $RN_HOST_IP:$port
  }
}
EOF
}

rn_free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    port_in_use "$p" || (exec 3<>"/dev/tcp/$RN_HOST_IP/$p") 2>/dev/null || {
      echo "$p"
      return 0
    }
  done
  die "found no free port"
}

# The kwokctl configuration for a cluster with a real node: the API server listens where the
# kubelet and the pods reach it (the bridge's host address) and reaches the kubelet by address
# with a client certificate; kwok leaves the real node to its kubelet.
rn_kwokctl_config() {
  local pki
  pki="$(component_dir)/pki"
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverCertSANs: ["$RN_HOST_IP", "$REAL_NODE_IP", "$KUBERNETES_SERVICE_IP"]
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - {key: bind-address, value: "$RN_HOST_IP", override: true}
  - {key: advertise-address, value: "$RN_HOST_IP"}
  - {key: service-cluster-ip-range, value: "$SERVICE_CIDR"}
  # The node name does not resolve; the kubelet serves on its InternalIP (the bridge address).
  - {key: kubelet-preferred-address-types, value: InternalIP}
  # logs/exec/port-forward: the kubelet trusts the cluster CA; the admin pair is signed by it.
  - {key: kubelet-client-certificate, value: "$pki/admin.crt"}
  - {key: kubelet-client-key, value: "$pki/admin.key"}
- name: kwok-controller
  extraArgs:
  # Only the fake nodes (annotated in nodes.yaml); real-0 belongs to its kubelet.
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
EOF
}

# --- the pause image ---------------------------------------------------------------------------------

# buildah's storage for every image built here (pause, the runtime stand-in, our images).
buildah_() {
  buildah --root "$CACHE_DIR/buildah/root" --runroot "$CACHE_DIR/buildah/runroot" --storage-driver vfs "$@"
}

# A static program that sleeps until SIGTERM/SIGINT and reaps children: all a sandbox needs.
rn_pause_archive() {
  local dir=$CACHE_DIR/pause src key archive
  src='#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}'
  key=$(printf '%s\n%s\n' "$src" "$PAUSE_IMAGE" | sha256sum | cut -c1-16)
  archive=$dir/pause-$key.tar
  if [ ! -s "$archive" ]; then
    mkdir -p "$dir"
    local tmp
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    printf '%s\n' "$src" >"$tmp/pause.c"
    gcc -static -Os -s -o "$tmp/pause" "$tmp/pause.c" >&2 || die "could not build the pause program (gcc, libc6-dev)"
    local c
    c=$(buildah_ from scratch)
    buildah_ copy "$c" "$tmp/pause" /pause >/dev/null
    buildah_ config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah_ commit -q "$c" "$PAUSE_IMAGE" >/dev/null
    buildah_ rm "$c" >/dev/null
    buildah_ push -q "$PAUSE_IMAGE" "docker-archive:$tmp/pause.tar:$PAUSE_IMAGE" >&2
    mv "$tmp/pause.tar" "$archive"
    rm -rf "$tmp"
  fi
  echo "$archive"
}

# --- starting the node -------------------------------------------------------------------------------

rn_cgroup_dirs() {
  local h
  for h in /sys/fs/cgroup/*/; do
    if [ ! -d "$h" ] || [ ! -w "$h" ]; then continue; fi
    echo "${h%/}$REAL_NODE_CGROUP"
  done
}

# The kubelet wants its cgroupRoot to exist in every hierarchy; cpuset children need cpus/mems.
rn_create_cgroups() {
  local d
  while read -r d; do
    mkdir -p "$d"
    if [ -f "$d/cpuset.cpus" ] && [ -z "$(tr -d '\n' <"$d/cpuset.cpus")" ]; then
      cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
    fi
  done < <(rn_cgroup_dirs)
}

# rn_client_kubeconfig FILE USER GROUP: a kubeconfig with a client certificate signed by the
# cluster CA, so the kubelet acts as system:node:real-0 (the Node authorizer and NodeRestriction
# apply to it, as on a real cluster) and kube-proxy as system:kube-proxy (system:node-proxier).
rn_client_kubeconfig() {
  local file=$1 user=$2 group=$3 pki server
  pki="$(component_dir)/pki"
  # From inside the namespace 127.0.0.1 is the namespace's own: the host end of the link instead.
  server=$(kctl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  server="https://$RN_HOST_IP:${server##*:}"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$file.key" \
    -subj "/O=$group/CN=$user" 2>/dev/null |
    openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -CAserial "$file.srl" \
      -days 7 -out "$file.crt" 2>/dev/null || die "could not sign a client certificate for $user"
  chmod 600 "$file.key"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $user
  user: {client-certificate: "$file.crt", client-key: "$file.key"}
contexts:
- name: $user
  context: {cluster: $NAME, user: $user}
current-context: $user
EOF
}

rn_write_configs() {
  local d
  d=$(rn_dir)
  mkdir -p "$d"/{containerd/root,containerd/state,containerd/opt,cni/net.d,cni/ipam,kubelet/root,kubelet/pki,kubelet/pods-logs,logs,pids}
  cat >"$d/containerd/config.toml" <<EOF
# Generated by tests/k8s/cluster.sh for cluster '$NAME'; removed by 'down'.
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$(rn_sock)"
[ttrpc]
  address = "$(rn_sock).ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # The pause image is built here and imported at every up (containerd never pulls it).
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: without this runc fails on oom_score_adj -998.
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir, not /run/netns: removable per cluster.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
EOF
  # Pods get an address on the bridge and a route to the Service range only: no default route, so
  # nothing a pod sends leaves this machine.
  cat >"$d/cni/net.d/10-crashfleet.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$(rn_cni_network)",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$REAL_NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "${REAL_NODE_IP%.1}.0/24", "gateway": "$REAL_NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  rn_client_kubeconfig "$d/kubelet/kubeconfig" "system:node:$REAL_NODE_NAME" system:nodes
  rn_client_kubeconfig "$d/kube-proxy.kubeconfig" system:kube-proxy system:node-proxier
  local kubelet_port healthz_port proxy_healthz proxy_metrics
  kubelet_port=$(rn_free_port)
  healthz_port=$(rn_free_port)
  proxy_healthz=$(rn_free_port)
  proxy_metrics=$(rn_free_port)
  cat >"$d/kubelet/config.yaml" <<EOF
# Generated by tests/k8s/cluster.sh for cluster '$NAME'; the comments say why a line is here.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: $REAL_NODE_CGROUP
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$(rn_sock)
imageServiceEndpoint: unix://$(rn_sock)
staticPodPath: ""
address: $REAL_NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $(component_dir)/pki/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $d/kubelet/pods-logs
registerWithTaints:
- {key: crashfleet.dev/real-node, value: "true", effect: NoSchedule}
# The disk is small and shared: evict only when it is really full, and keep our images.
evictionHard: {nodefs.available: "1%", imagefs.available: "1%", memory.available: "100Mi"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
# The kubelet refreshes its list of images every 30 s; a status update every 3 s (not 10) puts
# images just imported by tests/k8s/images.sh into the node's status soon after.
nodeStatusUpdateFrequency: 3s
maxPods: 50
# Mounted ConfigMaps (a table's public URL) are rewritten on the pod's next sync: every 10 s
# here rather than the default minute, so the tests that move a table's way in wait less.
syncFrequency: 10s
EOF
  # shellcheck disable=SC2016 # a literal for kube-proxy
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $d/kube-proxy.kubeconfig}
hostnameOverride: $REAL_NODE_NAME
bindAddress: $REAL_NODE_IP
clusterCIDR: ${REAL_NODE_IP%.1}.0/24
# NodePorts only on the bridge address, never on the machine's outside interface.
nodePortAddresses: ["$REAL_NODE_IP/32"]
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
# 0: leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# rn_start NAME LOG COMMAND...: a process of the node in its own session, its pid in pids/NAME.pid.
rn_start() {
  local what=$1 logf=$2
  shift 2
  setsid nohup nsenter --net="/run/netns/$REAL_NODE_NETNS" "$@" </dev/null >>"$logf" 2>&1 {CLUSTER_LOCK_FD}>&- &
  echo $! >"$(rn_dir)/pids/$what.pid"
  # Until it has exec'd, the child's command line is this shell's: wait, so liveness checks hold.
  local n
  for n in $(seq 50); do
    rn_pid_alive "$what" && return 0
    sleep 0.05
  done
}

rn_pid_alive() {
  local pid
  pid=$(cat "$(rn_dir)/pids/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK_DIR"
}

rn_fail() {
  local f
  for f in "$(rn_dir)"/logs/*.log; do
    [ -s "$f" ] || continue
    printf -- '--- %s (last 15 lines)\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
  fail_up "$1"
}

# Starts containerd, loads the pause image, starts the kubelet and waits for real-0 to be Ready,
# then kube-proxy. Called after the control plane is ready.
rn_up() {
  local d t0=$SECONDS deadline=$((SECONDS + READY_TIMEOUT))
  d=$(rn_dir)
  rn_create_cgroups
  local archive
  archive=$(rn_pause_archive)
  rn_write_configs
  rn_start containerd "$d/logs/containerd.log" containerd --config "$d/containerd/config.toml"
  until rn_ctr version >/dev/null 2>&1; do
    rn_pid_alive containerd || rn_fail "containerd exited"
    [ $SECONDS -lt $deadline ] || rn_fail "containerd did not answer within ${READY_TIMEOUT}s"
    sleep 0.2
  done
  rn_ctr images import "$archive" >>"$d/logs/images.log" 2>&1 || rn_fail "could not import the pause image"
  rn_start kubelet "$d/logs/kubelet.log" "$BIN_DIR/kubelet" \
    --config "$d/kubelet/config.yaml" \
    --kubeconfig "$d/kubelet/kubeconfig" \
    --root-dir "$d/kubelet/root" \
    --cert-dir "$d/kubelet/pki" \
    --hostname-override "$REAL_NODE_NAME" \
    --node-ip "$REAL_NODE_IP" \
    --node-labels "crashfleet.dev/real-node=true,type=real"
  local t_kubelet=$SECONDS
  until [ "$(kctl get node "$REAL_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
    rn_pid_alive kubelet || rn_fail "the kubelet exited"
    [ $SECONDS -lt $deadline ] || rn_fail "node $REAL_NODE_NAME was not Ready within ${READY_TIMEOUT}s"
    sleep 0.2
  done
  log "node $REAL_NODE_NAME Ready $((SECONDS - t_kubelet))s after the kubelet started"
  rn_start kube-proxy "$d/logs/kube-proxy.log" "$BIN_DIR/kube-proxy" --config "$d/kube-proxy.yaml"
  # kube-proxy is ready once it wrote the `kubernetes` Service into its table.
  until rn_in_ns nft list map ip kube-proxy service-ips 2>/dev/null | grep -qF "$KUBERNETES_SERVICE_IP"; do
    rn_pid_alive kube-proxy || rn_fail "kube-proxy exited"
    [ $SECONDS -lt $deadline ] || rn_fail "kube-proxy did not program the kubernetes Service within ${READY_TIMEOUT}s"
    sleep 0.2
  done
  log "real node $REAL_NODE_NAME up in $((SECONDS - t0))s (netns $REAL_NODE_NETNS, bridge $REAL_NODE_BRIDGE $REAL_NODE_CIDR, Services $SERVICE_CIDR, cgroup $REAL_NODE_CGROUP)"
}

# --- down ----------------------------------------------------------------------------------------------

rn_stop_pid() {
  local what=$1 pid n
  pid=$(cat "$(rn_dir)/pids/$what.pid" 2>/dev/null) || return 0
  rn_pid_alive "$what" || return 0
  kill "$pid" 2>/dev/null || true
  for n in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  RN_REMOVED+=("$what (pid $pid)")
}

# Removes everything the real node made; says what it removed. Safe to repeat, and safe when the
# node never started (each step looks for what it removes).
rn_down() {
  RN_REMOVED=()
  local d n
  d=$(rn_dir)
  # The kubelet first, so it restarts nothing while the containers go.
  rn_stop_pid kube-proxy
  rn_stop_pid kubelet
  if [ -S "$(rn_sock)" ] && rn_ctr version >/dev/null 2>&1; then
    local ids id
    ids=$(rn_ctr tasks ls -q 2>/dev/null || true)
    for id in $ids; do rn_ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do
      for n in $(seq 30); do
        rn_ctr tasks ls -q 2>/dev/null | grep -qx "$id" || break
        rn_ctr tasks rm -f "$id" >/dev/null 2>&1 || sleep 0.1
      done
    done
    n=$(rn_ctr containers ls -q 2>/dev/null | wc -l)
    rn_ctr containers ls -q 2>/dev/null | xargs -r -n 20 ctr --address "$(rn_sock)" -n k8s.io containers rm >/dev/null 2>&1 || true
    [ "$n" = 0 ] || RN_REMOVED+=("$n containers")
  fi
  rn_stop_pid containerd
  # Shims outlive a killed containerd; each names our socket on its command line.
  local pid shims=0
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $(rn_sock)" 2>/dev/null || true); do
    kill -9 "$pid" 2>/dev/null && shims=$((shims + 1))
  done
  [ "$shims" = 0 ] || RN_REMOVED+=("$shims containerd shims")
  # Mounts under the node's dir (pod volumes, the kubelet's self bind mount, container rootfs,
  # netns files), deepest first.
  local mounts
  mounts=$(awk -v p="$d/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r -u)
  if [ -n "$mounts" ]; then
    n=0
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      n=$((n + 1))
    done <<<"$mounts"
    RN_REMOVED+=("$n mounts")
  fi
  # The pods' cgroup parent, deepest first, in every hierarchy.
  local cg dirs=0
  while read -r cg; do
    [ -d "$cg" ] || continue
    while read -r sub; do rmdir "$sub" 2>/dev/null || true; done < <(find "$cg" -depth -type d 2>/dev/null)
    dirs=$((dirs + 1))
  done < <(rn_cgroup_dirs)
  [ "$dirs" = 0 ] || RN_REMOVED+=("cgroup $REAL_NODE_CGROUP in $dirs hierarchies")
  # The namespace holds the bridge, the pods' veths, kube-proxy's nft table and the kubelet's
  # iptables chains; deleting it removes them, the veth pair and the host's routes to it.
  if rn_netns_exists; then
    ip netns del "$REAL_NODE_NETNS" &&
      RN_REMOVED+=("network namespace $REAL_NODE_NETNS (bridge $REAL_NODE_BRIDGE, veths, kube-proxy's nft table, the kubelet's iptables chains)")
  fi
  if ip link show "$RN_VETH_HOST" >/dev/null 2>&1; then
    ip link del "$RN_VETH_HOST" && RN_REMOVED+=("veth $RN_VETH_HOST")
  fi
  if nft list table ip "$(rn_nft_table)" >/dev/null 2>&1; then
    nft delete table ip "$(rn_nft_table)" && RN_REMOVED+=("nft table ip $(rn_nft_table)")
  fi
  # The CNI result cache of our network (libcni keeps it in /var/lib/cni whatever the config says).
  local cached
  cached=$({ find /var/lib/cni/results -maxdepth 1 -name "$(rn_cni_network)-*" 2>/dev/null || true; } | wc -l)
  if [ "$cached" != 0 ]; then
    find /var/lib/cni/results -maxdepth 1 -name "$(rn_cni_network)-*" -delete
    RN_REMOVED+=("$cached CNI cache files")
  fi
  [ -d "$d/cni/ipam" ] && [ -n "$(ls -A "$d/cni/ipam" 2>/dev/null)" ] && RN_REMOVED+=("IPAM files")
  if [ ${#RN_REMOVED[@]} -gt 0 ]; then
    log "real node $REAL_NODE_NAME: removed $(printf '%s; ' "${RN_REMOVED[@]}" | sed 's/; $//')"
  fi
}

# --- status ---------------------------------------------------------------------------------------------

rn_status() {
  [ -d "$(rn_dir)" ] || {
    echo "  real node: not started (CRASHFLEET_REAL_NODE=0 or an older up)"
    return 0
  }
  local what pid
  echo "  real node $REAL_NODE_NAME: netns $REAL_NODE_NETNS, bridge $REAL_NODE_BRIDGE $REAL_NODE_CIDR, host link $RN_HOST_IP, Services $SERVICE_CIDR, cgroup $REAL_NODE_CGROUP"
  for what in containerd kubelet kube-proxy; do
    pid=$(cat "$(rn_dir)/pids/$what.pid" 2>/dev/null || echo "?")
    if rn_pid_alive "$what"; then
      echo "    $what pid $pid rss $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) / 1024)) MiB"
    else
      echo "    $what not running"
    fi
  done
  echo "    pods on $REAL_NODE_NAME:"
  kctl get pods -A --field-selector "spec.nodeName=$REAL_NODE_NAME" -o wide 2>/dev/null | sed 's/^/      /'
}
