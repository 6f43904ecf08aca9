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
    let k8s = version("K8S_VERSION").unwrap_or_default();
    let cached = cache.join(format!("k8s-{k8s}/bin/{name}"));
    if cached.exists() { cached } else { name.into() }
}

/// A pinned version from tests/k8s/versions.env (`KEY=value` lines, shared with the scripts).
pub fn version(key: &str) -> Option<String> {
    let versions =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/versions.env"))
            .ok()?;
    versions
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// The operator's Helm chart in this checkout.
pub fn chart() -> PathBuf {
    crate::repo_root().join("charts/crashfleet-operator")
}
