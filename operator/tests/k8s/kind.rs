//! The kind walkthrough (README, "Try it on kind") cannot run here: kind's node image cannot be
//! pulled. What can be checked is checked: `kind-config.yaml` is a kind `Cluster` config with the
//! fields kind requires, and the walkthrough's manifests (the chart's examples, applied after
//! `helm install`) are accepted by the real API server with the generated CRD (server-side apply,
//! dry run). The walkthrough's steps themselves run on real pods in `real_pods.rs`. Not checked:
//! that kind boots its node image and `kind load`.

use std::path::PathBuf;
use std::process::Command;

use crashfleet_tests::k8s::cluster_or_skip;
use serde_yaml::Value;

use crashfleet_tests::k8s::{chart, tool};

fn repo() -> PathBuf {
    crashfleet_tests::repo_root().to_path_buf()
}

/// The manifests the README's walkthrough applies, in its order.
fn walkthrough_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))
        .expect("the chart's examples")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn kind_config_is_a_kind_cluster_config() {
    let text = std::fs::read_to_string(repo().join("kind-config.yaml")).expect("kind-config.yaml");
    let v: Value = serde_yaml::from_str(&text).expect("kind-config.yaml parses as YAML");
    assert_eq!(v["kind"].as_str(), Some("Cluster"));
    assert_eq!(v["apiVersion"].as_str(), Some("kind.x-k8s.io/v1alpha4"));
    let nodes = v["nodes"].as_sequence().expect("nodes");
    let roles: Vec<&str> = nodes
        .iter()
        .map(|n| n["role"].as_str().expect("every node has a role"))
        .collect();
    assert!(
        roles
            .iter()
            .all(|r| ["control-plane", "worker"].contains(r)),
        "{roles:?}"
    );
    assert!(roles.contains(&"control-plane"), "{roles:?}");
    // The kubeadm patches are YAML documents of their own.
    for n in nodes {
        for p in n["kubeadmConfigPatches"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let patch: Value = serde_yaml::from_str(p.as_str().expect("a patch is a string"))
                .expect("a kubeadm patch parses");
            assert!(patch["kind"].as_str().is_some(), "{patch:?}");
        }
    }
    // Game pods select `crashfleet.dev/real-node=true` (the examples, ci/kind-values.yaml):
    // without a worker so labelled nothing would schedule.
    let labelled = nodes
        .iter()
        .filter(|n| n["role"].as_str() == Some("worker"))
        .filter(|n| n["labels"]["crashfleet.dev/real-node"].as_str() == Some("true"))
        .count();
    assert!(labelled >= 2, "workers labelled for game pods: {labelled}");
    // The README walks through this file and these manifests (one source of truth).
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    assert!(readme.contains("--config kind-config.yaml"));
    assert!(readme.contains("-f charts/crashfleet-operator/ci/kind-values.yaml"));
    for m in walkthrough_manifests() {
        let rel = m.strip_prefix(repo()).expect("in the repository");
        let rel = rel.display().to_string();
        assert!(readme.contains(&rel), "README does not apply {rel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_manifests_pass_the_api_servers_dry_run() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("the_walkthrough_manifests_pass_the_api_servers_dry_run").await?
    else {
        return Ok(());
    };
    // The example Gateway needs the Gateway API's CRDs, which the edge tests also install and
    // remove: hold their lock while it is dry-run.
    let _serial = crate::HEAVY.lock().await;
    tokio::task::block_in_place(|| crashfleet_tests::k8s::install_gateway_api(&cluster))?;
    let ns = cluster.namespace("kind").await?;
    let kubectl = tool("kubectl");
    let run = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", cluster.kubeconfig_source())
            .output()
    };
    let crd = repo().join("crds/crashtables.crashfleet.dev.yaml");
    let out = run(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "crashfleet-tests",
        "-f",
        &crd.display().to_string(),
    ])?;
    assert!(out.status.success(), "installing the CRD: {out:?}");
    let out = run(&[
        "wait",
        "--for=condition=Established",
        "crd/crashtables.crashfleet.dev",
        "--timeout=60s",
    ])?;
    assert!(out.status.success(), "{out:?}");
    for m in walkthrough_manifests() {
        let out = run(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            ns.name(),
            "-f",
            &m.display().to_string(),
        ])?;
        assert!(
            out.status.success(),
            "{} is refused by the API server: {}",
            m.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ns.cleanup().await?;
    Ok(())
}
