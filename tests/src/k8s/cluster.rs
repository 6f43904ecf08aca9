//! Connecting to the cluster `KUBECONFIG` names, and what a test does when there is none.

use std::io::Write as _;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::{Error, error_chain};
use super::namespace::TestNamespace;

/// How to start the cluster and point the tests at it; printed whenever a test is skipped.
pub const START_HINT: &str = r#"export "$(tests/k8s/cluster.sh up | tail -n 1)""#;

/// How long the first request may take before the cluster counts as unreachable. A local apiserver
/// answers in milliseconds and a stopped one refuses at once; the rest is margin for a machine that
/// is busy compiling.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The running cluster: an admin client plus what it takes to build other clients from it.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// Kept to build fresh clients where this one cannot go: another runtime (namespace cleanup
    /// on drop) or other credentials (ServiceAccount tokens).
    config: Config,
    /// The admin kubeconfig; its cluster entry (server URL, CA) is reused for ServiceAccount
    /// kubeconfigs.
    kubeconfig: Kubeconfig,
    /// Where the kubeconfig came from (the `KUBECONFIG` value), for messages and child processes.
    source: String,
}

impl std::fmt::Debug for Cluster {
    // Config and Kubeconfig hold credentials; show only where they came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.config.cluster_url)
            .field("kubeconfig", &self.source)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the cluster `KUBECONFIG` names and checks it answers. Deliberately no fallback
    /// to `~/.kube/config`: tests create and delete things, and must never reach a cluster nobody
    /// pointed them at.
    pub async fn connect() -> Result<Self, Error> {
        let source = std::env::var("KUBECONFIG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(Error::NoKubeconfig)?;
        let kubeconfig = Kubeconfig::from_env()
            .map_err(|e| Error::Kubeconfig {
                path: source.clone(),
                source: e,
            })?
            .ok_or(Error::NoKubeconfig)?;
        Self::from_kubeconfig(kubeconfig, source).await
    }

    /// Connects with an already loaded kubeconfig; `source` says where it came from.
    pub async fn from_kubeconfig(
        kubeconfig: Kubeconfig,
        source: impl Into<String>,
    ) -> Result<Self, Error> {
        let source = source.into();
        let config =
            Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: source.clone(),
                    source: e,
                })?;
        let client = Client::try_from(config.clone())?;
        let url = config.cluster_url.to_string();
        match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Unreachable {
                    url,
                    source: Box::new(e),
                });
            }
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    url,
                    after: CONNECT_TIMEOUT,
                });
            }
        }
        Ok(Cluster {
            client,
            config,
            kubeconfig,
            source,
        })
    }

    /// An admin client (the kubeconfig's own user).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client configuration behind [`Cluster::client`].
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `KUBECONFIG` value this cluster was reached with; hand it to kubectl, helm or a process
    /// under test that needs admin access.
    pub fn kubeconfig_source(&self) -> &str {
        &self.source
    }

    /// A fresh namespace named `cf-<prefix>-<random>`, deleted when the returned guard is dropped
    /// or [`TestNamespace::cleanup`] is awaited.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        TestNamespace::create(self, prefix).await
    }

    /// The cluster entry (server URL, CA) of the kubeconfig's current context.
    pub(super) fn current_cluster(&self) -> Result<kube::config::Cluster, Error> {
        let missing = || Error::NoCurrentCluster {
            path: self.source.clone(),
        };
        let context_name = self
            .kubeconfig
            .current_context
            .as_deref()
            .ok_or_else(missing)?;
        let cluster_name = self
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(missing)?;
        self.kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(missing)
    }
}

/// Whether the environment forbids skipping: `CI=true` (or `1`), as CI systems set it.
fn skipping_forbidden(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The cluster for test `test`, or `Ok(None)` after announcing the skip when none is reachable.
/// Under `CI=true` a missing cluster is an error instead, so CI can never pass without one.
///
/// ```text
/// let Some(cluster) = cluster_or_skip("my_test").await? else { return Ok(()) };
/// ```
pub async fn cluster_or_skip(test: &str) -> Result<Option<Cluster>, Error> {
    match Cluster::connect().await {
        Ok(cluster) => Ok(Some(cluster)),
        Err(e) if skipping_forbidden(std::env::var("CI").ok().as_deref()) => Err(Error::Required {
            test: test.to_owned(),
            source: Box::new(e),
        }),
        Err(e) => {
            // Straight to the process's stderr: the test harness captures eprintln! of a passing
            // test, and a skip must not pass silently.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {}. Start a cluster with: {START_HINT}",
                error_chain(&e)
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ci_true_forbids_skipping() {
        assert!(skipping_forbidden(Some("true")));
        assert!(skipping_forbidden(Some("TRUE")));
        assert!(skipping_forbidden(Some("1")));
        assert!(!skipping_forbidden(Some("false")));
        assert!(!skipping_forbidden(Some("")));
        assert!(!skipping_forbidden(None));
    }
}
