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
    BetView, FairnessView, LobbyTable, NodeInfo, PlayerView, RoundStatus, RoundView,
};
use crate::state::AppState;

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

#[derive(Serialize, ToSchema)]
pub struct CashOutBody {
    bet_id: String,
    multiplier_x100: u64,
    payout: i64,
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

fn player_view(p: &crate::ports::PlayerRecord) -> PlayerView {
    PlayerView {
        id: p.id.clone(),
        username: p.username.clone(),
        balance: p.balance,
    }
}

#[utoipa::path(post, path = "/api/v1/auth/register", request_body = Credentials, tag = "players",
    responses(
        (status = 201, description = "registered and logged in", body = SessionBody),
        (status = 400, description = "`bad_request` (malformed JSON, unknown fields), `invalid_username`, `invalid_password`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`busy`: the password work queue is full, nothing done; `unavailable`: the ledger cannot be reached", body = ErrorBody)))]
async fn register(
    State(s): State<Arc<AppState>>,
    peer: Peer,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<SessionBody>)> {
    auth::validate_username(&c.username)?;
    auth::validate_password(&c.password)?;
    let slot = s.passwords.admit(peer_ip(&peer))?;
    if s.game.ledger.player_by_name(&c.username).await?.is_some() {
        return Err(Error::UsernameTaken.into());
    }
    let hash = slot.hash(c.password).await?;
    let p = s
        .game
        .ledger
        .register(&c.username, &hash, s.demo_credit, s.game.clock.now_ms())
        .await?;
    let token = s.auth.issue(&p)?;
    Ok((
        StatusCode::CREATED,
        Json(SessionBody {
            token,
            player: player_view(&p),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = Credentials, tag = "players",
    responses(
        (status = 200, description = "logged in", body = SessionBody),
        (status = 400, description = "`bad_request`: malformed JSON or unknown fields", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many failed logins for this username, or too many requests from this client; see Retry-After", body = ErrorBody),
        (status = 503, description = "`busy`: the password work queue is full, nothing done; `unavailable`: the ledger cannot be reached", body = ErrorBody)))]
async fn login(
    State(s): State<Arc<AppState>>,
    peer: Peer,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<SessionBody>> {
    // Cheap refusals first: nothing below them costs argon2 work.
    auth::check_login_input(&c.username, &c.password)?;
    if let Err(wait) = s
        .login_throttle
        .check(&c.username, std::time::Instant::now())
    {
        return Err(Error::LoginThrottled {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
        .into());
    }
    let slot = s.passwords.admit(peer_ip(&peer))?;
    let p = s.game.ledger.player_by_name(&c.username).await?;
    let hash = p.as_ref().map(|p| p.password_hash.clone());
    let ok = slot.verify(c.password, hash).await?;
    let Some(p) = p.filter(|_| ok) else {
        s.login_throttle
            .failed(&c.username, std::time::Instant::now());
        return Err(Error::InvalidCredentials.into());
    };
    s.login_throttle.succeeded(&c.username);
    let token = s.auth.issue(&p)?;
    Ok(Json(SessionBody {
        token,
        player: player_view(&p),
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "players", security(("bearer" = [])),
    responses((status = 204, description = "Every session of the player has ended, on every node"),
        (status = 401, description = "`unauthorized`: missing, expired, forged or already revoked token", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached; nothing changed", body = ErrorBody)))]
async fn logout(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let p = authenticated(&s, &headers).await?;
    s.game
        .ledger
        .revoke_tokens(&p.id)
        .await?
        .ok_or_else(|| Error::Unauthorized("this session's player no longer exists".into()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/me", tag = "players", security(("bearer" = [])),
    responses(
        (status = 200, description = "the player", body = PlayerView),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn me(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<PlayerView>> {
    let p = authenticated(&s, &headers).await?;
    Ok(Json(player_view(&p)))
}

#[utoipa::path(get, path = "/api/v1/me/bets", tag = "players", params(LimitQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "the player's bets, newest first", body = [BetView]),
        (status = 400, description = "`bad_request`: `limit` outside 1-500 or not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn my_bets(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Vec<BetView>>> {
    let session = session(&s, &headers).await?;
    let bets = s
        .game
        .ledger
        .player_bets(&session.player_id, limit(q.limit, 50)?)
        .await?;
    Ok(Json(bets.iter().map(|b| b.view()).collect()))
}

#[utoipa::path(post, path = "/api/v1/bets", request_body = BetBody, tag = "betting", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")),
    responses(
        (status = 201, description = "the bet, debited (or the first answer to this Idempotency-Key)", body = BetView),
        (status = 400, description = "`bad_request`, `invalid_amount`, `invalid_multiplier`, `max_payout`, `missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 409, description = "`betting_closed`, `bet_limit`, `insufficient_funds`, `idempotency_conflict`, `idempotency_key_used`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`unavailable` (ledger or Redis unreachable, or the table is paused): nothing moved; `outcome_unknown`: the answer to a money decision was lost, money may have moved — retry with the same Idempotency-Key", body = ErrorBody)))]
async fn place_bet(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<BetBody>,
) -> ApiResult<(StatusCode, Json<BetView>)> {
    let session = session(&s, &headers).await?;
    let key = idempotency_key(&headers)?;
    let (bet, _) = s
        .game
        .place_bet(session.player(), &key, b.stake, b.auto_cashout_x100)
        .await?;
    Ok((StatusCode::CREATED, Json(bet.view())))
}

#[utoipa::path(post, path = "/api/v1/bets/{bet_id}/cashout", tag = "betting", security(("bearer" = [])),
    params(("bet_id" = String, Path), ("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")),
    responses(
        (status = 200, description = "cashed out (or the first answer to this Idempotency-Key)", body = CashOutBody),
        (status = 400, description = "`missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 403, description = "`forbidden`: not your bet", body = ErrorBody),
        (status = 404, description = "`unknown_bet`", body = ErrorBody),
        (status = 409, description = "`not_flying`, `too_late`, `already_settled`, `idempotency_conflict`", body = ErrorBody),
        (status = 503, description = "`unavailable` (ledger or Redis unreachable, or the table is paused): nothing moved; `outcome_unknown`: the answer to a money decision was lost, money may have moved — retry with the same Idempotency-Key", body = ErrorBody)))]
async fn cash_out(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(bet_id): ApiPath<String>,
) -> ApiResult<Json<CashOutBody>> {
    let session = session(&s, &headers).await?;
    let key = idempotency_key(&headers)?;
    let c = s.game.cash_out(session.player(), &key, &bet_id).await?;
    Ok(Json(CashOutBody {
        bet_id: c.bet_id,
        multiplier_x100: c.multiplier_x100,
        payout: c.payout,
    }))
}

#[utoipa::path(get, path = "/api/v1/round", tag = "rounds", responses(
        (status = 200, description = "the current round (null between rounds) and its bets", body = CurrentRound)))]
async fn current_round(State(s): State<Arc<AppState>>) -> Json<CurrentRound> {
    let (round, bets) = match s.game.arbiter.current().await {
        Some((r, b)) => (Some(r), b),
        None => (None, Vec::new()),
    };
    Json(CurrentRound { round, bets })
}

#[utoipa::path(get, path = "/api/v1/rounds", tag = "rounds", params(LimitQuery),
    responses(
        (status = 200, description = "finished rounds, newest first", body = [crate::ports::PublicRound]),
        (status = 400, description = "`bad_request`: `limit` outside 1-500 or not an integer", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn rounds(
    State(s): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Vec<crate::ports::PublicRound>>> {
    let rows = s
        .game
        .ledger
        .rounds(&s.game.table.id, limit(q.limit, 20)?)
        .await?;
    Ok(Json(rows.iter().filter_map(|r| r.public()).collect()))
}

#[utoipa::path(get, path = "/api/v1/rounds/{number}", tag = "rounds", params(("number" = u64, Path)),
    responses(
        (status = 200, description = "the round and its bets", body = RoundDetail),
        (status = 400, description = "`bad_request`: `number` is not a non-negative integer", body = ErrorBody),
        (status = 404, description = "`unknown_round`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn round(
    State(s): State<Arc<AppState>>,
    ApiPath(number): ApiPath<u64>,
) -> ApiResult<Json<RoundDetail>> {
    let r = s
        .game
        .ledger
        .round(&s.game.table.id, number)
        .await?
        .ok_or(Error::UnknownRound(number))?;
    // An open round is described by /round (with its live phase), never with its secrets.
    let round = if r.status == RoundStatus::Open {
        match s.game.arbiter.current().await {
            Some((view, _)) if view.number == number => view,
            _ => r.view(),
        }
    } else {
        r.view()
    };
    let bets = s.game.ledger.round_bets(&s.game.table.id, number).await?;
    Ok(Json(RoundDetail {
        round,
        bets: bets.iter().map(|b| b.view()).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/fairness", tag = "rounds", responses(
        (status = 200, description = "the table's commitment", body = FairnessBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn fairness(State(s): State<Arc<AppState>>) -> ApiResult<Json<FairnessBody>> {
    let played = s
        .game
        .ledger
        .last_round(&s.game.table.id)
        .await?
        .map_or(0, |r| r.number);
    Ok(Json(FairnessBody {
        commitment: s.fairness.clone(),
        rounds_played: played,
        algorithm: "h(i+1) = SHA-256(h(i)); round k uses h(L-k); r = top 52 bits of \
                    HMAC-SHA256(key = salt as UTF-8, message = round hash bytes); crash_x100 = \
                    max(100, floor((10000 - edge_bp) * 2^52 / ((2^52 - r) * 100))), capped at max_x100"
            .into(),
    }))
}

#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "table", params(LimitQuery),
    responses(
        (status = 200, description = "players by profit", body = [LeaderboardRow]),
        (status = 400, description = "`bad_request`: `limit` outside 1-500 or not an integer", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn leaderboard(
    State(s): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Vec<LeaderboardRow>>> {
    Ok(Json(s.game.ledger.leaderboard(limit(q.limit, 20)?).await?))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "table", responses(
        (status = 200, description = "table statistics", body = TableStats),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn stats(State(s): State<Arc<AppState>>) -> ApiResult<Json<TableStats>> {
    Ok(Json(s.game.ledger.stats(&s.game.table.id).await?))
}

#[utoipa::path(get, path = "/api/v1/fleet", tag = "table", responses(
        (status = 200, description = "the fleet: leader, term, live nodes", body = FleetBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn fleet(State(s): State<Arc<AppState>>) -> ApiResult<Json<FleetBody>> {
    let (leader, nodes) = s.fleet.fleet().await?;
    let term = match &leader {
        Some(l) => l.term,
        // Between leaders: the newest term the ledger recorded.
        None => s.game.ledger.current_term(&s.game.table.id).await?,
    };
    Ok(Json(FleetBody {
        table: s.game.table.id.clone(),
        leader: leader.map(|l| l.node_id),
        term,
        nodes,
    }))
}

#[utoipa::path(get, path = "/api/v1/lobby", tag = "table", responses(
        (status = 200, description = "every live table", body = LobbyBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn lobby(State(s): State<Arc<AppState>>) -> ApiResult<Json<LobbyBody>> {
    Ok(Json(LobbyBody {
        tables: s.fleet.lobby().await?,
    }))
}

async fn adjust(
    s: &AppState,
    headers: &HeaderMap,
    username: &str,
    amount: i64,
    sign: i64,
) -> ApiResult<Json<BalanceBody>> {
    require_admin(s, headers)?;
    let key = idempotency_key(headers)?;
    if amount <= 0 || amount > 1_000_000_000_000 {
        return Err(
            Error::InvalidAmount("the amount must be between 1 and 1000000000000".into()).into(),
        );
    }
    let balance = s
        .game
        .ledger
        .adjust(username, sign * amount, &key, s.game.clock.now_ms())
        .await?;
    if let Some(p) = s.game.ledger.player_by_name(username).await? {
        let _ = s
            .game
            .bus
            .publish_private(&p.id, &crate::protocol::ServerMessage::Balance { balance })
            .await;
    }
    Ok(Json(BalanceBody { balance }))
}

#[utoipa::path(post, path = "/api/v1/admin/players/{username}/credit", tag = "admin", request_body = AmountBody,
    params(("username" = String, Path), ("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")), security(("admin" = [])),
    responses(
        (status = 200, description = "the new balance", body = BalanceBody),
        (status = 400, description = "`bad_request` (malformed JSON, unknown fields), `invalid_amount`, `missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no bearer token", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong admin token, or admin endpoints disabled (no --admin-token)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such player", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn credit(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(username): ApiPath<String>,
    ApiJson(b): ApiJson<AmountBody>,
) -> ApiResult<Json<BalanceBody>> {
    adjust(&s, &headers, &username, b.amount, 1).await
}

#[utoipa::path(post, path = "/api/v1/admin/players/{username}/debit", tag = "admin", request_body = AmountBody,
    params(("username" = String, Path), ("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")), security(("admin" = [])),
    responses(
        (status = 200, description = "the new balance", body = BalanceBody),
        (status = 400, description = "`bad_request` (malformed JSON, unknown fields), `invalid_amount`, `missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no bearer token", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong admin token, or admin endpoints disabled (no --admin-token)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such player", body = ErrorBody),
        (status = 409, description = "`insufficient_funds`, `idempotency_conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn debit(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(username): ApiPath<String>,
    ApiJson(b): ApiJson<AmountBody>,
) -> ApiResult<Json<BalanceBody>> {
    adjust(&s, &headers, &username, b.amount, -1).await
}

#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "the conservation audit", body = Audit),
        (status = 401, description = "`unauthorized`: no bearer token", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong admin token, or admin endpoints disabled (no --admin-token)", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
async fn audit(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Audit>> {
    require_admin(&s, &headers)?;
    Ok(Json(s.game.ledger.audit().await?))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Err(e) = s.game.ledger.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e}")).into_response();
    }
    if let Err(e) = s.fleet.ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    "ready".into_response()
}

/// `/metrics` on the main listener, unless `--metrics-listen` moved it (then it is a 404 here).
fn metrics_here(state: &AppState) -> Router<Arc<AppState>> {
    match state.metrics_listen {
        Some(_) => Router::new(),
        None => Router::new().route("/metrics", get(metrics)),
    }
}

/// What `--metrics-listen` serves: `/metrics` and nothing else.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    metrics::gauge!("crashfleet_ws_connections").set(s.connections.load(Ordering::Relaxed) as f64);
    process_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The process's resident memory and open file descriptors, read from /proc at scrape time (Linux;
/// elsewhere they are simply absent). Load runs divide the memory by the connection count.
fn process_metrics() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "crashfleet game-node", description = "Provably fair multiplayer crash game. \
        Amounts are integers in minor units; multipliers integers in hundredths. The WebSocket \
        protocol at /ws is documented in crates/crashfleet-core/src/protocol.rs."),
    paths(register, login, logout, me, my_bets, place_bet, cash_out, current_round, rounds, round,
          fairness, leaderboard, stats, fleet, lobby, credit, debit, audit),
    modifiers(&SecuritySchemes, &CommonResponses),
)]
pub struct ApiDoc;

/// What every operation can answer besides its own statuses: 429 from the per-IP limit (every
/// route under `/api/v1/`) and 500 for a bug; and the `Retry-After` header on every 429 and 503.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};
        let error = |description: &str, retry: bool| {
            let mut r = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if retry {
                r = r.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(schema::Object::with_type(schema::Type::Integer))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            r.build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                responses.entry("429".into()).or_insert_with(|| {
                    error(
                        "`rate_limited`: too many requests from this client address (or, for bets \
                         and cash-outs, this player)",
                        true,
                    )
                    .into()
                });
                responses
                    .entry("500".into())
                    .or_insert_with(|| error("`internal`: a bug; logged", false).into());
                for status in ["429", "503"] {
                    if let Some(utoipa::openapi::RefOr::T(r)) = responses.get_mut(status) {
                        *r = error(&r.description, true);
                    }
                }
            }
        }
    }
}

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["bearer", "admin"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn not_found() -> ApiError {
    ApiError(Error::NotFound("no such endpoint".into()))
}

macro_rules! asset {
    ($name:ident, $file:literal, $mime:literal) => {
        async fn $name() -> Response {
            (
                [
                    (header::CONTENT_TYPE, $mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                include_str!(concat!("../web/", $file)),
            )
                .into_response()
        }
    };
}
asset!(app_js, "app.js", "text/javascript; charset=utf-8");
asset!(verify_js, "verify.js", "text/javascript; charset=utf-8");
asset!(style_css, "style.css", "text/css; charset=utf-8");

/// The player-facing text of every error code (`window.CRASHFLEET_ERROR_TEXT`), built from the
/// error table the node answers with, so the page cannot drift from the codes.
async fn errors_js() -> Response {
    static JS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let js = JS.get_or_init(|| {
        let table: serde_json::Map<String, serde_json::Value> = crate::error::PLAYER_TEXT
            .iter()
            .map(|(code, text)| (code.to_string(), serde_json::Value::from(*text)))
            .collect();
        format!(
            "window.CRASHFLEET_ERROR_TEXT = Object.freeze({});\n",
            serde_json::Value::Object(table)
        )
    });
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        js.as_str(),
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

async fn verify_page() -> Html<&'static str> {
    Html(include_str!("../web/verify.html"))
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

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/bets", get(my_bets))
        .route("/bets", post(place_bet))
        .route("/bets/{bet_id}/cashout", post(cash_out))
        .route("/round", get(current_round))
        .route("/rounds", get(rounds))
        .route("/rounds/{number}", get(round))
        .route("/fairness", get(fairness))
        .route("/leaderboard", get(leaderboard))
        .route("/stats", get(stats))
        .route("/fleet", get(fleet))
        .route("/lobby", get(lobby))
        .route("/admin/players/{username}/credit", post(credit))
        .route("/admin/players/{username}/debit", post(debit))
        .route("/admin/audit", get(audit))
        .route("/openapi.json", get(openapi))
        .fallback(not_found);
    if let Some(limiter) = &state.ip_limiter {
        api = api.layer(limiter.layer());
    }
    let mut app = Router::new()
        .nest("/api/v1", api)
        .route("/", get(index))
        .route("/verify", get(verify_page))
        .route("/app.js", get(app_js))
        .route("/errors.js", get(errors_js))
        .route("/verify.js", get(verify_js))
        .route("/style.css", get(style_css))
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
