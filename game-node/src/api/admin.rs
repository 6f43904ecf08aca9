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
