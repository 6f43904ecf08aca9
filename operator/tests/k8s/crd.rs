//! The CrashTable CRD: the checked-in YAML is what the types generate, and the real API server
//! (tests/k8s/cluster.sh) applies the schema: defaults, ranges, enums, CEL rules, and the
//! transition rules that freeze the fairness commitment. `kubectl explain` reads every field.

use std::time::Duration;

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::k8s::{cluster_or_skip, poll};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

const CRD_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/crashtables.crashfleet.dev.yaml"
);

#[test]
fn the_checked_in_crd_is_what_the_types_generate() {
    let generated = crashfleet_operator::crd_yaml().expect("yaml");
    if std::env::var("UPDATE_CRDS").as_deref() == Ok("1") {
        std::fs::write(CRD_PATH, &generated).expect("write the CRD");
    }
    let checked_in = std::fs::read_to_string(CRD_PATH).unwrap_or_default();
    assert!(
        checked_in == generated,
        "crds/crashtables.crashfleet.dev.yaml drifted from operator/src/crd.rs; regenerate it with \
         `cargo run -p crashfleet-operator -- crd > crds/crashtables.crashfleet.dev.yaml` \
         (or UPDATE_CRDS=1 cargo test -p crashfleet-operator --test k8s crd::)"
    );
    // The names other issues and users rely on.
    let crd = CrashTable::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("crashtables.crashfleet.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["ct".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    // `kubectl get ct` shows the priority-0 columns; `-o wide` adds the others.
    let columns = |wide: bool| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| wide || c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.clone())
            .collect()
    };
    assert_eq!(
        columns(false),
        ["Replicas", "Ready", "Leader", "Phase", "Route", "Age"]
    );
    assert_eq!(
        columns(true),
        [
            "Replicas", "Ready", "Leader", "Phase", "Route", "Age", "URL"
        ]
    );
}

fn table(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "crashfleet.dev/v1alpha1",
        "kind": "CrashTable",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn minimal() -> Value {
    json!({
        "image": "registry.example/game-node:0.1.0",
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "database": {"urlSecretRef": {"name": "postgres", "key": "url"}},
    })
}

/// Installs the CRD (server-side apply; idempotent across parallel tests) and waits until served.
async fn install_crd(client: kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.patch(
        "crashtables.crashfleet.dev",
        &PatchParams::apply("crashfleet-tests").force(),
        &Patch::Apply(CrashTable::crd()),
    )
    .await?;
    poll(
        "the CrashTable CRD to be established",
        Duration::from_secs(60),
        || {
            let crds = crds.clone();
            async move {
                let crd = crds.get("crashtables.crashfleet.dev").await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_api_server_applies_defaults_and_refuses_bad_tables() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("the_api_server_applies_defaults_and_refuses_bad_tables").await?
    else {
        return Ok(());
    };
    install_crd(cluster.client()).await?;
    let ns = cluster.namespace("crd").await?;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        cluster.client(),
        ns.name(),
        &kube::core::ApiResource::erase::<CrashTable>(&()),
    );
    let typed: Api<CrashTable> = Api::namespaced(cluster.client(), ns.name());
    let create = |name: &str, spec: Value| {
        let api = api.clone();
        let obj: kube::api::DynamicObject =
            serde_json::from_value(table(name, spec)).expect("object");
        async move { api.create(&PostParams::default(), &obj).await }
    };

    // A minimal table gets every default from the schema.
    create("ok", minimal()).await?;
    let ok = typed.get("ok").await?;
    assert_eq!(ok.spec.replicas, 3);
    assert_eq!(ok.spec.game.house_edge_basis_points, 100);
    assert_eq!(ok.spec.game.betting_window_ms, 5_000);
    assert_eq!(ok.spec.fairness.chain_length, 10_000_000);
    assert_eq!(ok.spec.leader_election.lease_duration_seconds, 2);

    // Refused at apply, each with a message naming the problem.
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "edge",
            json!({"game": {"houseEdgeBasisPoints": 10001}}),
            "houseEdgeBasisPoints",
        ),
        ("replicas", json!({"replicas": 0}), "replicas"),
        (
            "bets",
            json!({"game": {"minBet": 500, "maxBet": 100}}),
            "minBet must not exceed maxBet",
        ),
        (
            "backend",
            json!({"leaderElection": {"backend": "zookeeper"}}),
            "backend",
        ),
        (
            "lease",
            json!({"leaderElection": {"leaseDurationSeconds": 0}}),
            "leaseDurationSeconds",
        ),
        (
            "scale",
            json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
            "minReplicas must not exceed maxReplicas",
        ),
        ("image", json!({"image": ""}), "image"),
        (
            "two-ways-in",
            json!({"ingress": {"host": "crash.example.com"},
                   "gateway": {"parentRefs": [{"name": "edge"}]}}),
            "set spec.ingress or spec.gateway, not both",
        ),
        (
            "no-parent",
            json!({"gateway": {"parentRefs": []}}),
            "parentRefs",
        ),
        (
            "hostname",
            json!({"gateway": {"parentRefs": [{"name": "edge"}], "hostnames": ["Crash.Example.com"]}}),
            "hostnames",
        ),
        (
            "prefix",
            json!({"gateway": {"parentRefs": [{"name": "edge"}], "pathPrefix": "crash"}}),
            "pathPrefix",
        ),
    ];
    for (name, patch, needle) in bad {
        let mut spec = minimal();
        json_merge(&mut spec, &patch);
        let err = create(&format!("bad-{name}"), spec)
            .await
            .expect_err(&format!("{name} was accepted"));
        let text = err.to_string();
        assert!(text.contains(needle), "{name}: {text}");
    }

    // The fairness commitment is frozen once set.
    let pp = PatchParams::default();
    let patch = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let err = typed
        .patch("ok", &pp, &patch(json!({"fairness": {"chainLength": 5}})))
        .await
        .expect_err("chainLength changed");
    assert!(err.to_string().contains("cannot change"), "{err}");
    typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"fairness": {"salt": "block-800000"}})),
        )
        .await?;
    let err = typed
        .patch("ok", &pp, &patch(json!({"fairness": {"salt": "another"}})))
        .await
        .expect_err("salt changed");
    assert!(err.to_string().contains("salt cannot change"), "{err}");
    // So are the commitment's game parameters: nodes would refuse to start on other values.
    for (field, value) in [("houseEdgeBasisPoints", 250), ("maxMultiplierX100", 5000)] {
        let err = typed
            .patch("ok", &pp, &patch(json!({"game": {field: value}})))
            .await
            .expect_err(field);
        assert!(
            err.to_string().contains(&format!(
                "game.{field} is part of the published fairness commitment"
            )),
            "{field}: {err}"
        );
    }
    // spec.pod takes Kubernetes' own types, checked by their schemas.
    let placed = typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"pod": {
                "imagePullPolicy": "Never",
                "nodeSelector": {"crashfleet.dev/real-node": "true"},
                "resources": {"requests": {"cpu": "100m", "memory": 64}},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "labels": {"team": "games"},
            }})),
        )
        .await?;
    let pod = placed.spec.pod.expect("spec.pod");
    assert_eq!(
        pod.node_selector.expect("nodeSelector")["crashfleet.dev/real-node"],
        "true"
    );
    let err = typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"pod": {"imagePullPolicy": "Sometimes"}})),
        )
        .await
        .expect_err("an unknown pull policy");
    assert!(err.to_string().contains("imagePullPolicy"), "{err}");
    // The table's rhythm and limits are not part of it.
    typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"game": {"maxBet": 2000, "pauseMs": 1000}})),
        )
        .await?;
    // A table behind a Gateway: parent refs, host names and a path prefix.
    let routed = typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"gateway": {
                "parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "http"}],
                "hostnames": ["crash.example.com", "*.crash.example.com"],
                "pathPrefix": "/crash",
            }})),
        )
        .await?;
    let gw = routed.spec.gateway.expect("spec.gateway");
    assert_eq!(gw.parent_refs[0].namespace.as_deref(), Some("infra"));
    assert_eq!(gw.path_prefix.as_deref(), Some("/crash"));
    // …and it cannot take an Ingress beside it.
    let err = typed
        .patch(
            "ok",
            &pp,
            &patch(json!({"ingress": {"host": "crash.example.com"}})),
        )
        .await
        .expect_err("ingress beside gateway");
    assert!(err.to_string().contains("not both"), "{err}");
    // Everything else may change.
    let scaled = typed
        .patch("ok", &pp, &patch(json!({"replicas": 5, "paused": true})))
        .await?;
    assert_eq!((scaled.spec.replicas, scaled.spec.paused), (5, true));
    assert_eq!(scaled.name_any(), "ok");
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_reads_every_field() -> anyhow::Result<()> {
    let Some(cluster) = cluster_or_skip("kubectl_explain_reads_every_field").await? else {
        return Ok(());
    };
    install_crd(cluster.client()).await?;
    let kubectl = std::env::var("CRASHFLEET_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let explain = |path: &str| {
        let out = std::process::Command::new(&kubectl)
            .args(["explain", path])
            .env("KUBECONFIG", cluster.kubeconfig_source())
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl explain {path}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The discovery cache may lag the new CRD by a moment.
    poll(
        "kubectl to see the CRD",
        Duration::from_secs(30),
        || async {
            let ok = std::process::Command::new(&kubectl)
                .args(["explain", "crashtable"])
                .env("KUBECONFIG", cluster.kubeconfig_source())
                .output()
                .is_ok_and(|o| o.status.success());
            Ok(ok.then_some(()))
        },
    )
    .await?;
    let game = explain("crashtable.spec.game");
    for field in [
        "houseEdgeBasisPoints",
        "maxMultiplierX100",
        "minBet",
        "maxBet",
        "maxPayout",
        "betsPerPlayer",
        "bettingWindowMs",
        "tickRateHz",
    ] {
        assert!(
            game.contains(field),
            "explain spec.game lacks {field}:\n{game}"
        );
    }
    // Every field of every level has a description (a field header followed by its text).
    for path in [
        "crashtable.spec",
        "crashtable.spec.game",
        "crashtable.spec.fairness",
        "crashtable.spec.leaderElection",
        "crashtable.spec.redis",
        "crashtable.spec.redis.urlSecretRef",
        "crashtable.spec.ingress",
        "crashtable.spec.autoscaling",
        "crashtable.status",
        "crashtable.status.fairness",
    ] {
        let text = explain(path);
        let undocumented = undocumented_fields(&text);
        assert!(
            undocumented.is_empty(),
            "{path}: undocumented {undocumented:?}:\n{text}"
        );
    }
    Ok(())
}

/// Fields in `kubectl explain` output that have no description: a header line
/// (`  name\t<type>`) not followed (after an optional `enum:` line) by an indented text line.
fn undocumented_fields(explain: &str) -> Vec<String> {
    let lines: Vec<&str> = explain
        .lines()
        .skip_while(|l| !l.starts_with("FIELDS:"))
        .collect();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let is_header = line.starts_with("  ") && !line.starts_with("   ") && line.contains('\t');
        if !is_header {
            continue;
        }
        let described = lines[i + 1..]
            .iter()
            .find(|l| !l.trim_start().starts_with("enum:"))
            .is_some_and(|l| l.starts_with("    ") && !l.trim().is_empty());
        if !described {
            missing.push(line.trim().to_string());
        }
    }
    missing
}

#[test]
fn the_explain_checker_finds_an_undocumented_field() {
    let text = "FIELDS:\n  a\t<string>\n    documented\n\n  b\t<integer>\n\n  c\t<string>\n  enum: x, y\n    ok\n";
    assert_eq!(undocumented_fields(text), ["b\t<integer>"]);
}

fn json_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                json_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}
