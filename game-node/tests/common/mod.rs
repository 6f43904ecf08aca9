//! A real game node in the test's own process, on `127.0.0.1:0` with a temporary data directory
//! and fast rounds, stopped when dropped. It derefs to `crashfleet_tests::api::Client`, the REST
//! client every test shares; the few helpers below only fill in this node's admin token and the
//! shapes these tests were written against.
#![allow(dead_code)]

use std::time::Duration;

use clap::Parser;
use crashfleet_tests::api::Client;
use game_node::config::ServeConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "test-admin-token-0123456789";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Fast rounds: a 1.2 s betting window, a curve that doubles every second, a 20x cap.
pub fn fast_config(data_dir: &std::path::Path, extra: &[&str]) -> ServeConfig {
    let dir = data_dir.display().to_string();
    let mut argv = vec![
        "game-node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir,
        "--chain-length",
        "5000",
        "--betting-window-ms",
        "1200",
        "--pause-ms",
        "300",
        "--doubling-ms",
        "1000",
        "--max-multiplier-x100",
        "2000",
        "--admin-token",
        ADMIN,
        "--jwt-secret",
        "test-jwt-secret-0123456789",
        "--rate-limit-ip",
        "0",
        "--rate-limit-player",
        "0",
        "--demo-credit",
        "100000",
    ];
    // Flags in `extra` replace the defaults above (clap refuses a flag given twice).
    let mut i = 1;
    while i + 1 < argv.len() {
        if extra.contains(&argv[i]) {
            argv.drain(i..i + 2);
        } else {
            i += 2;
        }
    }
    argv.extend_from_slice(extra);
    Args::parse_from(argv).serve
}

pub struct TestServer {
    pub url: String,
    pub ws_url: String,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
    api: Client,
}

impl std::ops::Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.api
    }
}

impl TestServer {
    pub async fn start(extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        TestServer::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> TestServer {
        let cfg = fast_config(dir.path(), extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(game_node::node::run(
            listener,
            cfg,
            shutdown.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let s = TestServer {
            url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/ws"),
            dir,
            shutdown,
            task: Some(task),
            http: reqwest::Client::new(),
            api: Client::new(format!("http://{addr}")),
        };
        // Generous: test binaries run many nodes in parallel on two shared cores.
        for _ in 0..600 {
            if s.task.as_ref().is_some_and(|t| t.is_finished()) {
                let mut s = s;
                let result = s.task.take().expect("task").await;
                panic!("the node stopped before it was ready: {result:?}");
            }
            if let Ok(r) = s.http.get(format!("{}/readyz", s.url)).send().await
                && r.status().is_success()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the node did not become ready");
    }

    /// Graceful stop; returns the data directory so a restart can reuse it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("node ended cleanly");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Registers a player and returns (token, player id).
    pub async fn register(&self, name: &str) -> (String, String) {
        let p = self.api.register(name).await;
        (p.token, p.id)
    }

    /// Waits until the current round is in `phase`; returns the round.
    pub async fn wait_phase(&self, phase: &str) -> Value {
        self.api.wait_phase(phase, 0).await
    }

    /// Waits for a betting window with at least `margin_ms` of it left.
    pub async fn wait_betting(&self, margin_ms: i64) -> Value {
        self.api.wait_phase("betting", margin_ms).await
    }

    /// The conservation audit must hold exactly: balances + house result = credits − withdrawals.
    pub async fn assert_audit(&self) -> Value {
        self.api.assert_audit(ADMIN).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
