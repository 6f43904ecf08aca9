//! The HTTP and WebSocket edge's state: the game service, and what only the edge needs —
//! authentication, the admin token, connection counts and caps, rate limits, metrics and the
//! draining flag — with the fleet seen through the [`FleetView`] port. Handlers take it; only
//! `node.rs` builds it, so the edge never names an adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::game::Game;
use crate::ports::FleetView;
use crate::protocol::FairnessView;

/// Everything a request handler may touch.
pub struct AppState {
    /// The game service every bet and cash-out goes through (no HTTP in it).
    pub game: Arc<Game>,
    /// The table chat (in process, or Redis for a fleet).
    pub chat: Arc<dyn crate::ports::ChatRoom>,
    pub fairness: FairnessView,
    /// The table's public round log (derived from the ledger's settled rounds).
    pub round_log: crate::roundlog::RoundLog,
    pub auth: Auth,
    /// Every argon2 hash and check: bounded, shared fairly between clients (password.rs).
    pub passwords: crate::password::PasswordPool,
    /// Failed logins per username, for exponential backoff (login_throttle.rs; per node).
    pub login_throttle: crate::login_throttle::LoginThrottle,
    pub admin_token: Option<String>,
    pub demo_credit: i64,
    /// Routes each player's private events to their sockets on this node.
    pub routes: Arc<crate::hub::PlayerRoutes>,
    /// Writes the table's public events to this node's sockets (fanout.rs).
    pub fanout: Arc<crate::fanout::Fanout>,
    pub node_id: String,
    /// The fleet as this node sees it (Redis presence, or this node alone).
    pub fleet: Arc<dyn FleetView>,
    pub region: String,
    pub started_at_ms: i64,
    /// Open WebSocket connections on this node (shared with its heartbeat's report).
    pub connections: Arc<AtomicUsize>,
    pub max_connections: usize,
    pub rate_limit_ip: u32,
    /// Proxies whose forwarding headers name the client (`--trusted-proxies`).
    pub trusted_proxies: Arc<crate::client_ip::TrustedProxies>,
    /// The per-IP REST limit (`--rate-limit-ip`), pruned every minute; `None` when off.
    pub ip_limiter: Option<crate::client_ip::IpLimiter>,
    /// Origins allowed cross-origin calls (`--cors-origin`); empty: same origin only.
    pub cors_origin: Vec<String>,
    /// Served over HTTPS: answers carry `Strict-Transport-Security` (`--hsts`).
    pub hsts: bool,
    pub metrics: PrometheusHandle,
    /// Set once shutdown begins: `/readyz` turns 503 so load balancers drain the node.
    pub draining: AtomicBool,
    pub shutdown: CancellationToken,
    /// Every task the node started, WebSocket connections included: its stop waits for them.
    pub tasks: TaskTracker,
    /// WebSocket caps and timeouts (ws.rs).
    pub ws_limits: crate::limits::WsLimits,
    /// Set when `/metrics` is served on its own address (`--metrics-listen`), not on `--listen`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}
