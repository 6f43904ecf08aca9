//! `crashfleet-load`: the load generator (the binary is a thin wrapper; chaos tests drive the
//! same code as a library).
//!
//! How one run goes:
//! 1. check the targets (loopback only) and raise this process's file-descriptor limit;
//! 2. register the players (spread over the nodes), top them up when an admin token is given,
//!    and read each node's memory (`/metrics`);
//! 3. open the WebSocket connections (bounded concurrency) and read memory again: the difference
//!    over the connection count is the per-connection cost;
//! 4. for `--duration` (or `--rounds`): an observer connection follows the rounds; while a betting
//!    window is open the scheduler emits bets at `--bet-rate` (open loop); when a round flies every
//!    manual bet is cashed out at its own random target instant; every connection records tick
//!    delivery lag and sends pings;
//! 5. wait for answers still in flight (bounded), close everything and build the [`Report`].

pub mod args;
mod conn;
pub mod cpu;
pub mod money;
mod rest;
pub mod stats;
mod watcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use args::{LoadArgs, Target, Via};
use conn::Command;
pub use stats::{Latency, Outcomes, Report, RequestReport, ServerReport, WsReport};

/// Password of every generated player (they are throwaway accounts on a test node).
const PASSWORD: &str = "load-test-password";
/// How long the end of a run waits for answers still in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// No bet leaves later than this before the betting window closes: a bet that cannot arrive in
/// time measures the network, not the server.
const CLOSE_MARGIN: Duration = Duration::from_millis(50);

/// Unix time in microseconds (tick lag is measured against the node's `server_time_ms`).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The local instant at which the shared wall clock reads `ms` (targets are on this machine).
fn instant_at(ms: i64) -> Instant {
    let delta_us = ms * 1000 - now_us();
    let now = Instant::now();
    if delta_us >= 0 {
        now + Duration::from_micros(delta_us as u64)
    } else {
        now.checked_sub(Duration::from_micros(delta_us.unsigned_abs()))
            .unwrap_or(now)
    }
}

/// A registered player.
#[derive(Debug, Clone)]
pub struct Player {
    pub username: String,
    pub token: String,
}

/// The round as the observer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundState {
    pub number: u64,
    pub phase: Phase,
    pub betting_closes_at_ms: i64,
    pub started_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Betting,
    Flying,
    Over,
}

/// A bet the generator will cash out by hand during its round's flight.
#[derive(Debug, Clone)]
struct OpenBet {
    round: u64,
    bet_id: String,
    player: usize,
    /// Connection that placed it (WebSocket mode: the cash-out goes back on it).
    conn: Option<usize>,
    target_x100: u64,
}

/// State shared by every task of a run.
pub(crate) struct Shared {
    pub bets: Outcomes,
    pub cashouts: Outcomes,
    pub ticks: Latency,
    pub tick_spread: stats::Spread,
    pub crashes: Latency,
    pub crash_spread: stats::Spread,
    pub pings: Latency,
    pub messages: AtomicU64,
    pub resyncs: AtomicU64,
    /// From a socket's drop to the first snapshot on the next one, per reconnect.
    pub reconnect_gaps: Latency,
    /// Reconnect snapshots older than what the player had already seen.
    pub stale_snapshots: AtomicU64,
    pub open: AtomicU64,
    pub connect_errors: AtomicU64,
    pub dropped: AtomicU64,
    pub in_flight: AtomicU64,
    pub bets_unplaced: AtomicU64,
    pub stopping: AtomicBool,
    open_bets: Mutex<Vec<OpenBet>>,
    /// Every accepted bet id, and every accepted cash-out (bet id, multiplier, payout): the chaos
    /// suite checks each against the ledger afterwards.
    accepted: std::sync::Mutex<(Vec<String>, Vec<AcceptedCashOut>)>,
    /// Every answer to every cash-out request, retries included (the chaos suite checks that a
    /// refused cash-out was left unpaid and that `outcome_unknown` resolved to one outcome).
    cashout_answers: std::sync::Mutex<Vec<CashOutAnswer>>,
}

/// How many times a cash-out answered `outcome_unknown` is retried with the same key (the node's
/// promise: a retry returns the real first outcome). REST waits the answer's `Retry-After`
/// (1 s) between attempts, trying the next node; a WebSocket resends on its own socket.
pub const UNKNOWN_RETRIES: u32 = 8;

/// One answer to a cash-out request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashOutAnswer {
    pub bet_id: String,
    /// The request's idempotency key (the WebSocket `request_id`).
    pub key: String,
    /// `Ok((multiplier_x100, payout))` when accepted, else the error code.
    pub answer: Result<(u64, i64), String>,
}

/// A cash-out a node confirmed to the player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCashOut {
    pub bet_id: String,
    pub multiplier_x100: u64,
    pub payout: i64,
}

impl Shared {
    fn new() -> Self {
        Shared {
            bets: Outcomes::default(),
            cashouts: Outcomes::default(),
            ticks: Latency::new(),
            tick_spread: stats::Spread::new(),
            crashes: Latency::new(),
            crash_spread: stats::Spread::new(),
            pings: Latency::new(),
            messages: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            reconnect_gaps: Latency::new(),
            stale_snapshots: AtomicU64::new(0),
            open: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            bets_unplaced: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            open_bets: Mutex::new(Vec::new()),
            accepted: std::sync::Mutex::new((Vec::new(), Vec::new())),
            cashout_answers: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn cash_out_answer(&self, a: CashOutAnswer) {
        self.cashout_answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a);
    }

    pub(crate) fn cash_out_accepted(&self, c: AcceptedCashOut) {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .push(c);
    }

    /// A bet was accepted: remember it for a manual cash-out when it has no auto target.
    pub(crate) async fn bet_accepted(
        &self,
        round: u64,
        bet_id: String,
        player: usize,
        conn: Option<usize>,
        manual_target: Option<u64>,
    ) {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(bet_id.clone());
        if let Some(target_x100) = manual_target {
            self.open_bets.lock().await.push(OpenBet {
                round,
                bet_id,
                player,
                conn,
                target_x100,
            });
        }
    }
}

/// Minimal view of server messages: the type first, then only the fields a kind needs.
#[derive(Deserialize)]
pub(crate) struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
}

#[derive(Deserialize)]
struct SnapshotMsg {
    growth_per_ms: f64,
    round: Option<SnapshotRound>,
}

#[derive(Deserialize)]
struct SnapshotRound {
    number: u64,
    phase: String,
    betting_closes_at_ms: i64,
    started_at_ms: i64,
}

#[derive(Deserialize)]
struct RoundOpenMsg {
    round: u64,
    betting_closes_at_ms: i64,
}

#[derive(Deserialize)]
struct FlyingMsg {
    round: u64,
    started_at_ms: i64,
}

#[derive(Deserialize)]
struct RoundEndMsg {
    round: u64,
}

/// Everything a run needs, built by [`prepare`] and consumed by [`execute`].
pub struct Prepared {
    args: LoadArgs,
    targets: Vec<Target>,
    http: reqwest::Client,
    players: Vec<Player>,
    baseline: ServerReport,
}

/// Steps 1–2: targets, limits, players.
pub async fn prepare(args: LoadArgs) -> anyhow::Result<Prepared> {
    let targets = args::targets(&args.urls).map_err(anyhow::Error::msg)?;
    if args.credit > 0 && args.admin_token.is_none() {
        bail!("--credit needs --admin-token (or CRASHFLEET_ADMIN_TOKEN)");
    }
    let want = args.connections + 64;
    match rlimit::increase_nofile_limit(want.max(65_536)) {
        Ok(got) if got < want => bail!(
            "{} connections need {want} file descriptors, but this process may open only {got} (raise the hard limit: ulimit -Hn)",
            args.connections
        ),
        Ok(_) => {}
        Err(e) => eprintln!("crashfleet-load: could not raise the file-descriptor limit: {e}"),
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    for t in &targets {
        let r = http
            .get(format!("{}/api/v1/fairness", t.base))
            .send()
            .await
            .with_context(|| format!("{} does not answer", t.base))?;
        if !r.status().is_success() {
            bail!("{}: GET /api/v1/fairness answered {}", t.base, r.status());
        }
    }
    let players = register(&http, &targets, &args).await?;
    // After registration (password hashing grows the heap, and the allocator keeps it), right
    // before any connection opens.
    let baseline = scrape(&http, &targets).await;
    Ok(Prepared {
        args,
        targets,
        http,
        players,
        baseline,
    })
}

/// Registers `--players` players (names unique to this run), spread over the nodes.
async fn register(
    http: &reqwest::Client,
    targets: &[Target],
    args: &LoadArgs,
) -> anyhow::Result<Vec<Player>> {
    let run_id: String = {
        let mut rng = rand::rng();
        (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect()
    };
    // Two sign-ups in flight per node: a node runs at most 2 password jobs per client address
    // (more are answered `busy`), so more would only wait out Retry-After.
    let sem = Arc::new(Semaphore::new(2 * targets.len().max(1)));
    let mut tasks = Vec::new();
    for i in 0..args.players as usize {
        let http = http.clone();
        let base = targets[i % targets.len()].base.clone();
        let username = format!("load_{run_id}_{i}");
        let sem = sem.clone();
        let admin = args.admin_token.clone();
        let credit = args.credit;
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            register_one(&http, &base, username, admin.as_deref(), credit).await
        }));
    }
    let mut players = Vec::with_capacity(tasks.len());
    for t in tasks {
        players.push(t.await.context("registration task")??);
    }
    Ok(players)
}

/// Tries per registration while the node answers `busy` (each after its `Retry-After`).
const REGISTER_ATTEMPTS: u32 = 30;

async fn register_one(
    http: &reqwest::Client,
    base: &str,
    username: String,
    admin: Option<&str>,
    credit: i64,
) -> anyhow::Result<Player> {
    // A node answers `busy` (503 + Retry-After) when its password work queue or this client's
    // share of it is full: a well-behaved client waits and retries.
    let mut attempts = 0;
    let (status, body) = loop {
        let r = http
            .post(format!("{base}/api/v1/auth/register"))
            .json(&serde_json::json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .with_context(|| format!("registering {username} on {base}"))?;
        let status = r.status();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        attempts += 1;
        if body["code"] == "busy" && attempts < REGISTER_ATTEMPTS {
            let wait = retry_after.unwrap_or(1).clamp(1, 10);
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        break (status, body);
    };
    if !status.is_success() {
        let hint = if body["code"] == "rate_limited" {
            " (start the node with --rate-limit-ip 0 for load runs)"
        } else {
            ""
        };
        bail!("registering {username} on {base}: {status} {body}{hint}");
    }
    let token = body["token"]
        .as_str()
        .context("register answer without a token")?
        .to_string();
    if credit > 0
        && let Some(admin) = admin
    {
        let r = http
            .post(format!("{base}/api/v1/admin/players/{username}/credit"))
            .bearer_auth(admin)
            .header("Idempotency-Key", format!("load-credit-{username}"))
            .json(&serde_json::json!({"amount": credit}))
            .send()
            .await
            .with_context(|| format!("crediting {username}"))?;
        if !r.status().is_success() {
            bail!("crediting {username}: {}", r.status());
        }
    }
    Ok(Player { username, token })
}

/// Sums `process_resident_memory_bytes` and `crashfleet_ws_connections` over the nodes.
async fn scrape(http: &reqwest::Client, targets: &[Target]) -> ServerReport {
    let mut rss: Option<u64> = Some(0);
    let mut conns: Option<u64> = Some(0);
    for t in targets {
        let text = match http.get(format!("{}/metrics", t.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value = |name: &str| crate::prom::value(&text, name).map(|v| v as u64);
        rss = rss
            .zip(value("process_resident_memory_bytes"))
            .map(|(a, b)| a + b);
        conns = conns
            .zip(value("crashfleet_ws_connections"))
            .map(|(a, b)| a + b);
    }
    ServerReport {
        rss_bytes: rss,
        rss_baseline_bytes: None,
        rss_per_connection_bytes: None,
        connections_reported: conns,
    }
}

/// Steps 3–5. `progress` draws a progress line on standard error.
pub async fn execute(p: Prepared, progress: bool) -> anyhow::Result<Report> {
    execute_until(p, progress, CancellationToken::new()).await
}

/// [`execute`], also ending early when `stop` is cancelled (the chaos suite stops the load when
/// its faults are done).
pub async fn execute_until(
    p: Prepared,
    progress: bool,
    stop: CancellationToken,
) -> anyhow::Result<Report> {
    let Prepared {
        args,
        targets,
        http,
        players,
        baseline,
    } = p;
    let shared = Arc::new(Shared::new());
    let cancel = CancellationToken::new();
    let players = Arc::new(players);

    // The observer follows the rounds (and reconnects to the next node if its node dies).
    let (state_tx, state_rx) = watch::channel::<Option<RoundState>>(None);
    let growth = Arc::new(std::sync::Mutex::new(0.0f64));
    let rounds_done = Arc::new(AtomicU64::new(0));
    let observer = tokio::spawn(observe(
        targets.clone(),
        state_tx,
        growth.clone(),
        rounds_done.clone(),
        cancel.clone(),
    ));

    // The connections.
    let ramp_start = Instant::now();
    let mut senders: Vec<mpsc::Sender<Command>> = Vec::with_capacity(args.connections as usize);
    let mut conn_tasks = Vec::with_capacity(args.connections as usize);
    let sem = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1024);
    // Sockets that only watch (bets go over REST) are read by the watcher threads.
    let watcher = (args.via == Via::Rest).then(|| {
        Arc::new(watcher::Watcher::start(
            shared.clone(),
            args.ping_interval,
            cancel.clone(),
        ))
    });
    for i in 0..args.connections as usize {
        let (tx, rx) = mpsc::channel(256);
        senders.push(tx);
        let c = conn::Conn {
            index: i,
            watcher: watcher.clone(),
            urls: targets.iter().map(|t| t.ws.clone()).collect(),
            token: players[i % players.len()].token.clone(),
            ping_interval: args.ping_interval,
            shared: shared.clone(),
            cancel: cancel.clone(),
        };
        conn_tasks.push(tokio::spawn(c.run(rx, sem.clone(), ready_tx.clone())));
    }
    drop(ready_tx);
    let mut settled = 0u64;
    while settled < args.connections {
        tokio::select! {
            got = ready_rx.recv() => match got {
                Some(()) => settled += 1,
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if progress {
                    eprint!(
                        "\rcrashfleet-load: opening connections {}/{}   ",
                        shared.open.load(Ordering::Relaxed),
                        args.connections
                    );
                }
            }
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    let open_after_ramp = shared.open.load(Ordering::Relaxed);
    // Let the nodes settle the new sockets' buffers before measuring memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = scrape(&http, &targets).await;
    server.rss_baseline_bytes = baseline.rss_bytes;
    if let (Some(r), Some(b)) = (server.rss_bytes, baseline.rss_bytes)
        && open_after_ramp > 0
    {
        server.rss_per_connection_bytes = Some(r.saturating_sub(b) / open_after_ramp);
    }

    // The schedulers.
    let senders = Arc::new(senders);
    let rest = rest::Rest::new(
        &targets.iter().map(|t| t.base.clone()).collect::<Vec<_>>(),
        REQUEST_TIMEOUT,
    )
    .map_err(anyhow::Error::msg)?;
    let run = Run {
        args: args.clone(),
        targets: targets.clone(),
        rest: Arc::new(rest),
        players: players.clone(),
        shared: shared.clone(),
        senders: senders.clone(),
        growth: growth.clone(),
        cancel: cancel.clone(),
    };
    let bettor = tokio::spawn(run.clone().bets(state_rx.clone()));
    let casher = tokio::spawn(run.clone().cashouts(state_rx.clone()));

    let start = Instant::now();
    let cpu_mark = cpu::CpuMark::now(&args.node_pids, &args.relay_pids);
    let deadline = start + args.duration;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    loop {
        let done_rounds = rounds_done.load(Ordering::Relaxed);
        if Instant::now() >= deadline
            || stop.is_cancelled()
            || args.rounds.is_some_and(|r| done_rounds >= r)
        {
            break;
        }
        if progress && last_draw.elapsed() >= Duration::from_millis(250) {
            last_draw = Instant::now();
            draw(&args, &shared, start, done_rounds, *state_rx.borrow());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let duration_s = start.elapsed().as_secs_f64();
    let answered = |o: &stats::Outcomes| o.ok.load(Ordering::Relaxed) + o.refused();
    let cpu = cpu_mark.report(
        answered(&shared.bets) + answered(&shared.cashouts),
        shared.messages.load(Ordering::Relaxed),
        args.connections,
    );
    if progress {
        eprintln!();
    }

    // Stop scheduling, give answers in flight a bounded time, then close everything.
    shared.stopping.store(true, Ordering::Relaxed);
    let _ = bettor.await;
    let _ = casher.await;
    let drain_until = Instant::now() + DRAIN;
    while shared.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    for t in conn_tasks {
        let _ = t.await;
    }
    let _ = observer.await;

    let (accepted_bet_ids, accepted_cashouts) =
        std::mem::take(&mut *shared.accepted.lock().unwrap_or_else(|e| e.into_inner()));
    let cashout_answers = std::mem::take(
        &mut *shared
            .cashout_answers
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let tick = stats::Percentiles::of(&shared.ticks.merged());
    let ticks_n = shared.ticks.merged().len();
    // A tick counts for the spread once 90 % of the sockets got it (the first and last ticks of
    // the run reach only part of them).
    let quorum = u32::try_from(open_after_ramp * 9 / 10).unwrap_or(u32::MAX);
    let spread = stats::Percentiles::of(&shared.tick_spread.histogram(quorum));
    let crash = stats::Percentiles::of(&shared.crashes.merged());
    let crashes_n = shared.crashes.merged().len();
    let crash_spread = stats::Percentiles::of(&shared.crash_spread.histogram(quorum));
    let pings = shared.pings.merged();
    let ping = stats::Percentiles::of(&pings);
    let gaps = shared.reconnect_gaps.merged();
    let gap = stats::Percentiles::of(&gaps);
    Ok(Report {
        targets: targets.iter().map(|t| t.base.clone()).collect(),
        duration_s: (duration_s * 10.0).round() / 10.0,
        bet_rate: args.bet_rate,
        via: args.via.name().into(),
        players: players.len() as u64,
        rounds: rounds_done.load(Ordering::Relaxed),
        bets_unplaced: shared.bets_unplaced.load(Ordering::Relaxed),
        bets: shared.bets.report(),
        cashouts: shared.cashouts.report(),
        ws: WsReport {
            connections: open_after_ramp,
            connect_errors: shared.connect_errors.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            ramp_s: (ramp_s * 10.0).round() / 10.0,
            tick_p50_ms: tick.p50_ms,
            tick_p99_ms: tick.p99_ms,
            tick_p999_ms: tick.p999_ms,
            tick_max_ms: tick.max_ms,
            ticks: ticks_n,
            tick_spread_p50_ms: spread.p50_ms,
            tick_spread_p99_ms: spread.p99_ms,
            tick_spread_max_ms: spread.max_ms,
            crash_p99_ms: crash.p99_ms,
            crash_max_ms: crash.max_ms,
            crash_spread_p99_ms: crash_spread.p99_ms,
            crashes: crashes_n,
            messages: shared.messages.load(Ordering::Relaxed),
            ping_p50_ms: ping.p50_ms,
            ping_p99_ms: ping.p99_ms,
            pings: pings.len(),
            resyncs: shared.resyncs.load(Ordering::Relaxed),
            reconnects: gaps.len(),
            reconnect_gap_p50_ms: gap.p50_ms,
            reconnect_gap_max_ms: gap.max_ms,
            stale_snapshots: shared.stale_snapshots.load(Ordering::Relaxed),
        },
        server,
        cpu,
        accepted_bet_ids,
        accepted_cashouts,
        cashout_answers,
    })
}

/// One line of progress on standard error (a terminal).
fn draw(args: &LoadArgs, s: &Shared, start: Instant, rounds: u64, state: Option<RoundState>) {
    let total = args.duration.as_secs_f64().max(0.001);
    let done = (start.elapsed().as_secs_f64() / total).clamp(0.0, 1.0);
    let width = 24;
    let filled = (done * width as f64) as usize;
    let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
    let phase = match state.map(|s| s.phase) {
        Some(Phase::Betting) => "betting",
        Some(Phase::Flying) => "flying",
        Some(Phase::Over) => "crashed",
        None => "waiting",
    };
    eprint!(
        "\r[{bar}] {:>5.0}s round {} {phase:<7} bets {}/{} cash-outs {}/{} conns {}   ",
        start.elapsed().as_secs_f64(),
        rounds,
        s.bets.ok.load(Ordering::Relaxed),
        s.bets.sent.load(Ordering::Relaxed),
        s.cashouts.ok.load(Ordering::Relaxed),
        s.cashouts.sent.load(Ordering::Relaxed),
        s.open.load(Ordering::Relaxed),
    );
}

/// Follows the rounds over one unauthenticated connection, moving to the next node when its node
/// goes away (chaos runs kill nodes).
async fn observe(
    targets: Vec<Target>,
    state: watch::Sender<Option<RoundState>>,
    growth: Arc<std::sync::Mutex<f64>>,
    rounds_done: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    use futures_util::StreamExt;
    let mut attempt = 0usize;
    let mut last_counted = 0u64;
    while !cancel.is_cancelled() {
        let url = &targets[attempt % targets.len()].ws;
        attempt += 1;
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let msg = tokio::select! {
                () = cancel.cancelled() => return,
                m = ws.next() => m,
            };
            let Some(Ok(msg)) = msg else { break };
            let Ok(text) = msg.to_text() else { continue };
            let Ok(k) = serde_json::from_str::<Kind>(text) else {
                continue;
            };
            let next = match k.kind {
                "snapshot" => {
                    let Ok(s) = serde_json::from_str::<SnapshotMsg>(text) else {
                        continue;
                    };
                    *growth.lock().unwrap_or_else(|e| e.into_inner()) = s.growth_per_ms;
                    s.round.map(|r| RoundState {
                        number: r.number,
                        phase: match r.phase.as_str() {
                            "betting" => Phase::Betting,
                            "flying" => Phase::Flying,
                            _ => Phase::Over,
                        },
                        betting_closes_at_ms: r.betting_closes_at_ms,
                        started_at_ms: r.started_at_ms,
                    })
                }
                "round_open" => {
                    serde_json::from_str::<RoundOpenMsg>(text)
                        .ok()
                        .map(|m| RoundState {
                            number: m.round,
                            phase: Phase::Betting,
                            betting_closes_at_ms: m.betting_closes_at_ms,
                            started_at_ms: m.betting_closes_at_ms,
                        })
                }
                "flying" => serde_json::from_str::<FlyingMsg>(text)
                    .ok()
                    .map(|m| RoundState {
                        number: m.round,
                        phase: Phase::Flying,
                        betting_closes_at_ms: m.started_at_ms,
                        started_at_ms: m.started_at_ms,
                    }),
                "crashed" | "round_voided" => {
                    let Ok(m) = serde_json::from_str::<RoundEndMsg>(text) else {
                        continue;
                    };
                    if m.round > last_counted {
                        last_counted = m.round;
                        rounds_done.fetch_add(1, Ordering::Relaxed);
                    }
                    state.borrow().map(|s| RoundState {
                        phase: Phase::Over,
                        ..s
                    })
                }
                _ => continue,
            };
            if next.is_some() {
                state.send_replace(next);
            }
        }
    }
}

/// What the schedulers share.
#[derive(Clone)]
struct Run {
    args: LoadArgs,
    targets: Vec<Target>,
    /// Bets and cash-outs over REST (the lean client; see `rest`).
    rest: Arc<rest::Rest>,
    players: Arc<Vec<Player>>,
    shared: Arc<Shared>,
    senders: Arc<Vec<mpsc::Sender<Command>>>,
    growth: Arc<std::sync::Mutex<f64>>,
    cancel: CancellationToken,
}

impl Run {
    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed) || self.cancel.is_cancelled()
    }

    /// Waits for the next round to open for bets (or the run to stop).
    async fn next_window(
        &self,
        rx: &mut watch::Receiver<Option<RoundState>>,
        after: u64,
    ) -> Option<RoundState> {
        loop {
            if self.stopping() {
                return None;
            }
            let cur = *rx.borrow_and_update();
            if let Some(s) = cur
                && s.phase == Phase::Betting
                && s.number > after
            {
                return Some(s);
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// Open-loop bets: within each betting window the k-th bet is due at `start + k / rate`, and
    /// leaves then whether or not earlier bets were answered.
    async fn bets(self, mut rx: watch::Receiver<Option<RoundState>>) {
        if self.args.bet_rate <= 0.0 {
            return;
        }
        let mut last_round = 0u64;
        let mut next_player = 0usize;
        let mut seq = 0u64;
        // WebSocket mode: a player can only bet through a connection authenticated as them.
        let eligible = match self.args.via {
            Via::Rest => self.players.len(),
            Via::Ws => self.players.len().min(self.senders.len()),
        };
        if eligible == 0 {
            eprintln!("crashfleet-load: --via ws needs --connections > 0 to place bets");
            return;
        }
        while let Some(window) = self.next_window(&mut rx, last_round).await {
            last_round = window.number;
            let stop_at = instant_at(window.betting_closes_at_ms)
                .checked_sub(CLOSE_MARGIN)
                .unwrap_or_else(Instant::now);
            let start = Instant::now();
            let mut used: HashMap<usize, u32> = HashMap::new();
            let mut k = 0u64;
            while Instant::now() < stop_at && !self.stopping() {
                // Bet k is due at k / rate (bet 0 at once): k + 1 bets are due by then.
                let due = (start.elapsed().as_secs_f64() * self.args.bet_rate) as u64 + 1;
                while k < due {
                    let scheduled = start + Duration::from_secs_f64(k as f64 / self.args.bet_rate);
                    k += 1;
                    // The next player with bets left this round.
                    let mut found = None;
                    for _ in 0..eligible {
                        let p = next_player % eligible;
                        next_player += 1;
                        let n = used.entry(p).or_default();
                        if *n < self.args.bets_per_player {
                            *n += 1;
                            found = Some(p);
                            break;
                        }
                    }
                    let Some(player) = found else {
                        self.shared.bets_unplaced.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    seq += 1;
                    self.place(window.number, player, seq, scheduled);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    fn place(&self, round: u64, player: usize, seq: u64, scheduled: Instant) {
        let (auto, manual) = {
            let mut rng = rand::rng();
            if rng.random_bool(self.args.auto_ratio) {
                (Some(rng.random_range(110..=500u64)), None)
            } else {
                (None, Some(rng.random_range(105..=300u64)))
            }
        };
        let request_id = format!("lb-{}-{seq}", uuid::Uuid::new_v4().simple());
        self.shared.bets.sent.fetch_add(1, Ordering::Relaxed);
        match self.args.via {
            Via::Ws => {
                let cmd = Command::Bet {
                    request_id,
                    player,
                    stake: self.args.stake,
                    auto,
                    manual,
                    scheduled,
                };
                // The connection of this player (connection i is player i % players).
                if self.senders[player].try_send(cmd).is_err() {
                    self.shared.bets.fail("client_backlog");
                }
            }
            Via::Rest => {
                let target = seq as usize % self.targets.len();
                let rest = self.rest.clone();
                let players = self.players.clone();
                let shared = self.shared.clone();
                let stake = self.args.stake;
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let body = match auto {
                        Some(a) => format!("{{\"stake\":{stake},\"auto_cashout_x100\":{a}}}"),
                        None => format!("{{\"stake\":{stake}}}"),
                    };
                    let token = &players[player].token;
                    let r = rest
                        .post(target, "/api/v1/bets", token, &request_id, body.as_bytes())
                        .await;
                    match answer(r) {
                        Ok(v) => {
                            shared
                                .bets
                                .latency
                                .record(seq as usize, scheduled.elapsed());
                            shared.bets.ok.fetch_add(1, Ordering::Relaxed);
                            if let Some(id) = v["bet_id"].as_str() {
                                let round = v["round"].as_u64().unwrap_or(round);
                                shared
                                    .bet_accepted(round, id.to_string(), player, None, manual)
                                    .await;
                            }
                        }
                        Err((code, answered)) => {
                            if answered {
                                shared
                                    .bets
                                    .latency
                                    .record(seq as usize, scheduled.elapsed());
                            }
                            shared.bets.fail(&code);
                        }
                    }
                    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }

    /// When a round flies, every manual bet of it is cashed out at the instant the curve reaches
    /// its target (unless the round crashed first).
    async fn cashouts(self, mut rx: watch::Receiver<Option<RoundState>>) {
        let mut last_round = 0u64;
        loop {
            if self.stopping() {
                return;
            }
            let cur = *rx.borrow_and_update();
            let flying = cur.filter(|s| s.phase == Phase::Flying && s.number > last_round);
            let Some(s) = flying else {
                let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
                continue;
            };
            last_round = s.number;
            let growth = *self.growth.lock().unwrap_or_else(|e| e.into_inner());
            let bets: Vec<OpenBet> = {
                let mut all = self.shared.open_bets.lock().await;
                let (mine, rest): (Vec<_>, Vec<_>) =
                    all.drain(..).partition(|b| b.round == s.number);
                // Bets of older rounds are settled already; keep only later ones (none, normally).
                *all = rest.into_iter().filter(|b| b.round > s.number).collect();
                mine
            };
            if growth <= 0.0 {
                continue;
            }
            for (i, b) in bets.into_iter().enumerate() {
                let at_ms =
                    s.started_at_ms + ((b.target_x100 as f64 / 100.0).ln() / growth).round() as i64;
                let scheduled = instant_at(at_ms);
                let me = self.clone();
                let rx = rx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(scheduled.into()).await;
                    let still = (*rx.borrow())
                        .is_some_and(|c| c.number == b.round && c.phase == Phase::Flying);
                    if !still || me.cancel.is_cancelled() {
                        return; // the round crashed first: the bet lost, nothing to send
                    }
                    me.cash_out(b, i, scheduled).await;
                });
            }
        }
    }

    async fn cash_out(&self, b: OpenBet, i: usize, scheduled: Instant) {
        let request_id = format!("lc-{}", uuid::Uuid::new_v4().simple());
        self.shared.cashouts.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = b.conn {
            let cmd = Command::CashOut {
                request_id,
                bet_id: b.bet_id,
                scheduled,
            };
            if self.senders[conn].try_send(cmd).is_err() {
                self.shared.cashouts.fail("client_backlog");
            }
            return;
        }
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let path = format!("/api/v1/bets/{}/cashout", b.bet_id);
        for attempt in 0..=UNKNOWN_RETRIES {
            let target = (i + attempt as usize) % self.targets.len();
            let token = &self.players[b.player].token;
            let r = self.rest.post(target, &path, token, &request_id, b"").await;
            let result = answer(r);
            self.shared.cash_out_answer(CashOutAnswer {
                bet_id: b.bet_id.clone(),
                key: request_id.clone(),
                answer: match &result {
                    Ok(v) => Ok((
                        v["multiplier_x100"].as_u64().unwrap_or(0),
                        v["payout"].as_i64().unwrap_or(0),
                    )),
                    Err((code, _)) => Err(code.clone()),
                },
            });
            match result {
                // Only the first attempt is counted; a retry resolves it.
                Ok(v) => {
                    if attempt == 0 {
                        self.shared.cashouts.latency.record(i, scheduled.elapsed());
                        self.shared.cashouts.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    self.shared.cash_out_accepted(AcceptedCashOut {
                        bet_id: b.bet_id.clone(),
                        multiplier_x100: v["multiplier_x100"].as_u64().unwrap_or(0),
                        payout: v["payout"].as_i64().unwrap_or(0),
                    });
                }
                Err((code, answered)) => {
                    if attempt == 0 {
                        if answered {
                            self.shared.cashouts.latency.record(i, scheduled.elapsed());
                        }
                        self.shared.cashouts.fail(&code);
                    }
                    if code == "outcome_unknown" {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            break;
        }
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a bet or cash-out may take before it counts as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A REST answer: the JSON body on success, else the error code and whether the server answered.
fn answer(r: Result<rest::Answer, rest::Failure>) -> Result<serde_json::Value, (String, bool)> {
    let r = match r {
        Ok(r) => r,
        Err(rest::Failure::Timeout) => return Err(("timeout".into(), false)),
        Err(rest::Failure::Transport) => return Err(("transport".into(), false)),
    };
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    if (200..300).contains(&r.status) {
        return Ok(body);
    }
    let code = body["code"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("http_{}", r.status));
    Err((code, true))
}

/// The whole run: prepare, execute, print, write the JSON.
pub async fn main_with(args: LoadArgs) -> anyhow::Result<Report> {
    use std::io::IsTerminal;
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let json = args.json.clone();
    let prepared = prepare(args).await?;
    let report = execute(prepared, progress).await?;
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
