//! Players: registration, login, logout, the player and their bets.

use super::*;

#[utoipa::path(post, path = "/api/v1/auth/register", request_body = Credentials, tag = "players",
    responses(
        (status = 201, description = "registered and logged in", body = SessionBody),
        (status = 400, description = "`bad_request` (malformed JSON, unknown fields), `invalid_username`, `invalid_password`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`busy`: the password work queue is full, nothing done; `unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn register(
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
    // Account events name the client (the forwarded address behind a trusted proxy): the line an
    // operator greps when a player disputes a login or an address abuses sign-ups.
    tracing::info!(client = %peer_ip(&peer), player = %p.username, "player registered");
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
pub(super) async fn login(
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
        tracing::info!(client = %peer_ip(&peer), player = ?c.username, "login refused");
        return Err(Error::InvalidCredentials.into());
    };
    s.login_throttle.succeeded(&c.username);
    let token = s.auth.issue(&p)?;
    tracing::info!(client = %peer_ip(&peer), player = %p.username, "player logged in");
    Ok(Json(SessionBody {
        token,
        player: player_view(&p),
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "players", security(("bearer" = [])),
    responses((status = 204, description = "Every session of the player has ended, on every node"),
        (status = 401, description = "`unauthorized`: missing, expired, forged or already revoked token", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached; nothing changed", body = ErrorBody)))]
pub(super) async fn logout(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
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
pub(super) async fn me(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<PlayerView>> {
    let p = authenticated(&s, &headers).await?;
    Ok(Json(player_view(&p)))
}

#[utoipa::path(get, path = "/api/v1/me/bets", tag = "players", params(LimitQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "the player's bets, newest first", body = [BetView]),
        (status = 400, description = "`bad_request`: `limit` outside 1-500 or not an integer", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn my_bets(
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
