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

/// The game node's modules and the modules each one names (`crate::x`, `super::x` from a
/// submodule, and `use crate::{x, …}`), read from the source with comments removed. Submodules
/// of a folder (`fleet/…`) count as the folder.
fn module_graph() -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../game-node/src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("game-node/src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut graph = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let module = match rel.components().next() {
            Some(c) => c
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string(),
            None => continue,
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let nested = rel.components().count() > 1;
        let text: String = std::fs::read_to_string(&f)
            .expect("source")
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut names = BTreeSet::new();
        let mut grab = |rest: &str| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        };
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                for item in list.split('}').next().unwrap_or("").split(',') {
                    grab(item.trim());
                }
            } else {
                grab(rest);
            }
        }
        if nested {
            // Inside a folder, `super::x` is a sibling: still the same top-level module.
            names.insert(module.clone());
        }
        names.remove(&module);
        graph.entry(module).or_default().extend(names);
    }
    // Only edges between the crate's own modules (not `crate::Result` and the like).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle in `graph`, if there is one (depth-first search).
fn find_cycle(graph: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_game_nodes_modules_form_no_cycle_and_keep_their_layers() {
    let graph = module_graph();
    for m in [
        "api",
        "ws",
        "state",
        "game",
        "node",
        "fleet",
        "standalone",
        "ledger",
        "ports",
    ] {
        assert!(graph.contains_key(m), "module {m} is read ({graph:?})");
    }
    assert!(graph["node"].contains("api") && graph["api"].contains("state"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the game node's modules import each other in a cycle: {}",
            cycle.join(" → ")
        );
    }
    let names = |m: &str, other: &str| graph.get(m).is_some_and(|d| d.contains(other));
    // The HTTP/WebSocket edge sees ports and the game service, never an adapter.
    for edge in ["api", "ws", "state", "listener", "client_ip", "limits"] {
        for adapter in ["fleet", "standalone", "ledger", "node"] {
            assert!(
                !names(edge, adapter),
                "the edge module {edge} must not use {adapter}"
            );
        }
    }
    // The game service knows no edge.
    for edge in ["api", "ws", "state", "listener", "client_ip", "node"] {
        assert!(!names("game", edge), "the game service must not use {edge}");
    }
    // Each adapter set stands alone; only node.rs names both.
    assert!(!names("fleet", "standalone") && !names("standalone", "fleet"));
    let both: Vec<&String> = graph
        .iter()
        .filter(|(_, d)| d.contains("fleet") && d.contains("standalone"))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(both, vec!["node"], "only node.rs assembles the adapters");
    // Adapters never reach back into the edge or the service.
    for adapter in ["fleet", "standalone", "ledger"] {
        for upper in ["api", "ws", "state", "game", "node"] {
            assert!(
                !names(adapter, upper),
                "the adapter {adapter} must not use {upper}"
            );
        }
    }
}

#[test]
fn the_game_service_carries_no_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../game-node/src");
    let game = std::fs::read_to_string(src.join("game.rs")).expect("game.rs");
    for word in ["axum", "hyper", "StatusCode", "HeaderMap", "tower"] {
        assert!(!game.contains(word), "game.rs mentions {word}");
    }
}

/// Comments and docs state the rule or the measured fact themselves: a reader of this repository
/// cannot follow a pointer to the documents the project started from, which are not in it.
#[test]
fn no_comment_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<std::path::PathBuf> = [
        "crates",
        "game-node/src",
        "game-node/tests",
        "game-node/web",
        "operator",
        "tests/src",
        "tests/tests",
        "docs",
        "charts",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    let mut files = vec![root.join("README.md")];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                // Known-answer files are copied verbatim from where they were computed.
                if !p.ends_with("tests/data") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| {
                ["rs", "md", "js", "html", "yaml", "sh", "toml", "json"]
                    .iter()
                    .any(|k| x == *k)
            }) {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() > 50,
        "the scan found the sources ({} files)",
        files.len()
    );
    // Spelled in two pieces so this file does not match itself.
    let pointers =
        [["MISSION", ".md"], ["seed", " 000"], ["STYLE", ".md"]].map(|[a, b]| format!("{a}{b}"));
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for p in &pointers {
            if text.contains(p.as_str()) {
                found.push(format!("{} mentions {p}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

/// The test-support crate is the one owner of the test infrastructure: game-node's and the
/// operator's tests start no Redis, create no database and pick no port of their own (a second
/// launcher drifts from the first: different flags, no clean-up, another skip rule).
#[test]
fn tests_take_their_infrastructure_from_the_support_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Spelled in pieces so this file does not match itself.
    let owned = [
        ["Command::new(\"redis", "-server\")"],
        ["CREATE ", "DATABASE"],
        ["fn free", "_port("],
    ]
    .map(|[a, b]| format!("{a}{b}"));
    let mut files = Vec::new();
    for dir in ["game-node/tests", "operator/tests"] {
        files.extend(rust_files(&root.join(dir)));
    }
    assert!(
        files.len() > 20,
        "the scan found the tests ({})",
        files.len()
    );
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for o in &owned {
            if text.contains(o.as_str()) {
                found.push(format!("{}: {o}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "use crashfleet_tests (redis::TestRedis, db::TestDb, free_port) instead:\n{}",
        found.join("\n")
    );
}
