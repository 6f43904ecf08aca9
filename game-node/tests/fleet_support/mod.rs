//! A real fleet for tests: a private `redis-server`, a fresh PostgreSQL database (through
//! `CRASHFLEET_TEST_DATABASE_URL`, see tests/pg/pg.sh) and N `game-node` processes of the built
//! binary. Nothing is mocked: processes are killed with real signals.
//!
//! Without `redis-server` or the PostgreSQL URL the tests print SKIPPED, except under `CI=true`
//! where they fail (tests/run.sh provides both).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

pub const ADMIN: &str = "fleet-admin-token-0123456789";
pub const JWT: &str = "fleet-jwt-secret-0123456789";
const URL_ENV: &str = "CRASHFLEET_TEST_DATABASE_URL";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Whether the fleet tests can run here; prints why not (or panics under CI).
pub fn available(test: &str) -> Option<String> {
    let pg = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty());
    let redis = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (pg, redis) {
        (Some(url), true) => Some(url),
        (pg, redis) => {
            let why = format!(
                "{test}: needs redis-server on PATH ({}) and {URL_ENV} ({}); tests/run.sh provides both",
                if redis { "ok" } else { "missing" },
                if pg.is_some() { "ok" } else { "unset" }
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED {why}");
            None
        }
    }
}

/// A private Redis on a free loopback port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// A Redis that speaks only TLS and wants a password, as a table's Redis should be run: a CA and
/// a server certificate for `localhost` made with openssl in `dir`, the server on loopback.
pub struct TlsRedis {
    pub port: u16,
    /// The CA's certificate (PEM): clients trust it through `SSL_CERT_FILE`.
    pub ca: PathBuf,
    child: Child,
}

impl TlsRedis {
    pub const PASSWORD: &'static str = "tls-test-password-0123";

    pub fn start(dir: &Path) -> TlsRedis {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=crashfleet test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("san");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let port = free_port();
        let path = |f: &str| dir.join(f).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                Self::PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (TLS)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis {
            port,
            ca: dir.join("ca.pem"),
            child,
        }
    }

    /// `rediss://` with the password, as the operator's URL Secret would hold it.
    pub fn url(&self) -> String {
        format!("rediss://:{}@localhost:{}", Self::PASSWORD, self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Redis::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Redis {
        let mut r = Redis {
            port,
            child: None,
            dir: dir.to_path_buf(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill -9 and start again on the same port: every key is gone (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh database on the test PostgreSQL server, dropped on [`Db::drop_now`].
pub struct Db {
    pub url: String,
    admin: String,
    name: String,
}

impl Db {
    pub async fn create(admin: &str, test: &str) -> Db {
        let short: String = test.chars().take(30).collect();
        let name = format!("cf_{short}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        let (base, _) = admin.rsplit_once('/').expect("a database URL");
        Db {
            url: format!("{base}/{name}"),
            admin: admin.to_string(),
            name,
        }
    }

    /// The same database through another loopback port (a proxy).
    pub fn url_via_port(&self, port: u16) -> String {
        let (creds, rest) = self.url.rsplit_once('@').expect("a URL with credentials");
        let (_, db) = rest.split_once('/').expect("a database");
        format!("{creds}@127.0.0.1:{port}/{db}")
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        let (_, rest) = self.url.rsplit_once('@').expect("a URL with credentials");
        let (hostport, _) = rest.split_once('/').expect("a database");
        hostport
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("a port")
    }

    pub async fn drop_now(&self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// One game-node process.
pub struct Node {
    pub id: String,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_game-node"))
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn game-node");
        self.child = Some(child);
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Kill -9, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the process to exit; returns how long that took.
    pub fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        t.elapsed()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits for a process already signalled to exit; returns how long that took.
    pub fn terminate_wait(&mut self) -> Duration {
        let t = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        t.elapsed()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A SIGSTOPped node must be continued before it can die.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

/// Settings a test may change.
#[derive(Clone)]
pub struct FleetOpts {
    pub nodes: usize,
    pub election: &'static str,
    pub betting_ms: u64,
    pub pause_ms: u64,
    pub doubling_ms: u64,
    pub max_x100: u64,
    /// Redis URL override per node (index → URL), e.g. through a proxy.
    pub redis_for: Vec<Option<String>>,
    /// PostgreSQL port override per node (index → port of a proxy to the test server).
    pub db_port_for: Vec<Option<u16>>,
    /// Table per node (index → table id); default `main`.
    pub table_for: Vec<Option<String>>,
    pub extra: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Default for FleetOpts {
    fn default() -> Self {
        FleetOpts {
            nodes: 3,
            election: "redis",
            betting_ms: 1_500,
            pause_ms: 300,
            doubling_ms: 2_500,
            max_x100: 5_000,
            redis_for: Vec::new(),
            db_port_for: Vec::new(),
            table_for: Vec::new(),
            extra: Vec::new(),
            envs: Vec::new(),
        }
    }
}

pub struct Fleet {
    pub redis: Redis,
    pub db: Db,
    pub nodes: Vec<Node>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn start(test: &str, admin_url: &str, opts: FleetOpts) -> Fleet {
        Fleet::start_with_redis_port(test, admin_url, opts, free_port()).await
    }

    pub async fn start_with_redis_port(
        test: &str,
        admin_url: &str,
        opts: FleetOpts,
        redis_port: u16,
    ) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = Redis::start_on(dir.path(), redis_port);
        let db = Db::create(admin_url, test).await;
        let seed = dir.path().join("chain.seed");
        let out = Command::new(env!("CARGO_BIN_EXE_game-node"))
            .args(["chain", "new", "--length", "20000", "--out"])
            .arg(&seed)
            .output()
            .expect("chain new");
        assert!(out.status.success(), "chain new: {out:?}");
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let port = free_port();
            let id = format!("node-{}", i + 1);
            let redis_url = opts
                .redis_for
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| redis.url());
            let mut args: Vec<String> = [
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                &dir.path().join(&id).display().to_string(),
                "--node-id",
                &id,
                "--table",
                opts.table_for
                    .get(i)
                    .cloned()
                    .flatten()
                    .as_deref()
                    .unwrap_or("main"),
                "--database-url",
                &opts
                    .db_port_for
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or_else(|| db.url.clone(), |p| db.url_via_port(p)),
                "--redis-url",
                &redis_url,
                "--leader-election",
                opts.election,
                "--chain-seed-file",
                &seed.display().to_string(),
                "--chain-length",
                "20000",
                "--betting-window-ms",
                &opts.betting_ms.to_string(),
                "--pause-ms",
                &opts.pause_ms.to_string(),
                "--doubling-ms",
                &opts.doubling_ms.to_string(),
                "--max-multiplier-x100",
                &opts.max_x100.to_string(),
                "--admin-token",
                ADMIN,
                "--jwt-secret",
                JWT,
                "--rate-limit-ip",
                "0",
                "--rate-limit-player",
                "0",
                // Every test client comes from 127.0.0.1: per-address caps would count them all
                // as one client (tests/limits.rs tests the caps).
                "--max-connections-per-ip",
                "0",
                "--max-ws-per-ip",
                "0",
                "--db-pool",
                "4",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(opts.extra.iter().cloned());
            let mut node = Node {
                id: id.clone(),
                port,
                url: format!("http://127.0.0.1:{port}"),
                log: dir.path().join(format!("{id}.log")),
                child: None,
                args,
                envs: opts.envs.clone(),
            };
            node.spawn();
            nodes.push(node);
            if i == 0 {
                // The first node commits the table's fairness (one commitment, no race noise).
                wait_ready_url(&reqwest::Client::new(), &nodes[0].url).await;
            }
        }
        let fleet = Fleet {
            redis,
            db,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http"),
            dir,
        };
        for n in &fleet.nodes {
            wait_ready_url(&fleet.http, &n.url).await;
        }
        fleet
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = n.log_text();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "---- {} ----\n{}",
                    n.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn get(&self, i: usize, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.nodes[i].url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn post(
        &self,
        i: usize,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.nodes[i].url))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        match r.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Registers a player through node `i`; returns the session token.
    pub async fn register(&self, i: usize, name: &str) -> String {
        let (s, v) = self
            .post(
                i,
                "/api/v1/auth/register",
                None,
                None,
                json!({"username": name, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(s, 201, "register {name}: {v}");
        v["token"].as_str().expect("token").to_string()
    }

    pub async fn balance(&self, i: usize, token: &str) -> i64 {
        let (s, v) = self.get(i, "/api/v1/me", Some(token)).await;
        assert_eq!(s, 200, "{v}");
        v["balance"].as_i64().expect("balance")
    }

    pub async fn bet(
        &self,
        i: usize,
        token: &str,
        key: &str,
        stake: i64,
        auto: Option<u64>,
    ) -> (u16, Value) {
        let mut body = json!({"stake": stake});
        if let Some(a) = auto {
            body["auto_cashout_x100"] = json!(a);
        }
        self.post(i, "/api/v1/bets", Some(token), Some(key), body)
            .await
    }

    pub async fn cash_out(&self, i: usize, token: &str, key: &str, bet_id: &str) -> (u16, Value) {
        self.post(
            i,
            &format!("/api/v1/bets/{bet_id}/cashout"),
            Some(token),
            Some(key),
            json!({}),
        )
        .await
    }

    /// The fleet view as node `i` reports it.
    pub async fn fleet_view(&self, i: usize) -> Value {
        self.get(i, "/api/v1/fleet", None).await.1
    }

    /// Waits until node `i` reports a leader other than `not` with a term above `above`.
    pub async fn wait_leader(&self, i: usize, not: Option<&str>, above: u64) -> (String, u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.fleet_view(i).await;
            if let (Some(l), Some(t)) = (v["leader"].as_str(), v["term"].as_u64())
                && Some(l) != not
                && t > above
            {
                return (l.to_string(), t);
            }
            assert!(
                Instant::now() < deadline,
                "no new leader (view {v})\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("a node")
    }

    /// The current round as node `i` sees it.
    pub async fn round(&self, i: usize) -> Value {
        self.get(i, "/api/v1/round", None).await.1["round"].clone()
    }

    /// Waits on node `i` for a round in `phase` (and, for betting, `margin_ms` of window left).
    pub async fn wait_phase(&self, i: usize, phase: &str, margin_ms: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.round(i).await;
            let ok = r["phase"] == phase
                && (phase != "betting"
                    || r["betting_closes_at_ms"].as_i64().unwrap_or(0) - now_ms() >= margin_ms);
            if ok {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {phase} on node {i}: {r}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// Waits until round `number` is settled in the ledger (crashed or voided, no open bet).
    pub async fn wait_settled(&self, i: usize, number: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, v) = self.get(i, &format!("/api/v1/rounds/{number}"), None).await;
            let open_bets = v["bets"]
                .as_array()
                .is_none_or(|b| b.iter().any(|b| b["status"] == "open"));
            // The hash is served only once the round is crashed or voided in the ledger.
            if s == 200 && !open_bets && v["round"]["hash"].is_string() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "round {number} never settled: {v}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// How round `number` ended in the ledger: `crashed` or `voided`.
    pub async fn round_status(&self, i: usize, number: u64) -> String {
        let (_, rounds) = self.get(i, "/api/v1/rounds?limit=100", None).await;
        rounds
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["number"].as_u64() == Some(number)))
            .and_then(|r| r["status"].as_str())
            .unwrap_or("unknown")
            .to_string()
    }

    /// The money and leadership invariants after a fault: the audit is exact, round numbers are contiguous
    /// from 1, every crashed round verifies against the commitment, no bet is still open in a
    /// finished round, and no bet was settled twice (the audit's rules include that).
    pub async fn assert_invariants(&self, i: usize) -> Vec<Value> {
        let (s, audit) = self.get(i, "/api/v1/admin/audit", Some(ADMIN)).await;
        assert_eq!(s, 200, "{audit}");
        assert_eq!(audit["balanced"], true, "audit: {audit:#}\n{}", self.logs());
        assert_eq!(audit["violations"], json!([]), "{audit:#}");
        let (_, fairness) = self.get(i, "/api/v1/fairness", None).await;
        let terminating = game_node::fairness::parse_hash(
            fairness["terminating_hash"]
                .as_str()
                .expect("terminating hash"),
        )
        .expect("hash");
        let calc = game_node::fairness::CrashCalculator::new(
            fairness["salt"].as_str().expect("salt"),
            fairness["house_edge_bp"].as_u64().expect("edge") as u32,
            fairness["max_x100"].as_u64().unwrap_or(100_000_000),
        )
        .expect("calculator");
        let (_, rounds) = self.get(i, "/api/v1/rounds?limit=100", None).await;
        let mut rounds: Vec<Value> = rounds.as_array().expect("rounds").clone();
        // The list holds the newest 100; a long run (the soak) has more: fetch the older ones one
        // by one, in the list's shape.
        let oldest = rounds.iter().filter_map(|r| r["number"].as_u64()).min();
        for n in 1..oldest.unwrap_or(1) {
            let (s, d) = self.get(i, &format!("/api/v1/rounds/{n}"), None).await;
            if s != 200 {
                continue; // a gap: the contiguity check below names it
            }
            let r = &d["round"];
            rounds.push(json!({
                "number": r["number"],
                "status": r["phase"],
                "hash": r["hash"],
                "crash_x100": r["crash_x100"],
            }));
        }
        rounds.sort_by_key(|r| r["number"].as_u64());
        for (k, r) in rounds.iter().enumerate() {
            assert_eq!(
                r["number"].as_u64(),
                Some(k as u64 + 1),
                "round numbers must be contiguous from 1: {rounds:?}"
            );
            if r["status"] == "crashed" {
                let h = game_node::fairness::parse_hash(r["hash"].as_str().expect("hash"))
                    .expect("hash");
                assert!(
                    game_node::fairness::verify_commitment(&h, &terminating, k as u64 + 1),
                    "round {} does not verify against the commitment",
                    k + 1
                );
                assert_eq!(
                    r["crash_x100"].as_u64(),
                    Some(calc.crash_x100(&h)),
                    "round {}'s crash point is not the one its hash fixes",
                    k + 1
                );
            }
        }
        rounds
    }
}

pub async fn wait_ready_url(http: &reqwest::Client, base: &str) {
    for _ in 0..1200 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("game-node at {base} never became ready");
}

/// A TCP fault proxy on loopback: a test can cut a node's link (every connection dropped, new ones
/// refused) or slow it (each chunk forwarded after a delay, both ways), then restore it.
pub struct Proxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<LinkMode>,
    /// Set when a lose-replies pattern has struck: it strikes once per `lose_reply_after`.
    struck: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct LinkMode {
    cut: bool,
    delay_ms: u64,
    /// Once a request on a connection contains these bytes, that connection's replies are lost
    /// (the request itself is delivered), and the connection is closed a moment later.
    lose_replies_after: Option<Vec<u8>>,
}

/// How long a connection whose replies are being lost stays open: past the node's Redis command
/// timeout (1.5 s), so the node sees a request that was sent and never answered.
const LOST_REPLY_CLOSE: Duration = Duration::from_millis(2_500);

/// Forwards one direction, honouring the current delay; ends when either side closes. `upstream`
/// pumps watch for the lose-replies pattern and raise `losing`; downstream pumps then discard.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: tokio::sync::watch::Receiver<LinkMode>,
    upstream: bool,
    losing: std::sync::Arc<tokio::sync::Notify>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    struck: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (delay, pattern) = {
            let m = mode.borrow();
            (m.delay_ms, m.lose_replies_after.clone())
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if upstream
            && let Some(p) = pattern
            && !p.is_empty()
            && buf[..n].windows(p.len()).any(|w| w == p.as_slice())
            && struck
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            lost.store(true, Ordering::SeqCst);
            losing.notify_one();
        }
        if !upstream && lost.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, rx) = tokio::sync::watch::channel(LinkMode::default());
        let struck = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let struck_all = struck.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if rx.borrow().cut {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                let struck = struck_all.clone();
                tokio::spawn(async move {
                    let Ok(outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    let losing = std::sync::Arc::new(tokio::sync::Notify::new());
                    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let closing = {
                        let losing = losing.clone();
                        async move {
                            losing.notified().await;
                            tokio::time::sleep(LOST_REPLY_CLOSE).await;
                        }
                    };
                    tokio::select! {
                        () = pump(ir, ow, rx.clone(), true, losing.clone(), lost.clone(), struck.clone()) => {}
                        () = pump(or, iw, rx.clone(), false, losing.clone(), lost.clone(), struck) => {}
                        () = closing => {}
                        _ = rx.wait_for(|m| m.cut) => {}
                    }
                });
            }
        });
        Proxy { port, mode, struck }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_modify(|m| m.cut = true);
    }

    /// Delays every chunk by `ms` in both directions (0: full speed).
    pub fn slow(&self, ms: u64) {
        self.mode.send_modify(|m| m.delay_ms = ms);
    }

    /// The next request (on any connection) that contains `pattern` is delivered, but its reply
    /// and everything after it on that connection are lost, and the connection is closed after
    /// `LOST_REPLY_CLOSE`: what a node sees when Redis decided and the answer never came back.
    /// Other and new connections are unaffected.
    pub fn lose_reply_after(&self, pattern: &str) {
        self.struck
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.mode
            .send_modify(|m| m.lose_replies_after = Some(pattern.as_bytes().to_vec()));
    }

    /// Back to a clean link.
    pub fn restore(&self) {
        self.mode.send_replace(LinkMode::default());
    }
}

/// A private PostgreSQL (tests/pg/pg.sh with its own directory) that a test may restart.
pub struct OwnPg {
    pub url: String,
    dir: PathBuf,
}

impl OwnPg {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pg/pg.sh")
    }

    pub fn start(dir: &Path) -> OwnPg {
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .env("CRASHFLEET_PG_DIR", dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("pg.sh start");
        assert!(out.status.success(), "pg.sh start failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().expect("a URL line");
        let url = line
            .strip_prefix("CRASHFLEET_TEST_DATABASE_URL=")
            .expect("the URL line")
            .to_string();
        OwnPg {
            url,
            dir: dir.to_path_buf(),
        }
    }

    /// Fast restart (connections are cut, in-flight transactions roll back), same port.
    pub fn restart(&self) {
        let pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl";
        let data = self.dir.join("data");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", pg_ctl]);
            c
        } else {
            Command::new(pg_ctl)
        };
        let status = cmd
            .args([
                "-D",
                &data.display().to_string(),
                "-m",
                "fast",
                "-w",
                "restart",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl restart");
        assert!(status.success(), "pg_ctl restart failed");
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .env("CRASHFLEET_PG_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
