//! Tests of the harness itself: namespaces really go away (also when a test panics), ServiceAccount
//! kubeconfigs authenticate as the account, and an unreachable cluster is reported as such.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use crashfleet_tests::k8s::{Cluster, Error, cluster_or_skip, poll};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;

const CONVERGE: Duration = Duration::from_secs(60);

/// The namespace is being deleted (or already gone).
async fn deleted(namespaces: &Api<Namespace>, name: &str) -> anyhow::Result<()> {
    poll("the test namespace to be deleted", CONVERGE, || async {
        let ns = namespaces.get_opt(name).await?;
        Ok(ns
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn namespace_is_deleted_by_cleanup_by_drop_and_after_a_panic() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("namespace_is_deleted_by_cleanup_by_drop_and_after_a_panic").await?
    else {
        return Ok(());
    };
    let namespaces: Api<Namespace> = Api::all(cluster.client());

    let explicit = cluster.namespace("harness").await?;
    let name = explicit.name().to_owned();
    ensure!(namespaces.get_opt(&name).await?.is_some());
    explicit.cleanup().await?;
    deleted(&namespaces, &name).await?;

    let dropped = cluster.namespace("harness").await?;
    let name = dropped.name().to_owned();
    drop(dropped);
    deleted(&namespaces, &name).await?;

    // A failing assertion unwinds through the guard: the namespace is deleted all the same.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let inner = cluster.clone();
    let failed = tokio::spawn(async move {
        let ns = inner.namespace("harness").await.expect("namespace");
        let _ = tx.send(ns.name().to_owned());
        assert_eq!(1 + 1, 3, "a failing assertion inside a test");
    })
    .await;
    ensure!(
        failed.is_err_and(|e| e.is_panic()),
        "the task was meant to panic"
    );
    let name = rx.await.context("the task never created its namespace")?;
    deleted(&namespaces, &name).await?;
    Ok(())
}

#[tokio::test]
async fn service_account_kubeconfig_authenticates_as_the_account() -> anyhow::Result<()> {
    let Some(cluster) =
        cluster_or_skip("service_account_kubeconfig_authenticates_as_the_account").await?
    else {
        return Ok(());
    };
    let ns = cluster.namespace("token").await?;
    ns.create_service_account("runner").await?;
    let access = ns.service_account_access("runner").await?;

    // The file on its own is enough, as it will be for a process under test.
    let from_file = Cluster::from_kubeconfig(
        Kubeconfig::read_from(access.kubeconfig_path())?,
        access.kubeconfig_path().display().to_string(),
    )
    .await?;
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({}))?;
    let reviews: Api<SelfSubjectReview> = Api::all(from_file.client());
    let me = reviews.create(&PostParams::default(), &review).await?;
    let username = me.status.and_then(|s| s.user_info).and_then(|u| u.username);
    ensure!(
        username.as_deref() == Some(access.username().as_str()),
        "authenticated as {username:?}, not {}",
        access.username()
    );
    ensure!(!access.token().is_empty());
    ensure!(
        format!("{access:?}").find(access.token()).is_none(),
        "Debug prints the token"
    );

    let path = access.kubeconfig_path().to_owned();
    ns.cleanup().await?;
    ensure!(!path.exists(), "the kubeconfig file outlived its namespace");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_not_hidden() -> anyhow::Result<()> {
    // Port 1 on loopback: nothing listens, the connection is refused at once. No cluster needed.
    let kubeconfig = Kubeconfig::from_yaml(
        r#"{"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": true}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x"}"#,
    )?;
    let result = Cluster::from_kubeconfig(kubeconfig, "test kubeconfig").await;
    ensure!(
        matches!(result, Err(Error::Unreachable { ref url, .. }) if url.contains("127.0.0.1:1")),
        "expected Unreachable, got {result:?}"
    );
    Ok(())
}
