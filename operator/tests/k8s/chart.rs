//! The Helm chart `charts/crashfleet-operator`: its CRD is the generated one, `helm lint` passes,
//! its values schema refuses bad values, its manifests pass the API server's dry run, and — the
//! point of least privilege — the operator running with the chart's own ServiceAccount token
//! (its ClusterRole, nothing more) builds a table's fleet and writes its status.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::k8s::{cluster_or_skip, poll};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

use crashfleet_tests::k8s::{chart, tool};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run a tool")
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated = crashfleet_operator::crd_yaml().expect("yaml");
    let in_chart = std::fs::read_to_string(chart().join("crds/crashtables.crashfleet.dev.yaml"))
        .unwrap_or_default();
    assert!(
        in_chart == generated,
        "charts/crashfleet-operator/crds/ drifted from the types; copy crds/crashtables.crashfleet.dev.yaml there"
    );
}

/// helm is built with the control plane; without it (no cluster harness) the chart checks skip.
fn helm_or_skip(test: &str) -> Option<PathBuf> {
    let helm = tool("helm");
    if Command::new(&helm)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(helm);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: helm is missing and CI=true (tests/k8s/cluster.sh builds it)");
    }
    eprintln!("SKIPPED {test}: no helm (bash tests/k8s/cluster.sh build)");
    None
}

#[test]
fn helm_lint_and_the_values_schema() {
    let Some(helm) = helm_or_skip("helm_lint_and_the_values_schema") else {
        return;
    };
    let lint = run(Command::new(&helm).arg("lint").arg(chart()));
    assert!(lint.status.success(), "helm lint: {lint:?}");
    // The schema refuses a bad value with a message naming it.
    let bad = run(Command::new(&helm)
        .args(["template", "t"])
        .arg(chart())
        .args(["--set", "image.pullPolicy=Sometimes"]));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("pullPolicy"),
        "{bad:?}"
    );
    let unknown = run(Command::new(&helm)
        .args(["template", "t"])
        .arg(chart())
        .args(["--set", "replicaz=3"]));
    assert!(!unknown.status.success(), "an unknown value was accepted");

    // The alert rules: off by default; on, one PrometheusRule whose spec is the rule file
    // (the file a plain Prometheus loads, tested by game-node/tests/fleet/prometheus.rs).
    let off = run(Command::new(&helm).args(["template", "t"]).arg(chart()));
    assert!(off.status.success(), "{off:?}");
    assert!(!String::from_utf8_lossy(&off.stdout).contains("kind: PrometheusRule"));
    let on = run(Command::new(&helm)
        .args(["template", "t"])
        .arg(chart())
        .args([
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=kube-prometheus",
        ]));
    assert!(on.status.success(), "{on:?}");
    let text = String::from_utf8_lossy(&on.stdout).to_string();
    let rule: serde_yaml::Value = text
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let file: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("files/crashfleet-rules.yaml")).expect("rules"),
    )
    .expect("the rule file is YAML");
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule's spec is the rule file"
    );
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_not_degraded(status: &crashfleet_operator::crd::CrashTableStatus) {
    assert!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_its_cluster_role_is_enough() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("the_chart_installs_and_its_cluster_role_is_enough").await?
    else {
        return Ok(());
    };
    let Some(helm) = helm_or_skip("the_chart_installs_and_its_cluster_role_is_enough") else {
        return Ok(());
    };
    // The example table has a route: the cluster's Gateway API must be there (the edge tests
    // install and remove it: hold their lock), so that the chart's rights on HTTPRoutes are used.
    let _serial = crate::HEAVY.lock().await;
    tokio::task::block_in_place(|| crashfleet_tests::k8s::install_gateway_api(&cluster))?;
    // Other tests apply the CRD too (same content, field manager crashfleet-tests); bring a
    // cluster left with an older version up to date first, so helm's apply of the chart's copy
    // meets identical values instead of a conflict.
    {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use kube::CustomResourceExt;
        use kube::api::{Patch, PatchParams};
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
        crds.patch(
            "crashtables.crashfleet.dev",
            &PatchParams::apply("crashfleet-tests").force(),
            &Patch::Apply(CrashTable::crd()),
        )
        .await?;
    }
    let ns = cluster.namespace("chart").await?;
    let kubeconfig = cluster.kubeconfig_source().to_string();
    // The rendered chart passes the API server's validation.
    let rendered = run(Command::new(&helm)
        .args(["template", "crashfleet"])
        .arg(chart())
        .args(["-n", ns.name(), "--include-crds"]));
    assert!(rendered.status.success(), "{rendered:?}");
    let mut apply = Command::new(tool("kubectl"))
        .args(["apply", "--dry-run=server", "-f", "-"])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(&rendered.stdout)?;
    let applied = apply.wait_with_output()?;
    assert!(applied.status.success(), "dry run: {applied:?}");

    // Install it for real (cluster-scoped names carry the release, so give it a unique one).
    let release = format!("cf-{}", &ns.name()[ns.name().len().saturating_sub(8)..]);
    let install = run(Command::new(&helm)
        .args(["install", &release])
        .arg(chart())
        .args([
            "-n",
            ns.name(),
            "--set",
            &format!("watchNamespace={}", ns.name()),
        ])
        .env("KUBECONFIG", &kubeconfig));
    assert!(install.status.success(), "helm install: {install:?}");

    // The operator with the chart's ServiceAccount token: only its ClusterRole.
    let access = ns.service_account_access("crashfleet-operator").await?;
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_crashfleet-operator"))
            .args(["run", "--listen", "127.0.0.1:0", "--namespace", ns.name()])
            .env("KUBECONFIG", access.kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let client = cluster.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    for (name, url) in [
        ("redis", "redis://redis:6379"),
        ("postgres", "postgres://u:p@pg/db"),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"url": url},
        }))?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    // The chart's example table, as a user would apply it (with a short chain for speed).
    let example = std::fs::read_to_string(chart().join("examples/crashtable.yaml"))?;
    let mut table: CrashTable = serde_yaml::from_str(&example)?;
    table.spec.fairness.chain_length = 5_000;
    // Without its placement: the example's pods would go to the real node and run against this
    // test's unreachable Secrets; this test is about the chart's rights (operator/tests/k8s/real_pods.rs runs
    // the example as it is).
    table.spec.pod = None;
    let tables: Api<CrashTable> = Api::namespaced(client.clone(), ns.name());
    tables.create(&PostParams::default(), &table).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    poll(
        "the example table's Deployment",
        Duration::from_secs(60),
        || {
            let d = deployments.clone();
            async move { d.get_opt("main").await }
        },
    )
    .await?;
    let status = poll(
        "status written with the chart's rights",
        Duration::from_secs(60),
        || {
            let t = tables.clone();
            async move {
                Ok(t.get("main").await?.status.filter(|s| {
                    s.fairness
                        .as_ref()
                        .is_some_and(|f| f.terminating_hash.len() == 64)
                }))
            }
        },
    )
    .await?;
    assert_not_degraded(&status);
    // The example's HTTPRoute was applied with the chart's rights, owned by the table…
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &crashfleet_operator::builders::http_route_resource(),
    );
    let route = poll("the example's HTTPRoute", Duration::from_secs(60), || {
        let r = routes.clone();
        async move { r.get_opt("main").await }
    })
    .await?;
    assert_eq!(
        route
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].name.as_str()),
        Some("main")
    );
    // …and the other way in, an Ingress instead, is applied, and the route removed, with them too.
    tables
        .patch(
            "main",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {
                "gateway": null,
                "ingress": {"host": "crash.example.com", "className": "traefik"},
            }})),
        )
        .await?;
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), ns.name());
    poll("the Ingress, and no route", Duration::from_secs(60), || {
        let (i, r) = (ingresses.clone(), routes.clone());
        async move {
            Ok(
                (i.get_opt("main").await?.is_some() && r.get_opt("main").await?.is_none())
                    .then_some(()),
            )
        }
    })
    .await?;
    let status = tables.get("main").await?.status.unwrap_or_default();
    assert_not_degraded(&status);
    let uninstall = run(Command::new(&helm)
        .args(["uninstall", &release, "-n", ns.name()])
        .env("KUBECONFIG", &kubeconfig));
    assert!(uninstall.status.success(), "{uninstall:?}");
    ns.cleanup().await?;
    Ok(())
}
