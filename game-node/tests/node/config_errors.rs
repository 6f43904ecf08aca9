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
            &["--retry-period-ms", "900", "--renew-deadline-ms", "800"],
            "--retry-period-ms",
        ),
        (&["--lease-name", "Not_A_Name"], "--lease-name"),
        (&["--lease-namespace=-bad-"], "--lease-namespace"),
        (&["--node-id", "has space"], "--node-id"),
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
