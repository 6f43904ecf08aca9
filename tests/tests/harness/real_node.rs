//! Smoke tests of the real node `real-0` (tests/k8s/cluster.sh) with our images
//! (tests/k8s/images.sh): a game-node pod runs under the operator's securityContext, turns Ready
//! through its real readiness probe, answers through a ClusterIP Service (kube-proxy), and stops on
//! the kubelet's SIGTERM within its grace period; an operator pod reaches the API server with its
//! in-cluster config (`KUBERNETES_SERVICE_HOST`, the mounted ServiceAccount token) and wins its
//! Lease. Skipped with one line when the cluster has no real node.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use crashfleet_tests::k8s::{
    GAME_NODE_IMAGE, OPERATOR_IMAGE, REAL_NODE, cluster_or_skip, place_on_real_node, poll,
    real_node_or_skip,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// Pod start on the real node takes about a second (image already loaded); the margin is for a
/// machine busy compiling.
const POD_READY: Duration = Duration::from_secs(90);

/// The game-node pod's grace period. game-node drains and exits within a second or two of SIGTERM,
/// so a pod that is still there at the end of it was killed, not stopped.
const GRACE_SECONDS: i64 = 20;

/// The container spec the operator writes (operator/src/builders.rs), reduced to what a pod
/// without a table needs.
fn locked_down_container(name: &str, image: &str) -> serde_json::Value {
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
    })
}

fn locked_down_pod(name: &str, spec: serde_json::Value) -> anyhow::Result<Pod> {
    let mut pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))?;
    let spec: &mut PodSpec = pod.spec.as_mut().context("pod without spec")?;
    spec.security_context = Some(serde_json::from_value(json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }))?);
    place_on_real_node(spec);
    Ok(pod)
}

async fn wait_ready(pods: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    Ok(poll(&format!("pod {name} Ready"), POD_READY, || async {
        let pod = pods.get(name).await?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(pod))
    })
    .await?)
}

fn game_node_pod() -> anyhow::Result<Pod> {
    let mut container = locked_down_container("game-node", GAME_NODE_IMAGE);
    container["args"] = json!(["serve"]);
    container["env"] = json!([
        {"name": "CRASHFLEET_LISTEN", "value": "0.0.0.0:8080"},
        {"name": "CRASHFLEET_DATA_DIR", "value": "/var/lib/crashfleet"},
        // A short chain: the pod is Ready once it is made and committed.
        {"name": "CRASHFLEET_CHAIN_LENGTH", "value": "1000"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]);
    container["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    // The operator's probes: alive while it answers, ready only while it can take money.
    container["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "timeoutSeconds": 2});
    container["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2});
    container["volumeMounts"] = json!([{"name": "data", "mountPath": "/var/lib/crashfleet"}]);
    locked_down_pod(
        "game-node",
        json!({
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "containers": [container],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }),
    )
}

#[tokio::test]
async fn game_node_pod_serves_through_a_cluster_ip_and_stops_on_sigterm() -> anyhow::Result<()> {
    let test = "game_node_pod_serves_through_a_cluster_ip_and_stops_on_sigterm";
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    let Some(_node) = real_node_or_skip(&cluster, test, &[GAME_NODE_IMAGE]).await? else {
        return Ok(());
    };
    let ns = cluster.namespace("real-node").await?;
    let pods: Api<Pod> = ns.api();
    let services: Api<Service> = ns.api();

    let t0 = Instant::now();
    pods.create(&PostParams::default(), &game_node_pod()?)
        .await?;
    let pod = wait_ready(&pods, "game-node").await?;
    let ready_after = t0.elapsed();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    ensure!(node.as_deref() == Some(REAL_NODE), "scheduled on {node:?}");

    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "game-node"},
        "spec": {"selector": {"app": "game-node"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service got no ClusterIP")?;
    // kube-proxy programs the Service a moment after its EndpointSlice appears.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let url = format!("http://{ip}/readyz");
    let t1 = Instant::now();
    poll(&format!("GET {url} = 200"), POD_READY, || async {
        Ok(match http.get(&url).send().await {
            Ok(r) if r.status() == 200 => Some(()),
            _ => None,
        })
    })
    .await?;
    let served_after = t1.elapsed();
    // The REST API answers through the Service too (the table's commitment).
    let fairness = http
        .get(format!("http://{ip}/api/v1/fairness"))
        .send()
        .await?;
    ensure!(
        fairness.status() == 200,
        "GET /api/v1/fairness through the Service: {}",
        fairness.status()
    );

    // The kubelet sends SIGTERM; game-node drains and exits well inside the grace period.
    let t2 = Instant::now();
    pods.delete("game-node", &DeleteParams::default()).await?;
    poll(
        "the game-node pod to be gone",
        Duration::from_secs(GRACE_SECONDS as u64 + 30),
        || async { Ok(pods.get_opt("game-node").await?.is_none().then_some(())) },
    )
    .await?;
    let gone_after = t2.elapsed();
    eprintln!(
        "REAL NODE game-node pod: Ready {:.1}s after create, via ClusterIP {ip} {:.1}s after the Service, gone {:.1}s after delete (grace {GRACE_SECONDS}s)",
        ready_after.as_secs_f64(),
        served_after.as_secs_f64(),
        gone_after.as_secs_f64(),
    );
    ensure!(
        gone_after < Duration::from_secs(GRACE_SECONDS as u64),
        "the pod took {gone_after:?} to stop: SIGTERM did not stop game-node within its grace period"
    );
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_reaches_the_api_server_with_its_service_account() -> anyhow::Result<()> {
    let test = "a_pod_reaches_the_api_server_with_its_service_account";
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    let Some(_node) = real_node_or_skip(&cluster, test, &[OPERATOR_IMAGE]).await? else {
        return Ok(());
    };
    let ns = cluster.namespace("real-api").await?;
    ns.create_service_account("operator").await?;
    // Exactly what the operator's active/standby election needs in its namespace.
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "operator-lease"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch"]}],
    }))?;
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "operator-lease"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator-lease"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns.name()}],
    }))?;
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;

    let mut container = locked_down_container("operator", OPERATOR_IMAGE);
    // No kubeconfig anywhere: kube's in-cluster config reads KUBERNETES_SERVICE_HOST/PORT (the
    // kubelet sets 10.0.0.1:443, which kube-proxy sends to the apiserver on the bridge) and the
    // token the kubelet mounts.
    container["env"] = json!([
        {"name": "CRASHFLEET_OPERATOR_NAMESPACE", "value": ns.name()},
        {"name": "CRASHFLEET_OPERATOR_LEASE_NAMESPACE", "value": ns.name()},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]);
    let pod = locked_down_pod(
        "operator",
        json!({"serviceAccountName": "operator", "containers": [container]}),
    )?;
    let pods: Api<Pod> = ns.api();
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &pod).await?;
    let leases: Api<Lease> = ns.api();
    let holder = poll(
        "the operator pod to hold Lease crashfleet-operator",
        POD_READY,
        || async {
            let lease = leases.get_opt("crashfleet-operator").await?;
            Ok(lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| h == "operator"))
        },
    )
    .await?;
    eprintln!(
        "REAL NODE operator pod: holds its Lease as {holder:?} {:.1}s after create (in-cluster config through the kubernetes Service)",
        t0.elapsed().as_secs_f64()
    );
    ns.cleanup().await?;
    Ok(())
}
