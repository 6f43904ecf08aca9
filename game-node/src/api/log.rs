//! The public round log (signed tree heads, inclusion and consistency proofs) and a player's
//! proof that their bet was settled as the round's settlement root says.

use crashfleet_core::settlement::settle;

use super::*;
use crate::roundlog::{Inclusion, SignedHead};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// The round (its leaf is round − 1).
    round: u64,
    /// The log size the proof is for (default: the current size).
    size: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older log size (at least 1).
    from: u64,
    /// The newer log size (at most the current size).
    to: u64,
}

/// A consistency proof between two sizes of the log.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyBody {
    from: u64,
    to: u64,
    /// Hex hashes (RFC 9162 consistency proof; empty when `from == to`).
    path: Vec<String>,
}

/// A bet's settlement leaf with its audit path to the round's settlement root, and the round's
/// place in the log.
#[derive(Serialize, ToSchema)]
pub struct BetProof {
    bet_id: String,
    round: u64,
    /// Hex of the bet's settlement leaf bytes (tag `crashfleet/settlement-leaf/v1`, bet id,
    /// player hash, stake, outcome, multiplier, payout), built from the bet as stored now.
    leaf: String,
    leaf_index: u64,
    /// Bets in the round's settlement tree.
    tree_size: u64,
    /// Hex hashes from the leaf up to the root.
    path: Vec<String>,
    /// Hex of the root the round's settlement committed to (stored when it was settled).
    settlement_root: String,
    log: Inclusion,
}

#[utoipa::path(get, path = "/api/v1/log/head", tag = "log", responses(
        (status = 200, description = "the round log's size and root now, signed with the table's key", body = SignedHead),
        (status = 503, description = "`unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn log_head(State(s): State<Arc<AppState>>) -> ApiResult<Json<SignedHead>> {
    let now = s.game.clock.now_ms();
    let head = s
        .round_log
        .head(s.game.ledger.as_ref(), &s.game.table.notary, now)
        .await?;
    Ok(Json(head))
}

#[utoipa::path(get, path = "/api/v1/log/proof", tag = "log", params(ProofQuery), responses(
        (status = 200, description = "the round's log leaf and its inclusion proof in the log's first `size` leaves", body = Inclusion),
        (status = 400, description = "`bad_request`: `size` larger than the log, or parameters that are not integers", body = ErrorBody),
        (status = 404, description = "`unknown_round`: the round is not in the log's first `size` leaves (not settled yet, or never played)", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn log_proof(
    State(s): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> ApiResult<Json<Inclusion>> {
    let inclusion = s
        .round_log
        .inclusion(s.game.ledger.as_ref(), q.round, q.size)
        .await?
        .ok_or(Error::UnknownRound(q.round))?;
    Ok(Json(inclusion))
}

#[utoipa::path(get, path = "/api/v1/log/consistency", tag = "log", params(ConsistencyQuery), responses(
        (status = 200, description = "the proof that the log's first `from` leaves are a prefix of its first `to`", body = ConsistencyBody),
        (status = 400, description = "`bad_request`: not 0 < from <= to <= the log's size", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn log_consistency(
    State(s): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyBody>> {
    let path = s
        .round_log
        .consistency(s.game.ledger.as_ref(), q.from, q.to)
        .await?;
    Ok(Json(ConsistencyBody {
        from: q.from,
        to: q.to,
        path: path.iter().map(hex::encode).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/bets/{bet_id}/proof", tag = "log", params(("bet_id" = String, Path)),
    security(("bearer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "the bet's settlement leaf, its path to the round's settlement root, and the round's inclusion in the log", body = BetProof),
        (status = 401, description = "`unauthorized`: no valid bearer token (a player's, or the admin token)", body = ErrorBody),
        (status = 404, description = "`unknown_bet` (also for another player's bet), or `not_found`: its round is not settled yet", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger cannot be reached", body = ErrorBody)))]
pub(super) async fn bet_proof(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(bet_id): ApiPath<String>,
) -> ApiResult<Json<BetProof>> {
    let bet = super::bets::owned_bet(&s, &headers, &bet_id).await?;
    let unknown = || Error::UnknownBet(bet_id.chars().take(64).collect());
    let ledger = s.game.ledger.as_ref();
    let round = ledger
        .round(&bet.table, bet.round)
        .await?
        .ok_or(Error::UnknownRound(bet.round))?;
    let not_settled = || {
        Error::NotFound(format!(
            "round {} is not settled yet: its proof exists once it is",
            bet.round
        ))
    };
    let settled = round.settlement.clone().ok_or_else(not_settled)?;
    // The round's bets as stored now, in the settlement's canonical order.
    let mut leaves = Vec::new();
    for b in ledger.round_bets(&bet.table, bet.round).await? {
        leaves.push(b.settlement_leaf()?);
    }
    settle(&mut leaves);
    let index = leaves
        .iter()
        .position(|l| l.bet_id == bet.bet_id)
        .ok_or_else(unknown)?;
    let tree = crashfleet_core::merkle::Tree::from_leaves(leaves.iter().map(|l| l.encode()));
    let path = tree
        .inclusion_proof(index as u64, tree.len())
        .ok_or_else(|| Error::Internal("no settlement path".into()))?;
    let log = s
        .round_log
        .inclusion(ledger, bet.round, None)
        .await?
        .ok_or_else(not_settled)?;
    Ok(Json(BetProof {
        bet_id: bet.bet_id,
        round: bet.round,
        leaf: hex::encode(leaves[index].encode()),
        leaf_index: index as u64,
        tree_size: tree.len(),
        path: path.iter().map(hex::encode).collect(),
        settlement_root: settled.settlement_root,
        log,
    }))
}
