//! Rounds: the current round, the history, one round with its bets, the fairness commitment.

use super::*;

#[utoipa::path(get, path = "/api/v1/round", tag = "rounds", responses(
        (status = 200, description = "the current round (null between rounds) and its bets", body = CurrentRound)))]
pub(super) async fn current_round(State(s): State<Arc<AppState>>) -> Json<CurrentRound> {
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
pub(super) async fn rounds(
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
pub(super) async fn round(
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
    let leaves = match &r.settlement {
        Some(_) => {
            let mut leaves = bets
                .iter()
                .map(crate::ports::BetRecord::settlement_leaf)
                .collect::<Result<Vec<_>>>()?;
            crashfleet_core::settlement::settle(&mut leaves);
            Some(leaves.iter().map(|l| hex::encode(l.encode())).collect())
        }
        None => None,
    };
    Ok(Json(RoundDetail {
        round,
        bets: bets.iter().map(|b| b.view()).collect(),
        settlement_root: r.settlement.as_ref().map(|s| s.settlement_root.clone()),
        bets_count: r.settlement.as_ref().map(|s| s.bets_count),
        wagered: r.settlement.as_ref().map(|s| s.wagered),
        paid: r.settlement.as_ref().map(|s| s.paid),
        leaves,
    }))
}

#[utoipa::path(get, path = "/api/v1/fairness", tag = "rounds", responses(
        (status = 200, description = "the table's commitment", body = FairnessBody),
        (status = 503, description = "`unavailable`: the ledger (or, in a fleet, Redis) cannot be reached; nothing moved", body = ErrorBody)))]
pub(super) async fn fairness(State(s): State<Arc<AppState>>) -> ApiResult<Json<FairnessBody>> {
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
