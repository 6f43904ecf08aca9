//! Assembles a node: opens the ledger, loads (or creates) the table's hash chain and commitment,
//! picks the adapters, starts the round leader, and serves HTTP/WebSocket until shutdown.
//! [`run`] is what `main` calls and what black-box tests call with a port-0 listener.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::{LeaderElection, ServeConfig};
use crate::fairness::{self, Chain, CrashCalculator};
use crate::fleet::arbiter::RedisArbiter;
use crate::fleet::bus::RedisBus;
use crate::fleet::elector::RedisElector;
use crate::fleet::presence::Presence;
use crate::fleet::redis::{Keys, RedisClock, Scripts};
use crate::game::{Game, PlayerLimiter};
use crate::ledger::SqlLedger;
use crate::ports::{
    Arbiter, Bus, Clock, Commitment, Commitments, FleetView, LeaderElector, Ledger, NodeReport,
    RoundBook, TokioClock,
};
use crate::protocol::{FairnessView, NodeInfo};
use crate::runner::{Ports, TableSpec};
use crate::standalone::{AlwaysLeader, LocalArbiter, LocalBus, LocalFleet};
use crate::state::AppState;
use crashfleet_core::settlement::signing::SigningKey;

/// How often the per-player and per-IP rate limiters forget idle keys. A key is dropped once its
/// bucket has refilled (a few seconds after its last request), so a minute bounds the maps by the
/// clients seen in the last minute; each prune is one pass over the map (measured: 100,000
/// addresses pruned in 15 ms in a debug build).
const LIMITER_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The process-wide Prometheus recorder (metrics macros use one global recorder; tests that
/// start several nodes in one process share it).
/// Buckets of the latency histograms (`*_duration_seconds`), in seconds: from half a millisecond
/// (a group-committed bet on a quiet node) to five seconds (past every timeout a player waits
/// for), so a p99 alert threshold anywhere from 1 ms to 2.5 s falls on a bucket boundary.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process's metrics recorder, installed once; every series carries `table="<table>"` (the
/// first table started in this process: a pod runs one node), so a Prometheus scraping many
/// tables' pods can group and alert per table.
fn metrics_handle(table: &str) -> anyhow::Result<PrometheusHandle> {
    // A mutex, not a bare OnceLock: two nodes starting at once must not both try to install
    // the global recorder (the second install fails).
    static HANDLE: std::sync::Mutex<Option<PrometheusHandle>> = std::sync::Mutex::new(None);
    let mut guard = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = guard.as_ref() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .add_global_label("table", table)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_duration_seconds".into()),
            LATENCY_BUCKETS,
        )
        .context("the latency buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    *guard = Some(handle.clone());
    Ok(handle)
}

/// The table's gauges every node exports from the start, so alert rules can compare against
/// them: the house edge (`crashfleet_house_edge_ratio`), the expected length of a round
/// (`crashfleet_round_expected_seconds`), and when the newest round ended and how much of the chain
/// is left (from the ledger; the leader moves both with each round).
///
/// The expected round is the betting window, the pause and the mean flight. A crash point m has
/// P(m ≥ x) = (1 − edge)/x for x ≥ 1, so ln m has mean ∫ (1 − edge)·e^(−y) dy = 1 − edge, and the
/// curve m(t) = e^(g·t) reaches m after ln(m)/g: the mean flight is (1 − edge)/g.
async fn record_table_gauges(
    table: &TableSpec,
    house_edge_bp: u32,
    ledger: &dyn Ledger,
    now_ms: i64,
) {
    let edge = f64::from(house_edge_bp) / 10_000.0;
    metrics::gauge!("crashfleet_house_edge_ratio").set(edge);
    let flight_ms = (1.0 - edge) / table.curve.growth_per_ms();
    let round_ms = (table.rules.betting_ms + table.rules.pause_ms) as f64 + flight_ms;
    metrics::gauge!("crashfleet_round_expected_seconds").set(round_ms / 1_000.0);
    match ledger.last_round(&table.id).await {
        Ok(Some(r)) => crate::runner::record_progress(
            table,
            r.number,
            r.crashed_at_ms.unwrap_or(r.opened_at_ms),
        ),
        // No round yet: the clock of "no round for a while" starts now.
        _ => crate::runner::record_progress(table, 0, now_ms),
    }
}

/// Runs the conservation audit every `every` and exports its verdict as
/// `crashfleet_audit_balanced` (1 balanced, 0 not). A failed audit (ledger unreachable) leaves the
/// last verdict: unavailability has its own signals (`/readyz`, refused requests).
async fn audit_loop(ledger: Arc<dyn Ledger>, every: Duration, shutdown: CancellationToken) {
    loop {
        match ledger.audit().await {
            Ok(a) => {
                if !a.balanced {
                    warn!(?a, "the conservation audit does not balance");
                }
                metrics::gauge!("crashfleet_audit_balanced").set(if a.balanced {
                    1.0
                } else {
                    0.0
                });
            }
            Err(e) => tracing::debug!(error = %e, "the conservation audit could not run"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Reads a 32-byte secret file of `kind` (the chain seed, the signing key), or creates it (mode
/// 0600, in a private directory) from `make` when the file does not exist yet. `true` when this
/// call created it. Two nodes creating one file at once end up with the same secret.
fn load_or_create_secret(
    path: &Path,
    kind: &crate::secret_file::SecretKind,
    make: impl FnOnce() -> anyhow::Result<fairness::Hash32>,
) -> anyhow::Result<(fairness::Hash32, bool)> {
    let mut created = false;
    if !path.exists() {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            create_private_dir(dir)?;
        }
        created = crate::secret_file::create_once(path, &make()?)?;
    }
    Ok((crate::secret_file::read(path, kind)?, created))
}

/// Group or other permission bits that make a ledger file readable or writable by other local
/// users. The ledger holds password hashes, balances and every bet; mode 0600 is the rule.
#[cfg(unix)]
const FORBIDDEN_LEDGER_MODE: u32 = 0o077;

/// Creates `dir` (and its parents) with mode 0700 when it does not exist: the node's files in it
/// (ledger, chain seed) are for this user only. An existing directory is left as it is; the
/// files themselves are checked one by one.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Makes sure the SQLite ledger is private before it is opened: a missing database file is created
/// empty with mode 0600 (SQLite gives its -wal and -shm files the database file's mode), and an
/// existing one (or its -wal/-shm) that other users can read or write is refused, like a
/// world-readable chain seed.
fn prepare_private_database(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if !path.exists() {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(_) => return Ok(()),
            // Created by someone else in between: check it like any existing file.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating the ledger {shown}")),
        }
    }
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & FORBIDDEN_LEDGER_MODE != 0 {
            bail!(
                "ledger file {} has mode {mode:04o}: other users could read password hashes and \
                 balances, or change them. Run `chmod 600 {}*` (and `chmod 700` its directory)",
                file.display(),
                shown
            );
        }
    }
    Ok(())
}

fn random_hex32() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// A node whose ledger, commitment, adapters and round runner are up, before it serves HTTP:
/// `run` serves its router on a socket; the REST fuzz target (fuzz/) drives the same router
/// in-process.
pub struct Started {
    pub state: Arc<AppState>,
    leader: tokio::task::JoinHandle<()>,
    ledger: Arc<SqlLedger>,
}

impl Started {
    /// Every route the node serves (REST, WebSocket, page, health, metrics).
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// After `shutdown` was cancelled: lets the leader void or hand over its round (however long
    /// its own timeouts take: money is being settled), then waits at most
    /// [`TASKS_STOP_WITHIN`] for every other task of the node — WebSocket connections closing
    /// with 1001, the bet feed's last flush, the heartbeat withdrawing this node, the bus relay,
    /// the electors' renewals, the pruner — and then closes the ledger.
    pub async fn finish(self) {
        let _ = self.leader.await;
        let tasks = &self.state.tasks;
        tasks.close();
        if tokio::time::timeout(TASKS_STOP_WITHIN, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                left = tasks.len(),
                "tasks still running {} s after shutdown; stopping without them",
                TASKS_STOP_WITHIN.as_secs()
            );
        }
        self.ledger.close().await;
    }
}

/// How long a stopping node waits for its tasks once the leader is done. Each one ends on the
/// shutdown signal by itself within milliseconds; only a socket whose client stopped reading can
/// hold its close frame for up to `--ws-write-timeout-ms`, and such a client is not worth
/// keeping a pod in `Terminating` for (its drain window and hand-over already took ~6 s of the
/// 30 s grace period the operator gives).
pub const TASKS_STOP_WITHIN: Duration = Duration::from_secs(5);

/// Connections the `--metrics-listen` address holds at once: a scraper or two and an operator's
/// curl; a stuck scraper must not take descriptors from players.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Runs a node on `listener` until `begin` is cancelled (the first SIGTERM or Ctrl-C), then:
/// `/readyz` turns 503 at once, players are still served for `--drain-delay-ms` (cut short when
/// `hurry` is cancelled: a second signal), and only then the node stops accepting, closes its
/// sockets, hands its round over and returns. A signal during start-up stops at once: there is
/// nobody to drain.
pub async fn run(
    listener: TcpListener,
    cfg: ServeConfig,
    begin: CancellationToken,
    hurry: CancellationToken,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let started: Arc<std::sync::OnceLock<Arc<AppState>>> = Arc::default();
    let window = Duration::from_millis(cfg.drain_delay_ms);
    let drain = {
        let (started, shutdown) = (started.clone(), shutdown.clone());
        tokio::spawn(async move {
            begin.cancelled().await;
            if let Some(state) = started.get() {
                state.draining.store(true, Ordering::SeqCst);
                if !window.is_zero() {
                    info!(
                        window_ms = window.as_millis() as u64,
                        "draining: /readyz answers 503, still serving until the window ends"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(window) => {}
                        () = hurry.cancelled() => info!("second signal: drain window cut short"),
                    }
                }
            }
            shutdown.cancel();
        })
    };
    // Bound before the node starts, so a taken address fails the start and not later.
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {a}"))?,
        ),
        None => None,
    };
    let limits = listener_limits(&cfg);
    let request_timeout =
        crate::listener::RequestTimeout(Duration::from_millis(cfg.request_timeout_ms));
    let node = start(cfg, shutdown.clone()).await?;
    let state = node.state.clone();
    let _ = started.set(state.clone());
    // The signal may have come while the node started: nobody was served yet, stop now.
    if shutdown.is_cancelled() {
        state.draining.store(true, Ordering::SeqCst);
    }
    let addr = listener.local_addr()?;
    info!(
        %addr,
        node = %state.node_id,
        max_client_connections = limits.gate.total.max(),
        "game-node listening"
    );
    let app = node.router().layer(axum::middleware::from_fn_with_state(
        request_timeout,
        crate::listener::request_timeout,
    ));
    let metrics = metrics_listener.map(|l| {
        if let Ok(a) = l.local_addr() {
            info!(addr = %a, "metrics listening");
        }
        let limits = crate::listener::ListenerLimits {
            header_read_timeout: limits.header_read_timeout,
            gate: crate::limits::Gate::new(0, METRICS_MAX_CONNECTIONS),
            proxies: limits.proxies.clone(),
        };
        tokio::spawn(crate::listener::serve(
            l,
            crate::api::metrics_router(state.clone()),
            limits,
            shutdown.clone(),
        ))
    });
    crate::listener::serve(listener, app, limits, shutdown.clone()).await;
    let _ = drain.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    // The leader voids or finishes its round before we close the ledger.
    node.finish().await;
    info!("game-node stopped");
    Ok(())
}

/// The main listener's caps and timeouts. The node-wide cap on client connections is
/// `--max-client-connections`, or else the descriptor limit less the reserve the node keeps for
/// its ledger, Redis and listeners (limits::FD_RESERVE).
fn listener_limits(cfg: &ServeConfig) -> crate::listener::ListenerLimits {
    let total = match cfg.max_client_connections {
        0 => crate::limits::nofile_limit()
            .map_or(usize::MAX, crate::limits::client_connection_budget),
        n => n,
    };
    crate::listener::ListenerLimits {
        header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
        gate: crate::limits::Gate::new(cfg.max_connections_per_ip, total),
        proxies: Arc::new(crate::client_ip::TrustedProxies::new(
            cfg.trusted_proxies.0.clone(),
            cfg.client_ip_header,
        )),
    }
}

/// Opens the ledger, checks or creates the fairness commitment, builds the adapters (standalone
/// or fleet) and starts the round runner and the node's background tasks.
pub async fn start(cfg: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<Started> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let url = cfg.database_url();
    if url.starts_with("sqlite:") && cfg.database_url.is_none() {
        create_private_dir(&cfg.data_dir)?;
    }
    if let Some(path) = crate::ledger::sqlite_file(&url) {
        prepare_private_database(&path)?;
    }
    let ledger = Arc::new(
        SqlLedger::connect(&url, cfg.db_pool)
            .await
            .with_context(|| format!("opening the ledger at {}", redact(&url)))?,
    );

    // The commitment: built from the seed, stored once, and never silently replaced.
    let seed_path = cfg.chain_seed_file();
    let (seed, created) =
        load_or_create_secret(&seed_path, &crate::secret_file::CHAIN_SEED, || {
            Chain::generate(1, &mut rand::rngs::OsRng)
                .map(|(_, seed)| seed)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })?;
    // The signing key: every node of a table must hold the one its commitment publishes.
    let key_path = cfg.signing_key_file();
    let (key_seed, key_created) =
        load_or_create_secret(&key_path, &crate::secret_file::SIGNING_KEY, || {
            Ok(SigningKey::generate().seed())
        })?;
    let signing_key = SigningKey::from_seed(&key_seed);
    let public_key = hex::encode(signing_key.public_key());
    let stored = ledger.commitment(&cfg.table).await?;
    let length = stored.as_ref().map_or(cfg.chain_length, |c| c.chain_length);
    let chain = Chain::new(seed, length).map_err(|e| anyhow::anyhow!("{e}"))?;
    let terminating = fairness::to_hex(&chain.terminating_hash());
    let commitment = match stored {
        Some(c) => {
            if c.terminating_hash != terminating {
                bail!(
                    "the chain seed in {} does not match table {:?}'s published commitment {} \
                     (refusing to play rounds that would not verify)",
                    seed_path.display(),
                    cfg.table,
                    c.terminating_hash
                );
            }
            let mut c = c;
            if let Some(salt) = &cfg.salt
                && *salt != c.salt
            {
                // Before round 1 the stored salt was never used: the one given now (e.g. a
                // public value announced after the terminating hash) replaces it.
                if !ledger.fix_salt(&cfg.table, salt).await? {
                    bail!(
                        "--salt differs from the salt fixed for table {:?} ({}), and rounds have \
                         been played with that one",
                        cfg.table,
                        c.salt
                    );
                }
                info!(table = %cfg.table, %salt, "salt fixed before the first round");
                c.salt = salt.clone();
            }
            if c.house_edge_bp != cfg.house_edge_bp || c.max_x100 != cfg.max_multiplier_x100 {
                bail!(
                    "--house-edge-bp/--max-multiplier-x100 differ from table {:?}'s commitment \
                     ({} bp, cap {}): they are part of what players verify",
                    cfg.table,
                    c.house_edge_bp,
                    c.max_x100
                );
            }
            c
        }
        None => {
            // The salt is fixed after the terminating hash exists, so the chain cannot be ground
            // against it. In production pass a public value nobody could know in advance.
            let salt = cfg.salt.clone().unwrap_or_else(random_hex32);
            let c = Commitment {
                table: cfg.table.clone(),
                terminating_hash: terminating.clone(),
                salt,
                chain_length: length,
                house_edge_bp: cfg.house_edge_bp,
                max_x100: cfg.max_multiplier_x100,
                created_at_ms: TokioClock::new().now_ms(),
                signing_key: Some(public_key.clone()),
            };
            ledger.commit_fairness(&c).await?
        }
    };
    // Stored with the commitment (adopted now by a table committed before receipts existed).
    let published_key = match &commitment.signing_key {
        Some(k) => k.clone(),
        None => ledger.adopt_signing_key(&cfg.table, &public_key).await?,
    };
    if published_key != public_key {
        bail!(
            "the signing key in {} (public key {public_key}) is not table {:?}'s published key \
             {published_key}: receipts signed with it would not verify. Give every node of the \
             table the same --signing-key-file",
            key_path.display(),
            cfg.table,
        );
    }
    if key_created {
        info!(file = %key_path.display(), "created a new secret signing key");
    }
    let sealed = ledger.seal_unsealed_rounds(&cfg.table).await?;
    if sealed > 0 {
        info!(
            table = %cfg.table,
            rounds = sealed,
            "committed to the settlement of rounds settled before settlement roots existed"
        );
    }
    if created {
        info!(file = %seed_path.display(), "created a new secret chain seed");
    }
    info!(
        table = %cfg.table,
        terminating_hash = %commitment.terminating_hash,
        salt = %commitment.salt,
        chain_length = commitment.chain_length,
        signing_key = %public_key,
        "fairness commitment"
    );
    let calculator = CrashCalculator::new(
        &commitment.salt,
        commitment.house_edge_bp,
        commitment.max_x100,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let jwt_secret = match &cfg.jwt_secret {
        Some(s) if s.len() >= 16 => s.clone().into_bytes(),
        Some(_) => bail!("--jwt-secret must be at least 16 characters"),
        None => {
            warn!("no --jwt-secret given: using a random key; sessions end when this process does");
            random_hex32().into_bytes()
        }
    };

    let table = TableSpec {
        id: cfg.table.clone(),
        node_id: cfg.node_id(),
        chain: Arc::new(chain),
        calculator,
        curve: cfg.curve(),
        rules: cfg.rules(),
        tick_ms: cfg.tick_ms(),
        notary: Arc::new(crate::receipts::Notary::new(signing_key, &cfg.table)),
        paused: cfg.paused,
    };
    let node_id = cfg.node_id();
    // Every task the node starts, so its stop can wait for them (Started::finish).
    let tasks = TaskTracker::new();
    let connections = Arc::new(AtomicUsize::new(0));
    let report: NodeReport = {
        let (node_id, region, connections) =
            (node_id.clone(), cfg.region.clone(), connections.clone());
        // The flag's URL is validated with the rest of the configuration; the file's is
        // followed while the node runs.
        let public_url = crate::public_url::PublicUrl::new(
            cfg.public_url.as_deref(),
            cfg.public_url_file.clone(),
        );
        Arc::new(move || NodeInfo {
            node_id: node_id.clone(),
            region: region.clone(),
            connections: connections.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_string(),
            public_url: public_url.current(),
        })
    };
    let adapters = match cfg.leader_election {
        LeaderElection::Standalone => {
            let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
            let term = ledger.current_term(&cfg.table).await? + 1;
            let arbiter: Arc<dyn Arbiter> = Arc::new(LocalArbiter::new(
                clock.clone(),
                table.curve,
                table.rules.clone(),
            ));
            let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
            Adapters {
                chat: Arc::new(crate::chat::LocalChat::new(bus.clone(), clock.clone())),
                bus,
                fleet: Arc::new(LocalFleet {
                    table: table.id.clone(),
                    node: report,
                    ledger: ledger.clone(),
                    arbiter: arbiter.clone(),
                    clock: clock.clone(),
                    curve: table.curve,
                }),
                arbiter,
                elector: Arc::new(AlwaysLeader::new(term)),
                clock,
            }
        }
        LeaderElection::Redis | LeaderElection::Kubernetes => {
            fleet_adapters(
                &cfg,
                &node_id,
                &table,
                ledger.clone(),
                report,
                &shutdown,
                &tasks,
            )
            .await?
        }
    };
    let Adapters {
        bus,
        arbiter,
        elector,
        clock,
        fleet,
        chat,
    } = adapters;
    let ports = Ports {
        ledger: ledger.clone(),
        arbiter: arbiter.clone(),
        bus: bus.clone(),
        elector,
    };
    let (bet_feed, _) = crate::feed::BetFeed::start(bus.clone(), shutdown.clone(), &tasks);
    let trusted_proxies = Arc::new(crate::client_ip::TrustedProxies::new(
        cfg.trusted_proxies.0.clone(),
        cfg.client_ip_header,
    ));
    let game = Arc::new(Game {
        table: table.clone(),
        ledger: ledger.clone(),
        arbiter,
        bus,
        clock: clock.clone(),
        limiter: PlayerLimiter::new(cfg.rate_limit_player),
        key_locks: Default::default(),
        feed: bet_feed,
    });
    let state = Arc::new(AppState {
        game,
        chat,
        fairness: FairnessView {
            terminating_hash: commitment.terminating_hash.clone(),
            salt: commitment.salt.clone(),
            chain_length: commitment.chain_length,
            house_edge_bp: commitment.house_edge_bp,
            max_x100: commitment.max_x100,
            signing_key: public_key,
        },
        round_log: crate::roundlog::RoundLog::new(&cfg.table),
        auth: Auth::new(&jwt_secret, cfg.token_ttl_secs),
        passwords: crate::password::PasswordPool::start(),
        login_throttle: crate::login_throttle::LoginThrottle::new(),
        admin_token: cfg.admin_token.clone(),
        demo_credit: cfg.demo_credit,
        routes: Arc::new(crate::hub::PlayerRoutes::default()),
        // One writer per runtime worker: the fan-out's sends spread over the node's cores.
        fanout: crate::fanout::Fanout::new(
            tokio::runtime::Handle::current().metrics().num_workers(),
        ),
        node_id,
        fleet,
        region: cfg.region.clone(),
        started_at_ms: clock.now_ms(),
        connections,
        max_connections: cfg.max_connections,
        rate_limit_ip: cfg.rate_limit_ip,
        ip_limiter: crate::client_ip::IpLimiter::new(cfg.rate_limit_ip, trusted_proxies.clone()),
        trusted_proxies,
        cors_origin: cfg.cors_origins(),
        hsts: cfg.hsts,
        metrics: metrics_handle(&cfg.table)?,
        draining: AtomicBool::new(false),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        ws_limits: crate::limits::WsLimits {
            per_client: crate::limits::PerClient::new(cfg.max_ws_per_ip),
            ping_interval: Duration::from_millis(cfg.ws_ping_interval_ms),
            idle_timeout: Duration::from_millis(cfg.ws_idle_timeout_ms),
            write_timeout: Duration::from_millis(cfg.ws_write_timeout_ms),
        },
        metrics_listen: cfg.metrics_listen,
    });

    // Register every named metric at start, so /metrics lists them (at 0) before the first round.
    for name in [
        "crashfleet_rounds_total",
        "crashfleet_bets_total",
        "crashfleet_cashouts_total",
        "crashfleet_wagered_total",
        "crashfleet_voided_rounds_total",
        "crashfleet_bet_feed_dropped_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("crashfleet_ws_connections").increment(0.0);
    metrics::counter!("crashfleet_failovers_total").increment(0);
    for reason in crate::runner::STEP_DOWN_REASONS {
        metrics::counter!("crashfleet_step_downs_total", "reason" => reason).increment(0);
    }
    metrics::counter!("crashfleet_bus_resyncs_total").increment(0);
    metrics::counter!("crashfleet_fanout_lagged_total").increment(0);
    metrics::counter!("crashfleet_chat_messages_total", "outcome" => "posted").increment(0);
    metrics::gauge!("crashfleet_bus_lag_ms").increment(0.0);
    metrics::gauge!("crashfleet_leader").increment(0.0);
    metrics::gauge!("crashfleet_leader_term").increment(0.0);
    metrics::gauge!("crashfleet_table_paused").increment(0.0);
    record_table_gauges(
        &table,
        commitment.house_edge_bp,
        ledger.as_ref(),
        clock.now_ms(),
    )
    .await;
    if cfg.audit_interval_secs > 0 {
        tasks.spawn(audit_loop(
            ledger.clone(),
            Duration::from_secs(cfg.audit_interval_secs),
            shutdown.clone(),
        ));
    }
    let leader = tasks.spawn(crate::runner::run(table, ports, shutdown.clone()));
    state
        .fanout
        .spawn_writers(&state.game.bus, &tasks, &shutdown);
    tasks.spawn(crate::hub::route(
        state.game.bus.clone(),
        state.routes.clone(),
        shutdown.clone(),
    ));
    {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(LIMITER_PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        state.game.limiter.prune();
                        if let Some(l) = &state.ip_limiter {
                            l.prune();
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    };

    state.fleet.clone().announce(&tasks, shutdown.clone());

    Ok(Started {
        state,
        leader,
        ledger,
    })
}

/// The adapters a node runs with: in-process for standalone, Redis (and a Lease) for a fleet.
struct Adapters {
    bus: Arc<dyn Bus>,
    arbiter: Arc<dyn Arbiter>,
    elector: Arc<dyn LeaderElector>,
    clock: Arc<dyn Clock>,
    fleet: Arc<dyn FleetView>,
    chat: Arc<dyn crate::ports::ChatRoom>,
}

async fn fleet_adapters(
    cfg: &ServeConfig,
    node_id: &str,
    table: &TableSpec,
    ledger: Arc<dyn Ledger>,
    report: NodeReport,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Adapters> {
    let url = cfg.redis_url.clone().unwrap_or_default();
    let conn = crate::fleet::redis::connect(&url)
        .await
        .with_context(|| format!("opening Redis at {}", redact(&url)))?;
    let keys = Keys::new(&table.id);
    let scripts = Arc::new(Scripts::new());
    let redis_clock = Arc::new(RedisClock::new());
    redis_clock
        .calibrate(&conn.client)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    redis_clock.spawn_calibration(conn.client.clone(), shutdown.clone(), tasks);
    let clock: Arc<dyn Clock> = redis_clock.clone();
    let bus = RedisBus::start(
        conn.client.clone(),
        conn.subscriber.clone(),
        keys.clone(),
        scripts.clone(),
        clock.clone(),
        shutdown.clone(),
        tasks,
    )
    .await?;
    let arbiter = Arc::new(RedisArbiter::new(
        conn.client.clone(),
        keys.clone(),
        scripts.clone(),
        redis_clock,
        table.rules.clone(),
        cfg.doubling_ms,
    ));
    let chat = Arc::new(crate::fleet::chat::RedisChat::new(
        conn.client.clone(),
        keys.clone(),
        scripts.clone(),
        clock.clone(),
    ));
    let elector: Arc<dyn LeaderElector> = match cfg.leader_election {
        LeaderElection::Kubernetes => {
            kubernetes_elector(cfg, node_id, table, ledger, tasks).await?
        }
        _ => Arc::new(RedisElector::new(
            conn.client.clone(),
            keys.clone(),
            scripts,
            node_id,
            cfg.election_timings(),
            ledger,
            tasks.clone(),
        )),
    };
    let presence = Arc::new(Presence::new(
        conn.client.clone(),
        keys,
        clock.clone(),
        Duration::from_millis(cfg.heartbeat_ms),
        report,
    ));
    info!(table = %table.id, node = node_id, election = ?cfg.leader_election, "fleet mode: Redis bus and arbiter");
    Ok(Adapters {
        chat,
        bus,
        arbiter,
        elector,
        clock,
        fleet: presence,
    })
}

/// The Lease elector, with the client from `$KUBECONFIG` or the pod's service account.
async fn kubernetes_elector(
    cfg: &ServeConfig,
    node_id: &str,
    table: &TableSpec,
    ledger: Arc<dyn Ledger>,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<dyn LeaderElector>> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or $KUBECONFIG)")?;
    let namespace = cfg
        .lease_namespace
        .clone()
        .unwrap_or_else(|| crate::fleet::lease::default_namespace(&client));
    let name = cfg.lease_name();
    info!(lease = %name, %namespace, "leader election through a Kubernetes Lease");
    Ok(Arc::new(
        crate::fleet::lease::LeaseElector::new(
            client,
            &namespace,
            &name,
            node_id,
            cfg.election_timings(),
            Arc::new(crate::fleet::LedgerTerms(ledger)),
            &table.id,
        )
        .tracked_by(tasks.clone()),
    ))
}

/// A database URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
