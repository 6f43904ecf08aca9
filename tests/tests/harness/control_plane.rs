//! Smoke tests of the real control plane (tests/k8s/cluster.sh): each checks one piece of API
//! behaviour the operator relies on, against kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok rather than a mock. Every test works in its own namespace with unique
//! names, so they run in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use crashfleet_tests::k8s::{self, cluster_or_skip, expect_status, poll};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;

/// For the controllers to act (schedule, start fake pods, collect garbage, refresh RBAC caches):
/// they take well under a second on a quiet machine; the margin is for one busy compiling.
const CONVERGE: Duration = Duration::from_secs(60);

/// Field manager of these tests' server-side applies.
const MANAGER: &str = "crashfleet-tests";

#[tokio::test]
async fn crd_cel_rule_refuses_a_breaking_object_at_apply() -> anyhow::Result<()> {
    let Some(cluster) = cluster_or_skip("crd_cel_rule_refuses_a_breaking_object_at_apply").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("crd").await?;
    // CRDs are cluster-scoped: a unique group keeps parallel runs apart.
    let group = format!("{}.crashfleet.test", k8s::unique_name("e2e"));
    let crd_name = format!("widgets.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["minReplicas", "maxReplicas"],
                        "properties": {
                            "minReplicas": { "type": "integer", "minimum": 0 },
                            "maxReplicas": { "type": "integer", "minimum": 0 },
                        },
                        "x-kubernetes-validations": [{
                            "rule": "self.minReplicas <= self.maxReplicas",
                            "message": "minReplicas must not exceed maxReplicas",
                        }],
                    }},
                }},
            }],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client());
    crds.create(&PostParams::default(), &crd).await?;
    ns.delete_on_cleanup::<CustomResourceDefinition>(&crd_name);
    poll("the CRD to be Established", CONVERGE, || async {
        let crd = crds.get(&crd_name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await?;

    let resource = ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &resource);
    let widget = |name: &str, min: serde_json::Value, max: serde_json::Value| {
        json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": { "name": name },
            "spec": { "minReplicas": min, "maxReplicas": max },
        })
    };
    let apply = PatchParams::apply(MANAGER);

    // A valid object applies (retried: the new resource is served a moment after Established).
    let good = widget("good", json!(1), json!(3));
    poll("a valid Widget to apply", CONVERGE, || async {
        widgets
            .patch("good", &apply, &Patch::Apply(&good))
            .await
            .map(Some)
    })
    .await?;

    // Breaking the CEL rule is refused at apply, with the rule's message, and nothing is stored.
    let refusal = expect_status(
        widgets
            .patch(
                "bad",
                &apply,
                &Patch::Apply(&widget("bad", json!(5), json!(2))),
            )
            .await,
        422,
    )?;
    ensure!(
        refusal.is_invalid(),
        "expected reason Invalid, got {refusal:?}"
    );
    ensure!(
        refusal
            .message
            .contains("minReplicas must not exceed maxReplicas"),
        "the refusal does not quote the rule's message: {}",
        refusal.message
    );
    ensure!(
        widgets.get_opt("bad").await?.is_none(),
        "the refused Widget was stored"
    );

    // Changing the valid object so it breaks the rule is refused as well.
    let broken = widget("good", json!(9), json!(3));
    expect_status(
        widgets.patch("good", &apply, &Patch::Apply(&broken)).await,
        422,
    )?;

    // The structural schema is enforced too: a string where an integer belongs is refused on
    // create. The API server answers 422 Invalid from schema validation, or — when its managed-
    // fields tracking builds the typed object first, as seen on 1.37 — 500 "failed to create typed
    // patch object ... expected numeric". Either way the refusal names the field.
    let mistyped: DynamicObject = serde_json::from_value(widget("typo", json!("three"), json!(3)))?;
    match widgets.create(&PostParams::default(), &mistyped).await {
        Err(kube::Error::Api(status))
            if status.code == 422
                || (status.code == 500 && status.message.contains("expected numeric")) =>
        {
            ensure!(status.message.contains("minReplicas"), "{}", status.message);
        }
        other => anyhow::bail!("a mistyped Widget must be refused by the schema, got {other:?}"),
    }
    ensure!(
        widgets.get_opt("typo").await?.is_none(),
        "the mistyped Widget was stored"
    );

    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn lease_update_with_a_stale_resource_version_conflicts() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("lease_update_with_a_stale_resource_version_conflicts").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("lease").await?;
    let leases: Api<Lease> = ns.api();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "leader" },
        "spec": { "holderIdentity": "replica-a", "leaseDurationSeconds": 15 },
    }))?;
    let first = leases.create(&PostParams::default(), &lease).await?;
    let first_version = first
        .metadata
        .resource_version
        .clone()
        .context("no resourceVersion")?;

    // An update carrying the current resourceVersion succeeds and moves it on.
    let mut take_over = first.clone();
    take_over.spec.get_or_insert_default().holder_identity = Some("replica-b".into());
    let second = leases
        .replace("leader", &PostParams::default(), &take_over)
        .await?;
    ensure!(
        second.metadata.resource_version.as_deref() != Some(first_version.as_str()),
        "the update did not change resourceVersion"
    );

    // The same update based on the stale object is refused with 409 Conflict.
    let mut stale = first;
    stale.spec.get_or_insert_default().holder_identity = Some("replica-c".into());
    let conflict = expect_status(
        leases
            .replace("leader", &PostParams::default(), &stale)
            .await,
        409,
    )?;
    ensure!(
        conflict.is_conflict(),
        "expected reason Conflict, got {conflict:?}"
    );

    let now = leases.get("leader").await?;
    ensure!(
        now.spec.and_then(|s| s.holder_identity).as_deref() == Some("replica-b"),
        "the stale update changed the Lease"
    );
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn service_account_may_update_leases_only_once_a_role_grants_it() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("service_account_may_update_leases_only_once_a_role_grants_it").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("rbac").await?;
    ns.create_service_account("lease-updater").await?;
    let access = ns.service_account_access("lease-updater").await?;
    let as_account: Api<Lease> = Api::namespaced(access.client()?, ns.name());
    let leases: Api<Lease> = ns.api();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "leader" },
        "spec": { "holderIdentity": "nobody" },
    }))?;
    leases.create(&PostParams::default(), &lease).await?;

    // The admin reads the current object; the account tries to take the lease with it.
    let claim = || async {
        let mut current = leases.get("leader").await?;
        current.spec.get_or_insert_default().holder_identity = Some("lease-updater".into());
        as_account
            .replace("leader", &PostParams::default(), &current)
            .await
    };
    let denied = expect_status(claim().await, 403)?;
    ensure!(
        denied.is_forbidden(),
        "expected reason Forbidden, got {denied:?}"
    );
    ensure!(
        denied.message.contains(&access.username()),
        "the denial does not name the account: {}",
        denied.message
    );

    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "update-leases" },
        "rules": [{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"] }],
    }))?;
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "lease-updater" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "update-leases" },
        "subjects": [{ "kind": "ServiceAccount", "name": "lease-updater", "namespace": ns.name() }],
    }))?;
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;

    // The authorizer sees the binding through an informer, a moment later.
    let updated = poll("the RoleBinding to allow the update", CONVERGE, || async {
        match claim().await {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(status)) if status.is_forbidden() => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await?;
    ensure!(updated.spec.and_then(|s| s.holder_identity).as_deref() == Some("lease-updater"));

    // Exactly that: not get, not delete, and not update on another resource.
    expect_status(as_account.get("leader").await, 403)?;
    expect_status(
        as_account.delete("leader", &DeleteParams::default()).await,
        403,
    )?;
    let config_maps: Api<ConfigMap> = Api::namespaced(access.client()?, ns.name());
    let config_map: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "x" } }))?;
    expect_status(
        config_maps
            .create(&PostParams::default(), &config_map)
            .await,
        403,
    )?;

    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn deployment_pods_run_on_fake_nodes_spread_over_three_zones() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("deployment_pods_run_on_fake_nodes_spread_over_three_zones").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("spread").await?;
    let app = k8s::unique_name("game-node");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "game-node" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": app } },
            "template": {
                "metadata": { "labels": { "app": app } },
                "spec": {
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": { "matchLabels": { "app": app } },
                    }],
                    // Never pulled: kwok only pretends to run containers.
                    "containers": [{ "name": "game-node", "image": "registry.invalid/crashfleet/game-node:test" }],
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let pods: Api<Pod> = ns.api();
    let selector = ListParams::default().labels(&format!("app={app}"));
    let running = poll("3 Running and Ready pods", CONVERGE, || async {
        let list = pods.list(&selector).await?;
        let ready: Vec<Pod> = list.items.into_iter().filter(running_and_ready).collect();
        Ok((ready.len() == 3).then_some(ready))
    })
    .await?;

    let nodes: Api<Node> = Api::all(ns.client());
    let mut zones = BTreeSet::new();
    for pod in &running {
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .context("pod has no node")?;
        let node = nodes.get(&node_name).await?;
        let zone = node
            .labels()
            .get("topology.kubernetes.io/zone")
            .cloned()
            .with_context(|| format!("node {node_name} has no zone"))?;
        ensure!(
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some(),
            "pod without an IP"
        );
        zones.insert(zone);
    }
    ensure!(
        zones == BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]),
        "the 3 pods are not one per zone: {zones:?}"
    );

    poll(
        "the Deployment to report 3 ready replicas",
        CONVERGE,
        || async {
            let status = deployments
                .get("game-node")
                .await?
                .status
                .unwrap_or_default();
            Ok((status.ready_replicas == Some(3)).then_some(()))
        },
    )
    .await?;
    ns.cleanup().await?;
    Ok(())
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_what_it_owns() -> anyhow::Result<()> {
    let Some(cluster) = cluster_or_skip("deleting_an_owner_garbage_collects_what_it_owns").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("gc").await?;
    let config_maps: Api<ConfigMap> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let owner: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "owner" } }))?;
    let owner = config_maps.create(&PostParams::default(), &owner).await?;
    let owner_ref = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.uid().context("owner has no uid")?,
    }]);
    let owned_map: ConfigMap = serde_json::from_value(
        json!({ "metadata": { "name": "owned", "ownerReferences": owner_ref } }),
    )?;
    config_maps
        .create(&PostParams::default(), &owned_map)
        .await?;
    let owned_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "owned", "ownerReferences": owner_ref },
        "stringData": { "k": "v" },
    }))?;
    secrets
        .create(&PostParams::default(), &owned_secret)
        .await?;
    let bystander: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "bystander" } }))?;
    config_maps
        .create(&PostParams::default(), &bystander)
        .await?;

    config_maps
        .delete("owner", &DeleteParams::background())
        .await?;
    poll("the owned objects to be collected", CONVERGE, || async {
        let map_gone = config_maps.get_opt("owned").await?.is_none();
        let secret_gone = secrets.get_opt("owned").await?.is_none();
        Ok((map_gone && secret_gone).then_some(()))
    })
    .await?;
    ensure!(
        config_maps.get_opt("bystander").await?.is_some(),
        "an object without an owner was collected"
    );
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_with_a_field_manager_is_idempotent() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("server_side_apply_with_a_field_manager_is_idempotent").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("ssa").await?;
    let config_maps: Api<ConfigMap> = ns.api();
    let apply = PatchParams::apply(MANAGER);
    let desired = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "roundSeconds": "10" },
    });

    let first = config_maps
        .patch("settings", &apply, &Patch::Apply(&desired))
        .await?;
    let version = first.resource_version().context("no resourceVersion")?;
    let managers: Vec<_> = first
        .managed_fields()
        .iter()
        .filter_map(|f| Some((f.manager.clone()?, f.operation.clone()?)))
        .collect();
    ensure!(
        managers.contains(&(MANAGER.to_owned(), "Apply".to_owned())),
        "no Apply entry for {MANAGER} in managedFields: {managers:?}"
    );

    let second = config_maps
        .patch("settings", &apply, &Patch::Apply(&desired))
        .await?;
    ensure!(
        second.resource_version().as_deref() == Some(version.as_str()),
        "an identical apply changed resourceVersion: {version} -> {:?}",
        second.resource_version()
    );

    // A real change does move it (so the check above can fail).
    let changed = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "roundSeconds": "12" },
    });
    let third = config_maps
        .patch("settings", &apply, &Patch::Apply(&changed))
        .await?;
    ensure!(third.resource_version().as_deref() != Some(version.as_str()));

    // Another manager setting a field this one owns conflicts, unless it forces.
    let other = PatchParams::apply("someone-else");
    let rival = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "roundSeconds": "99" },
    });
    expect_status(
        config_maps
            .patch("settings", &other, &Patch::Apply(&rival))
            .await,
        409,
    )?;
    let forced = config_maps
        .patch("settings", &other.force(), &Patch::Apply(&rival))
        .await?;
    ensure!(
        forced
            .data
            .and_then(|d| d.get("roundSeconds").cloned())
            .as_deref()
            == Some("99")
    );
    ns.cleanup().await?;
    Ok(())
}
