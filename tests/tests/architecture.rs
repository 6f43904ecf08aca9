//! The workspace's dependency rules, checked on the resolved dependency graph (`cargo tree`), so a
//! new dependency that breaks one fails CI instead of eroding the layering quietly:
//!
//! - `crashfleet-core` (fairness, engine, protocol, the domain error) is pure: no async runtime,
//!   no database, no HTTP stack, no Redis or Kubernetes client, with every feature on.
//! - `crashfleet-lease` adds the Kubernetes client and tokio, nothing of the game node.
//! - the operator builds on core and lease, never on the game node (its database, password
//!   hashing and HTTP edge).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every package (name) in `package`'s normal and build dependency tree, all features on.
fn tree(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["tree", "--locked", "--offline", "-p", package])
        .args(["-e", "normal,build", "--all-features", "--prefix", "none"])
        .args(["--format", "{p}"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.contains(package), "{package} is in its own tree");
    names
}

fn assert_none(package: &str, names: &BTreeSet<String>, forbidden: &[&str]) {
    let found: Vec<&&str> = forbidden.iter().filter(|f| names.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} (see `cargo tree -p {package} -i <name>`)"
    );
}

/// Crates that do I/O or carry a runtime: none may enter the pure core.
const IMPURE: &[&str] = &[
    "tokio",
    "mio",
    "sqlx",
    "sqlx-core",
    "axum",
    "hyper",
    "tower",
    "fred",
    "kube",
    "kube-client",
    "reqwest",
    "rustls",
    "argon2",
    "socket2",
];

#[test]
fn the_core_is_pure() {
    let core = tree("crashfleet-core");
    assert_none("crashfleet-core", &core, IMPURE);
    // What it is made of, so the check above cannot pass on an empty tree.
    for needed in ["sha2", "hmac", "serde"] {
        assert!(core.contains(needed), "crashfleet-core uses {needed}");
    }
}

#[test]
fn the_lease_crate_knows_nothing_of_the_game_node() {
    let lease = tree("crashfleet-lease");
    assert!(lease.contains("kube") && lease.contains("crashfleet-core"));
    assert_none(
        "crashfleet-lease",
        &lease,
        &["game-node", "sqlx", "axum", "fred", "argon2"],
    );
}

#[test]
fn the_operator_builds_on_core_and_lease_not_on_the_game_node() {
    let op = tree("crashfleet-operator");
    assert!(op.contains("crashfleet-core") && op.contains("crashfleet-lease"));
    assert_none(
        "crashfleet-operator",
        &op,
        &["game-node", "sqlx", "argon2", "jsonwebtoken"],
    );
}
