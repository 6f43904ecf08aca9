//! What an integration test needs from the machine, and what happens when it is missing: the test
//! prints one `SKIPPED` line saying what is missing and how to get it, and returns; under
//! `CI=true` it fails instead, because `tests/run.sh` provides everything and a skip there would
//! hide a broken set-up.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The PostgreSQL server URL (a user with CREATEDB) that tests/pg/pg.sh prints.
pub const DATABASE_URL_ENV: &str = "CRASHFLEET_TEST_DATABASE_URL";

/// Whether the suite runs under CI, where every prerequisite must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (or, under CI, fails) `test` for `why`. Always `None`, to end a `let … else`.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    let line = format!("{test}: {why}");
    if in_ci() {
        panic!("{line} (CI=true: tests/run.sh provides it)");
    }
    eprintln!("SKIPPED {line}");
    None
}

/// The test PostgreSQL server's admin URL, if configured.
pub fn database_url() -> Option<String> {
    std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether `redis-server` is on PATH.
pub fn redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The test PostgreSQL URL, or a skip naming how to start one.
pub fn postgres(test: &str) -> Option<String> {
    database_url().or_else(|| {
        skip(
            test,
            &format!(
                "needs {DATABASE_URL_ENV}; start PostgreSQL with: \
                 eval \"export $(bash tests/pg/pg.sh start | tail -1)\""
            ),
        )
    })
}

/// `redis-server` on PATH, or a skip.
pub fn redis(test: &str) -> Option<()> {
    if redis_server() {
        Some(())
    } else {
        skip(
            test,
            "needs redis-server on PATH (tests/install-deps.sh installs it)",
        )
    }
}

/// What a fleet of processes needs: the PostgreSQL URL and `redis-server`.
pub fn fleet(test: &str) -> Option<String> {
    let pg = database_url();
    let redis = redis_server();
    match (pg, redis) {
        (Some(url), true) => Some(url),
        (pg, redis) => skip(
            test,
            &format!(
                "needs redis-server on PATH ({}) and {DATABASE_URL_ENV} ({})",
                if redis { "ok" } else { "missing" },
                if pg.is_some() { "ok" } else { "unset" }
            ),
        ),
    }
}

/// The `game-node` binary of this build: beside the running test binary's directory
/// (`target/<profile>/deps/…` → `target/<profile>/game-node`), which `cargo test --workspace`
/// (or `-p game-node`) builds first; `CRASHFLEET_GAME_NODE_BIN` overrides it.
pub fn game_node_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CRASHFLEET_GAME_NODE_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?;
    let bin = profile.join("game-node");
    bin.exists().then_some(bin)
}

/// The game-node binary, or a skip naming the command that builds it.
pub fn game_node(test: &str) -> Option<PathBuf> {
    game_node_binary().or_else(|| {
        skip(
            test,
            "needs the game-node binary (cargo test --workspace builds it)",
        )
    })
}

/// A Python that has PyNaCl, for the independent settlement checker: `CRASHFLEET_PYTHON`
/// (tests/settlement/pyenv.sh, run by tests/run.sh), else `python3` if it imports `nacl`, else a
/// skip naming how to get one.
pub fn python_with_nacl(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRASHFLEET_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let system = Command::new("python3")
        .args(["-c", "import nacl.signing"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if system {
        return Some(PathBuf::from("python3"));
    }
    skip(
        test,
        "needs a Python with PyNaCl; make one with: \
         eval \"export $(bash tests/settlement/pyenv.sh | tail -1)\"",
    )
}
