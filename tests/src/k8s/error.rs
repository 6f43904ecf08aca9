//! The harness's errors, and [`expect_status`] for tests that expect the API to refuse something.

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use kube::core::Status;

use super::cluster::START_HINT;

/// Everything the harness can fail with. Connection problems are kept apart from API errors so a
/// test can tell "no cluster" (skip it) from "the cluster said no" (a real failure).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("KUBECONFIG is not set, so there is no cluster to talk to")]
    NoKubeconfig,

    #[error("cannot load the kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("the kubeconfig {path} names no cluster for its current context")]
    NoCurrentCluster { path: String },

    #[error("no Kubernetes API reachable at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("the Kubernetes API at {url} did not answer within {after:?}")]
    ConnectTimeout { url: String, after: Duration },

    #[error(
        "{test} needs a Kubernetes cluster and CI=true forbids skipping it; start one with: {START_HINT}"
    )]
    Required {
        test: String,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "{test} needs the real node and CI=true forbids skipping it ({reason}); start the cluster with it (tests/k8s/cluster.sh up) and load the images (tests/k8s/images.sh)"
    )]
    NoRealNode { test: String, reason: String },

    #[error(transparent)]
    Kube(Box<kube::Error>),

    #[error("timed out after {after:?} waiting for {what}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout {
        what: String,
        after: Duration,
        last_error: Option<String>,
    },

    #[error("expected the API to answer {expected}, got {got}")]
    UnexpectedOutcome { expected: String, got: String },

    #[error("TokenRequest for ServiceAccount {namespace}/{name} returned no token")]
    NoToken { namespace: String, name: String },

    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A server or object a test needs could not be set up (host PostgreSQL or Redis, a Service).
    #[error("{0}")]
    Setup(String),

    #[error("cannot serialize a kubeconfig")]
    Json(#[from] serde_json::Error),
}

// Boxed: kube::Error is large, and every Result of this crate would carry its size.
impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

/// `error: cause: cause...`, the whole chain on one line (Display shows only the outermost).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// The refusal a test expects: `Ok` with the API's `Status` when `result` failed with HTTP `code`,
/// an error naming what happened instead (success, another code, a transport failure) otherwise.
pub fn expect_status<T: Debug>(
    result: Result<T, kube::Error>,
    code: u16,
) -> Result<Box<Status>, Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == code => Ok(status),
        Err(kube::Error::Api(status)) => Err(Error::UnexpectedOutcome {
            expected: format!("HTTP {code}"),
            got: format!("HTTP {} {}: {}", status.code, status.reason, status.message),
        }),
        Err(other) => Err(Error::UnexpectedOutcome {
            expected: format!("HTTP {code}"),
            got: format!("error {other}"),
        }),
        Ok(value) => Err(Error::UnexpectedOutcome {
            expected: format!("HTTP {code}"),
            got: format!("success: {value:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("refused", reason).with_code(code).boxed())
    }

    #[test]
    fn expect_status_accepts_the_expected_code_only() {
        assert!(
            matches!(expect_status::<()>(Err(api_error(409, "Conflict")), 409), Ok(s) if s.is_conflict())
        );
        assert!(matches!(
            expect_status::<()>(Err(api_error(403, "Forbidden")), 409),
            Err(Error::UnexpectedOutcome { got, .. }) if got.contains("403")
        ));
        assert!(matches!(
            expect_status(Ok(7), 409),
            Err(Error::UnexpectedOutcome { got, .. }) if got == "success: 7"
        ));
    }

    #[test]
    fn error_chain_shows_every_cause() {
        let e = Error::Required {
            test: "t".into(),
            source: Box::new(Error::NoKubeconfig),
        };
        let line = error_chain(&e);
        assert!(line.starts_with("t needs a Kubernetes cluster"), "{line}");
        assert!(
            line.ends_with(": KUBECONFIG is not set, so there is no cluster to talk to"),
            "{line}"
        );
    }

    #[test]
    fn timeout_names_the_last_error() {
        let e = Error::Timeout {
            what: "pods".into(),
            after: Duration::from_secs(2),
            last_error: Some("boom".into()),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 2s waiting for pods (last error: boom)"
        );
    }
}
