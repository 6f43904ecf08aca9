//! Acting as a ServiceAccount: a token from the TokenRequest API, and a client and a kubeconfig
//! file holding it, so a test (or a process it starts) has exactly the rights the account's Roles
//! grant and no more.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::Error;
use super::namespace::TestNamespace;

/// Token lifetime: an hour outlives any test; the API refuses less than ten minutes.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A ServiceAccount's credentials: its token, a kubeconfig file with it, and a client.
pub struct ServiceAccountAccess {
    namespace: String,
    name: String,
    token: String,
    kubeconfig_path: PathBuf,
    config: Config,
}

impl std::fmt::Debug for ServiceAccountAccess {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAccess")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountAccess {
    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig file for this account (removed with the namespace); give it to a process under
    /// test as `KUBECONFIG`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `system:serviceaccount:<namespace>:<name>`, the user the API sees.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// A client that authenticates as this account.
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.config.clone())?)
    }
}

impl TestNamespace {
    /// Creates ServiceAccount `name` in this namespace.
    pub async fn create_service_account(&self, name: &str) -> Result<ServiceAccount, Error> {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        Ok(self
            .api::<ServiceAccount>()
            .create(&PostParams::default(), &account)
            .await?)
    }

    /// Mints a token for the existing ServiceAccount `name` (TokenRequest, as `kubectl create
    /// token` does) and writes a kubeconfig file for it.
    pub async fn service_account_access(&self, name: &str) -> Result<ServiceAccountAccess, Error> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_TTL.as_secs().try_into().unwrap_or(i64::MAX)),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let minted = self
            .api::<ServiceAccount>()
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        let token = minted
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::NoToken {
                namespace: self.name.clone(),
                name: name.to_owned(),
            })?;

        let kubeconfig =
            kubeconfig_json(&self.cluster.current_cluster()?, &self.name, name, &token)?;
        std::fs::create_dir_all(&self.scratch).map_err(|source| Error::Io {
            path: self.scratch.clone(),
            source,
        })?;
        let kubeconfig_path = self.scratch.join(format!("{name}.kubeconfig"));
        write_private(&kubeconfig_path, kubeconfig.as_bytes())?;

        // The client is built from the file's own text, so the file is known to work.
        let parsed = Kubeconfig::from_yaml(&kubeconfig).map_err(|source| Error::Kubeconfig {
            path: kubeconfig_path.display().to_string(),
            source,
        })?;
        let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig {
                path: kubeconfig_path.display().to_string(),
                source,
            })?;
        Ok(ServiceAccountAccess {
            namespace: self.name.clone(),
            name: name.to_owned(),
            token,
            kubeconfig_path,
            config,
        })
    }
}

/// A kubeconfig (JSON, which every kubeconfig reader accepts as YAML) for `cluster` with the
/// bearer `token` of ServiceAccount `namespace`/`account`.
fn kubeconfig_json(
    cluster: &kube::config::Cluster,
    namespace: &str,
    account: &str,
    token: &str,
) -> Result<String, Error> {
    let user = format!("{namespace}-{account}");
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "crashfleet-test", "cluster": cluster }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{
            "name": user,
            "context": { "cluster": "crashfleet-test", "user": user, "namespace": namespace },
        }],
        "current-context": user,
    }))?)
}

/// Writes a file only its owner can read: it holds a bearer token.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_selects_the_account_in_its_namespace() -> Result<(), Box<dyn std::error::Error>> {
        let cluster = kube::config::Cluster {
            server: Some("https://127.0.0.1:6443".into()),
            certificate_authority_data: Some("Q0E=".into()),
            ..kube::config::Cluster::default()
        };
        let text = kubeconfig_json(&cluster, "ns1", "runner", "secret-token")?;
        let parsed = Kubeconfig::from_yaml(&text)?;
        assert_eq!(parsed.current_context.as_deref(), Some("ns1-runner"));
        let context = parsed.contexts[0].context.as_ref().ok_or("no context")?;
        assert_eq!(context.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            parsed.clusters[0]
                .cluster
                .as_ref()
                .and_then(|c| c.server.as_deref()),
            Some("https://127.0.0.1:6443")
        );
        assert!(text.contains("secret-token"));
        Ok(())
    }
}
