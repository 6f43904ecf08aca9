//! Fleet mode with the real servers: three `game-node` processes on one PostgreSQL and one Redis,
//! bets and cash-outs arriving on all of them, while the leader is killed (-9) in betting and in
//! flight, paused past its lease, terminated; while Redis restarts; while a replica loses Redis.
//! After each fault: the audit is exact, no bet is settled twice or lost, every round verifies
//! against the commitment, round numbers are contiguous (`Fleet::assert_invariants`).
//!
//! Failover times are printed (`FAILOVER ...` lines) for the closing notes and docs; the asserted
//! bounds are the product's failover aims (2 s with the Redis backend), with no slack taken off
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crashfleet_tests::fleet::{Fleet, FleetOpts};
use crashfleet_tests::witness::LogWitness;
use crashfleet_tests::{require, wait};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Players betting and cashing out on every node until stopped: each round, every player bets
/// through "their" node (some with an auto-cash-out), and in flight cashes out through the
/// *next* node. Transport failures and 503s are expected while nodes die; a 500 never is.
struct Load {
    stop: Arc<AtomicBool>,
    internal_errors: Arc<AtomicU64>,
    accepted_bets: Arc<AtomicU64>,
    accepted_cashouts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    async fn start(fleet: &Fleet, players: usize) -> Load {
        let urls: Vec<String> = fleet.nodes.iter().map(|n| n.url.clone()).collect();
        let mut tokens = Vec::new();
        for p in 0..players {
            let token = fleet
                .register(
                    p % urls.len(),
                    &format!("p{p}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
                )
                .await;
            tokens.push(token);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let internal_errors = Arc::new(AtomicU64::new(0));
        let accepted_bets = Arc::new(AtomicU64::new(0));
        let accepted_cashouts = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http");
        let task = {
            let (stop, errs, bets, cashouts) = (
                stop.clone(),
                internal_errors.clone(),
                accepted_bets.clone(),
                accepted_cashouts.clone(),
            );
            tokio::spawn(async move {
                let mut round_seen = 0u64;
                let mut open: Vec<(usize, String)> = Vec::new();
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    k += 1;
                    let node = (k as usize) % urls.len();
                    let r: Value = match http
                        .get(format!("{}/api/v1/round", urls[node]))
                        .send()
                        .await
                    {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    let round = &r["round"];
                    let number = round["number"].as_u64().unwrap_or(0);
                    if round["phase"] == "betting" && number > round_seen {
                        round_seen = number;
                        open.clear();
                        for (p, token) in tokens.iter().enumerate() {
                            let n = (p + k as usize) % urls.len();
                            let mut body = json!({"stake": 100 + p as i64});
                            if p % 3 == 0 {
                                body["auto_cashout_x100"] = json!(150 + 10 * p as u64);
                            }
                            let resp = http
                                .post(format!("{}/api/v1/bets", urls[n]))
                                .bearer_auth(token)
                                .header("Idempotency-Key", format!("b{number}-{p}"))
                                .json(&body)
                                .send()
                                .await;
                            if let Ok(resp) = resp {
                                let s = resp.status().as_u16();
                                if s == 500 {
                                    errs.fetch_add(1, Ordering::SeqCst);
                                }
                                if s == 201 || s == 200 {
                                    bets.fetch_add(1, Ordering::SeqCst);
                                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                                    if let Some(id) = v["bet_id"].as_str()
                                        && p % 3 != 0
                                    {
                                        open.push((p, id.to_string()));
                                    }
                                }
                            }
                        }
                    } else if round["phase"] == "flying" && number == round_seen && !open.is_empty()
                    {
                        // Cash out half of the open bets, through another node than the bet's.
                        let take = open.len().div_ceil(2);
                        for (p, id) in open.drain(..take).collect::<Vec<_>>() {
                            let n = (p + 1 + k as usize) % urls.len();
                            let resp = http
                                .post(format!("{}/api/v1/bets/{id}/cashout", urls[n]))
                                .bearer_auth(&tokens[p])
                                .header("Idempotency-Key", format!("c-{id}"))
                                .json(&json!({}))
                                .send()
                                .await;
                            if let Ok(resp) = resp {
                                let s = resp.status().as_u16();
                                if s == 500 {
                                    errs.fetch_add(1, Ordering::SeqCst);
                                }
                                if s == 200 {
                                    cashouts.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        Load {
            stop,
            internal_errors,
            accepted_bets,
            accepted_cashouts,
            task,
        }
    }

    async fn finish(self, fleet: &Fleet) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let internal: Vec<String> = fleet
            .nodes
            .iter()
            .flat_map(|n| {
                n.log_text()
                    .lines()
                    .filter(|l| l.contains("internal error"))
                    .map(|l| format!("{}: {l}", n.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            self.internal_errors.load(Ordering::SeqCst),
            0,
            "a money request answered 500 during the fault:\n{}",
            internal.join("\n")
        );
        (
            self.accepted_bets.load(Ordering::SeqCst),
            self.accepted_cashouts.load(Ordering::SeqCst),
        )
    }
}

/// Waits on node `i` until a round after `number` takes bets (play resumed after `what`).
async fn wait_round_after(fleet: &Fleet, i: usize, number: u64, what: &str) {
    wait::until(
        &format!("play resuming after {what}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let r = fleet.round(i).await;
            (r["number"].as_u64().unwrap_or(0) > number && r["phase"] == "betting").then_some(())
        },
        || fleet.logs(),
    )
    .await
}

/// Waits until node `i`'s `/readyz` answers `status` (`what` says why it should).
async fn wait_readyz(fleet: &Fleet, i: usize, status: u16, within: Duration, what: &str) {
    wait::until(
        &format!("node {}: {what} (/readyz {status})", i + 1),
        within,
        Duration::from_millis(50),
        || async { (fleet.get(i, "/readyz", None).await.0 == status).then_some(()) },
        || fleet.logs(),
    )
    .await
}

/// Waits for a few more rounds to finish everywhere, then checks every invariant from a survivor.
async fn settle_and_check(fleet: &Fleet, survivor: usize) -> Vec<Value> {
    let r = fleet.wait_phase(survivor, "betting", 0).await;
    let number = r["number"].as_u64().expect("number");
    // The round before the current one is finished; wait until the ledger says so.
    if number > 1 {
        fleet.wait_settled(survivor, number - 1).await;
    }
    fleet.assert_invariants(survivor).await
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(fleet: &Fleet, i: usize) -> Ws {
    let url = fleet.nodes[i].url.replace("http://", "ws://") + "/ws";
    tokio_tungstenite::connect_async(&url)
        .await
        .expect("ws connect")
        .0
}

/// The arrival of the first leader event after `after` (the first thing the new leader
/// published); replicas' bet announcements and snapshots (resyncs) do not count.
async fn first_event_after(ws: &mut Ws, after: Instant) -> (Duration, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("an event within 15 s")
            .expect("ws open")
            .expect("ws frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            let leaders = ["round_open", "flying", "tick", "crashed", "round_voided"];
            if leaders.contains(&v["type"].as_str().unwrap_or("")) && Instant::now() > after {
                return (after.elapsed(), v);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_rounds_sessions_and_money() {
    let Some(pg) = require::fleet("replicas_share_rounds_sessions_and_money") else {
        return;
    };
    let fleet = Fleet::start("share", &pg, FleetOpts::default()).await;
    // One leader, three live nodes, seen identically from every node.
    let (leader, term) = fleet.wait_leader(0, None, 0).await;
    for i in 0..3 {
        let v = fleet.fleet_view(i).await;
        assert_eq!(v["leader"], leader.as_str(), "{v}");
        assert_eq!(v["term"].as_u64(), Some(term), "{v}");
        let ids: Vec<&str> = v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .collect();
        assert_eq!(ids, ["node-1", "node-2", "node-3"], "{v}");
    }
    let (_, lobby) = fleet.get(2, "/api/v1/lobby", None).await;
    assert_eq!(lobby["tables"][0]["table"], "main", "{lobby}");

    // A session opened on node 1 works on nodes 2 and 3; the wallet is one.
    let token = fleet.register(0, "alice").await;
    assert_eq!(fleet.balance(1, &token).await, 100_000);
    assert_eq!(fleet.balance(2, &token).await, 100_000);

    // Two bets on two nodes in one round; the per-player limit (2) is fleet-wide.
    let r = fleet.wait_phase(0, "betting", 600).await;
    let number = r["number"].as_u64().expect("number");
    let (s1, b1) = fleet.bet(1, &token, "k1", 1_000, None).await;
    let (s2, b2) = fleet.bet(2, &token, "k2", 500, Some(110)).await;
    let (s3, b3) = fleet.bet(0, &token, "k3", 100, None).await;
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    assert_eq!(s3, 409, "a third bet in one round, on a third node: {b3}");
    assert_eq!(b3["code"], "bet_limit");
    // The same key retried on another node is the same bet, not a second debit.
    let (s1r, b1r) = fleet.bet(2, &token, "k1", 1_000, None).await;
    assert_eq!(s1r, 201, "a retry answers like the first request: {b1r}");
    assert_eq!(b1r["bet_id"], b1["bet_id"]);
    assert_eq!(fleet.balance(0, &token).await, 100_000 - 1_500);
    // Every node shows both bets.
    for i in 0..3 {
        let round = fleet.get(i, "/api/v1/round", None).await.1;
        assert_eq!(
            round["bets"].as_array().map(|b| b.len()),
            Some(2),
            "node {i}: {round}"
        );
    }

    // A WebSocket on node 3 receives the leader's flight.
    let url = fleet.nodes[2].url.replace("http://", "ws://") + "/ws";
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let mut saw = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cashed = None;
    while !(saw.0 && saw.1) {
        let msg = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("events")
            .expect("open")
            .expect("frame");
        let tokio_tungstenite::tungstenite::Message::Text(t) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).expect("json");
        if v["type"] == "tick" && v["round"].as_u64() == Some(number) {
            saw.0 = true;
            if cashed.is_none() {
                // Cash out the node-2 bet through node 1 while flying.
                let (s, c) = fleet
                    .cash_out(0, &token, "c1", b1["bet_id"].as_str().expect("id"))
                    .await;
                cashed = Some((s, c));
            }
        }
        if v["type"] == "crashed" && v["round"].as_u64() == Some(number) {
            saw.1 = true;
        }
    }
    let (s, c) = cashed.expect("a cash-out attempt");
    // Either it beat the crash (200) or the crash came first (too_late): never anything else.
    assert!(
        s == 200 || c["code"] == "too_late",
        "cash-out through another node: {s} {c}"
    );
    let settled = fleet.wait_settled(1, number).await;
    let bets = settled["bets"].as_array().expect("bets");
    assert_eq!(bets.len(), 2, "{settled}");
    let crash = settled["round"]["crash_x100"].as_u64().expect("crash");
    for b in bets {
        if b["auto_cashout_x100"] == 110 {
            let expect = if crash >= 110 { "won" } else { "lost" };
            assert_eq!(b["status"], expect, "auto 1.10x with crash {crash}: {b}");
        }
    }
    fleet.assert_invariants(2).await;
    chat_across_nodes(&fleet, &token).await;
    fleet.db.drop_now().await;
}

/// The next `chat` or `error` frame on a socket, skipping round events.
async fn next_chat(ws: &mut crashfleet_tests::ws::Socket) -> Value {
    loop {
        let v = ws.next_value().await;
        if v["type"] == "chat" || v["type"] == "error" {
            return v;
        }
    }
}

/// Two players on two nodes see each other's lines in one order; the rate window and a mute set
/// through a third node hold on every node; a late socket's snapshot has the history.
async fn chat_across_nodes(fleet: &Fleet, alice: &str) {
    use crashfleet_tests::ws::Socket;
    use game_node::protocol::ClientMessage;
    let chat = |text: &str| ClientMessage::Chat { text: text.into() };
    let ws_url = |i: usize| fleet.nodes[i].url.replace("http://", "ws://") + "/ws";
    let bob = fleet.register(1, "bob").await;
    let mut a = Socket::connect_as(&ws_url(0), alice).await;
    a.expect_type("authenticated").await;
    let mut b = Socket::connect_as(&ws_url(2), &bob).await;
    b.expect_type("authenticated").await;
    a.send(&chat("alice one")).await;
    b.send(&chat("bob one")).await;
    a.send(&chat("alice two")).await;
    b.send(&chat("bob two")).await;
    let mut orders = Vec::new();
    for ws in [&mut a, &mut b] {
        let mut lines = Vec::new();
        while lines.len() < 4 {
            let v = next_chat(ws).await;
            assert_eq!(v["type"], "chat", "{v}");
            lines.push(v["text"].as_str().unwrap_or("").to_string());
        }
        orders.push(lines);
    }
    assert_eq!(orders[0], orders[1], "one order on both nodes");
    let pos = |t: &str| orders[0].iter().position(|l| l == t);
    assert!(
        pos("alice one") < pos("alice two") && pos("bob one") < pos("bob two"),
        "{orders:?}"
    );

    // Alice's window counts on every node: three more lines through node 2 use it up, and the
    // next, through node 1, is refused.
    let mut a2 = Socket::connect_as(&ws_url(1), alice).await;
    a2.expect_type("authenticated").await;
    for n in 0..3 {
        a2.send(&chat(&format!("alice via node 2 #{n}"))).await;
    }
    for _ in 0..3 {
        assert_eq!(next_chat(&mut b).await["type"], "chat");
    }
    a.send(&chat("alice sixth")).await;
    let refused = a.expect_type("error").await;
    assert_eq!(refused["code"], "chat_rate_limited", "{refused}");

    // A mute set through node 3 silences bob on node 3's socket and on node 1.
    let (st, v) = fleet
        .post(
            2,
            "/api/v1/admin/mute",
            Some(crashfleet_tests::fleet::ADMIN),
            None,
            json!({"username": "bob", "minutes": 10}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    b.send(&chat("am I muted")).await;
    assert_eq!(b.expect_type("error").await["code"], "muted");
    let (_, mutes) = fleet
        .get(
            0,
            "/api/v1/admin/mute",
            Some(crashfleet_tests::fleet::ADMIN),
        )
        .await;
    assert_eq!(mutes["mutes"][0]["username"], "bob", "{mutes}");

    // A socket opened later on node 2 gets the seven lines, in the order everyone saw them.
    let mut late = Socket::connect(&ws_url(1)).await;
    let snap = late.expect_type("snapshot").await;
    let history: Vec<&str> = snap["chat"]
        .as_array()
        .expect("chat history")
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(history.len(), 7, "{history:?}");
    assert_eq!(
        history[..4],
        orders[0].iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
}

/// What one kill of the leader cost.
struct Failover {
    /// The killed node.
    index: usize,
    /// Kill → the first event the new leader published.
    first_event: Duration,
    /// Kill → the next round (a new number) open for bets.
    next_round: Duration,
}

/// The election backend a failover scenario runs on: the fleet's flags and the failover aim.
/// Every scenario below takes one, so each runs on Redis and on a Kubernetes Lease alike.
enum Election {
    /// A Redis lock with fencing (the fleet's default).
    Redis,
    /// A Lease in a namespace of its own on the test control plane (tests/k8s/cluster.sh).
    Lease(Box<Lease>),
}

struct Lease {
    cluster: crashfleet_tests::k8s::Cluster,
    ns: crashfleet_tests::k8s::TestNamespace,
}

impl Election {
    /// The Lease backend, or `None` (a SKIPPED line, or a failure under `CI=true`) when the test
    /// control plane is not up.
    async fn lease(test: &str, ns: &str) -> Option<Election> {
        let cluster = crashfleet_tests::k8s::cluster_or_skip(test)
            .await
            .expect("cluster")?;
        let ns = cluster.namespace(ns).await.expect("namespace");
        Some(Election::Lease(Box::new(Lease { cluster, ns })))
    }

    fn name(&self) -> &'static str {
        match self {
            Election::Redis => "redis",
            Election::Lease(_) => "lease",
        }
    }

    fn opts(&self) -> FleetOpts {
        match self {
            Election::Redis => FleetOpts::default(),
            Election::Lease(lease) => FleetOpts {
                election: "kubernetes",
                extra: vec!["--lease-namespace".into(), lease.ns.name().to_string()],
                envs: vec![(
                    "KUBECONFIG".into(),
                    lease.cluster.kubeconfig_source().to_string(),
                )],
                ..FleetOpts::default()
            },
        }
    }

    /// The failover aim, kill → the new leader's first event: 2 s with Redis; 3 s with a Lease,
    /// which counts whole seconds (its duration is 2 s).
    fn aim(&self) -> Duration {
        match self {
            Election::Redis => Duration::from_secs(2),
            Election::Lease(_) => Duration::from_secs(3),
        }
    }

    async fn cleanup(self) {
        if let Election::Lease(lease) = self {
            lease.ns.cleanup().await.expect("cleanup");
        }
    }
}

/// Restarts node `i` (killed or terminated) and waits until it is ready, so that the next
/// scenario has three replicas again.
async fn revive(fleet: &mut Fleet, i: usize) {
    fleet.nodes[i].restart();
    crashfleet_tests::fleet::wait_ready_url(&fleet.http, &fleet.nodes[i].url).await;
}

/// Kills the leader with -9 in `phase` and measures the failover against the backend's aim
/// (first leader event after the kill).
async fn kill9_and_measure(fleet: &mut Fleet, phase: &str, election: &Election) -> Failover {
    let backend = election.name();
    let (leader, term) = fleet.wait_leader(0, None, 0).await;
    let li = fleet.index_of(&leader);
    let survivor = (li + 1) % 3;
    // Let a round run under load, then kill in the wanted phase.
    fleet.wait_phase(survivor, "flying", 0).await;
    let r = fleet.wait_phase(survivor, phase, 0).await;
    let interrupted = r["number"].as_u64().expect("number");
    let mut ws = ws_connect(fleet, survivor).await;
    let killed_at = Instant::now();
    fleet.nodes[li].kill9();
    // The first event the new leader publishes (a resumed round's announcement or tick).
    let (first, event) = first_event_after(&mut ws, killed_at).await;
    let (new_leader, new_term) = fleet.wait_leader(survivor, Some(&leader), term).await;
    let takeover = killed_at.elapsed();
    // The dead node leaves the fleet view within two heartbeat intervals (2 × 1 s).
    let fleet_ref = &*fleet;
    let gone = wait::until(
        &format!("{leader} leaving the fleet view"),
        Duration::from_millis(2_300).saturating_sub(killed_at.elapsed()),
        Duration::from_millis(20),
        || async {
            let v = fleet_ref.fleet_view(survivor).await;
            let listed = v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["node_id"] == leader.as_str()));
            (!listed).then(|| killed_at.elapsed())
        },
        || fleet_ref.logs(),
    )
    .await;
    // The next round opening (a new number).
    let next_open = wait::until(
        &format!("a round after {interrupted}"),
        Duration::from_secs(20),
        Duration::from_millis(10),
        || async {
            let r = fleet_ref.round(survivor).await;
            (r["number"].as_u64().unwrap_or(0) > interrupted).then(|| killed_at.elapsed())
        },
        || fleet_ref.logs(),
    )
    .await;
    println!(
        "FAILOVER {backend} kill-9 in {phase}: new leader {new_leader} term {new_term} after {} ms; \
         first event ({}) after {} ms; round {} opened {} ms after the kill; \
         the dead node left the fleet view after {} ms",
        takeover.as_millis(),
        event["type"],
        first.as_millis(),
        interrupted + 1,
        next_open.as_millis(),
        gone.as_millis()
    );
    assert!(
        first < election.aim(),
        "{backend}: the new leader's first event came {} ms after the kill",
        first.as_millis()
    );
    assert!(new_term > term, "terms only grow");
    // The new leader's metrics say so.
    let api = &fleet.nodes[fleet.index_of(&new_leader)].api;
    assert_eq!(api.metric("crashfleet_leader").await, Some(1.0));
    assert_eq!(
        api.metric("crashfleet_leader_term").await,
        Some(new_term as f64)
    );
    assert!(api.metric("crashfleet_failovers_total").await >= Some(1.0));
    // The interrupted round was finished with its own crash point (adopted) or voided.
    fleet.wait_settled(survivor, interrupted).await;
    println!(
        "FAILOVER round {interrupted} ended {}",
        fleet.round_status(survivor, interrupted).await
    );
    Failover {
        index: li,
        first_event: first,
        next_round: next_open,
    }
}

/// Kills the leader with -9 during betting and (after restarting it) in flight, under load, and
/// restarts the second one too.
async fn kill9_in_betting_and_in_flight(fleet: &mut Fleet, election: &Election) {
    // An auditor's view of the round log: heads from every node, before and after each kill.
    let mut witness = LogWitness::new(&fleet.nodes[0].api).await;
    let observe_all = async |witness: &mut LogWitness, fleet: &Fleet| {
        for n in &fleet.nodes {
            if let Some(v) = witness.observe(&n.api).await {
                panic!("{v}");
            }
        }
    };
    // One signing key for the fleet: every node publishes the same.
    let keys: Vec<Value> = futures_util::future::join_all(
        fleet
            .nodes
            .iter()
            .map(|n| async { n.api.get("/api/v1/fairness").await.1["signing_key"].clone() }),
    )
    .await;
    assert!(
        keys.iter().all(|k| k == &keys[0] && k.is_string()),
        "{keys:?}"
    );
    let load = Load::start(fleet, 6).await;
    observe_all(&mut witness, fleet).await;
    let li = kill9_and_measure(fleet, "betting", election).await.index;
    observe_all(&mut witness, fleet).await;
    revive(fleet, li).await;
    let li = kill9_and_measure(fleet, "flying", election).await.index;
    observe_all(&mut witness, fleet).await;
    let (bets, cashouts) = load.finish(fleet).await;
    assert!(bets > 0, "the load placed no bet");
    println!(
        "FAILOVER {} load: {bets} bets and {cashouts} cash-outs accepted",
        election.name()
    );
    settle_and_check(fleet, (li + 1) % 3).await;
    // The new leaders continued the same log: every head seen is a prefix of the newest.
    let violations = witness.check(&fleet.nodes[(li + 1) % 3].api).await;
    assert!(violations.is_empty(), "{violations:#?}");
    println!(
        "FAILOVER round log: {} signed heads from every node across two kill -9s, all consistent",
        witness.seen()
    );
    revive(fleet, li).await;
}

/// Failover figures over many kills (docs/BENCHMARKS.md): the leader is killed with -9
/// `CRASHFLEET_FAILOVER_KILLS` times under load, alternately in betting and in flight, the dead node
/// restarted each time; prints the median, p90 and worst of kill → first leader event and
/// kill → next round open, then checks the money. Opt-in: the series takes ~6 s per kill.
async fn failover_series(fleet: &mut Fleet, election: &Election, kills: usize) {
    let load = Load::start(fleet, 6).await;
    let mut firsts = Vec::new();
    let mut rounds = Vec::new();
    let mut last = 0;
    for k in 0..kills {
        let phase = if k % 2 == 0 { "betting" } else { "flying" };
        let f = kill9_and_measure(fleet, phase, election).await;
        firsts.push(f.first_event);
        rounds.push(f.next_round);
        revive(fleet, f.index).await;
        last = f.index;
    }
    let (bets, _) = load.finish(fleet).await;
    assert!(bets > 0, "the load placed no bet");
    settle_and_check(fleet, (last + 1) % 3).await;
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_millis();
        format!(
            "median {} ms, p90 {} ms, max {} ms",
            at(0.5),
            at(0.9),
            at(1.0)
        )
    };
    println!(
        "FAILOVER SERIES {}: {kills} kills; first leader event {}; next round open {}; {bets} bets accepted, audit exact",
        election.name(),
        stats(&mut firsts),
        stats(&mut rounds)
    );
}

/// SIGTERM of the leader, in betting and in flight, hands over in under a second: it releases
/// the lock (or clears the Lease's holder), a replica takes the round over (continuing it), and
/// the process exits. Each terminated node is restarted.
async fn sigterm_handover(fleet: &mut Fleet, election: &Election) {
    let load = Load::start(fleet, 4).await;
    let mut worst = Duration::ZERO;
    for phase in ["betting", "flying"] {
        let (leader, term) = fleet.wait_leader(0, None, 0).await;
        let li = fleet.index_of(&leader);
        let survivor = (li + 1) % 3;
        fleet.wait_phase(survivor, phase, 0).await;
        let t0 = Instant::now();
        // Send the signal without waiting, and watch the hand-over from the survivor.
        fleet.nodes[li].signal("TERM");
        let (new_leader, new_term) = fleet.wait_leader(survivor, Some(&leader), term).await;
        let handover = t0.elapsed();
        let exited = fleet.nodes[li].terminate_wait();
        println!(
            "FAILOVER {} SIGTERM in {phase}: {new_leader} leads (term {new_term}) {} ms after the \
             signal; the old process exited after {} ms",
            election.name(),
            handover.as_millis(),
            exited.as_millis()
        );
        worst = worst.max(handover);
        revive(fleet, li).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "a SIGTERM hand-over took {} ms",
        worst.as_millis()
    );
    load.finish(fleet).await;
    settle_and_check(fleet, 0).await;
}

/// Node `i`'s `crashfleet_step_downs_total` by reason (only the reasons that counted).
async fn step_downs(fleet: &Fleet, i: usize) -> Vec<(&'static str, f64)> {
    let api = &fleet.nodes[i].api;
    let mut out = Vec::new();
    for reason in game_node::runner::STEP_DOWN_REASONS {
        let n = api
            .metric(&format!(
                "crashfleet_step_downs_total{{reason=\"{reason}\"}}"
            ))
            .await
            .unwrap_or(0.0);
        if n > 0.0 {
            out.push((reason, n));
        }
    }
    out
}

/// Waits until the woken leader `i` has stepped down: its `crashfleet_leader` gauge reads 0 and
/// a step-down is counted (its renewal found the lock or Lease gone, or a store refused one of
/// its late writes: a tick, an auto-cash-out, the crash).
async fn wait_stepped_down(fleet: &Fleet, i: usize) {
    wait::until(
        "the woken leader stepping down (crashfleet_leader 0, a step-down counted)",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let leading = fleet.nodes[i].api.metric("crashfleet_leader").await;
            (leading == Some(0.0) && !step_downs(fleet, i).await.is_empty()).then_some(())
        },
        || fleet.logs(),
    )
    .await
}

/// SIGSTOP the leader in flight, past its lock or Lease: another replica takes over; SIGCONT the
/// old one: its late writes carry the old term and are refused (and counted), it serves on as a
/// follower, the money stays exact, and both stores refuse the old term from then on.
async fn paused_leader_is_fenced(fleet: &Fleet, election: &Election) {
    let load = Load::start(fleet, 4).await;
    let (leader, term) = fleet.wait_leader(0, None, 0).await;
    let li = fleet.index_of(&leader);
    let other = (li + 1) % 3;
    // Pause it in flight, while it has ticks, auto-cash-outs and a crash to write.
    fleet.wait_phase(other, "flying", 0).await;
    fleet.nodes[li].signal("STOP");
    let paused_at = Instant::now();
    let (new_leader, new_term) = fleet.wait_leader(other, Some(&leader), term).await;
    println!(
        "FAILOVER {} SIGSTOP: {new_leader} took term {new_term} {} ms after the pause",
        election.name(),
        paused_at.elapsed().as_millis()
    );
    // The subject is a process frozen in real time (another process, so no paused tokio clock
    // can stand in): let the new leader play on, then wake the old one well past its lease.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    fleet.nodes[li].signal("CONT");
    // The old leader wakes deposed: either its renewal finds the lock gone and it steps down,
    // or one of its late writes (a tick, an auto-cash-out, the crash) is refused first. Both
    // count a step-down.
    wait_stepped_down(fleet, li).await;
    // It keeps serving players as a follower of the new leader.
    let v = fleet.fleet_view(li).await;
    assert_eq!(v["leader"], new_leader.as_str(), "{v}");
    let (bets, _) = load.finish(fleet).await;
    assert!(bets > 0);
    settle_and_check(fleet, other).await;
    println!(
        "FAILOVER woken leader stepped down: {}",
        step_downs(fleet, li)
            .await
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Whatever the woken process did, any write with the old term is refused by both stores.
    use game_node::ports::RoundBook;
    let ledger = game_node::ledger::SqlLedger::connect(&fleet.db.url, 2)
        .await
        .expect("ledger");
    let stale = ledger.claim_term("main", term).await;
    assert!(
        matches!(stale, Err(game_node::error::Error::Fenced { .. })),
        "PostgreSQL accepted term {term} after term {new_term}: {stale:?}"
    );
    let conn = game_node::fleet::redis::connect(&fleet.redis.url())
        .await
        .expect("redis");
    let keys = game_node::fleet::redis::Keys::new("main");
    let scripts = game_node::fleet::redis::Scripts::new();
    let reply = game_node::fleet::redis::run(
        &conn.client,
        &scripts.publish,
        vec![keys.seq(), keys.fence()],
        vec![keys.events(), "{}".into(), term.to_string()],
    )
    .await
    .expect("script");
    assert_eq!(
        game_node::fleet::redis::int(reply.first()),
        game_node::fleet::redis::status::FENCED,
        "Redis accepted a leader event of term {term} after term {new_term}"
    );
}

fn series_kills(test: &str) -> Option<usize> {
    let kills = std::env::var("CRASHFLEET_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok());
    if kills.is_none() {
        eprintln!(
            "SKIPPED {test}: opt-in, set CRASHFLEET_FAILOVER_KILLS=20 (tests/bench/failover.sh)"
        );
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_series_redis() {
    let Some(kills) = series_kills("failover_series_redis") else {
        return;
    };
    let Some(pg) = require::fleet("failover_series_redis") else {
        return;
    };
    let election = Election::Redis;
    let mut fleet = Fleet::start("series", &pg, election.opts()).await;
    failover_series(&mut fleet, &election, kills).await;
    fleet.db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_series_lease() {
    let Some(kills) = series_kills("failover_series_lease") else {
        return;
    };
    let Some(pg) = require::fleet("failover_series_lease") else {
        return;
    };
    let Some(election) = Election::lease("failover_series_lease", "series").await else {
        return;
    };
    let mut fleet = Fleet::start("series_lease", &pg, election.opts()).await;
    failover_series(&mut fleet, &election, kills).await;
    fleet.db.drop_now().await;
    election.cleanup().await;
}

/// Kills the Redis-elected leader with -9, once during betting and once in flight, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leader_in_betting_and_in_flight() {
    let Some(pg) = require::fleet("kill9_leader_in_betting_and_in_flight") else {
        return;
    };
    let election = Election::Redis;
    let mut fleet = Fleet::start("kill9", &pg, election.opts()).await;
    kill9_in_betting_and_in_flight(&mut fleet, &election).await;
    fleet.db.drop_now().await;
}

/// SIGTERM of the Redis-elected leader hands over in under a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_in_under_a_second() {
    let Some(pg) = require::fleet("sigterm_hands_over_in_under_a_second") else {
        return;
    };
    let election = Election::Redis;
    let mut fleet = Fleet::start("sigterm", &pg, election.opts()).await;
    sigterm_handover(&mut fleet, &election).await;
    fleet.db.drop_now().await;
}

/// The Redis-elected leader, paused past its lock, is fenced when it wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_fenced_when_it_wakes() {
    let Some(pg) = require::fleet("paused_leader_is_fenced_when_it_wakes") else {
        return;
    };
    let election = Election::Redis;
    let fleet = Fleet::start("paused", &pg, election.opts()).await;
    paused_leader_is_fenced(&fleet, &election).await;
    fleet.db.drop_now().await;
}

/// The same scenarios with the Kubernetes Lease backend, against the real API server, on one
/// fleet (each scenario leaves three replicas): kill -9 in betting and in flight, SIGTERM in
/// betting and in flight, SIGSTOP past the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_backend_failovers() {
    let Some(pg) = require::fleet("lease_backend_failovers") else {
        return;
    };
    let Some(election) = Election::lease("lease_backend_failovers", "lease").await else {
        return;
    };
    let mut fleet = Fleet::start("lease", &pg, election.opts()).await;
    // The Lease says who leads, with the term as its transitions.
    let (leader, term) = fleet.wait_leader(0, None, 0).await;
    if let Election::Lease(lease) = &election {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(lease.cluster.client(), lease.ns.name());
        let lease = leases.get("crashfleet-main").await.expect("the Lease");
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(leader.as_str()));
        assert_eq!(spec.lease_transitions.map(|t| t as u64), Some(term));
        // The default 800 ms lease, rounded up to the Lease's whole seconds.
        assert_eq!(spec.lease_duration_seconds, Some(1));
    }
    kill9_in_betting_and_in_flight(&mut fleet, &election).await;
    sigterm_handover(&mut fleet, &election).await;
    paused_leader_is_fenced(&fleet, &election).await;
    fleet.db.drop_now().await;
    election.cleanup().await;
}

/// Redis restarts (losing every key: no persistence) in the middle of a round. The fleet
/// reconnects by itself, a leader is elected with a term above the ledger's, the interrupted
/// round is voided with refunds (its Redis state is gone), and play resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_round() {
    let Some(pg) = require::fleet("redis_restart_mid_round") else {
        return;
    };
    let mut fleet = Fleet::start("redisrestart", &pg, FleetOpts::default()).await;
    let load = Load::start(&fleet, 4).await;
    let (_, term) = fleet.wait_leader(0, None, 0).await;
    let r = fleet.wait_phase(1, "flying", 0).await;
    let interrupted = r["number"].as_u64().expect("number");
    let t0 = Instant::now();
    fleet.redis.restart();
    let (_, new_term) = fleet.wait_leader(1, None, term).await;
    wait_round_after(&fleet, 1, interrupted, "the Redis restart").await;
    println!(
        "FAILOVER redis restart: term {term} -> {new_term}; a new round took bets {} ms after the restart",
        t0.elapsed().as_millis()
    );
    fleet.wait_settled(1, interrupted).await;
    let status = fleet.round_status(1, interrupted).await;
    assert!(
        status == "voided" || status == "crashed",
        "round {interrupted}: {status}"
    );
    // Every node is ready again (reconnected by itself).
    for i in 0..3 {
        wait_readyz(
            &fleet,
            i,
            200,
            Duration::from_secs(10),
            "ready after the restart",
        )
        .await;
    }
    load.finish(&fleet).await;
    settle_and_check(&fleet, 2).await;
    fleet.db.drop_now().await;
}

/// The round's plan lives in Redis for the whole round, so a table's Redis is run like a secret
/// store: TLS (`rediss://`, the server's certificate checked against the CA given in
/// `SSL_CERT_FILE`) and a password. A fleet node plays, takes bets and pays over that link; the
/// same URL without the password is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_plays_over_redis_with_tls_and_a_password() {
    let Some(pg) = require::fleet("a_fleet_plays_over_redis_with_tls_and_a_password") else {
        return;
    };
    let tls_dir = tempfile::tempdir().expect("tempdir");
    let tls = crashfleet_tests::redis::TlsRedis::start(tls_dir.path());
    let mut opts = FleetOpts {
        nodes: 2,
        ..FleetOpts::default()
    };
    opts.redis_for = vec![Some(tls.url()), Some(tls.url())];
    opts.envs = vec![("SSL_CERT_FILE".into(), tls.ca.display().to_string())];
    let fleet = Fleet::start("tlsredis", &pg, opts).await;
    fleet.wait_leader(0, None, 0).await;
    let token = fleet.register(1, "secure").await;
    let r = fleet.wait_phase(1, "betting", 300).await;
    let (st, b) = fleet.bet(1, &token, "tls-1", 500, Some(110)).await;
    assert_eq!(st, 201, "{b}");
    fleet
        .wait_settled(0, r["number"].as_u64().expect("round"))
        .await;
    // The auto-cash-out at 1.10x either won (the round reached it) or the bet lost.
    let balance = fleet.balance(0, &token).await;
    assert!(
        balance == 100_000 - 500 || balance == 100_000 - 500 + 550,
        "{balance}"
    );
    settle_and_check(&fleet, 1).await;

    // Without the password the node does not start (one clear line, exit status 1).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_game-node"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--leader-election",
            "redis",
        ])
        .args(["--redis-url", &format!("rediss://localhost:{}", tls.port)])
        .args([
            "--database-url",
            &fleet.db.url,
            "--jwt-secret",
            "0123456789abcdef0123",
        ])
        .args([
            "--chain-seed-file",
            &fleet.dir.path().join("chain.seed").display().to_string(),
        ])
        .args(["--chain-length", "20000", "--max-multiplier-x100", "5000"])
        .env("SSL_CERT_FILE", &tls.ca)
        .output()
        .expect("game-node");
    assert!(!out.status.success(), "started without the Redis password");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Redis"), "{err}");
    fleet.db.drop_now().await;
}

/// Redis decides a cash-out but its answer never reaches the node (the reply is lost, the request
/// was delivered): the player is told `outcome_unknown` (503), never an error that says nothing
/// moved, and a retry with the same key — on another node — returns the decision Redis made,
/// which the ledger pays exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cash_out_answer_is_outcome_unknown_and_the_retry_returns_it() {
    let Some(pg) =
        require::fleet("a_lost_cash_out_answer_is_outcome_unknown_and_the_retry_returns_it")
    else {
        return;
    };
    let redis_port = crashfleet_tests::free_port();
    let proxy = crashfleet_tests::proxy::Proxy::start(redis_port).await;
    let mut opts = FleetOpts {
        // Flights of at most ~6 s (3x, doubling every 4 s): the cash-out lands early in the
        // flight, and the round settles soon after.
        doubling_ms: 4_000,
        max_x100: 300,
        ..FleetOpts::default()
    };
    opts.redis_for = vec![None, None, Some(proxy.url())];
    let fleet = Fleet::start_with_redis_port("lostreply", &pg, opts, redis_port).await;
    let (leader, _) = fleet.wait_leader(0, None, 0).await;
    assert_ne!(leader, "node-3", "node 1 started first and leads");
    let token = fleet.register(0, "lucky").await;
    let stake = 1_000;
    let mut attempts = 0;
    let mut lost_stakes = 0;
    let (bet_id, round, retry) = loop {
        attempts += 1;
        assert!(attempts <= 6, "no round flew long enough in 6 tries");
        fleet.wait_phase(0, "betting", 300).await;
        let (st, b) = fleet
            .bet(0, &token, &format!("b{attempts}"), stake, None)
            .await;
        assert_eq!(st, 201, "{b}");
        let bet_id = b["bet_id"].as_str().expect("bet id").to_string();
        let round = b["round"].as_u64().expect("round");
        fleet.wait_phase(2, "flying", 0).await;
        // Redis will get node 3's cash-out script call (it names the bet) and lose the reply.
        proxy.lose_reply_after(&bet_id);
        let (st, first) = fleet.cash_out(2, &token, "the-key", &bet_id).await;
        lost_stakes += stake;
        if first["code"] == "too_late" {
            continue; // an early crash beat the request; try the next round
        }
        assert_eq!(
            (st, first["code"].as_str()),
            (503, Some("outcome_unknown")),
            "a decided cash-out whose answer was lost: {first}"
        );
        assert!(first["message"].as_str().is_some(), "{first}");
        // The retry with the same key, through another node, gets what Redis decided.
        let (st, retry) = fleet.cash_out(1, &token, "the-key", &bet_id).await;
        if st == 409 && retry["code"] == "too_late" {
            // The crash instant came before the lost call reached Redis, so Redis decided
            // "too late" and the retry says so too: the bet lost, nothing was paid, and the
            // ledger must agree once the round is settled.
            fleet.wait_settled(0, round).await;
            let (_, settled) = fleet.cash_out(0, &token, "the-key", &bet_id).await;
            assert_eq!(settled["code"], "too_late", "{settled}");
            assert_eq!(fleet.balance(0, &token).await, 100_000 - lost_stakes);
            continue;
        }
        assert_eq!(st, 200, "the retry returns the first outcome: {retry}");
        lost_stakes -= stake;
        break (bet_id, round, retry);
    };
    let m = retry["multiplier_x100"].as_u64().expect("multiplier");
    let payout = retry["payout"].as_i64().expect("payout");
    assert_eq!(payout, stake * m as i64 / 100);
    // Again, and again after the round is settled: the same answer, paid once.
    let (_, again) = fleet.cash_out(0, &token, "the-key", &bet_id).await;
    assert_eq!(again, retry);
    let (st, other) = fleet.cash_out(0, &token, "another-key", &bet_id).await;
    assert_eq!(st, 409, "another key cannot cash it out again: {other}");
    fleet.wait_settled(0, round).await;
    let (_, settled) = fleet.cash_out(0, &token, "the-key", &bet_id).await;
    assert_eq!(settled, retry, "after the settlement");
    assert_eq!(
        fleet.balance(0, &token).await,
        100_000 - lost_stakes - stake + payout,
        "paid exactly once"
    );
    settle_and_check(&fleet, 0).await;
    fleet.db.drop_now().await;
}

/// PostgreSQL restarts (fast: connections cut, open transactions rolled back) mid-round. Money
/// requests fail `unavailable` meanwhile; the leader retries and continues the round it still
/// holds in Redis; nothing is paid twice or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_round() {
    if require::fleet("postgres_restart_mid_round").is_none() {
        return;
    }
    let pg_dir = tempfile::tempdir().expect("tempdir");
    let pg = crashfleet_tests::fleet::OwnPg::start(&pg_dir.path().join("pg"));
    let fleet = Fleet::start("pgrestart", &pg.url, FleetOpts::default()).await;
    let load = Load::start(&fleet, 4).await;
    fleet.wait_leader(0, None, 0).await;
    let r = fleet.wait_phase(1, "flying", 0).await;
    let interrupted = r["number"].as_u64().expect("number");
    let t0 = Instant::now();
    pg.restart();
    let restarted = t0.elapsed();
    wait_round_after(&fleet, 1, interrupted, "the PostgreSQL restart").await;
    println!(
        "FAILOVER postgres restart took {} ms; a new round took bets {} ms after it began; round {interrupted} ended {}",
        restarted.as_millis(),
        t0.elapsed().as_millis(),
        fleet.round_status(1, interrupted).await
    );
    load.finish(&fleet).await;
    settle_and_check(&fleet, 0).await;
}

/// Several tables share one PostgreSQL (one wallet per player) and one Redis; the lobby lists
/// every live table across regions with its public URL, `/api/v1/regions` sums them up, and the
/// lobby page in Chromium measures both tables and joins the nearest; each table has its own
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_share_wallets_and_the_lobby() {
    let Some(pg) = require::fleet("tables_share_wallets_and_the_lobby") else {
        return;
    };
    let region = |r: &str| vec!["--region".to_string(), r.to_string()];
    let opts = FleetOpts {
        table_for: vec![None, None, Some("high-rollers".into())],
        extra_for: vec![region("eu-west"), region("eu-west"), region("us-east")],
        advertise: true,
        extra: vec![],
        ..FleetOpts::default()
    };
    let fleet = Fleet::start("tables", &pg, opts).await;
    let (main_leader, _) = fleet.wait_leader(0, None, 0).await;
    let (hr_leader, _) = fleet.wait_leader(2, None, 0).await;
    assert_ne!(main_leader, "node-3");
    assert_eq!(hr_leader, "node-3", "the only node of its table leads it");
    let v = fleet.fleet_view(2).await;
    assert_eq!(v["table"], "high-rollers");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(1), "{v}");
    // The lobby, asked anywhere, lists both tables with their live state.
    wait::until(
        "the lobby listing both tables, live",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let (_, lobby) = fleet.get(1, "/api/v1/lobby", None).await;
            let tables: Vec<&str> = lobby["tables"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t["table"].as_str()).collect())
                .unwrap_or_default();
            let live = lobby["tables"].as_array().is_some_and(|ts| {
                ts.iter().all(|t| {
                    t["round"].as_u64().is_some()
                        && ["betting", "flying", "crashed"]
                            .contains(&t["phase"].as_str().unwrap_or(""))
                })
            });
            // Sorted by region, then table.
            (tables == ["main", "high-rollers"] && live).then_some(())
        },
        || fleet.logs(),
    )
    .await;
    let (_, lobby) = fleet.get(0, "/api/v1/lobby", None).await;
    let tables = lobby["tables"].as_array().expect("tables");
    assert_eq!(tables[0]["region"], "eu-west", "{lobby}");
    assert_eq!(tables[0]["nodes"], 2, "{lobby}");
    assert_eq!(tables[1]["region"], "us-east", "{lobby}");
    assert_eq!(tables[1]["nodes"], 1, "{lobby}");
    // Each table advertises one of its own nodes' addresses.
    let main_urls: Vec<String> = fleet.nodes[..2]
        .iter()
        .map(|n| format!("{}/", n.url))
        .collect();
    assert!(
        main_urls
            .iter()
            .any(|u| tables[0]["public_url"] == u.as_str()),
        "{lobby}"
    );
    assert_eq!(tables[1]["public_url"], format!("{}/", fleet.nodes[2].url));
    let (st, regions) = fleet.get(2, "/api/v1/regions", None).await;
    assert_eq!(st, 200, "{regions}");
    let summary: Vec<(String, u64, u64)> = regions["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap_or("").to_string(),
                r["tables"].as_u64().unwrap_or(0),
                r["nodes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("eu-west".to_string(), 1, 2), ("us-east".to_string(), 1, 1)],
        "{regions}"
    );
    lobby_page_in_chromium(&fleet).await;
    // One wallet: a bet on one table is visible in the balance on the other.
    let token = fleet.register(0, "dora").await;
    fleet.wait_phase(2, "betting", 400).await;
    let (s, b) = fleet.bet(2, &token, "hr-1", 700, None).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(fleet.balance(0, &token).await, 100_000 - 700);
    fleet.assert_invariants(2).await;
    fleet.assert_invariants(0).await;
    fleet.db.drop_now().await;
}

/// The lobby page, opened on a node of `main` in Chromium: it lists both tables in their regions,
/// measures a round trip to each, suggests the nearest, and its join link opens that table's own
/// game page (tests/web/lobby.mjs).
async fn lobby_page_in_chromium(fleet: &Fleet) {
    let chromium =
        std::env::var("CRASHFLEET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !std::path::Path::new(&chromium).exists() || !have_node {
        require::skip::<()>(
            "lobby page in Chromium",
            "needs node and chromium (bash tests/install-deps.sh)",
        );
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/web/run.sh");
    let url = fleet.nodes[0].url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .arg("lobby.mjs")
            .env("CRASHFLEET_URL", url)
            .output()
    })
    .await
    .expect("join")
    .expect("run tests/web/run.sh lobby.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the lobby page test failed:\n{stdout}\n{stderr}\n{}",
        fleet.logs()
    );
}

/// The link a replica is cut off on: a TCP proxy between node 3 and that server.
enum Link {
    Redis,
    Postgres,
}

/// Node 3, a replica (nodes 1 and 2 start first, so it never leads), loses `link`: it reports
/// not-ready, refuses money requests with `unavailable` (503) and moves no money, while the rest
/// of the fleet plays on; when the link comes back it recovers by itself and takes bets again.
async fn replica_cut_off(test: &str, link: Link) {
    let Some(pg) = require::fleet(test) else {
        return;
    };
    let (fleet, proxy, server) = match link {
        Link::Redis => {
            // The proxy's target port is only known once the fleet's Redis runs: start the fleet
            // with two nodes' default URLs and node 3 on a proxy against a Redis port chosen first.
            let redis_port = crashfleet_tests::free_port();
            let proxy = crashfleet_tests::proxy::Proxy::start(redis_port).await;
            let opts = FleetOpts {
                redis_for: vec![None, None, Some(proxy.url())],
                ..FleetOpts::default()
            };
            let fleet = Fleet::start_with_redis_port("cutoff", &pg, opts, redis_port).await;
            (fleet, proxy, "Redis")
        }
        Link::Postgres => {
            // The database is created first so the proxy knows where the server listens.
            let probe = crashfleet_tests::db::TestDb::create(&pg, "pgcut-probe").await;
            let proxy = crashfleet_tests::proxy::Proxy::start(probe.port()).await;
            probe.drop_now().await;
            let opts = FleetOpts {
                db_port_for: vec![None, None, Some(proxy.port)],
                ..FleetOpts::default()
            };
            (Fleet::start("pgcut", &pg, opts).await, proxy, "PostgreSQL")
        }
    };
    let (leader, _) = fleet.wait_leader(0, None, 0).await;
    assert_ne!(leader, "node-3", "node 1 started first and leads");
    let token = fleet.register(0, "carol").await;
    proxy.cut();
    let cut = format!("not ready without {server}");
    wait_readyz(&fleet, 2, 503, Duration::from_secs(15), &cut).await;
    // The rest of the fleet plays on.
    fleet.wait_phase(0, "betting", 300).await;
    let (s, v) = fleet.bet(1, &token, "ok-1", 100, None).await;
    assert_eq!(s, 201, "the rest of the fleet plays on: {v}");
    // Money requests through node 3 are refused with a clear code; no money moved.
    let (s, v) = fleet.bet(2, &token, "cut-1", 100, None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    let (s, v) = fleet
        .cash_out(2, &token, "cut-c", v["bet_id"].as_str().unwrap_or("x"))
        .await;
    assert!(
        s == 503 || s == 404,
        "a cash-out through the cut node: {s} {v}"
    );
    assert_eq!(
        fleet.balance(0, &token).await,
        100_000 - 100,
        "only the bet through node 1 moved money"
    );
    proxy.restore();
    let back = format!("recovered by itself when {server} came back");
    wait_readyz(&fleet, 2, 200, Duration::from_secs(20), &back).await;
    fleet.wait_phase(2, "betting", 300).await;
    let (s, v) = fleet.bet(2, &token, "back-1", 100, None).await;
    assert_eq!(s, 201, "after recovery: {v}");
    settle_and_check(&fleet, 2).await;
    fleet.db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_cut_off_from_redis_refuses_money_and_recovers() {
    replica_cut_off(
        "replica_cut_off_from_redis_refuses_money_and_recovers",
        Link::Redis,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_cut_off_from_postgres_refuses_money_and_recovers() {
    replica_cut_off(
        "replica_cut_off_from_postgres_refuses_money_and_recovers",
        Link::Postgres,
    )
    .await;
}
