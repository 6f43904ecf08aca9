//! Administration (`--admin-token`): credits, debits and the conservation audit.

use super::*;

pub(super) async fn adjust(
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
pub(super) async fn credit(
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
pub(super) async fn debit(
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
pub(super) async fn audit(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Audit>> {
    require_admin(&s, &headers)?;
    Ok(Json(s.game.ledger.audit().await?))
}

/// Mutes (or, with `minutes: 0`, unmutes) a player in the table chat.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    username: String,
    /// How long, 0 (lift the mute) to 43200 (30 days).
    minutes: u64,
}

/// The table's chat mutes in force.
#[derive(Serialize, ToSchema)]
pub struct MutesBody {
    mutes: Vec<crate::ports::Mute>,
}

#[utoipa::path(post, path = "/api/v1/admin/mute", tag = "admin", request_body = MuteBody,
    security(("admin" = [])),
    responses(
        (status = 200, description = "the mutes in force now (the new one included)", body = MutesBody),
        (status = 400, description = "`bad_request`: malformed JSON, unknown fields, or minutes above 43200", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no bearer token", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong admin token, or admin endpoints disabled (no --admin-token)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such player", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; the mute list is unchanged", body = ErrorBody)))]
pub(super) async fn mute(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<MuteBody>,
) -> ApiResult<Json<MutesBody>> {
    require_admin(&s, &headers)?;
    if b.minutes > crashfleet_core::chat::MAX_MUTE_MINUTES {
        return Err(Error::BadRequest(format!(
            "minutes must be 0 (unmute) to {}",
            crashfleet_core::chat::MAX_MUTE_MINUTES
        ))
        .into());
    }
    let Some(player) = s.game.ledger.player_by_name(&b.username).await? else {
        return Err(Error::NotFound(format!("no player named {:?}", b.username)).into());
    };
    let until_ms = if b.minutes == 0 {
        0
    } else {
        s.game.clock.now_ms() + b.minutes as i64 * 60_000
    };
    s.chat.mute(&player.username, until_ms).await?;
    tracing::info!(player = %player.username, minutes = b.minutes, "chat mute set by an admin");
    Ok(Json(MutesBody {
        mutes: s.chat.mutes().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/mute", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "the chat mutes in force", body = MutesBody),
        (status = 401, description = "`unauthorized`: no bearer token", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong admin token, or admin endpoints disabled (no --admin-token)", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis (in a fleet) cannot be reached", body = ErrorBody)))]
pub(super) async fn mutes(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<MutesBody>> {
    require_admin(&s, &headers)?;
    Ok(Json(MutesBody {
        mutes: s.chat.mutes().await?,
    }))
}
