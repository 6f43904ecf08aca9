//! Chaos: a 3-node fleet (Redis leader election, PostgreSQL ledger, every node's links to Redis
//! and PostgreSQL through its own fault proxy) under load from `crashfleet-load` (bets and
//! cash-outs over REST and over WebSocket at once), while faults are injected one after another at
//! random instants: kill -9 of the leader or of any node, SIGSTOP of the leader past its lease,
//! Redis restart, PostgreSQL restart, a node's link to Redis or PostgreSQL cut or slowed.
//!
//! Afterwards, every money invariant is checked against the ledger: the conservation
//! audit is exact; round numbers are contiguous; every crashed round verifies against the
//! commitment; no bet is open in a finished round; every bet a node accepted is in the ledger and
//! settled; no bet was paid above its round's crash point; every cash-out a node confirmed was paid
//! exactly as confirmed; every error a player saw carried a stable code. A summary table is
//! printed.
//!
//! The default run (CI) injects 8 faults. `tests/chaos/run.sh N` (or `CRASHFLEET_CHAOS_FAULTS=N`)
//! runs a longer one; `CRASHFLEET_CHAOS_SEED` replays a fault sequence.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crashfleet_tests::fleet::{ADMIN, Fleet, FleetOpts, OwnPg, wait_ready_url};
use crashfleet_tests::free_port;
use crashfleet_tests::load::{self, LoadArgs, Report};
use crashfleet_tests::proxy::Proxy;
use crashfleet_tests::witness::LogWitness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

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

fn load_args(urls: &[String], via: &str, players: u64, rate: u64) -> LoadArgs {
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
            &rate.to_string(),
            "--duration",
            "24h",
            "--ping-interval",
            "2s",
            // Enough for a day of 10-unit stakes: a soak must not end in insufficient funds.
            "--admin-token",
            ADMIN,
            "--credit",
            "100000000",
            "--quiet",
        ]
        .map(String::from),
    );
    <LoadArgs as clap::Parser>::try_parse_from(argv).expect("load arguments")
}

/// A 3-node fleet on a PostgreSQL of its own (the faults restart it) with a fault proxy per node
/// per link. Fields drop in order: nodes and proxies first, the PostgreSQL before its directory.
struct Rig {
    fleet: Fleet,
    redis_links: Vec<Proxy>,
    pg_links: Vec<Proxy>,
    pg: OwnPg,
    urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(name: &str) -> Rig {
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
        let fleet = Fleet::start_with_redis_port(name, &pg.url, opts, redis_port).await;
        let urls = fleet.nodes.iter().map(|n| n.url.clone()).collect();
        Rig {
            fleet,
            redis_links,
            pg_links,
            pg,
            urls,
            _dir: dir,
        }
    }

    /// Load over REST and over WebSocket at the same time: `(players, bets per second)` each.
    async fn start_loads(
        &self,
        rest: (u64, u64),
        ws: (u64, u64),
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<anyhow::Result<Report>>> {
        let mut loads = Vec::new();
        for (via, (players, rate)) in [("rest", rest), ("ws", ws)] {
            let prepared = load::prepare(load_args(&self.urls, via, players, rate))
                .await
                .expect("load generator set-up");
            loads.push(tokio::spawn(load::execute_until(
                prepared,
                false,
                stop.clone(),
            )));
        }
        loads
    }

    /// One fault chosen by `rng`, injected and healed; `None` when it had no target.
    async fn inject(&mut self, rng: &mut StdRng) -> Option<(Fault, String)> {
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let node = rng.random_range(0..self.fleet.nodes.len());
        let fleet = &mut self.fleet;
        let what = match fault {
            Fault::KillLeader | Fault::KillNode | Fault::StopLeader => {
                let target = if fault == Fault::KillNode {
                    Some(node)
                } else {
                    leader(fleet).await
                };
                let i = target?;
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
                self.pg.restart();
                format!("{fault:?}")
            }
            Fault::CutRedis | Fault::CutPostgres | Fault::SlowRedis | Fault::SlowPostgres => {
                let link = match fault {
                    Fault::CutRedis | Fault::SlowRedis => &self.redis_links[node],
                    _ => &self.pg_links[node],
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
        Some((fault, what))
    }

    /// Lets the fleet recover, stops the load, lets the last round settle and returns the
    /// generators' reports.
    async fn finish(
        &self,
        stop: CancellationToken,
        loads: Vec<tokio::task::JoinHandle<anyhow::Result<Report>>>,
    ) -> Vec<Report> {
        let fleet = &self.fleet;
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
        reports
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_under_load_never_break_the_money_invariants() {
    if crashfleet_tests::require::fleet("chaos").is_none() {
        return;
    }
    let faults = env_u64("CRASHFLEET_CHAOS_FAULTS").unwrap_or(8) as usize;
    let (seed, mut rng) = seeded();
    eprintln!("chaos: {faults} faults, seed {seed} (CRASHFLEET_CHAOS_SEED={seed} replays them)");

    let mut rig = Rig::start("chaos").await;
    let stop = CancellationToken::new();
    let loads = rig.start_loads((12, 40), (12, 40), &stop).await;
    // An auditor's copy of every signed round-log head any node served between the faults.
    let mut witness = LogWitness::new(&rig.fleet.nodes[0].api).await;
    let mut head_violations = Vec::new();

    let started = Instant::now();
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..faults {
        for n in &rig.fleet.nodes {
            // A node paused or cut off by the last fault just gives no head this time.
            if let Ok(Some(v)) =
                tokio::time::timeout(Duration::from_millis(1_500), witness.observe(&n.api)).await
            {
                head_violations.push(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2_500))).await;
        let Some((fault, what)) = rig.inject(&mut rng).await else {
            eprintln!("chaos: fault {k}: no leader to hit, skipped");
            continue;
        };
        eprintln!(
            "chaos: fault {k} at {:.1}s: {what}",
            started.elapsed().as_secs_f64()
        );
        *injected.entry(format!("{fault:?}")).or_default() += 1;
    }

    let reports = rig.finish(stop, loads).await;
    let mut violations = check(&rig.fleet, &reports).await;
    // After all the faults: every head seen is a prefix of the newest (the log only grew).
    violations.extend(head_violations);
    violations.extend(witness.check(&rig.fleet.nodes[0].api).await);
    eprintln!(
        "chaos: {} signed log heads seen across the faults, checked for consistency",
        witness.seen()
    );
    print_summary(&injected, &reports, &rig.fleet, &violations).await;
    assert_none(&violations, &rig.fleet);
}

/// One soak sample: the nodes' memory, descriptors and sockets; Redis' and PostgreSQL's sizes.
#[derive(Debug, Default, Clone)]
struct Sample {
    t_s: f64,
    rss: Vec<Option<f64>>,
    fds: Vec<Option<f64>>,
    ws_connections: f64,
    redis_used_memory: Option<f64>,
    redis_keys: Option<f64>,
    pg_bytes: Option<f64>,
    pg_bets: Option<f64>,
}

impl Sample {
    const HEADER: &str = "t_s,rss_node1,rss_node2,rss_node3,fds_node1,fds_node2,fds_node3,\
                          ws_connections,redis_used_memory,redis_keys,pg_bytes,pg_bets";

    fn csv(&self) -> String {
        let f = |v: &Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_default();
        let mut cols = vec![format!("{:.1}", self.t_s)];
        cols.extend(self.rss.iter().map(f));
        cols.extend(self.fds.iter().map(f));
        cols.push(format!("{:.0}", self.ws_connections));
        for v in [
            &self.redis_used_memory,
            &self.redis_keys,
            &self.pg_bytes,
            &self.pg_bets,
        ] {
            cols.push(f(v));
        }
        cols.join(",")
    }
}

/// A gauge's value from a Prometheus text page (the sum of its series).
fn gauge(page: &str, name: &str) -> Option<f64> {
    crashfleet_tests::prom::value(page, name)
}

async fn redis_info(port: u16, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .output()
    })
    .await
    .ok()?
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Samples every `every` until `stop`: nothing here touches the fleet's state.
async fn sampler(
    urls: Vec<String>,
    redis_port: u16,
    db_url: String,
    every: Duration,
    stop: CancellationToken,
) -> Vec<Sample> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut db: Option<sqlx::PgConnection> = None;
    loop {
        let mut s = Sample {
            t_s: started.elapsed().as_secs_f64(),
            ..Sample::default()
        };
        for u in &urls {
            let page = match http.get(format!("{u}/metrics")).send().await {
                Ok(r) => r.text().await.ok(),
                Err(_) => None, // a node being killed and restarted: a gap in its line
            };
            let page = page.unwrap_or_default();
            s.rss.push(gauge(&page, "process_resident_memory_bytes"));
            s.fds.push(gauge(&page, "process_open_fds"));
            s.ws_connections += gauge(&page, "crashfleet_ws_connections").unwrap_or(0.0);
        }
        if let Some(info) = redis_info(redis_port, &["INFO", "memory"]).await {
            s.redis_used_memory = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok());
        }
        s.redis_keys = redis_info(redis_port, &["DBSIZE"])
            .await
            .and_then(|v| v.trim().parse().ok());
        if db.is_none() {
            db = <sqlx::PgConnection as sqlx::Connection>::connect(&db_url)
                .await
                .ok();
        }
        if let Some(c) = db.as_mut() {
            let row: Result<(i64, i64), _> = sqlx::query_as(
                "SELECT pg_database_size(current_database())::BIGINT, \
                 (SELECT count(*) FROM bets)::BIGINT",
            )
            .fetch_one(&mut *c)
            .await;
            match row {
                Ok((bytes, bets)) => {
                    s.pg_bytes = Some(bytes as f64);
                    s.pg_bets = Some(bets as f64);
                }
                Err(_) => db = None, // PostgreSQL restarted: reconnect next time
            }
        }
        samples.push(s);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return samples,
        }
    }
}

/// The median of `f` over the samples whose time lies in `[from, to)` of the run (fractions).
fn window_median(
    samples: &[Sample],
    from: f64,
    to: f64,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let end = samples.last()?.t_s;
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_s >= from * end && s.t_s < to * end)
        .filter_map(f)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The soak: steady load on the 3-node fleet for `CRASHFLEET_SOAK_SECS` with a fault every
/// `CRASHFLEET_SOAK_FAULT_EVERY_SECS` (default 60), sampled every 10 s into
/// `CRASHFLEET_SOAK_CSV` (default target/soak.csv). Then the money invariants, and flatness: the
/// median of the last fifth against the median of the middle fifth (after warm-up and after the
/// round keys' ten-minute expiry has started to bite) for the nodes' summed RSS and descriptors
/// and Redis' memory and keys; PostgreSQL must grow only with the rows it
/// keeps (bytes per bet). Opt-in: `tests/soak/run.sh [MINUTES]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_stays_flat_under_load_and_faults() {
    let Some(secs) = env_u64("CRASHFLEET_SOAK_SECS") else {
        eprintln!("soak: opt-in; set CRASHFLEET_SOAK_SECS (tests/soak/run.sh runs 30 minutes)");
        return;
    };
    if crashfleet_tests::require::fleet("soak").is_none() {
        return;
    }
    let fault_every = env_u64("CRASHFLEET_SOAK_FAULT_EVERY_SECS")
        .unwrap_or(60)
        .max(5);
    let csv_path = std::env::var("CRASHFLEET_SOAK_CSV")
        .unwrap_or_else(|_| format!("{}/../target/soak.csv", env!("CARGO_MANIFEST_DIR")));
    let (seed, mut rng) = seeded();
    eprintln!("soak: {secs} s, a fault every {fault_every} s, seed {seed}, samples to {csv_path}");

    let mut rig = Rig::start("soak").await;
    let stop = CancellationToken::new();
    let loads = rig.start_loads((30, 40), (150, 60), &stop).await;
    let sampling = CancellationToken::new();
    let samples = tokio::spawn(sampler(
        rig.urls.clone(),
        rig.fleet.redis.port,
        rig.fleet.db.url.clone(),
        Duration::from_secs(10),
        sampling.clone(),
    ));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let next = Instant::now() + Duration::from_secs(fault_every);
        if next >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        if let Some((fault, what)) = rig.inject(&mut rng).await {
            eprintln!("soak: at {:.0}s: {what}", started.elapsed().as_secs_f64());
            *injected.entry(format!("{fault:?}")).or_default() += 1;
        }
    }
    sampling.cancel();
    let samples = samples.await.expect("sampler");
    let reports = rig.finish(stop, loads).await;

    let mut text = String::from(Sample::HEADER);
    text.push('\n');
    for s in &samples {
        text.push_str(&s.csv());
        text.push('\n');
    }
    std::fs::write(&csv_path, text).expect("writing the soak samples");

    let mut violations = check(&rig.fleet, &reports).await;
    let mut flat = Vec::new();
    // (what, value of a sample, allowed growth factor, allowed growth in absolute units)
    type Pick = Box<dyn Fn(&Sample) -> Option<f64>>;
    let mut series: Vec<(String, Pick, f64, f64)> = Vec::new();
    // Summed over the nodes: players move between nodes when one is killed, and a node's memory
    // and descriptors follow its players, so one node's line jumps while the fleet's stays level.
    fn total(v: &[Option<f64>]) -> Option<f64> {
        v.iter()
            .any(Option::is_some)
            .then(|| v.iter().flatten().sum())
    }
    series.push((
        "RSS, all nodes".into(),
        Box::new(|s: &Sample| total(&s.rss)),
        1.25,
        32e6,
    ));
    series.push((
        "open fds, all nodes".into(),
        Box::new(|s: &Sample| total(&s.fds)),
        1.25,
        32.0,
    ));
    series.push((
        "Redis used_memory".into(),
        Box::new(|s: &Sample| s.redis_used_memory),
        1.25,
        4e6,
    ));
    series.push((
        "Redis keys".into(),
        Box::new(|s: &Sample| s.redis_keys),
        1.25,
        16.0,
    ));
    for (name, pick, factor, slack) in &series {
        let (Some(early), Some(late)) = (
            window_median(&samples, 0.4, 0.6, pick),
            window_median(&samples, 0.8, 1.01, pick),
        ) else {
            violations.push(format!("soak: no samples of {name}"));
            continue;
        };
        flat.push(format!("  {name:<20} {early:>14.0} -> {late:>14.0}"));
        if late > early * factor + slack {
            violations.push(format!("soak: {name} grew from {early:.0} to {late:.0}"));
        }
    }
    // PostgreSQL keeps every bet: its size grows with them, at a steady cost per bet.
    let per_bet = |from: f64, to: f64| -> Option<f64> {
        let end = samples.last()?.t_s;
        let inside = |s: &&Sample| {
            s.t_s >= from * end && s.t_s < to * end && s.pg_bytes.is_some() && s.pg_bets.is_some()
        };
        let (first, last) = (
            samples.iter().find(inside)?,
            samples.iter().rev().find(inside)?,
        );
        let bets = last.pg_bets? - first.pg_bets?;
        let bytes = last.pg_bytes? - first.pg_bytes?;
        (bets > 0.0).then_some(bytes / bets)
    };
    let (early, late) = (per_bet(0.0, 0.5), per_bet(0.5, 1.01));
    match (early, late) {
        (Some(e), Some(l)) if l > e.max(100.0) * 1.5 => violations.push(format!(
            "soak: PostgreSQL grew {l:.0} bytes per bet in the second half against {e:.0} in the first"
        )),
        (Some(_), Some(_)) => {}
        _ => violations.push("soak: no PostgreSQL growth measured (no bets?)".into()),
    }
    print_summary(&injected, &reports, &rig.fleet, &violations).await;
    println!(
        "  soak samples         {} over {:.0} s ({csv_path})",
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<20} {:>14} -> {:>14}",
        "flatness (median)", "middle fifth", "last fifth"
    );
    for l in &flat {
        println!("{l}");
    }
    println!(
        "  PostgreSQL bytes/bet {:.0} (first half) -> {:.0} (second half)",
        early.unwrap_or(f64::NAN),
        late.unwrap_or(f64::NAN)
    );
    assert_none(&violations, &rig.fleet);
}

fn assert_none(violations: &[String], fleet: &Fleet) {
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}\n{}",
        violations.len(),
        violations.join("\n"),
        fleet.logs()
    );
}

/// The run's seed (`CRASHFLEET_CHAOS_SEED` replays one) and the fault RNG it seeds.
fn seeded() -> (u64, StdRng) {
    let seed = env_u64("CRASHFLEET_CHAOS_SEED").unwrap_or_else(|| rand::rng().random());
    (seed, StdRng::seed_from_u64(seed))
}

/// Every invariant; returns the violations in words.
async fn check(fleet: &Fleet, reports: &[Report]) -> Vec<String> {
    // Audit exact, rounds contiguous, crashed rounds verify (the harness's own checks).
    let rounds = fleet.assert_invariants(0).await;
    let mut details = Vec::new();
    for r in &rounds {
        let n = r["number"].as_u64().unwrap_or(0);
        let (_, detail) = fleet.get(0, &format!("/api/v1/rounds/{n}"), None).await;
        details.push((r.clone(), detail));
    }
    load::money::check_bets(&details, reports, |stake, m| {
        game_node::engine::payout(stake, m, i64::MAX)
    })
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
