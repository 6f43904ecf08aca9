//! The operator end to end on the real control plane (tests/k8s/cluster.sh): the
//! `crashfleet-operator` binary runs as a local process against the API server; a CrashTable is
//! applied; every child, the status, the conditions and the printer columns are checked; a
//! missing Secret is reported; an operator restart keeps the fairness commitment; deleting the
//! table garbage-collects its fleet. Pods are kwok's (fake), so readiness comes from kwok and the
//! leader from a Lease the test writes as a game-node would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::k8s::{cluster_or_skip, poll};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);

struct Operator(Child);

impl Operator {
    fn start(kubeconfig: &str, namespace: &str) -> Operator {
        Operator::start_with(kubeconfig, namespace, &[])
    }

    fn start_with(kubeconfig: &str, namespace: &str, extra: &[&str]) -> Operator {
        let child = Command::new(env!("CARGO_BIN_EXE_crashfleet-operator"))
            .args(["run", "--listen", "127.0.0.1:0", "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn crashfleet-operator");
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn install_crd(client: kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.patch(
        "crashtables.crashfleet.dev",
        &PatchParams::apply("crashfleet-tests").force(),
        &Patch::Apply(CrashTable::crd()),
    )
    .await?;
    poll("the CRD to be established", CONVERGE, || {
        let crds = crds.clone();
        async move {
            let c = crds.get("crashtables.crashfleet.dev").await?;
            Ok(c.status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}

type Events = Api<k8s_openapi::api::events::v1::Event>;

/// Waits up to `within` for an event with `reason` in the namespace `events` lists.
async fn event(
    events: &Events,
    reason: &str,
    within: Duration,
) -> anyhow::Result<k8s_openapi::api::events::v1::Event> {
    poll(&format!("a {reason} event"), within, || {
        let e = events.clone();
        async move {
            let list = e.list(&Default::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason)))
        }
    })
    .await
    .map_err(Into::into)
}

fn url_secret(name: &str, url: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"url": url},
    }))
    .expect("secret")
}

fn table(name: &str, redis_secret: &str) -> CrashTable {
    serde_json::from_value(json!({
        "apiVersion": "crashfleet.dev/v1alpha1",
        "kind": "CrashTable",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "image": "registry.example/game-node:0.1.0",
            "region": "eu-test-1",
            "redis": {"urlSecretRef": {"name": redis_secret, "key": "url"}},
            "database": {"urlSecretRef": {"name": "postgres", "key": "url"}},
            "fairness": {"chainLength": 5000},
        },
    }))
    .expect("table")
}

#[tokio::test]
async fn a_crash_table_becomes_a_fleet_with_status_and_is_collected() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("a_crash_table_becomes_a_fleet_with_status_and_is_collected").await?
    else {
        return Ok(());
    };
    install_crd(cluster.client()).await?;
    let ns = cluster.namespace("op").await?;
    let client = cluster.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let pp = PostParams::default();
    secrets
        .create(&pp, &url_secret("redis", "redis://redis:6379"))
        .await?;
    secrets
        .create(&pp, &url_secret("postgres", "postgres://u:p@pg:5432/db"))
        .await?;
    let mut operator = Operator::start(cluster.kubeconfig_source(), ns.name());

    let tables: Api<CrashTable> = Api::namespaced(client.clone(), ns.name());
    let applied = Instant::now();
    tables.create(&pp, &table("alpha", "redis")).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    poll("the Deployment", CONVERGE, || {
        let d = deployments.clone();
        async move { d.get_opt("alpha").await }
    })
    .await?;
    println!(
        "OPERATOR apply -> Deployment created: {} ms",
        applied.elapsed().as_millis()
    );

    // Every child, owned by the table.
    let uid = tables.get("alpha").await?.uid().expect("uid");
    let owned =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        };
    let ns_name = ns.name().to_string();
    macro_rules! child {
        ($t:ty, $name:expr) => {{
            let api: Api<$t> = Api::namespaced(client.clone(), &ns_name);
            // Applied in the same pass as the Deployment, maybe a moment after it.
            let o = poll(concat!("the table's ", stringify!($t)), CONVERGE, || {
                let api = api.clone();
                async move { api.get_opt($name).await }
            })
            .await?;
            assert!(
                owned(o.metadata.owner_references.clone()),
                "{} not owned",
                $name
            );
            o
        }};
    }
    child!(ServiceAccount, "alpha");
    let role = child!(Role, "alpha");
    assert_eq!(
        role.rules.expect("rules")[0].resource_names,
        Some(vec!["alpha-leader".to_string()])
    );
    child!(RoleBinding, "alpha");
    child!(Service, "alpha");
    child!(PodDisruptionBudget, "alpha");
    let fairness = child!(Secret, "alpha-fairness");
    child!(Secret, "alpha-auth");
    let signing = child!(Secret, "alpha-signing");
    assert_eq!(signing.immutable, Some(true));
    let d = child!(Deployment, "alpha");
    assert_eq!(d.spec.replicas, Some(2));

    // The commitment is in status before any round (and before any pod is ready).
    let st = poll("the fairness commitment in status", CONVERGE, || {
        let t = tables.clone();
        async move {
            let s = t.get("alpha").await?.status;
            Ok(s.filter(|s| {
                s.fairness
                    .as_ref()
                    .is_some_and(|f| f.terminating_hash.len() == 64)
            }))
        }
    })
    .await?;
    let published = st.fairness.expect("fairness");
    let terminating = published.terminating_hash;
    let stored = String::from_utf8(fairness.data.expect("data")["terminating-hash"].0.clone())?;
    assert_eq!(stored, terminating);
    // The published signing key is the public half of the Secret's key.
    let signing_data = signing.data.expect("data");
    let seed = String::from_utf8(signing_data["key"].0.clone())?;
    let seed: [u8; 32] = hex::decode(seed.trim())?.try_into().expect("a 32-byte key");
    let public = crashfleet_core::settlement::signing::SigningKey::from_seed(&seed).public_key();
    assert_eq!(published.signing_key, hex::encode(public));
    assert_eq!(
        signing_data["public-key"].0,
        published.signing_key.as_bytes()
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "FairnessCommitted" && c.status == "True")
    );

    // A game-node takes the Lease (as the real ones do); status names the leader and term.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    leases
        .create(
            &pp,
            &Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some("alpha-leader".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("alpha-7d9f-abcde".into()),
                    lease_duration_seconds: Some(2),
                    lease_transitions: Some(4),
                    ..Default::default()
                }),
            },
        )
        .await?;
    let st = poll("the leader in status", Duration::from_secs(40), || {
        let t = tables.clone();
        async move {
            let s = t.get("alpha").await?.status;
            Ok(s.filter(|s| s.leader.as_deref() == Some("alpha-7d9f-abcde")))
        }
    })
    .await?;
    assert_eq!(st.term, Some(4));

    // The leader publishes its progress on the Lease; near the end of the chain the operator
    // warns (condition reason and a Warning event), well before a hash could run out.
    let mut lease = leases.get("alpha-leader").await?;
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("crashfleet.dev/rounds-played".into(), "4600".into());
    leases.replace("alpha-leader", &pp, &lease).await?;
    let st = poll("the chain warning", Duration::from_secs(40), || {
        let t = tables.clone();
        async move {
            Ok(t.get("alpha").await?.status.filter(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "FairnessCommitted" && c.reason == "ChainNearlyExhausted")
            }))
        }
    })
    .await?;
    assert_eq!(
        st.fairness.as_ref().and_then(|f| f.rounds_played),
        Some(4600)
    );
    let events: Events = Api::namespaced(client.clone(), ns.name());
    let warned = event(&events, "ChainNearlyExhausted", Duration::from_secs(20)).await?;
    assert_eq!(warned.type_.as_deref(), Some("Warning"));
    assert_eq!(
        st.observed_generation,
        tables.get("alpha").await?.metadata.generation
    );

    // Printer columns.
    let out =
        Command::new(std::env::var("CRASHFLEET_KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args(["get", "ct", "-n", ns.name()])
            .env("KUBECONFIG", cluster.kubeconfig_source())
            .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for column in ["NAME", "REPLICAS", "READY", "LEADER", "PHASE", "AGE"] {
        assert!(
            text.contains(column),
            "kubectl get ct lacks {column}:\n{text}"
        );
    }
    assert!(text.contains("alpha-7d9f-abcde"), "{text}");

    // With the Prometheus Operator's CRD present, the table gets a ServiceMonitor.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let sm_crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))?;
    crds.patch(
        "servicemonitors.monitoring.coreos.com",
        &PatchParams::apply("crashfleet-tests").force(),
        &Patch::Apply(&sm_crd),
    )
    .await?;
    let ar = kube::core::ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "ServiceMonitor".into(),
        plural: "servicemonitors".into(),
    };
    let monitors: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &ar);
    let monitor = poll("the ServiceMonitor", CONVERGE, || {
        let m = monitors.clone();
        async move {
            match m.get_opt("alpha").await {
                Ok(v) => Ok(v),
                // The new kind may take a moment to be served.
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await?;
    assert_eq!(monitor.data["spec"]["endpoints"][0]["path"], "/metrics");

    // Scaling the table scales the Deployment.
    tables
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    poll("the Deployment to scale", CONVERGE, || {
        let d = deployments.clone();
        async move { Ok((d.get("alpha").await?.spec.replicas == Some(4)).then_some(())) }
    })
    .await?;

    // A way in, given later: the status and every lobby learn the URL through ConfigMap
    // alpha-edge; no pod is rolled for it (the pod template does not change).
    assert_eq!(
        tables.get("alpha").await?.status.and_then(|s| s.public_url),
        None
    );
    let template_before = deployments.get("alpha").await?.spec.template;
    tables
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publicUrl": "https://alpha.example.com/play"}})),
        )
        .await?;
    poll("status.publicUrl", CONVERGE, || {
        let t = tables.clone();
        async move {
            Ok(t.get("alpha")
                .await?
                .status
                .and_then(|s| s.public_url)
                .filter(|u| u == "https://alpha.example.com/play/"))
        }
    })
    .await?;
    let edge: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns.name());
    assert_eq!(
        edge.get("alpha-edge").await?.data.unwrap_or_default()["public-url"],
        "https://alpha.example.com/play"
    );
    assert_eq!(
        deployments.get("alpha").await?.spec.template,
        template_before,
        "a new public URL changed the pod template (a rollout for a link)"
    );

    // What the operator did is in events: the fleet created, then scaled, its URL set.
    let url_event = event(&events, "PublicUrlChanged", CONVERGE).await?;
    assert_eq!(
        url_event.note.as_deref(),
        Some(
            "the lobby links to https://alpha.example.com/play/ (was none); the pods follow it \
             within the kubelet's sync period, without restarting"
        )
    );
    for reason in ["Created", "Scaled", "FairnessCommitted"] {
        event(&events, reason, CONVERGE).await?;
    }

    // A table whose Secret is missing is reported, not half-built.
    tables
        .create(&pp, &table("broken", "no-such-secret"))
        .await?;
    let st = poll("the missing Secret reported", CONVERGE, || {
        let t = tables.clone();
        async move {
            let s = t.get("broken").await?.status;
            Ok(s.filter(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "MissingSecret"
                })
            }))
        }
    })
    .await?;
    assert_eq!(st.phase.as_deref(), Some("Degraded"));
    assert!(deployments.get_opt("broken").await?.is_none());

    // An operator restart keeps the seed and the commitment.
    let seed_before = secrets.get("alpha-fairness").await?.data.expect("data")["seed"].clone();
    let key_before = secrets.get("alpha-signing").await?.data.expect("data")["key"].clone();
    drop(operator);
    operator = Operator::start(cluster.kubeconfig_source(), ns.name());
    tables
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    poll("the restarted operator to reconcile", CONVERGE, || {
        let d = deployments.clone();
        async move { Ok((d.get("alpha").await?.spec.replicas == Some(3)).then_some(())) }
    })
    .await?;
    let after = secrets.get("alpha-fairness").await?.data.expect("data")["seed"].clone();
    assert_eq!(
        seed_before, after,
        "the seed changed across an operator restart"
    );
    let key_after = secrets.get("alpha-signing").await?.data.expect("data")["key"].clone();
    assert_eq!(
        key_before, key_after,
        "the signing key changed across an operator restart"
    );
    let st = tables.get("alpha").await?.status.expect("status");
    let after = st.fairness.expect("fairness");
    assert_eq!(after.terminating_hash, terminating);
    assert_eq!(after.signing_key, hex::encode(public));

    // Deleting the table garbage-collects its fleet.
    tables.delete("alpha", &DeleteParams::foreground()).await?;
    poll("the fleet to be collected", CONVERGE, || {
        let d = deployments.clone();
        let s = secrets.clone();
        async move {
            let gone =
                d.get_opt("alpha").await?.is_none() && s.get_opt("alpha-fairness").await?.is_none();
            Ok(gone.then_some(()))
        }
    })
    .await?;
    drop(operator);
    ns.cleanup().await?;
    Ok(())
}

/// Two operator replicas: one holds Lease `crashfleet-operator` and reconciles; when it dies the
/// standby takes over (after the 15 s lease) and reconciles the next change.
#[tokio::test]
async fn two_operators_are_active_and_standby() -> anyhow::Result<()> {
    let Some(cluster) = cluster_or_skip("two_operators_are_active_and_standby").await? else {
        return Ok(());
    };
    install_crd(cluster.client()).await?;
    let ns = cluster.namespace("ha").await?;
    let client = cluster.client();
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    secrets
        .create(&pp, &url_secret("redis", "redis://redis:6379"))
        .await?;
    secrets
        .create(&pp, &url_secret("postgres", "postgres://u:p@pg/db"))
        .await?;
    let kc = cluster.kubeconfig_source().to_string();
    let lease_ns = ["--lease-namespace", ns.name()];
    let mut ops = vec![
        Some(Operator::start_with(
            &kc,
            ns.name(),
            &[lease_ns[0], lease_ns[1], "--identity", "op-a"],
        )),
        Some(Operator::start_with(
            &kc,
            ns.name(),
            &[lease_ns[0], lease_ns[1], "--identity", "op-b"],
        )),
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let holder = poll("an active operator", CONVERGE, || {
        let l = leases.clone();
        async move {
            Ok(l.get_opt("crashfleet-operator")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity))
        }
    })
    .await?;
    let tables: Api<CrashTable> = Api::namespaced(client.clone(), ns.name());
    tables.create(&pp, &table("ha", "redis")).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    poll("the Deployment from the active operator", CONVERGE, || {
        let d = deployments.clone();
        async move { d.get_opt("ha").await }
    })
    .await?;
    // Kill the active one; the standby takes the Lease and reconciles a change.
    let active = if holder == "op-a" { 0 } else { 1 };
    ops[active] = None;
    let killed = Instant::now();
    tables
        .patch(
            "ha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    poll(
        "the standby to take over and reconcile",
        Duration::from_secs(60),
        || {
            let d = deployments.clone();
            async move { Ok((d.get("ha").await?.spec.replicas == Some(5)).then_some(())) }
        },
    )
    .await?;
    let new_holder = leases
        .get("crashfleet-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(new_holder.as_deref(), Some(holder.as_str()));
    println!(
        "OPERATOR standby took over and reconciled {} ms after the active one died",
        killed.elapsed().as_millis()
    );
    drop(ops);
    ns.cleanup().await?;
    Ok(())
}
