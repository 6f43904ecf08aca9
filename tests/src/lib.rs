//! Test support for crashfleet's integration tests: one crate that game-node's and the
//! operator's tests share.
//!
//! - [`api::Client`]: the REST client; [`ws::Socket`]: a player's WebSocket, typed by the protocol.
//! - [`db::TestDb`]: a PostgreSQL database per test; [`redis::TestRedis`]/[`redis::TlsRedis`]:
//!   Redis servers of a test's own.
//! - [`fleet::Fleet`]: N game-node processes on one Redis and one database, with
//!   [`proxy::Proxy`] to cut or slow their links and [`fleet::OwnPg`] to restart PostgreSQL.
//! - [`require`]: what a test needs from the machine; a missing part is a `SKIPPED` line, or a
//!   failure under `CI=true`.
//! - [`k8s`] connects tests to the real Kubernetes control plane that `tests/k8s/cluster.sh up`
//!   starts (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok fake nodes and a
//!   real kubelet node), gives each test a namespace of its own that is deleted afterwards, and
//!   mints ServiceAccount tokens so a test can act with exactly the rights a Role grants.
//! - [`load`]: the load generator behind `crashfleet-load` and the chaos tests.
//! - [`wait::until`]: poll for a state with a deadline, instead of sleeping for a guessed time.
//!
//! docs/TESTING.md says what the fake cluster can and cannot do.
#![forbid(unsafe_code)]

pub mod api;
pub mod db;
pub mod fleet;
pub mod k8s;
pub mod load;
pub mod prom;
pub mod proxy;
pub mod redis;
pub mod require;
pub mod wait;
pub mod witness;
pub mod ws;

/// The repository's root directory (this crate is `tests/` in it), without `..` in the path, so
/// paths built from it compare and strip as prefixes.
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the repository")
}

/// A free TCP port on loopback (bound, read, released: a test then binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `cmd` to the end: whether it succeeded, and its stdout then stderr as text.
pub fn output_of(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
