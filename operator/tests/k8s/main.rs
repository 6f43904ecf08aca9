//! The operator against the real control plane (`tests/k8s/cluster.sh up`): the CRD and the chart,
//! reconciliation end to end, fleets of game-node processes started from the pod template, and
//! real pods on the kubelet node. One test binary: each file of this folder is a module.

mod chart;
mod crd;
mod e2e;
mod fleet_e2e;
mod gateway;
mod kind;
mod real_pods;

/// The heavy tests run one at a time: each runs a fleet of nodes (processes or real pods), an
/// operator, Redis and timed pauses, and two at once on a 2-core machine stretch rounds past the
/// pause checks' windows. The light tests run beside them.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
