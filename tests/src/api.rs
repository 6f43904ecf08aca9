//! One REST client for every test that talks to a game node, in-process or a process of the
//! built binary: answers are `(status, JSON body)`, so a test asserts on both in one line.
//!
//! A request that never got an answer (connection refused or reset, the client's timeout) is
//! status 0 with a null body: fault tests expect exactly that while a node or its link is down,
//! and every other test's `assert_eq!(status, 200, …)` then names it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The password [`Client::register`] gives every player (a test that logs in uses it).
pub const PASSWORD: &str = "correct-horse";

/// How long the `wait_*` helpers wait: generous, because test binaries run several nodes at once
/// on two shared cores.
pub const WAIT: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch, the unit of every `*_at_ms` field.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A player made by [`Client::register`].
#[derive(Debug, Clone)]
pub struct Registered {
    pub token: String,
    pub id: String,
}

/// A game node's REST API at `base` (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// A client with a 10 s request timeout (a node that hangs fails the test instead of it).
    pub fn new(base: impl Into<String>) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Client::with_http(base, http)
    }

    pub fn with_http(base: impl Into<String>, http: reqwest::Client) -> Client {
        Client {
            base: base.into(),
            http,
        }
    }

    async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
        match r.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// `GET path` without credentials.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        Client::answer(self.http.get(format!("{}{path}", self.base))).await
    }

    /// `GET path` with a bearer token (a session, or the admin token).
    pub async fn get_auth(&self, path: &str, token: &str) -> (u16, Value) {
        Client::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST path` with a JSON body, an optional bearer token and an optional `Idempotency-Key`.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        Client::answer(r).await
    }

    /// Registers `name` with [`PASSWORD`]; panics unless the node answers 201.
    pub async fn register(&self, name: &str) -> Registered {
        let (s, v) = self
            .post(
                "/api/v1/auth/register",
                None,
                None,
                json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(s, 201, "register {name}: {v}");
        Registered {
            token: v["token"].as_str().expect("token").to_string(),
            id: v["player"]["id"].as_str().expect("id").to_string(),
        }
    }

    /// The player's balance in minor units.
    pub async fn balance(&self, token: &str) -> i64 {
        let (s, v) = self.get_auth("/api/v1/me", token).await;
        assert_eq!(s, 200, "{v}");
        v["balance"].as_i64().expect("balance")
    }

    /// `POST /api/v1/bets` under idempotency key `key`.
    pub async fn bet(&self, token: &str, key: &str, stake: i64, auto: Option<u64>) -> (u16, Value) {
        let mut body = json!({"stake": stake});
        if let Some(a) = auto {
            body["auto_cashout_x100"] = json!(a);
        }
        self.post("/api/v1/bets", Some(token), Some(key), body)
            .await
    }

    /// `POST /api/v1/bets/{id}/cashout` under idempotency key `key`.
    pub async fn cash_out(&self, token: &str, key: &str, bet_id: &str) -> (u16, Value) {
        self.post(
            &format!("/api/v1/bets/{bet_id}/cashout"),
            Some(token),
            Some(key),
            json!({}),
        )
        .await
    }

    /// `GET /api/v1/round`: `{"round": …|null, "bets": […]}`.
    pub async fn current(&self) -> Value {
        self.get("/api/v1/round").await.1
    }

    /// Waits for a current round in `phase`; for `betting`, one with at least `margin_ms` of its
    /// window left. Returns the round.
    pub async fn wait_phase(&self, phase: &str, margin_ms: i64) -> Value {
        self.try_wait_phase(phase, margin_ms, WAIT)
            .await
            .unwrap_or_else(|last| panic!("{} never reached {phase}: {last}", self.base))
    }

    /// [`Client::wait_phase`] that gives up after `within` with the last round it saw, so a
    /// caller can add its own evidence (a fleet adds its nodes' logs).
    pub async fn try_wait_phase(
        &self,
        phase: &str,
        margin_ms: i64,
        within: Duration,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.current().await["round"].clone();
            let ok = r["phase"] == phase
                && (phase != "betting"
                    || r["betting_closes_at_ms"].as_i64().unwrap_or(0) - now_ms() >= margin_ms);
            if ok {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                return Err(r);
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// Waits until round `number` is settled in the ledger: crashed or voided, no bet open (the
    /// hash is served only then). Returns `GET /api/v1/rounds/{number}`.
    pub async fn wait_settled(&self, number: u64) -> Value {
        self.try_wait_round(number, |_| true, WAIT)
            .await
            .unwrap_or_else(|last| panic!("round {number} never settled on {}: {last}", self.base))
    }

    /// Like [`Client::wait_settled`], for a round that must have crashed (not been voided).
    pub async fn wait_finished(&self, number: u64) -> Value {
        self.try_wait_round(number, |v| v["round"]["phase"] == "crashed", WAIT)
            .await
            .unwrap_or_else(|last| panic!("round {number} never crashed on {}: {last}", self.base))
    }

    /// Waits until round `number` is settled and `done` holds for its record; after `within`,
    /// the last record seen.
    pub async fn try_wait_round(
        &self,
        number: u64,
        done: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + within;
        loop {
            let (s, v) = self.get(&format!("/api/v1/rounds/{number}")).await;
            let open_bets = v["bets"]
                .as_array()
                .is_none_or(|b| b.iter().any(|b| b["status"] == "open"));
            // The settlement root is written in the ledger's settling transaction: before it, the
            // live round may already show its hash (the arbiter's view after the crash) while the
            // ledger has not settled it yet.
            let settled = v["round"]["hash"].is_string() && v["settlement_root"].is_string();
            if s == 200 && !open_bets && settled && done(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(v);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The conservation audit, which must hold exactly: balances + house result = credits −
    /// withdrawals, with no rule violated. Returns the report.
    pub async fn assert_audit(&self, admin: &str) -> Value {
        let (s, v) = self.get_auth("/api/v1/admin/audit", admin).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["balanced"], true, "audit failed: {v:#}");
        assert_eq!(v["violations"], json!([]), "{v:#}");
        v
    }

    /// Waits until `/readyz` answers 2xx, at most `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "game-node at {} never became ready",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A series of the Prometheus text at `/metrics`: `crashfleet_leader` or
    /// `crashfleet_bets_total{outcome="accepted"}` (the named labels; others, such as `table`,
    /// are ignored; several matching series are summed). `None` when absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        crate::prom::value(&text, name)
    }
}
