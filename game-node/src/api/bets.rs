//! Betting: placing a bet and cashing it out, through the game service.

use super::*;

#[utoipa::path(post, path = "/api/v1/bets", request_body = BetBody, tag = "betting", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")),
    responses(
        (status = 201, description = "the bet, debited (or the first answer to this Idempotency-Key), with its signed receipt", body = BetAnswer),
        (status = 400, description = "`bad_request`, `invalid_amount`, `invalid_multiplier`, `max_payout`, `missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 409, description = "`betting_closed`, `bet_limit`, `insufficient_funds`, `idempotency_conflict`, `idempotency_key_used`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "`unavailable` (ledger or Redis unreachable, or the table is paused): nothing moved; `outcome_unknown`: the answer to a money decision was lost, money may have moved — retry with the same Idempotency-Key", body = ErrorBody)))]
pub(super) async fn place_bet(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<BetBody>,
) -> ApiResult<(StatusCode, Json<BetAnswer>)> {
    let session = session(&s, &headers).await?;
    let key = idempotency_key(&headers)?;
    let placed = s
        .game
        .place_bet(session.player(), &key, b.stake, b.auto_cashout_x100)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(BetAnswer {
            bet: placed.bet.view(),
            receipt: placed.receipt,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/bets/{bet_id}/cashout", tag = "betting", security(("bearer" = [])),
    params(("bet_id" = String, Path), ("Idempotency-Key" = String, Header, description = "1-64 printable ASCII characters")),
    responses(
        (status = 200, description = "cashed out (or the first answer to this Idempotency-Key), with its signed receipt", body = CashOutBody),
        (status = 400, description = "`missing_idempotency_key`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, expired or forged bearer token, or a player that no longer exists", body = ErrorBody),
        (status = 403, description = "`forbidden`: not your bet", body = ErrorBody),
        (status = 404, description = "`unknown_bet`", body = ErrorBody),
        (status = 409, description = "`not_flying`, `too_late`, `already_settled`, `idempotency_conflict`", body = ErrorBody),
        (status = 503, description = "`unavailable` (ledger or Redis unreachable, or the table is paused): nothing moved; `outcome_unknown`: the answer to a money decision was lost, money may have moved — retry with the same Idempotency-Key", body = ErrorBody)))]
pub(super) async fn cash_out(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(bet_id): ApiPath<String>,
) -> ApiResult<Json<CashOutBody>> {
    let session = session(&s, &headers).await?;
    let key = idempotency_key(&headers)?;
    let cashed = s.game.cash_out(session.player(), &key, &bet_id).await?;
    let c = cashed.cash_out;
    Ok(Json(CashOutBody {
        bet_id: c.bet_id,
        multiplier_x100: c.multiplier_x100,
        payout: c.payout,
        receipt: cashed.receipt,
    }))
}

/// The bet `bet_id` of this table, for its owner or the admin token. Anyone else — another player,
/// a bet of another table — gets `unknown_bet`, exactly as for a bet that does not exist, so the
/// answer does not tell whether it exists.
pub(super) async fn owned_bet(
    s: &AppState,
    headers: &HeaderMap,
    bet_id: &str,
) -> Result<crate::ports::BetRecord, Error> {
    let owner = if require_admin(s, headers).is_ok() {
        None
    } else {
        Some(session(s, headers).await?.player_id)
    };
    let unknown = || Error::UnknownBet(bet_id.chars().take(64).collect());
    if bet_id.is_empty() || bet_id.len() > 64 {
        return Err(unknown());
    }
    let bet = s.game.ledger.bet(bet_id).await?.ok_or_else(unknown)?;
    if owner.is_some_and(|o| o != bet.player_id) || bet.table != s.game.table.id {
        return Err(unknown());
    }
    Ok(bet)
}

#[utoipa::path(get, path = "/api/v1/bets/{bet_id}", tag = "betting", params(("bet_id" = String, Path)),
    security(("bearer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "the bet as the ledger holds it now: open, won (with its cash-out multiplier and payout), lost or refunded", body = BetView),
        (status = 401, description = "`unauthorized`: no valid bearer token (a player's, or the admin token)", body = ErrorBody),
        (status = 404, description = "`unknown_bet`: no such bet on this table, or another player's", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn bet(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(bet_id): ApiPath<String>,
) -> ApiResult<Json<BetView>> {
    Ok(Json(owned_bet(&s, &headers, &bet_id).await?.view()))
}
