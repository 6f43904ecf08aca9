//! The player actions shared by REST and WebSocket: one place decides what a bet and a cash-out
//! do, in which order the arbiter and the ledger are asked, and what is announced.
//!
//! Order of steps, and what a failure between them means:
//! - Bet: (1) idempotency look-up in the ledger, (2) the arbiter accepts it against the window and
//!   the per-player limit, (3) the ledger debits the stake and stores the bet, refusing if the round
//!   is no longer open. If (3) fails the arbiter forgets the bet, so nothing was paid or promised.
//! - Cash-out: (1) the arbiter decides against the authoritative clock — final from that instant —
//!   (2) the ledger pays it. If (2) fails the round's settlement pays it at the crash (the arbiter
//!   still holds the decision), so an accepted cash-out is never lost and never paid twice
//!   (the bet's `open → won` transition happens once).
//!
//! Answers never lie about money. Requests with the same (player, idempotency key) run one at a
//! time on a node, so a concurrent retry waits for the first and gets its outcome. When the node
//! cannot know what happened — the arbiter's or the ledger's reply was lost after the request was
//! sent — it answers `outcome_unknown` (never an error that says nothing moved), and a retry with
//! the same key returns the real first outcome: the ledger finds the bet by its key, and the
//! arbiter gives the decision recorded with the cash-out's key back.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Session;
use crate::engine::{BetRequest, CashOut, validate_bet};
use crate::error::{Error, Result};
use crate::node::AppState;
use crate::ports::BetRecord;
use crate::protocol::ServerMessage;

/// Per-player limit on money requests, shared by REST and WebSocket.
pub struct PlayerLimiter(Option<DefaultKeyedRateLimiter<String>>);

impl PlayerLimiter {
    pub fn new(per_second: u32) -> PlayerLimiter {
        PlayerLimiter(NonZeroU32::new(per_second).map(|n| {
            // Bursts of twice the rate let a player bet and cash out in quick succession.
            let burst = n.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(n).allow_burst(burst))
        }))
    }

    pub fn check(&self, player_id: &str) -> Result<()> {
        match &self.0 {
            Some(l) if l.check_key(&player_id.to_string()).is_err() => Err(Error::RateLimited),
            _ => Ok(()),
        }
    }

    /// Forgets idle players so the limiter's memory stays bounded.
    pub fn prune(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// One async lock per (player, idempotency key) while a request with it is in flight on this node:
/// a retry that arrives before the first answer waits for it instead of racing it (two racing bets
/// with one key could exhaust the per-player bet limit and get `bet_limit` instead of the first
/// bet). Entries live only while some request holds or waits for them, so the map is bounded by
/// the requests in flight.
#[derive(Default)]
pub struct KeyLocks {
    held: Mutex<HashMap<PlayerKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// (player id, idempotency key).
type PlayerKey = (String, String);

/// Holds a [`KeyLocks`] entry; the entry is removed when its last holder or waiter is done.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    id: PlayerKey,
    entry: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl KeyLocks {
    pub async fn lock(&self, player_id: &str, key: &str) -> KeyGuard<'_> {
        let id = (player_id.to_string(), key.to_string());
        let entry = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.entry(id.clone()).or_default().clone()
        };
        let guard = entry.clone().lock_owned().await;
        KeyGuard {
            locks: self,
            id,
            entry,
            _held: guard,
        }
    }

    /// Entries in the map (for tests: it must drain to 0).
    pub fn len(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else holds or waits for this key.
        if Arc::strong_count(&self.entry) == 2 {
            held.remove(&self.id);
        }
    }
}

/// Checks an idempotency key: 1–64 printable ASCII characters.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::InvalidIdempotencyKey);
    }
    Ok(())
}

pub async fn place_bet(
    state: &Arc<AppState>,
    session: &Session,
    key: &str,
    stake: i64,
    auto: Option<u64>,
) -> Result<(BetRecord, i64)> {
    check_key(key)?;
    validate_bet(&state.table.rules, stake, auto)?;
    state.player_limiter.check(&session.player_id)?;
    let _one_at_a_time = state.key_locks.lock(&session.player_id, key).await;
    if let Some(first) = state.ledger.bet_by_key(&session.player_id, key).await? {
        return first_bet(state, first, stake, auto).await;
    }
    let round = state
        .arbiter
        .betting_round()
        .await?
        .ok_or(Error::BettingClosed)?;
    // Version 7: time-ordered, so a fleet's bets sorted by id come in arrival order (snapshots
    // keep the latest ones), and still unguessable (74 random bits).
    let bet_id = uuid::Uuid::now_v7().to_string();
    let placed_at_ms = state
        .arbiter
        .place_bet(
            round,
            BetRequest {
                bet_id: bet_id.clone(),
                player_id: session.player_id.clone(),
                username: session.username.clone(),
                stake,
                auto_cashout_x100: auto,
            },
        )
        .await?;
    let record = BetRecord {
        bet_id: bet_id.clone(),
        table: state.table.id.clone(),
        round,
        player_id: session.player_id.clone(),
        username: session.username.clone(),
        stake,
        auto_cashout_x100: auto,
        status: "open".into(),
        cashout_x100: None,
        payout: None,
        placed_at_ms,
        idempotency_key: key.to_string(),
        cashout_key: None,
    };
    let (stored, balance) = match state.ledger.place_bet(&record).await {
        Ok(r) => r,
        Err(e) => match state.ledger.bet_by_key(&session.player_id, key).await {
            // The write committed although its answer was lost (the bet stands), or a concurrent
            // retry on another node stored the key's bet first (ours never moved money).
            Ok(Some(first)) => {
                if first.bet_id != bet_id {
                    state.arbiter.cancel_bet(round, &bet_id).await;
                }
                let balance = state
                    .ledger
                    .player(&session.player_id)
                    .await?
                    .map_or(0, |p| p.balance);
                (first, balance)
            }
            // Nothing was written: the refusal is the answer and nothing moved.
            Ok(None) => {
                state.arbiter.cancel_bet(round, &bet_id).await;
                return Err(e);
            }
            // The ledger cannot say whether the stake was taken. The arbiter keeps the bet so a
            // stored bet still plays (a bet the ledger never stored moves no money at
            // settlement); a retry with this key finds the real outcome.
            Err(_) => {
                tracing::warn!(error = %e, bet = %bet_id, "bet outcome unknown: the ledger did not answer");
                return Err(Error::OutcomeUnknown);
            }
        },
    };
    if stored.bet_id != bet_id {
        // A concurrent retry with the same key won the race: ours never moved money.
        state.arbiter.cancel_bet(round, &bet_id).await;
        return Ok((stored, balance));
    }
    metrics::counter!("crashfleet_bets_total").increment(1);
    metrics::counter!("crashfleet_wagered_total").increment(stake as u64);
    state.bet_feed.announce(stored.view());
    let _ = state
        .bus
        .publish_private(&session.player_id, &ServerMessage::Balance { balance })
        .await;
    Ok((stored, balance))
}

/// The answer to a bet whose key was already used: the first bet when this is a retry of the same
/// request for a round still in play, `idempotency_key_used` when that bet's round is over (every
/// bet needs its own key), `idempotency_conflict` when the request differs.
async fn first_bet(
    state: &AppState,
    first: BetRecord,
    stake: i64,
    auto: Option<u64>,
) -> Result<(BetRecord, i64)> {
    if first.stake != stake || first.auto_cashout_x100 != auto {
        return Err(Error::IdempotencyConflict);
    }
    let round_open = state
        .ledger
        .round(&first.table, first.round)
        .await?
        .is_some_and(|r| r.status == "open");
    if !round_open {
        return Err(Error::KeyUsed {
            bet_id: first.bet_id,
            round: first.round,
        });
    }
    let balance = state
        .ledger
        .player(&first.player_id)
        .await?
        .map_or(0, |p| p.balance);
    Ok((first, balance))
}

pub async fn cash_out(
    state: &Arc<AppState>,
    session: &Session,
    key: &str,
    bet_id: &str,
) -> Result<CashOut> {
    check_key(key)?;
    if bet_id.is_empty() || bet_id.len() > 64 {
        return Err(Error::UnknownBet(bet_id.chars().take(64).collect()));
    }
    state.player_limiter.check(&session.player_id)?;
    let _one_at_a_time = state.key_locks.lock(&session.player_id, key).await;
    let bet = state
        .ledger
        .bet(bet_id)
        .await?
        .ok_or_else(|| Error::UnknownBet(bet_id.to_string()))?;
    if bet.player_id != session.player_id {
        return Err(Error::Forbidden("this is not your bet".into()));
    }
    if bet.status == "won" && bet.cashout_key.as_deref() == Some(key) {
        // A retry of the cash-out that won: the first outcome again, no money moves.
        return Ok(CashOut {
            round: bet.round,
            bet_id: bet.bet_id,
            player_id: bet.player_id,
            username: bet.username,
            stake: bet.stake,
            multiplier_x100: bet.cashout_x100.unwrap_or(100),
            payout: bet.payout.unwrap_or(0),
            at_ms: bet.placed_at_ms,
            auto: false,
            key: bet.cashout_key,
        });
    }
    match bet.status.as_str() {
        "open" => {}
        // The round crashed (and was settled) before this cash-out arrived.
        "lost" => return Err(Error::TooLate),
        _ => return Err(Error::AlreadySettled),
    }
    let decision = match state
        .arbiter
        .cash_out(bet_id, &session.player_id, key)
        .await
    {
        Ok(d) => d,
        // The arbiter may have decided before its answer was lost (a Redis reply that never came
        // back): the outcome is unknown, not "nothing happened". A retry with this key gets the
        // recorded decision (or, if it never arrived, a decision now).
        Err(Error::Unavailable(detail)) => {
            tracing::warn!(%detail, bet = bet_id, "cash-out outcome unknown: the arbiter did not answer");
            return Err(Error::OutcomeUnknown);
        }
        Err(e) => return Err(e),
    };
    match state
        .ledger
        .settle_cash_out(&decision, Some(key), decision.at_ms)
        .await
    {
        Ok(Some(balance)) => {
            let _ = state
                .bus
                .publish_private(&session.player_id, &ServerMessage::Balance { balance })
                .await;
        }
        Ok(None) => {}
        Err(e) => {
            // The decision stands; the crash settlement pays it.
            tracing::warn!(error = %e, bet = bet_id, "cash-out decided but not yet paid; the settlement will pay it");
        }
    }
    crate::runner::announce_cash_out(state.bus.as_ref(), &decision).await;
    Ok(decision)
}
