//! A real Kubernetes API for tests: connect to the cluster named by `KUBECONFIG`, work in a
//! namespace of one's own, act as a ServiceAccount, and wait for the controllers.
//!
//! A test starts with [`cluster_or_skip`]: with no reachable cluster it is skipped with a line on
//! stderr saying how to start one, and under `CI=true` it fails instead, so a missing cluster never
//! passes for a green test.

mod cluster;
mod edge;
mod error;
mod host;
mod namespace;
mod real_node;
mod token;
mod tools;
mod wait;

pub use cluster::{Cluster, START_HINT, cluster_or_skip};
pub use edge::{
    TRAEFIK_CONTROLLER, Traefik, apply_traefik_gateway, gateway_api_crds, install_gateway_api,
    remove_gateway_api, traefik_binary, traefik_gateway,
};
pub use error::{Error, error_chain, expect_status};
pub use host::{HostPostgres, HostRedis, LoopbackRelay, expose_host_port, host_link_address};
pub use namespace::{TestNamespace, unique_name};
pub use real_node::{
    GAME_NODE_IMAGE, OPERATOR_IMAGE, REAL_NODE, REAL_NODE_LABEL, RealNode, place_on_real_node,
    real_node_or_skip,
};
pub use token::ServiceAccountAccess;
pub use tools::{chart, tool, version};
pub use wait::poll;
