//! A real fleet for tests: a private `redis-server`, a fresh PostgreSQL database and N
//! `game-node` processes of the built binary. Nothing is mocked: processes are killed with real
//! signals, and [`crate::proxy::Proxy`] cuts or slows their links.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::Client;
use crate::db::TestDb;
use crate::free_port;
use crate::redis::TestRedis;
use crate::require;

/// The fleet's admin token (`--admin-token`).
pub const ADMIN: &str = "fleet-admin-token-0123456789";
/// The fleet's session-signing secret (`--jwt-secret`), shared by every node.
pub const JWT: &str = "fleet-jwt-secret-0123456789";

/// One game-node process.
pub struct Node {
    pub id: String,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
    /// The node's REST API.
    pub api: Client,
    binary: PathBuf,
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
        let child = Command::new(&self.binary)
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
    /// The game-node binary: [`require::game_node_binary`] by default.
    pub binary: PathBuf,
    pub nodes: usize,
    /// `redis` or `kubernetes` (the Lease; the test then passes the kubeconfig in `envs`).
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
    /// More flags per node (index → flags), after `extra`.
    pub extra_for: Vec<Vec<String>>,
    /// Each node advertises its own address as `--public-url` (for the lobby).
    pub advertise: bool,
    /// Rounds the table's hash chain covers.
    pub chain_length: u64,
    pub extra: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Default for FleetOpts {
    fn default() -> Self {
        FleetOpts {
            binary: require::game_node_binary()
                .expect("the game-node binary (cargo test --workspace builds it)"),
            nodes: 3,
            election: "redis",
            betting_ms: 1_500,
            pause_ms: 300,
            doubling_ms: 2_500,
            max_x100: 5_000,
            redis_for: Vec::new(),
            db_port_for: Vec::new(),
            table_for: Vec::new(),
            extra_for: Vec::new(),
            advertise: false,
            chain_length: 20_000,
            extra: Vec::new(),
            envs: Vec::new(),
        }
    }
}

pub struct Fleet {
    pub redis: TestRedis,
    pub db: TestDb,
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
        let redis = TestRedis::start_on(dir.path(), redis_port);
        let db = TestDb::create(admin_url, test).await;
        let seed = dir.path().join("chain.seed");
        let out = Command::new(&opts.binary)
            .args([
                "chain",
                "new",
                "--length",
                &opts.chain_length.to_string(),
                "--out",
            ])
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
                &opts.chain_length.to_string(),
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
                // as one client (game-node/tests/limits.rs tests the caps).
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
            args.extend(opts.extra_for.get(i).cloned().unwrap_or_default());
            let url = format!("http://127.0.0.1:{port}");
            if opts.advertise {
                args.extend(["--public-url".to_string(), format!("{url}/")]);
            }
            let mut node = Node {
                id: id.clone(),
                port,
                api: Client::new(url.clone()),
                url,
                log: dir.path().join(format!("{id}.log")),
                binary: opts.binary.clone(),
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
            http: Client::new("").http,
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

    /// `GET path` on node `i`, with a bearer token when given; status 0 when it did not answer.
    pub async fn get(&self, i: usize, path: &str, token: Option<&str>) -> (u16, Value) {
        let api = &self.nodes[i].api;
        match token {
            Some(t) => api.get_auth(path, t).await,
            None => api.get(path).await,
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
        self.nodes[i].api.post(path, token, key, body).await
    }

    /// Registers a player through node `i`; returns the session token.
    pub async fn register(&self, i: usize, name: &str) -> String {
        self.nodes[i].api.register(name).await.token
    }

    pub async fn balance(&self, i: usize, token: &str) -> i64 {
        self.nodes[i].api.balance(token).await
    }

    pub async fn bet(
        &self,
        i: usize,
        token: &str,
        key: &str,
        stake: i64,
        auto: Option<u64>,
    ) -> (u16, Value) {
        self.nodes[i].api.bet(token, key, stake, auto).await
    }

    pub async fn cash_out(&self, i: usize, token: &str, key: &str, bet_id: &str) -> (u16, Value) {
        self.nodes[i].api.cash_out(token, key, bet_id).await
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
        self.nodes[i]
            .api
            .try_wait_phase(phase, margin_ms, crate::api::WAIT)
            .await
            .unwrap_or_else(|r| panic!("never reached {phase} on node {i}: {r}\n{}", self.logs()))
    }

    /// Waits until round `number` is settled in the ledger (crashed or voided, no open bet).
    pub async fn wait_settled(&self, i: usize, number: u64) -> Value {
        self.nodes[i]
            .api
            .try_wait_round(number, |_| true, crate::api::WAIT)
            .await
            .unwrap_or_else(|v| panic!("round {number} never settled: {v}\n{}", self.logs()))
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
        let terminating = crashfleet_core::fairness::parse_hash(
            fairness["terminating_hash"]
                .as_str()
                .expect("terminating hash"),
        )
        .expect("hash");
        let calc = crashfleet_core::fairness::CrashCalculator::new(
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
                let h = crashfleet_core::fairness::parse_hash(r["hash"].as_str().expect("hash"))
                    .expect("hash");
                assert!(
                    crashfleet_core::fairness::verify_commitment(&h, &terminating, k as u64 + 1),
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

/// Waits up to 60 s for the node at `base` to answer `/readyz` (a node's first start commits
/// the chain and migrates the database).
pub async fn wait_ready_url(http: &reqwest::Client, base: &str) {
    Client::with_http(base, http.clone())
        .wait_ready(Duration::from_secs(60))
        .await;
}

/// A private PostgreSQL (tests/pg/pg.sh with its own directory) that a test may restart.
pub struct OwnPg {
    pub url: String,
    dir: PathBuf,
}

impl OwnPg {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pg/pg.sh")
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
