//! HTTP: the REST API under `/api/v1/`, operations endpoints, the embedded web pages, and the
//! layers every request passes (body limit, per-IP rate limit, CORS, security headers). The OpenAPI
//! document is generated from the annotations here (`game-node openapi`, checked in as
//! `docs/openapi.json`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{self, Session};
use crate::client_ip::ClientIp;
use crate::error::{ApiError, Error, ErrorBody, Result};
use crate::game;
use crate::ports::{Audit, LeaderboardRow, PlayerRecord, TableStats};
use crate::protocol::{
    BetView, FairnessView, LobbyTable, NodeInfo, PlayerView, RoundStatus, RoundView, SignedReceipt,
};
use crate::state::AppState;

mod admin;
mod assets;
mod bets;
mod log;
mod openapi;
mod ops;
mod players;
mod rounds;
mod table;

use admin::{audit, credit, debit, mute, mutes};
use bets::{cash_out, place_bet};
pub use openapi::{ApiDoc, openapi_json};
pub use ops::metrics_router;
use ops::{healthz, metrics_here, readyz};
use players::{login, logout, me, my_bets, register};
use rounds::{current_round, fairness, round, rounds};
use table::{fleet, leaderboard, lobby, regions, stats};

/// Largest request body. Every request we accept is a few hundred bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most rows a list endpoint returns: a page of 500 rows is ~100 KiB of JSON, one ledger query.
const MAX_LIMIT: u32 = 500;
/// How long browsers may cache a CORS preflight answer: each preflight is one more request
/// against the per-IP limit, and the allowed origins change only with a restart.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);
/// `Strict-Transport-Security` with `--hsts`: one year (31,536,000 s), the minimum browsers'
/// preload lists accept, renewed by every answer. No `includeSubDomains`: the node does not know
/// what else runs under its domain.
const HSTS: &str = "max-age=31536000";

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::BadRequest(r.body_text())
        })
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError(Error::BadRequest(r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(Error::BadRequest(r.body_text()))
    }
}

/// `Json` whose rejections are our JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

type ApiResult<T> = Result<T, ApiError>;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The bearer token's player, resolved against the ledger (crate::auth): `unauthorized` for a
/// missing, bad, expired or revoked token and for a player who no longer exists.
async fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<PlayerRecord> {
    let token =
        bearer(headers).ok_or_else(|| Error::Unauthorized("a bearer token is required".into()))?;
    state.auth.resolve(state.game.ledger.as_ref(), token).await
}

async fn session(state: &AppState, headers: &HeaderMap) -> Result<Session> {
    Ok(Session::of(&authenticated(state, headers).await?))
}

/// The client's address as the outermost layer recorded it (the forwarded one behind a trusted
/// proxy): the key of the per-client share of password work. Without a peer address (a router
/// driven in process without connection info) every request counts as one unspecified client.
type Peer = Option<Extension<crate::client_ip::ClientIp>>;

fn peer_ip(peer: &Peer) -> IpAddr {
    peer.as_ref().map_or(
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        |Extension(c)| c.0,
    )
}

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let Some(expected) = &state.admin_token else {
        return Err(Error::Forbidden(
            "admin endpoints are disabled (no --admin-token)".into(),
        ));
    };
    let given =
        bearer(headers).ok_or_else(|| Error::Unauthorized("admin token required".into()))?;
    // Constant-time comparison: the admin token must not leak through timing.
    let equal = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if equal {
        Ok(())
    } else {
        Err(Error::Forbidden("wrong admin token".into()))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String> {
    let v = headers
        .get("idempotency-key")
        .ok_or(Error::MissingIdempotencyKey)?
        .to_str()
        .map_err(|_| Error::InvalidIdempotencyKey)?;
    game::check_key(v)?;
    Ok(v.to_string())
}

/// A list's `limit`: the default when absent, refused (400) outside 1–[`MAX_LIMIT`] — the
/// document promises that range, so a larger value is an error rather than silently clamped.
fn limit(l: Option<u32>, default: u32) -> Result<u32> {
    match l {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT} (got {n})"
        ))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionBody {
    token: String,
    player: PlayerView,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BetBody {
    /// Minor units.
    stake: i64,
    /// Hundredths; at least 101.
    #[serde(default)]
    auto_cashout_x100: Option<u64>,
}

/// An accepted bet (what every player sees of it) and its signed receipt.
#[derive(Serialize, ToSchema)]
pub struct BetAnswer {
    #[serde(flatten)]
    bet: BetView,
    receipt: SignedReceipt,
}

/// An accepted cash-out and its signed receipt.
#[derive(Serialize, ToSchema)]
pub struct CashOutBody {
    bet_id: String,
    multiplier_x100: u64,
    payout: i64,
    receipt: SignedReceipt,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    /// Minor units, positive.
    amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceBody {
    balance: i64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many rows (1-500; outside that range the answer is 400 `bad_request`).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct RoundDetail {
    round: RoundView,
    bets: Vec<BetView>,
    /// Once settled: hex root of the RFC 6962 tree over the round's settlement leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement_root: Option<String>,
    /// Once settled: the number of bets.
    #[serde(skip_serializing_if = "Option::is_none")]
    bets_count: Option<u64>,
    /// Once settled: the sum of the stakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    wagered: Option<u64>,
    /// Once settled: what went back to players (wins and refunds).
    #[serde(skip_serializing_if = "Option::is_none")]
    paid: Option<u64>,
    /// Once settled: hex of every bet's settlement leaf as stored now, in the tree's canonical
    /// order (by bet id), so anyone can recompute the root (RFC 6962, SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    leaves: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct CurrentRound {
    round: Option<RoundView>,
    bets: Vec<BetView>,
}

#[derive(Serialize, ToSchema)]
pub struct FairnessBody {
    #[serde(flatten)]
    commitment: FairnessView,
    rounds_played: u64,
    /// How the crash point is computed, for readers.
    algorithm: String,
}

#[derive(Serialize, ToSchema)]
pub struct FleetBody {
    table: String,
    leader: Option<String>,
    term: u64,
    nodes: Vec<NodeInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct LobbyBody {
    tables: Vec<LobbyTable>,
}

#[derive(Serialize, ToSchema)]
pub struct RegionsBody {
    regions: Vec<crate::protocol::RegionSummary>,
}

fn player_view(p: &crate::ports::PlayerRecord) -> PlayerView {
    PlayerView {
        id: p.id.clone(),
        username: p.username.clone(),
        balance: p.balance,
    }
}

async fn not_found() -> ApiError {
    ApiError(Error::NotFound("no such endpoint".into()))
}

/// CORS for the configured origins; `None` (no CORS headers: same origin only) without any.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allow = match origins {
        [] => return None,
        [any] if any == "*" => AllowOrigin::from(Any),
        list => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            // A page on another origin must be able to read how long to wait.
            .expose_headers([header::RETRY_AFTER])
            .max_age(CORS_MAX_AGE),
    )
}

/// The outermost layer: records the request's [`ClientIp`] (for the rate limiter, handlers and
/// per-IP caps) and runs the request in a span naming it, so every log line of the request says
/// which client it served.
async fn edge(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let ip = ClientIp::of(&req, &s.trusted_proxies);
    if let Some(ip) = ip {
        req.extensions_mut().insert(ip);
    }
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        client = ip.map(|c| tracing::field::display(c.0)),
    );
    async move {
        let started = std::time::Instant::now();
        let response = next.run(req).await;
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}

/// Records each API request's duration by route (the route's pattern, e.g.
/// `/api/v1/bets/{bet_id}`, never the raw path, so the label set is the routes' set), method and
/// status class: `crashfleet_http_request_duration_seconds`. Only matched routes are observed
/// (a 404 names no route).
async fn observe_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(
        "crashfleet_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .record(started.elapsed().as_secs_f64());
    response
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/bets", get(my_bets))
        .route("/bets", post(place_bet))
        .route("/bets/{bet_id}", get(bets::bet))
        .route("/bets/{bet_id}/cashout", post(cash_out))
        .route("/bets/{bet_id}/proof", get(log::bet_proof))
        .route("/log/head", get(log::log_head))
        .route("/log/proof", get(log::log_proof))
        .route("/log/consistency", get(log::log_consistency))
        .route("/round", get(current_round))
        .route("/rounds", get(rounds))
        .route("/rounds/{number}", get(round))
        .route("/fairness", get(fairness))
        .route("/leaderboard", get(leaderboard))
        .route("/stats", get(stats))
        .route("/fleet", get(fleet))
        .route("/lobby", get(lobby))
        .route("/regions", get(regions))
        .route("/admin/players/{username}/credit", post(credit))
        .route("/admin/players/{username}/debit", post(debit))
        .route("/admin/audit", get(audit))
        .route("/admin/mute", post(mute).get(mutes))
        .route("/openapi.json", get(openapi::openapi))
        .route_layer(axum::middleware::from_fn(observe_route))
        .fallback(not_found);
    if let Some(limiter) = &state.ip_limiter {
        api = api.layer(limiter.layer());
    }
    let mut app = assets::routes(Router::new().nest("/api/v1", api))
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(metrics_here(&state))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(cors) = cors(&state.cors_origin) {
        app = app.layer(cors);
    }
    if state.hsts {
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    app.layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                 style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ))
    .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
    .with_state(state)
}
