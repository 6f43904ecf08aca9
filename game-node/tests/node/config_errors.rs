//! Contradictory or incomplete configuration fails at start with one clear line (issue #5): the
//! real binary is run with each bad combination and must exit non-zero, quickly, naming the flag,
//! without opening anything.

use std::process::Command;

fn start(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_game-node"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env_remove("CRASHFLEET_REDIS_URL")
        .env_remove("CRASHFLEET_DATABASE_URL")
        .env_remove("CRASHFLEET_LEADER_ELECTION")
        .env("RUST_LOG", "error")
        .output()
        .expect("run game-node");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), text)
}

const PG: &str = "postgres://u:p@127.0.0.1:1/db";
const REDIS: &str = "redis://127.0.0.1:1";
const JWT: &str = "a-shared-secret-0123456789";

#[test]
fn contradictions_fail_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--leader-election",
                "redis",
                "--database-url",
                PG,
                "--jwt-secret",
                JWT,
            ],
            "--redis-url",
        ),
        (
            &[
                "--leader-election",
                "kubernetes",
                "--database-url",
                PG,
                "--jwt-secret",
                JWT,
            ],
            "--redis-url",
        ),
        // Several replicas cannot share SQLite.
        (
            &[
                "--leader-election",
                "redis",
                "--redis-url",
                REDIS,
                "--jwt-secret",
                JWT,
            ],
            "PostgreSQL",
        ),
        (
            &[
                "--leader-election",
                "redis",
                "--redis-url",
                REDIS,
                "--database-url",
                PG,
            ],
            "--jwt-secret",
        ),
        (&["--redis-url", REDIS], "--leader-election"),
        (
            &["--renew-deadline-ms", "1500", "--lease-duration-ms", "1000"],
            "--renew-deadline-ms",
        ),
        (
            &["--retry-period-ms", "600", "--renew-deadline-ms", "500"],
            "--retry-period-ms",
        ),
        (&["--lease-name", "Not_A_Name"], "--lease-name"),
        (&["--lease-namespace=-bad-"], "--lease-namespace"),
        (&["--node-id", "has space"], "--node-id"),
        (&["--public-url", "eu.example.com"], "--public-url"),
        (&["--public-url", "https://x/?q=1"], "--public-url"),
        (
            &["--public-url", "https://x/", "--public-url-file", "/tmp/u"],
            "--public-url-file",
        ),
        (&["--region", "  "], "--region"),
        (&["--leader-election", "paxos"], "paxos"),
    ];
    for (args, needle) in cases {
        let (ok, stderr) = start(args);
        assert!(!ok, "{args:?} started");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            stderr.contains(needle),
            "{args:?}: the error does not name {needle}: {stderr}"
        );
        // One line (clap's usage hint for an invalid value is allowed after it).
        assert!(
            lines.len() <= 4,
            "{args:?}: {} lines of error: {stderr}",
            lines.len()
        );
    }
}

/// tests/fleet/up.sh (the local fleet a tester starts by hand, which no other test runs) starts
/// its nodes with flags the node still knows, and the variables it passes secrets through are
/// the ones the node reads: a renamed flag fails here, not in a tester's terminal.
#[test]
fn the_local_fleet_script_starts_nodes_with_flags_the_node_knows() {
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fleet/up.sh"),
    )
    .expect("tests/fleet/up.sh");
    let launch = script
        .split("launch_node() {")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("up.sh defines launch_node()");
    let flags: std::collections::BTreeSet<&str> = launch
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    let envs: std::collections::BTreeSet<&str> = launch
        .split_whitespace()
        .filter_map(|w| w.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("CRASHFLEET_"))
        .collect();
    assert!(flags.len() >= 9, "{flags:?}");
    assert!(envs.len() >= 3, "{envs:?}");
    let help = Command::new(env!("CARGO_BIN_EXE_game-node"))
        .args(["serve", "--help"])
        .output()
        .expect("game-node serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in &flags {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "up.sh starts nodes with {flag}, which `game-node serve` does not know"
        );
    }
    for env in &envs {
        assert!(
            help.contains(&format!("[env: {env}=")) || help.contains(&format!("[env: {env}]")),
            "up.sh passes {env}, which `game-node serve` does not read"
        );
    }
}
