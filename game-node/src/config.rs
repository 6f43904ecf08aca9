//! `game-node serve` configuration: a plain struct filled by clap from flags or `CRASHFLEET_*`
//! environment variables. `game-node serve --help` is the reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::{Curve, Rules};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LeaderElection {
    /// This node always leads its table (one node per table; the embedded default).
    Standalone,
    /// A Redis lock (`SET NX PX`, term from `INCR`) elects the round leader among the replicas.
    Redis,
    /// A `coordination.k8s.io/v1` Lease elects the round leader (term = `leaseTransitions`).
    Kubernetes,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (HTTP, WebSocket, metrics). Use port 0 for any free port.
    #[arg(long, env = "CRASHFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the standalone node's files (ledger database, chain seed).
    #[arg(long, env = "CRASHFLEET_DATA_DIR", default_value = "crashfleet-data")]
    pub data_dir: PathBuf,

    /// Ledger database: `sqlite://PATH` (default: `<data-dir>/ledger.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (required by a fleet: replicas share the money).
    #[arg(long, env = "CRASHFLEET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis for a fleet: the event bus, the bet/cash-out arbiter, heartbeats and (with `redis`
    /// election) the leader lock, e.g. `redis://127.0.0.1:6379`. Absent: in-process bus (standalone).
    #[arg(long, env = "CRASHFLEET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Leader election backend: `standalone` (one node), `redis` or `kubernetes` (a fleet).
    #[arg(long, env = "CRASHFLEET_LEADER_ELECTION", value_enum, default_value_t = LeaderElection::Standalone)]
    pub leader_election: LeaderElection,

    /// Name of the Lease (kubernetes election). Default: `crashfleet-<table>`.
    #[arg(long, env = "CRASHFLEET_LEASE_NAME")]
    pub lease_name: Option<String>,

    /// Namespace of the Lease (kubernetes election). Default: `$POD_NAMESPACE`, else the
    /// in-cluster service account's namespace, else the kubeconfig context's namespace.
    #[arg(long, env = "CRASHFLEET_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's lock/lease is valid without renewal, ms. A dead leader is replaced
    /// about this long after its last renewal. (A Lease stores whole seconds: rounded up.)
    #[arg(long, env = "CRASHFLEET_LEASE_DURATION_MS", default_value_t = 800, value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_duration_ms: u64,

    /// A leader that has not renewed for this long steps down, before its lease can expire, so
    /// two leaders never act at once. Must be below the lease duration.
    #[arg(long, env = "CRASHFLEET_RENEW_DEADLINE_MS", default_value_t = 550, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub renew_deadline_ms: u64,

    /// How often the leader renews and the other replicas try to acquire, ms.
    #[arg(long, env = "CRASHFLEET_RETRY_PERIOD_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub retry_period_ms: u64,

    /// How often each node heartbeats into the fleet view, ms (a node missing two is gone).
    #[arg(long, env = "CRASHFLEET_HEARTBEAT_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub heartbeat_ms: u64,

    /// Open no new rounds. A round in progress (or one adopted from a previous leader) is
    /// finished; nodes keep serving players' history, verification and the fleet view. Start
    /// without it to resume. A fleet is also paused, without a restart, by its shared flag: the
    /// Lease's `crashfleet.dev/paused` annotation or the Redis key `crashfleet:{<table>}:paused`
    /// (what the operator writes from `spec.paused`).
    #[arg(long, env = "CRASHFLEET_PAUSED")]
    pub paused: bool,

    /// This node's id (default: `$POD_NAME`, else the hostname).
    #[arg(long, env = "CRASHFLEET_NODE_ID")]
    pub node_id: Option<String>,

    /// The table this node serves.
    #[arg(long, env = "CRASHFLEET_TABLE", default_value = "main")]
    pub table: String,

    /// The region this node runs in (shown in the lobby).
    #[arg(long, env = "CRASHFLEET_REGION", default_value = "local")]
    pub region: String,

    /// Seconds between conservation audits (`crashfleet_audit_balanced`, 1 while player
    /// balances plus the house result equal credits minus withdrawals, 0 otherwise). Each audit
    /// sums the ledger's balances and bets, a full read: once a minute keeps that a small share of
    /// the database's work while an alert still fires within minutes of a broken ledger. 0: off.
    #[arg(long, env = "CRASHFLEET_AUDIT_INTERVAL_SECS", default_value_t = 60)]
    pub audit_interval_secs: u64,

    /// The URL players reach this table at (`https://eu.example.com/crash/`), advertised in the
    /// lobby so a player in another region's lobby can measure and join this table.
    /// Unset: the lobby lists the table without a link (players can still join it where they
    /// found it).
    #[arg(long, env = "CRASHFLEET_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A file holding the public URL (one line; empty or absent: none), read again while the
    /// node runs (at most once a second), so the URL can change without a restart. The operator
    /// writes the table's URL (`spec.publicUrl`, else its Ingress host or HTTPRoute host name)
    /// into a ConfigMap mounted here: moving the table's way in rolls no pod. A URL in it that
    /// `--public-url` would refuse is logged and not advertised.
    #[arg(
        long,
        env = "CRASHFLEET_PUBLIC_URL_FILE",
        conflicts_with = "public_url"
    )]
    pub public_url_file: Option<std::path::PathBuf>,

    /// Bearer token for `/api/v1/admin/*`. Admin endpoints are disabled when unset.
    #[arg(long, env = "CRASHFLEET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Secret key that signs session tokens (share it across a fleet). A random key is used, with a
    /// warning, when unset: sessions then end with the process.
    #[arg(long, env = "CRASHFLEET_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Session token lifetime, seconds.
    #[arg(long, env = "CRASHFLEET_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,

    /// File holding the table's secret chain seed h0 (64 hex characters, see `game-node chain new`).
    /// Default: `<data-dir>/chain.seed`, created on first start.
    #[arg(long, env = "CRASHFLEET_CHAIN_SEED_FILE")]
    pub chain_seed_file: Option<PathBuf>,

    /// File holding the table's Ed25519 signing key (its 32-byte secret, 64 hex characters; same
    /// owner-only policy as the chain seed). It signs every bet's and cash-out's receipt and the
    /// round log's tree heads; its public key is stored with the table's commitment, and a node
    /// whose key differs refuses to start. Every node of a fleet needs the same file. Default:
    /// `signing.key` beside the chain seed file, created on first start.
    #[arg(long, env = "CRASHFLEET_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Length of a chain created on first start (rounds the commitment covers).
    #[arg(long, env = "CRASHFLEET_CHAIN_LENGTH", default_value_t = 1_000_000)]
    pub chain_length: u64,

    /// Public salt fixed after the commitment (in production a value nobody knows in advance,
    /// e.g. a future block hash). Default: generated once after the commitment and stored.
    #[arg(long, env = "CRASHFLEET_SALT")]
    pub salt: Option<String>,

    /// House edge in basis points (100 = 1%).
    #[arg(long, env = "CRASHFLEET_HOUSE_EDGE_BP", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub house_edge_bp: u32,

    /// Crash point cap, hundredths (100000000 = 1,000,000.00x).
    #[arg(long, env = "CRASHFLEET_MAX_MULTIPLIER_X100", default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(101..=100_000_000))]
    pub max_multiplier_x100: u64,

    /// Smallest stake, minor units.
    #[arg(long, env = "CRASHFLEET_MIN_BET", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_bet: i64,

    /// Largest stake, minor units.
    #[arg(long, env = "CRASHFLEET_MAX_BET", default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000_000))]
    pub max_bet: i64,

    /// Largest payout of one bet, minor units.
    #[arg(long, env = "CRASHFLEET_MAX_PAYOUT", default_value_t = 100_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_payout: i64,

    /// Bets one player may place per round.
    #[arg(long, env = "CRASHFLEET_BETS_PER_PLAYER", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub bets_per_player: u32,

    /// Length of the betting window, ms.
    #[arg(long, env = "CRASHFLEET_BETTING_WINDOW_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub betting_window_ms: u64,

    /// Pause after a crash before the next round opens, ms.
    #[arg(long, env = "CRASHFLEET_PAUSE_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub pause_ms: u64,

    /// Multiplier ticks per second while flying.
    #[arg(long, env = "CRASHFLEET_TICK_RATE_HZ", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub tick_rate_hz: u32,

    /// Milliseconds of flight for the multiplier to reach 2.00x (the curve is e^(g·t)).
    #[arg(long, env = "CRASHFLEET_DOUBLING_MS", default_value_t = 11_500, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub doubling_ms: u64,

    /// Credit given to each new player, minor units (demo money for standalone play).
    #[arg(long, env = "CRASHFLEET_DEMO_CREDIT", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000_000))]
    pub demo_credit: i64,

    /// REST requests per second allowed per client IP (0 = no limit).
    #[arg(long, env = "CRASHFLEET_RATE_LIMIT_IP", default_value_t = 50)]
    pub rate_limit_ip: u32,

    /// Bets and cash-outs per second allowed per player (0 = no limit).
    #[arg(long, env = "CRASHFLEET_RATE_LIMIT_PLAYER", default_value_t = 20)]
    pub rate_limit_player: u32,

    /// Most WebSocket connections this node accepts; more get 503.
    #[arg(long, env = "CRASHFLEET_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Ledger connection pool size.
    #[arg(long, env = "CRASHFLEET_DB_POOL", default_value_t = 8)]
    pub db_pool: u32,

    // --- the HTTP edge: client addresses behind proxies, CORS, HSTS ---
    /// Reverse proxies (CIDRs or addresses, comma-separated, e.g. `10.0.0.0/8,fd00::/8`) whose
    /// forwarding header (`--client-ip-header`) names the client. A request from any other peer
    /// is keyed (rate limits, logs) on its TCP address and its headers are ignored. Default: none
    /// (the node faces clients directly).
    #[arg(
        long,
        env = "CRASHFLEET_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: crate::client_ip::CidrList,

    /// The header the trusted proxies write: `x-forwarded-for` (ingress-nginx, nginx, HAProxy's
    /// `option forwardfor`, cloud load balancers) or `forwarded` (RFC 7239). Only this one is read:
    /// a proxy passes the other one through from the client unchanged.
    #[arg(long, env = "CRASHFLEET_CLIENT_IP_HEADER", value_enum, default_value_t = crate::client_ip::ForwardedHeader::XForwardedFor)]
    pub client_ip_header: crate::client_ip::ForwardedHeader,

    /// Web origins allowed to call the REST API from a browser (CORS), comma-separated, e.g.
    /// `https://crash.example.com`; `*` allows every origin. Default: none — the node's own page
    /// (same origin) needs no CORS, and no CORS headers are sent.
    #[arg(long, env = "CRASHFLEET_CORS_ORIGIN", value_delimiter = ',', num_args = 0..)]
    pub cors_origin: Vec<String>,

    /// The node is served to browsers over HTTPS (TLS terminated by the proxy in front of it):
    /// every answer carries `Strict-Transport-Security`, so browsers refuse plain HTTP to this
    /// host for a year.
    #[arg(long, env = "CRASHFLEET_HSTS")]
    pub hsts: bool,

    // Connection hygiene: timeouts and caps that keep one client from holding what others need.
    /// Longest a client may take to send a request's line and headers, ms (also how long an idle
    /// keep-alive connection is kept). A real client sends them in one packet; 10 s covers a
    /// mobile link retransmitting a few times, and a slowloris socket is closed after it.
    #[arg(long, env = "CRASHFLEET_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,

    /// Longest a REST request may take, body included, ms; then `busy` (reads) or
    /// `outcome_unknown` (writes) 503. The slowest honest request waits for a ledger connection
    /// (3 s at most) and a transaction, or a password check: 15 s is far above both, and a client
    /// trickling its body is cut after it. WebSocket connections are not affected once upgraded.
    #[arg(long, env = "CRASHFLEET_REQUEST_TIMEOUT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_timeout_ms: u64,

    /// Drain window after SIGTERM (or Ctrl-C), ms: `/readyz` answers 503 at once and the node
    /// keeps serving players for this long, then stops accepting, closes its WebSockets with 1001
    /// (going away) and hands its round over. Load balancers and kube-proxy learn that a pod is
    /// going only after its endpoint change has travelled (endpoints controller, API server,
    /// every node's proxy sync; or a failed readiness probe where nothing else tells them), and
    /// until then they still send it new requests: the window makes sure those are answered.
    /// A second signal ends it early. 0 (the default: a node on a laptop) stops at once.
    #[arg(long, env = "CRASHFLEET_DRAIN_DELAY_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub drain_delay_ms: u64,

    /// Open TCP connections (HTTP and WebSocket) per client address (IPv6: per /64); more are
    /// answered 503 `busy` and closed (0 = no cap). A browser opens at most 6 HTTP connections
    /// plus one WebSocket per tab; 256 leaves room for a household, office or carrier NAT full of
    /// players while one address cannot take a node's descriptors. Behind a reverse proxy every
    /// player shares the proxy's address: raise it (or 0) there and cap at the proxy.
    #[arg(long, env = "CRASHFLEET_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Open WebSocket connections per client address; more get 503 `busy` (0 = no cap). One per
    /// player tab: 64 covers a NAT of players and stops one address from holding thousands.
    #[arg(long, env = "CRASHFLEET_MAX_WS_PER_IP", default_value_t = 64)]
    pub max_ws_per_ip: usize,

    /// Most client connections (HTTP and WebSocket) this node holds at once; more are answered
    /// 503 `busy` and closed. 0 = the process's descriptor limit (RLIMIT_NOFILE) less a reserve of
    /// 256 for the ledger, Redis and the listeners, so clients can never take the descriptors the
    /// ledger needs.
    #[arg(long, env = "CRASHFLEET_MAX_CLIENT_CONNECTIONS", default_value_t = 0)]
    pub max_client_connections: usize,

    /// The server pings each WebSocket this often, ms. Browsers answer pings by themselves; the
    /// page also pings every 15 s. 15 s keeps NAT and proxy idle timers (often 30-60 s) open.
    #[arg(long, env = "CRASHFLEET_WS_PING_INTERVAL_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub ws_ping_interval_ms: u64,

    /// A WebSocket from which nothing (frame, pong) arrived for this long is closed, ms. 45 s is
    /// three ping intervals: a live client answers one of them even on a lossy link.
    #[arg(long, env = "CRASHFLEET_WS_IDLE_TIMEOUT_MS", default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub ws_idle_timeout_ms: u64,

    /// A WebSocket write (a frame or a flush) that cannot complete for this long closes the
    /// socket and frees its buffers, ms. It blocks only once the kernel's and our buffers are
    /// full, i.e. the client stopped reading; a live client on a 1 Mbit/s link drains them in
    /// about 2 s. 10 s.
    #[arg(long, env = "CRASHFLEET_WS_WRITE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub ws_write_timeout_ms: u64,

    /// Serve `/metrics` only on this address (for the operator's scraper), and answer 404 for it
    /// on `--listen`, so players cannot scrape it. Unset: `/metrics` is on `--listen`.
    #[arg(long, env = "CRASHFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeConfig {
    pub fn rules(&self) -> Rules {
        Rules {
            min_stake: self.min_bet,
            max_stake: self.max_bet,
            max_payout: self.max_payout,
            bets_per_player: self.bets_per_player,
            max_x100: self.max_multiplier_x100,
            betting_ms: self.betting_window_ms,
            pause_ms: self.pause_ms,
        }
    }

    pub fn curve(&self) -> Curve {
        Curve::from_doubling_ms(self.doubling_ms)
    }

    pub fn tick_ms(&self) -> u64 {
        1_000 / u64::from(self.tick_rate_hz.max(1))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ledger.db").display()))
    }

    pub fn chain_seed_file(&self) -> PathBuf {
        self.chain_seed_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("chain.seed"))
    }

    pub fn signing_key_file(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.chain_seed_file().with_file_name("signing.key"))
    }

    /// The election timings, as one value the electors share.
    pub fn election_timings(&self) -> crashfleet_lease::ElectionTimings {
        crashfleet_lease::ElectionTimings {
            lease_duration: std::time::Duration::from_millis(self.lease_duration_ms),
            renew_deadline: std::time::Duration::from_millis(self.renew_deadline_ms),
            retry_period: std::time::Duration::from_millis(self.retry_period_ms),
        }
    }

    /// The Lease's name: `--lease-name`, else `crashfleet-<table>` (lower-cased, `_` → `-`).
    pub fn lease_name(&self) -> String {
        self.lease_name.clone().unwrap_or_else(|| {
            format!(
                "crashfleet-{}",
                self.table.to_ascii_lowercase().replace('_', "-")
            )
        })
    }

    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "game-node".to_string())
    }

    /// `--cors-origin` without empty items (`CRASHFLEET_CORS_ORIGIN=` means none).
    pub fn cors_origins(&self) -> Vec<String> {
        self.cors_origin
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }

    /// Contradictions clap cannot see, as one clear line.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_bet > self.max_bet {
            return Err(format!(
                "--min-bet ({}) must not exceed --max-bet ({})",
                self.min_bet, self.max_bet
            ));
        }
        if self.table.is_empty()
            || self.table.len() > 63
            || !self
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("--table must be 1-63 characters of letters, digits, '-' and '_'".into());
        }
        if let Some(t) = &self.admin_token
            && t.len() < 16
        {
            return Err("--admin-token must be at least 16 characters".into());
        }
        if self.chain_length == 0 {
            return Err("--chain-length must be at least 1".into());
        }
        let fleet = self.leader_election != LeaderElection::Standalone;
        let name = match self.leader_election {
            LeaderElection::Standalone => "standalone",
            LeaderElection::Redis => "redis",
            LeaderElection::Kubernetes => "kubernetes",
        };
        if fleet && self.redis_url.is_none() {
            return Err(format!(
                "--leader-election {name} needs --redis-url: a fleet's replicas share the event bus \
                 and the bet/cash-out arbiter through Redis"
            ));
        }
        if !fleet && self.redis_url.is_some() {
            return Err("--redis-url needs --leader-election redis or kubernetes: a standalone node \
                        always leads, so two of them on one Redis would both play the table's rounds"
                .into());
        }
        if fleet && self.jwt_secret.is_none() {
            return Err(format!(
                "--leader-election {name} needs --jwt-secret (the same on every replica), so a \
                 session opened on one node is valid on all"
            ));
        }
        if fleet && !self.database_url().starts_with("postgres") {
            return Err(format!(
                "--leader-election {name} needs a PostgreSQL --database-url (postgres://...): \
                 several replicas cannot share one SQLite file"
            ));
        }
        if self.renew_deadline_ms >= self.lease_duration_ms {
            return Err(format!(
                "--renew-deadline-ms ({}) must be below --lease-duration-ms ({}): a leader must \
                 step down before its lease can expire",
                self.renew_deadline_ms, self.lease_duration_ms
            ));
        }
        if self.retry_period_ms >= self.renew_deadline_ms {
            return Err(format!(
                "--retry-period-ms ({}) must be below --renew-deadline-ms ({}): the leader renews \
                 every retry period",
                self.retry_period_ms, self.renew_deadline_ms
            ));
        }
        if let Some(n) = &self.lease_name
            && !is_dns_subdomain(n)
        {
            return Err(format!(
                "--lease-name {n:?} is not a valid Kubernetes name (lower-case letters, digits, \
                 '-' and '.', at most 253)"
            ));
        }
        if let Some(n) = &self.lease_namespace
            && !is_dns_label(n)
        {
            return Err(format!(
                "--lease-namespace {n:?} is not a valid Kubernetes namespace (lower-case letters, \
                 digits and '-', at most 63)"
            ));
        }
        for o in self.cors_origins() {
            check_cors_origin(&o, self.cors_origins().len())?;
        }
        if let Some(u) = &self.public_url {
            crashfleet_core::net::public_url(u)?;
        }
        // The CrashTable's `region` has the same bounds (1-63 characters), so the operator
        // never starts a pod this refuses.
        if self.region.trim().is_empty()
            || self.region.chars().count() > 63
            || self.region.chars().any(char::is_control)
        {
            return Err(
                "--region must be 1-63 characters, not blank, without control characters".into(),
            );
        }
        let id = self.node_id();
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("--node-id must be 1-128 printable characters without spaces".into());
        }
        Ok(())
    }
}

/// A Kubernetes DNS-1123 subdomain (object names such as a Lease's).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes DNS-1123 label (namespaces).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `--cors-origin` values: `*` alone, or origins as browsers send them (`https://host[:port]`,
/// lower-case, no path).
pub fn check_cors_origin(origin: &str, count: usize) -> Result<(), String> {
    if origin == "*" {
        return if count == 1 {
            Ok(())
        } else {
            Err("--cors-origin '*' allows every origin and cannot be combined with others".into())
        };
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--cors-origin {origin:?} is not an origin: write it as a browser sends it, \
             e.g. https://crash.example.com or http://localhost:3000 (lower-case, no path or \
             trailing slash), or '*'"
        ))
    }
}
