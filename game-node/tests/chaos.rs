//! Chaos: a 3-node fleet (Redis leader election, PostgreSQL ledger, every node's links to Redis
//! and PostgreSQL through its own fault proxy) under load from `crashfleet-load` (bets and
//! cash-outs over REST and over WebSocket at once), while faults are injected one after another at
//! random instants: kill -9 of the leader or of any node, SIGSTOP of the leader past its lease,
//! Redis restart, PostgreSQL restart, a node's link to Redis or PostgreSQL cut or slowed.
//!
//! Afterwards, every MISSION.md money invariant is checked against the ledger: the conservation
//! audit is exact; round numbers are contiguous; every crashed round verifies against the
//! commitment; no bet is open in a finished round; every bet a node accepted is in the ledger and
//! settled; no bet was paid above its round's crash point; every cash-out a node confirmed was paid
//! exactly as confirmed; every error a player saw carried a stable code. A summary table is
//! printed.
//!
//! The default run (CI) injects 8 faults. `tests/chaos/run.sh N` (or `CRASHFLEET_CHAOS_FAULTS=N`)
//! runs a longer one; `CRASHFLEET_CHAOS_SEED` replays a fault sequence.

mod fleet_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crashfleet_tests::load::{self, LoadArgs, Report};
use fleet_support::{ADMIN, Fleet, FleetOpts, OwnPg, Proxy, free_port, wait_ready_url};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Every code a player may see: the API's stable codes (docs/API.md) and the load generator's own
/// names for answers that never came (a killed node, a cut socket).
const STABLE_CODES: &[&str] = &[
    "bad_request",
    "invalid_amount",
    "invalid_multiplier",
    "missing_idempotency_key",
    "invalid_idempotency_key",
    "idempotency_conflict",
    "unauthorized",
    "forbidden",
    "not_found",
    "unknown_round",
    "unknown_bet",
    "betting_closed",
    "bet_limit",
    "insufficient_funds",
    "max_payout",
    "not_flying",
    "already_settled",
    "too_late",
    "rate_limited",
    "unavailable",
    // transport level, from crashfleet-load
    "transport",
    "timeout",
    "no_answer",
    "client_backlog",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillNode,
    StopLeader,
    RestartRedis,
    RestartPostgres,
    CutRedis,
    CutPostgres,
    SlowRedis,
    SlowPostgres,
}

const FAULTS: &[Fault] = &[
    Fault::KillLeader,
    Fault::KillNode,
    Fault::StopLeader,
    Fault::RestartRedis,
    Fault::RestartPostgres,
    Fault::CutRedis,
    Fault::CutPostgres,
    Fault::SlowRedis,
    Fault::SlowPostgres,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The node that currently leads, as the first node that answers says.
async fn leader(fleet: &Fleet) -> Option<usize> {
    for i in 0..fleet.nodes.len() {
        let (s, v) = fleet.get(i, "/api/v1/fleet", None).await;
        if s == 200
            && let Some(id) = v["leader"].as_str()
        {
            return fleet.nodes.iter().position(|n| n.id == id);
        }
    }
    None
}

fn load_args(urls: &[String], via: &str, players: u64) -> LoadArgs {
    let mut argv: Vec<String> = vec!["crashfleet-load".into()];
    for u in urls {
        argv.extend(["--url".into(), u.clone()]);
    }
    argv.extend(
        [
            "--via",
            via,
            "--connections",
            &players.to_string(),
            "--players",
            &players.to_string(),
            "--bets-per-player",
            "2",
            "--bet-rate",
            "40",
            "--duration",
            "1h",
            "--ping-interval",
            "2s",
            "--quiet",
        ]
        .map(String::from),
    );
    <LoadArgs as clap::Parser>::try_parse_from(argv).expect("load arguments")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_under_load_never_break_the_money_invariants() {
    if fleet_support::available("chaos").is_none() {
        return;
    }
    let faults = env_u64("CRASHFLEET_CHAOS_FAULTS").unwrap_or(8) as usize;
    let seed = env_u64("CRASHFLEET_CHAOS_SEED").unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos: {faults} faults, seed {seed} (CRASHFLEET_CHAOS_SEED={seed} replays them)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // A PostgreSQL of our own (the suite restarts it) and a proxy per node per link.
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = OwnPg::start(&dir.path().join("pg"));
    let pg_port: u16 = pg
        .url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the PostgreSQL port");
    let redis_port = free_port();
    let mut redis_links = Vec::new();
    let mut pg_links = Vec::new();
    for _ in 0..3 {
        redis_links.push(Proxy::start(redis_port).await);
        pg_links.push(Proxy::start(pg_port).await);
    }
    let opts = FleetOpts {
        redis_for: redis_links.iter().map(|p| Some(p.url())).collect(),
        db_port_for: pg_links.iter().map(|p| Some(p.port)).collect(),
        ..FleetOpts::default()
    };
    let mut fleet = Fleet::start_with_redis_port("chaos", &pg.url, opts, redis_port).await;
    let urls: Vec<String> = fleet.nodes.iter().map(|n| n.url.clone()).collect();

    // Load over REST and over WebSocket at the same time.
    let stop = CancellationToken::new();
    let mut loads = Vec::new();
    for via in ["rest", "ws"] {
        let prepared = load::prepare(load_args(&urls, via, 12))
            .await
            .expect("load generator set-up");
        loads.push(tokio::spawn(load::execute_until(
            prepared,
            false,
            stop.clone(),
        )));
    }

    let started = Instant::now();
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..faults {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2_500))).await;
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let node = rng.random_range(0..fleet.nodes.len());
        let what = match fault {
            Fault::KillLeader | Fault::KillNode | Fault::StopLeader => {
                let target = if fault == Fault::KillNode {
                    Some(node)
                } else {
                    leader(&fleet).await
                };
                let Some(i) = target else {
                    eprintln!("chaos: fault {k}: no leader to hit, skipped");
                    continue;
                };
                if fault == Fault::StopLeader {
                    fleet.nodes[i].signal("STOP");
                    tokio::time::sleep(Duration::from_millis(2_500)).await;
                    fleet.nodes[i].signal("CONT");
                } else {
                    fleet.nodes[i].kill9();
                    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
                    fleet.nodes[i].restart();
                    wait_ready_url(&fleet.http, &fleet.nodes[i].url).await;
                }
                format!("{fault:?} {}", fleet.nodes[i].id)
            }
            Fault::RestartRedis => {
                fleet.redis.restart();
                format!("{fault:?}")
            }
            Fault::RestartPostgres => {
                pg.restart();
                format!("{fault:?}")
            }
            Fault::CutRedis | Fault::CutPostgres | Fault::SlowRedis | Fault::SlowPostgres => {
                let link = match fault {
                    Fault::CutRedis | Fault::SlowRedis => &redis_links[node],
                    _ => &pg_links[node],
                };
                if matches!(fault, Fault::CutRedis | Fault::CutPostgres) {
                    link.cut();
                    tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
                } else {
                    link.slow(rng.random_range(20..250));
                    tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
                }
                link.restore();
                format!("{fault:?} node-{}", node + 1)
            }
        };
        eprintln!(
            "chaos: fault {k} at {:.1}s: {what}",
            started.elapsed().as_secs_f64()
        );
        *injected.entry(format!("{fault:?}")).or_default() += 1;
    }

    // Let the fleet recover, stop the load and let the last round finish.
    for n in &fleet.nodes {
        wait_ready_url(&fleet.http, &n.url).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut reports: Vec<Report> = Vec::new();
    for l in loads {
        reports.push(l.await.expect("load task").expect("load run"));
    }
    let (_, current) = fleet.get(0, "/api/v1/round", None).await;
    if let Some(n) = current["round"]["number"].as_u64() {
        fleet.wait_settled(0, n).await;
    }

    let violations = check(&fleet, &reports).await;
    print_summary(&injected, &reports, &fleet, &violations).await;
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}\n{}",
        violations.len(),
        violations.join("\n"),
        fleet.logs()
    );
}

/// Every invariant; returns the violations in words.
async fn check(fleet: &Fleet, reports: &[Report]) -> Vec<String> {
    let mut v = Vec::new();
    // Audit exact, rounds contiguous, crashed rounds verify (the harness's own checks).
    let rounds = fleet.assert_invariants(0).await;
    let mut ledger_bets: HashMap<String, Value> = HashMap::new();
    for r in &rounds {
        let n = r["number"].as_u64().unwrap_or(0);
        let (_, detail) = fleet.get(0, &format!("/api/v1/rounds/{n}"), None).await;
        let crash = r["crash_x100"].as_u64();
        for b in detail["bets"].as_array().cloned().unwrap_or_default() {
            let id = b["bet_id"].as_str().unwrap_or_default().to_string();
            match b["status"].as_str() {
                Some("open") => v.push(format!("bet {id} of finished round {n} is still open")),
                Some("won") => {
                    let m = b["cashout_x100"].as_u64().unwrap_or(u64::MAX);
                    // At the crash point only an auto target equal to it wins (the curve reaches
                    // it at the crash instant); a manual cash-out there is too late.
                    let auto_at_crash = b["auto_cashout_x100"].as_u64() == crash;
                    if r["status"] == "crashed"
                        && crash.is_some_and(|c| m > c || (m == c && !auto_at_crash))
                    {
                        v.push(format!(
                            "bet {id} of round {n} paid at {m} at or above the crash point {crash:?}"
                        ));
                    }
                    let stake = b["stake"].as_i64().unwrap_or(0);
                    let want = game_node::engine::payout(stake, m, i64::MAX);
                    if b["payout"].as_i64() != Some(want) {
                        v.push(format!("bet {id} paid {} for {stake} at {m}", b["payout"]));
                    }
                }
                _ => {}
            }
            ledger_bets.insert(id, b);
        }
    }
    for r in reports {
        for id in &r.accepted_bet_ids {
            if !ledger_bets.contains_key(id) {
                v.push(format!("accepted bet {id} is not in the ledger (lost)"));
            }
        }
        for c in &r.accepted_cashouts {
            match ledger_bets.get(&c.bet_id) {
                Some(b)
                    if b["status"] == "won"
                        && b["cashout_x100"].as_u64() == Some(c.multiplier_x100)
                        && b["payout"].as_i64() == Some(c.payout) => {}
                other => v.push(format!(
                    "cash-out confirmed at {} for {} but the ledger has {other:?}",
                    c.multiplier_x100, c.payout
                )),
            }
        }
        for code in r.bets.by_code.keys().chain(r.cashouts.by_code.keys()) {
            if !STABLE_CODES.contains(&code.as_str()) {
                v.push(format!(
                    "a player saw an answer without a stable code: {code}"
                ));
            }
        }
    }
    v
}

async fn print_summary(
    injected: &BTreeMap<String, u64>,
    reports: &[Report],
    fleet: &Fleet,
    violations: &[String],
) {
    let (_, audit) = fleet.get(0, "/api/v1/admin/audit", Some(ADMIN)).await;
    let (_, stats) = fleet.get(0, "/api/v1/stats", None).await;
    let total: u64 = injected.values().sum();
    println!("\nchaos summary");
    println!("  faults injected      {total}");
    for (k, n) in injected {
        println!("    {k:<18} {n}");
    }
    println!("  rounds               {}", stats["rounds"]);
    for (r, via) in reports.iter().zip(["rest", "ws"]) {
        println!(
            "  bets via {via:<4}        sent {} ok {} refused {} errors {} (p99 {:.1} ms); cash-outs sent {} ok {} refused {} errors {}",
            r.bets.sent,
            r.bets.ok,
            r.bets.refused,
            r.bets.errors,
            r.bets.p99_ms,
            r.cashouts.sent,
            r.cashouts.ok,
            r.cashouts.refused,
            r.cashouts.errors
        );
        let codes: Vec<String> = r
            .bets
            .by_code
            .iter()
            .chain(r.cashouts.by_code.iter())
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        println!("    codes seen         {}", codes.join(" "));
    }
    println!(
        "  money moved          stakes {} payouts {} refunds {} (audit balanced: {})",
        audit["stakes"], audit["payouts"], audit["refunds"], audit["balanced"]
    );
    println!("  violations           {}", violations.len());
}
