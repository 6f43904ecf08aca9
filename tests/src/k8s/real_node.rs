//! The real node `real-0` that `tests/k8s/cluster.sh up` starts beside the fake ones (containerd,
//! kubelet, kube-proxy), and how a pod is placed on it: a nodeSelector on its label and a
//! toleration of its taint, which keeps every other pod on the fake nodes.

use std::io::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PodSpec, Toleration};
use kube::api::Api;

use super::cluster::Cluster;
use super::error::Error;

/// The real node's name, label key and taint key (the label and the taint have the value `true`).
pub const REAL_NODE: &str = "real-0";
pub const REAL_NODE_LABEL: &str = "crashfleet.dev/real-node";

/// The images `tests/k8s/images.sh` builds and imports into the node's containerd, as the kubelet
/// reports them in the node's status (docker.io is the default registry of an unqualified name).
pub const GAME_NODE_IMAGE: &str = "crashfleet/game-node:dev";
pub const OPERATOR_IMAGE: &str = "crashfleet/crashfleet-operator:dev";

/// The kubelet refreshes its image list every 30 s and reports it with its next status update, so
/// images imported a moment ago show in the node's status within this.
const IMAGES_REPORTED: Duration = Duration::from_secs(40);

/// How to get the node and the images, printed with a skip.
const REAL_NODE_HINT: &str = "start the cluster with the real node (tests/k8s/cluster.sh up; \
     CRASHFLEET_REAL_NODE=0 turns it off) and load the images: bash tests/k8s/images.sh";

/// The real node, Ready, with the given images loaded.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The node's InternalIP: its bridge address, the pods' gateway.
    pub internal_ip: String,
}

/// The real node, or `Ok(None)` after one line on stderr when the cluster has none (or it lacks
/// one of `images`). Under `CI=true` that is an error unless `CRASHFLEET_REAL_NODE=0` says the run
/// is meant to be without it, so CI cannot pass without running pods.
pub async fn real_node_or_skip(
    cluster: &Cluster,
    test: &str,
    images: &[&str],
) -> Result<Option<RealNode>, Error> {
    let deadline = tokio::time::Instant::now() + IMAGES_REPORTED;
    let mut found = find(cluster, images).await?;
    // A Ready node without the images may have just had them imported: wait for its report.
    while matches!(&found, Err(Missing::Image(_))) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        found = find(cluster, images).await?;
    }
    match found.map_err(|m| m.to_string()) {
        Ok(node) => Ok(Some(node)),
        Err(reason) => {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            let off = std::env::var("CRASHFLEET_REAL_NODE").is_ok_and(|v| v == "0");
            if ci && !off {
                return Err(Error::NoRealNode {
                    test: test.to_owned(),
                    reason,
                });
            }
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {reason}; {REAL_NODE_HINT}"
            );
            Ok(None)
        }
    }
}

/// Why there is no usable real node.
enum Missing {
    Node(String),
    Image(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Node(why) | Missing::Image(why) => f.write_str(why),
        }
    }
}

/// `Ok(Err(missing))` when the node is missing, not Ready or lacks an image.
async fn find(cluster: &Cluster, images: &[&str]) -> Result<Result<RealNode, Missing>, Error> {
    let nodes: Api<Node> = Api::all(cluster.client());
    let Some(node) = nodes.get_opt(REAL_NODE).await? else {
        return Ok(Err(Missing::Node(format!(
            "the cluster has no node {REAL_NODE}"
        ))));
    };
    let status = node.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return Ok(Err(Missing::Node(format!("node {REAL_NODE} is not Ready"))));
    }
    let loaded: Vec<&String> = status
        .images
        .iter()
        .flatten()
        .flat_map(|i| i.names.iter().flatten())
        .collect();
    for image in images {
        let qualified = format!("docker.io/{image}");
        if !loaded.iter().any(|n| **n == qualified || *n == image) {
            return Ok(Err(Missing::Image(format!(
                "node {REAL_NODE} has no image {image}"
            ))));
        }
    }
    let internal_ip = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .unwrap_or_default();
    Ok(Ok(RealNode { internal_ip }))
}

/// Puts a pod on the real node: its label as nodeSelector, a toleration of its taint.
pub fn place_on_real_node(spec: &mut PodSpec) {
    spec.node_selector
        .get_or_insert_with(Default::default)
        .insert(REAL_NODE_LABEL.into(), "true".into());
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some(REAL_NODE_LABEL.into()),
            operator: Some("Equal".into()),
            value: Some("true".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
}
