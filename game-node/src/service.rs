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

use std::num::NonZeroU32;
use std::sync::Arc;

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
    if let Some(first) = state.ledger.bet_by_key(&session.player_id, key).await? {
        if first.stake != stake || first.auto_cashout_x100 != auto {
            return Err(Error::IdempotencyConflict);
        }
        let balance = state
            .ledger
            .player(&session.player_id)
            .await?
            .map_or(0, |p| p.balance);
        return Ok((first, balance));
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
        Err(e) => {
            state.arbiter.cancel_bet(round, &bet_id).await;
            return Err(e);
        }
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
        });
    }
    match bet.status.as_str() {
        "open" => {}
        // The round crashed (and was settled) before this cash-out arrived.
        "lost" => return Err(Error::TooLate),
        _ => return Err(Error::AlreadySettled),
    }
    let decision = state.arbiter.cash_out(bet_id, &session.player_id).await?;
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
