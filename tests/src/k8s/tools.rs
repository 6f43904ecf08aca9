//! Where the cluster tools and the operator's chart are.

use std::path::{Path, PathBuf};

/// helm or kubectl: `CRASHFLEET_HELM`/`CRASHFLEET_KUBECTL`, else the control plane's cache
/// (`tests/k8s/cluster.sh` builds helm and kubectl there), else PATH.
pub fn tool(name: &str) -> PathBuf {
    let var = format!("CRASHFLEET_{}", name.to_uppercase());
    if let Ok(p) = std::env::var(&var) {
        return p.into();
    }
    let cache = std::env::var("CRASHFLEET_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/crashfleet")
        });
    let versions =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/versions.env"))
            .unwrap_or_default();
    let k8s = versions
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let cached = cache.join(format!("k8s-{k8s}/bin/{name}"));
    if cached.exists() { cached } else { name.into() }
}

/// The operator's Helm chart in this checkout.
pub fn chart() -> PathBuf {
    crate::repo_root().join("charts/crashfleet-operator")
}
