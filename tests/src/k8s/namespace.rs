//! A namespace per test, deleted at the end of the test even when it fails: by an explicit
//! [`TestNamespace::cleanup`], or else when the guard is dropped (also while a failed assertion
//! unwinds).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, NamespaceResourceScope};
use kube::{Client, Config, Resource};

use super::cluster::Cluster;
use super::error::{Error, error_chain};
use super::wait::poll;

/// Label on every test namespace, so leftovers of a killed run can be found and deleted:
/// `kubectl delete namespace -l crashfleet.test/e2e`.
pub const TEST_LABEL: &str = "crashfleet.test/e2e";

/// How long a new namespace may take to get its `default` ServiceAccount (made by
/// kube-controller-manager); pods cannot be created before it exists.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest Kubernetes name (a DNS label) and the length of the random suffix.
const MAX_NAME: usize = 63;
const SUFFIX_LEN: usize = 8;

/// `<prefix>-<8 random hex digits>`, the prefix reduced to what a DNS label allows, so tests
/// (and parallel test runs) never collide.
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(MAX_NAME - SUFFIX_LEN - 1);
    let clean = clean.trim_matches('-');
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..SUFFIX_LEN];
    if clean.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{clean}-{suffix}")
    }
}

/// A namespace that exists for one test. Also deletes the cluster-scoped objects registered with
/// [`TestNamespace::delete_on_cleanup`] (a test's CRDs, say).
pub struct TestNamespace {
    pub(super) name: String,
    pub(super) client: Client,
    /// For the drop path, which needs a client of its own on another runtime.
    config: Config,
    pub(super) cluster: Cluster,
    /// Cluster-scoped objects to delete with the namespace.
    cluster_scoped: Mutex<Vec<(ApiResource, String)>>,
    /// Files of this test (ServiceAccount kubeconfigs), removed at cleanup.
    pub(super) scratch: PathBuf,
    /// False once cleanup ran, so drop does nothing more.
    armed: bool,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    pub(super) async fn create(cluster: &Cluster, prefix: &str) -> Result<Self, Error> {
        let name = unique_name(&format!("cf-{prefix}"));
        let client = cluster.client();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        // Armed from here on: whatever fails below, the namespace goes away again.
        let guard = TestNamespace {
            scratch: std::env::temp_dir().join("crashfleet-tests").join(&name),
            name,
            client,
            config: cluster.config().clone(),
            cluster: cluster.clone(),
            cluster_scoped: Mutex::new(Vec::new()),
            armed: true,
        };
        let service_accounts: Api<ServiceAccount> = guard.api();
        poll(
            "the namespace's default ServiceAccount",
            SERVICE_ACCOUNT_TIMEOUT,
            || async { service_accounts.get_opt("default").await },
        )
        .await?;
        Ok(guard)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster this namespace lives in.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// An admin API for namespaced resources of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the cluster-scoped object `name` of kind `K` at cleanup, before the namespace.
    pub fn delete_on_cleanup<K: Resource<DynamicType = ()>>(&self, name: &str) {
        self.cluster_scoped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((ApiResource::erase::<K>(&()), name.to_owned()));
    }

    /// Deletes the namespace (and the registered cluster-scoped objects) and waits for the API to
    /// accept that; the namespace controller removes its contents afterwards.
    pub async fn cleanup(mut self) -> Result<(), Error> {
        self.armed = false;
        let extra = self.take_cluster_scoped();
        let result = delete_all(&self.client, &self.name, &extra).await;
        remove_scratch(&self.scratch);
        result
    }

    fn take_cluster_scoped(&self) -> Vec<(ApiResource, String)> {
        std::mem::take(
            &mut *self
                .cluster_scoped
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let (config, name, extra) = (
            self.config.clone(),
            self.name.clone(),
            self.take_cluster_scoped(),
        );
        // Drop cannot await, the test's runtime may be single-threaded and blocked right here, and
        // the test's client belongs to that runtime: so the deletion runs on a thread of its own,
        // with its own runtime and client, and this waits for it.
        let outcome = std::thread::spawn(move || -> Result<(), Error> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Io {
                    path: PathBuf::from("<tokio runtime>"),
                    source,
                })?;
            runtime.block_on(async {
                let client = Client::try_from(config)?;
                delete_all(&client, &name, &extra).await
            })
        })
        .join();
        let problem = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(error_chain(&e)),
            Err(_) => Some("the cleanup thread panicked".to_owned()),
        };
        if let Some(problem) = problem {
            eprintln!(
                "warning: could not delete test namespace {}: {problem}; `kubectl delete namespace -l {TEST_LABEL}` removes leftovers",
                self.name
            );
        }
        remove_scratch(&self.scratch);
    }
}

async fn delete_all(
    client: &Client,
    namespace: &str,
    cluster_scoped: &[(ApiResource, String)],
) -> Result<(), Error> {
    let mut first_error = None;
    for (resource, name) in cluster_scoped {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        if let Err(e) = ignore_not_found(api.delete(name, &DeleteParams::background()).await) {
            first_error.get_or_insert(e);
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = ignore_not_found(
        namespaces
            .delete(namespace, &DeleteParams::background())
            .await,
    ) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn remove_scratch(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: could not remove {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("Lease_Conflict");
        let b = unique_name("Lease_Conflict");
        assert_ne!(a, b);
        assert!(a.starts_with("lease-conflict-"), "{a}");
        let long = unique_name(&"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
        assert!(unique_name("--").starts_with("t-"));
        for name in [a, long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'));
        }
    }
}
