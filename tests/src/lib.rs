//! Test support for crashfleet's integration tests.
//!
//! [`k8s`] connects tests to the real Kubernetes control plane that `tests/k8s/cluster.sh up`
//! starts (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok fake nodes), gives
//! each test a namespace of its own that is deleted afterwards, and mints ServiceAccount tokens so a
//! test can act with exactly the rights a Role grants. The integration tests beside this crate
//! (`tests/tests/`) are smoke tests of that control plane and of the harness itself.
//!
//! docs/TESTING.md says what the fake cluster can and cannot do.
#![forbid(unsafe_code)]

pub mod k8s;
pub mod load;
