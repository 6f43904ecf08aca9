//! Test support: a real game node on `127.0.0.1:0` with a temporary data directory and fast
//! rounds, stopped when dropped, plus a small REST client and the conservation audit check that
//! every scenario ends with.
#![allow(dead_code)]

use std::time::Duration;

use clap::Parser;
use game_node::config::ServeConfig;
use serde_json::{Value, json};
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

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        let r = r.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Registers a player and returns (token, player id).
    pub async fn register(&self, name: &str) -> (String, String) {
        let (s, v) = self
            .post(
                "/api/v1/auth/register",
                None,
                None,
                json!({"username": name, "password": "correct-horse"}),
            )
            .await;
        assert_eq!(s, 201, "register {name}: {v}");
        (
            v["token"].as_str().expect("token").to_string(),
            v["player"]["id"].as_str().expect("id").to_string(),
        )
    }

    pub async fn balance(&self, token: &str) -> i64 {
        let (s, v) = self.get_auth("/api/v1/me", token).await;
        assert_eq!(s, 200, "{v}");
        v["balance"].as_i64().expect("balance")
    }

    pub async fn bet(&self, token: &str, key: &str, stake: i64, auto: Option<u64>) -> (u16, Value) {
        let mut body = json!({"stake": stake});
        if let Some(a) = auto {
            body["auto_cashout_x100"] = json!(a);
        }
        self.post("/api/v1/bets", Some(token), Some(key), body)
            .await
    }

    pub async fn cash_out(&self, token: &str, key: &str, bet_id: &str) -> (u16, Value) {
        self.post(
            &format!("/api/v1/bets/{bet_id}/cashout"),
            Some(token),
            Some(key),
            json!({}),
        )
        .await
    }

    pub async fn current(&self) -> Value {
        self.get("/api/v1/round").await.1
    }

    /// Waits until the current round is in `phase`; returns the round.
    pub async fn wait_phase(&self, phase: &str) -> Value {
        for _ in 0..600 {
            let c = self.current().await;
            if c["round"]["phase"] == phase {
                return c["round"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the round never reached phase {phase}");
    }

    /// Waits for a fresh betting window (at least `margin_ms` of it left).
    pub async fn wait_betting(&self, margin_ms: i64) -> Value {
        loop {
            let r = self.wait_phase("betting").await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as i64;
            if r["betting_closes_at_ms"].as_i64().expect("closes") - now >= margin_ms {
                return r;
            }
            self.wait_phase("flying").await;
        }
    }

    /// Waits until round `number` is finished; returns its public record.
    pub async fn wait_finished(&self, number: u64) -> Value {
        for _ in 0..1500 {
            let (s, v) = self.get(&format!("/api/v1/rounds/{number}")).await;
            // Crashed by the clock *and* settled in the ledger (the settlement follows the crash
            // instant by a transaction).
            let settled = v["bets"]
                .as_array()
                .is_some_and(|b| b.iter().all(|b| b["status"] != "open"));
            if s == 200
                && v["round"]["phase"] == "crashed"
                && v["round"]["hash"].is_string()
                && settled
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("round {number} never finished");
    }

    /// The conservation audit must hold exactly: balances + house result = credits − withdrawals.
    pub async fn assert_audit(&self) -> Value {
        let (s, v) = self.get_auth("/api/v1/admin/audit", ADMIN).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["balanced"], true, "audit failed: {v:#}");
        assert_eq!(v["violations"], json!([]), "{v:#}");
        v
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
