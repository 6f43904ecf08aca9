//! Money checks of a load run against the ledger, shared by the chaos suite and the real-pod
//! lifecycle tests: no accepted bet lost, no cash-out paid twice or at a price other than the one
//! confirmed, every refusal left its bet unpaid, every `outcome_unknown` resolved to one outcome.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{AcceptedCashOut, CashOutAnswer, Report};

/// Every code a player may see: the API's stable codes (docs/API.md) and the load generator's own
/// names for answers that never came (a killed node, a cut socket).
pub const STABLE_CODES: &[&str] = &[
    "bad_request",
    "invalid_amount",
    "invalid_multiplier",
    "missing_idempotency_key",
    "invalid_idempotency_key",
    "idempotency_conflict",
    "unauthorized",
    "forbidden",
    "not_found",
    "unknown_round",
    "unknown_bet",
    "betting_closed",
    "bet_limit",
    "insufficient_funds",
    "max_payout",
    "not_flying",
    "already_settled",
    "too_late",
    "rate_limited",
    "unavailable",
    "busy",
    "outcome_unknown",
    // transport level, from crashfleet-load
    "transport",
    "timeout",
    "no_answer",
    "client_backlog",
];

/// Every bet of the finished rounds against what the players were told. `rounds` holds each
/// round's summary (from `GET /api/v1/rounds`) with its detail (`GET /api/v1/rounds/{n}`);
/// `payout(stake, multiplier_x100)` is the game's payout rule. Returns the violations: a bet left
/// open, a win at or above the crash point or paid other than the rule says, an accepted bet
/// missing from the ledger (lost), a confirmed cash-out the ledger disagrees with, the cash-out
/// answers' own consistency, and any answer without a stable code.
pub fn check_bets(
    rounds: &[(Value, Value)],
    reports: &[Report],
    payout: impl Fn(i64, u64) -> i64,
) -> Vec<String> {
    let mut v = Vec::new();
    let mut ledger_bets: HashMap<String, Value> = HashMap::new();
    for (r, detail) in rounds {
        let n = r["number"].as_u64().unwrap_or(0);
        let crash = r["crash_x100"].as_u64();
        for b in detail["bets"].as_array().cloned().unwrap_or_default() {
            let id = b["bet_id"].as_str().unwrap_or_default().to_string();
            match b["status"].as_str() {
                Some("open") => v.push(format!("bet {id} of finished round {n} is still open")),
                Some("won") => {
                    let m = b["cashout_x100"].as_u64().unwrap_or(u64::MAX);
                    // At the crash point only an auto target equal to it wins (the curve reaches
                    // it at the crash instant); a manual cash-out there is too late.
                    let auto_at_crash = b["auto_cashout_x100"].as_u64() == crash;
                    if r["status"] == "crashed"
                        && crash.is_some_and(|c| m > c || (m == c && !auto_at_crash))
                    {
                        v.push(format!(
                            "bet {id} of round {n} paid at {m} at or above the crash point {crash:?}"
                        ));
                    }
                    let stake = b["stake"].as_i64().unwrap_or(0);
                    let want = payout(stake, m);
                    if b["payout"].as_i64() != Some(want) {
                        v.push(format!("bet {id} paid {} for {stake} at {m}", b["payout"]));
                    }
                }
                _ => {}
            }
            ledger_bets.insert(id, b);
        }
    }
    for r in reports {
        for id in &r.accepted_bet_ids {
            if !ledger_bets.contains_key(id) {
                v.push(format!("accepted bet {id} is not in the ledger (lost)"));
            }
        }
        for c in &r.accepted_cashouts {
            match ledger_bets.get(&c.bet_id) {
                Some(b)
                    if b["status"] == "won"
                        && b["cashout_x100"].as_u64() == Some(c.multiplier_x100)
                        && b["payout"].as_i64() == Some(c.payout) => {}
                other => v.push(format!(
                    "cash-out confirmed at {} for {} but the ledger has {other:?}",
                    c.multiplier_x100, c.payout
                )),
            }
        }
        v.extend(check_cash_out_answers(
            &r.cashout_answers,
            &r.accepted_cashouts,
            &ledger_bets,
        ));
        for code in r.bets.by_code.keys().chain(r.cashouts.by_code.keys()) {
            if !STABLE_CODES.contains(&code.as_str()) {
                v.push(format!(
                    "a player saw an answer without a stable code: {code}"
                ));
            }
        }
    }
    v
}

/// Answers that say the node could not act or answer now: they decide nothing, so they may come
/// before (and, for transport failures, between) the attempts that do.
const UNDECIDED: &[&str] = &[
    "outcome_unknown",
    "unavailable",
    "busy",
    "rate_limited",
    "transport",
    "timeout",
    "no_answer",
    "client_backlog",
];

/// Every cash-out request's answers, retries with the same key included: the accepted answers of
/// one key all agree and no key was both accepted and refused; an `outcome_unknown` resolved to a
/// real outcome; a refused cash-out left its bet unpaid (unless an auto target or another of the
/// player's accepted cash-outs paid it, at exactly that multiplier).
pub fn check_cash_out_answers(
    answers: &[CashOutAnswer],
    accepted: &[AcceptedCashOut],
    ledger_bets: &HashMap<String, Value>,
) -> Vec<String> {
    let mut v = Vec::new();
    type Answer = Result<(u64, i64), String>;
    let mut by_key: BTreeMap<(&str, &str), Vec<&Answer>> = BTreeMap::new();
    for a in answers {
        by_key
            .entry((a.bet_id.as_str(), a.key.as_str()))
            .or_default()
            .push(&a.answer);
    }
    for ((bet_id, key), answers) in &by_key {
        let oks: std::collections::BTreeSet<_> =
            answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        let refusals: Vec<&str> = answers
            .iter()
            .filter_map(|a| a.as_ref().err())
            .map(String::as_str)
            .filter(|c| !UNDECIDED.contains(c))
            .collect();
        if oks.len() > 1 {
            v.push(format!(
                "cash-out {key} of bet {bet_id} was accepted with different outcomes: {oks:?}"
            ));
        }
        if !oks.is_empty() && !refusals.is_empty() {
            v.push(format!(
                "cash-out {key} of bet {bet_id} was both accepted {oks:?} and refused {refusals:?}"
            ));
        }
        if answers
            .iter()
            .any(|a| a.as_ref().err().is_some_and(|c| c == "outcome_unknown"))
            && oks.is_empty()
            && refusals.is_empty()
            && answers
                .last()
                .is_some_and(|a| a.as_ref().err().is_some_and(|c| c == "outcome_unknown"))
        {
            v.push(format!(
                "cash-out {key} of bet {bet_id}: outcome_unknown never resolved ({} attempts)",
                answers.len()
            ));
        }
        if oks.is_empty() && !refusals.is_empty() {
            let Some(b) = ledger_bets.get(*bet_id) else {
                continue;
            };
            let paid_at = b["cashout_x100"].as_u64();
            let explained = b["status"] != "won"
                || paid_at == b["auto_cashout_x100"].as_u64()
                || accepted
                    .iter()
                    .any(|c| c.bet_id == *bet_id && Some(c.multiplier_x100) == paid_at);
            if !explained {
                v.push(format!(
                    "cash-out {key} of bet {bet_id} was refused {refusals:?} but the bet was paid \
                     at {paid_at:?}"
                ));
            }
        }
    }
    v
}
