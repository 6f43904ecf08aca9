//! The game service: what a bet and a cash-out do, in which order the arbiter and the ledger are
//! asked, and what is announced. It knows no HTTP and no WebSocket: both edges call [`Game`] with
//! an authenticated [`Player`] and turn its answers into their own frames.
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

use crate::engine::{BetRequest, CashOut, validate_bet};
use crate::error::{Error, Result};
use crate::feed::BetFeed;
use crate::ports::{Arbiter, BetRecord, Bus, Clock, Ledger};
use crate::protocol::{BetStatus, RoundStatus, ServerMessage, SignedReceipt};
use crate::runner::TableSpec;

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

/// An accepted bet: as stored, the player's balance after it, and its signed receipt.
#[derive(Debug)]
pub struct Placed {
    pub bet: BetRecord,
    pub balance: i64,
    pub receipt: SignedReceipt,
}

/// An accepted cash-out and its signed receipt.
#[derive(Debug)]
pub struct Cashed {
    pub cash_out: CashOut,
    pub receipt: SignedReceipt,
}

/// Who asks: a player the edge has authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Player<'a> {
    pub id: &'a str,
    pub username: &'a str,
}

/// One table's game as players act on it: the ports it decides with, and the per-player limits
/// and per-key locks that keep one node's requests in order.
pub struct Game {
    pub table: TableSpec,
    pub ledger: Arc<dyn Ledger>,
    pub arbiter: Arc<dyn Arbiter>,
    pub bus: Arc<dyn Bus>,
    pub clock: Arc<dyn Clock>,
    /// Money requests per player and second (`--rate-limit-player`).
    pub limiter: PlayerLimiter,
    /// Serialises requests that share a (player, idempotency key) on this node.
    pub key_locks: KeyLocks,
    /// Announces accepted bets to every player, batched.
    pub feed: BetFeed,
}

/// Records how long a bet or cash-out took to decide, over REST or WebSocket alike, by outcome:
/// `accepted`, `refused` (the player's request was wrong or too late: a 4xx) or `failed` (the
/// node could not decide: a 5xx, e.g. its ledger unreachable). The p99 of `accepted` is what
/// players feel; a rising `failed` rate is an outage.
fn observe<T>(name: &'static str, started: std::time::Instant, outcome: &Result<T>) {
    use crate::error::HttpStatus;
    let outcome = match outcome {
        Ok(_) => "accepted",
        Err(e) if e.status().is_server_error() => "failed",
        Err(_) => "refused",
    };
    metrics::histogram!(name, "outcome" => outcome).record(started.elapsed().as_secs_f64());
}

impl Game {
    pub async fn place_bet(
        &self,
        player: Player<'_>,
        key: &str,
        stake: i64,
        auto: Option<u64>,
    ) -> Result<Placed> {
        let started = std::time::Instant::now();
        let placed = self.accept_bet(player, key, stake, auto).await;
        observe("crashfleet_bet_duration_seconds", started, &placed);
        let (bet, balance) = placed?;
        let receipt = self.table.notary.bet(&bet);
        Ok(Placed {
            bet,
            balance,
            receipt,
        })
    }

    async fn accept_bet(
        &self,
        player: Player<'_>,
        key: &str,
        stake: i64,
        auto: Option<u64>,
    ) -> Result<(BetRecord, i64)> {
        check_key(key)?;
        validate_bet(&self.table.rules, stake, auto)?;
        self.limiter.check(player.id)?;
        let _one_at_a_time = self.key_locks.lock(player.id, key).await;
        if let Some(first) = self.ledger.bet_by_key(player.id, key).await? {
            return self.first_bet(first, stake, auto).await;
        }
        let round = self
            .arbiter
            .betting_round()
            .await?
            .ok_or(Error::BettingClosed)?;
        // Version 7: time-ordered, so a fleet's bets sorted by id come in arrival order (snapshots
        // keep the latest ones), and still unguessable (74 random bits).
        let bet_id = uuid::Uuid::now_v7().to_string();
        let placed_at_ms = self
            .arbiter
            .place_bet(
                round,
                BetRequest {
                    bet_id: bet_id.clone(),
                    player_id: player.id.to_string(),
                    username: player.username.to_string(),
                    stake,
                    auto_cashout_x100: auto,
                },
            )
            .await?;
        let record = BetRecord {
            bet_id: bet_id.clone(),
            table: self.table.id.clone(),
            round,
            player_id: player.id.to_string(),
            username: player.username.to_string(),
            stake,
            auto_cashout_x100: auto,
            status: BetStatus::Open,
            cashout_x100: None,
            payout: None,
            placed_at_ms,
            idempotency_key: key.to_string(),
            cashout_key: None,
            settled_at_ms: None,
        };
        let (stored, balance) = match self.ledger.place_bet(&record).await {
            Ok(r) => r,
            Err(e) => match self.ledger.bet_by_key(player.id, key).await {
                // The write committed although its answer was lost (the bet stands), or a concurrent
                // retry on another node stored the key's bet first (ours never moved money).
                Ok(Some(first)) => {
                    if first.bet_id != bet_id {
                        self.arbiter.cancel_bet(round, &bet_id).await;
                    }
                    let balance = self
                        .ledger
                        .player(player.id)
                        .await?
                        .map_or(0, |p| p.balance);
                    (first, balance)
                }
                // Nothing was written: the refusal is the answer and nothing moved.
                Ok(None) => {
                    self.arbiter.cancel_bet(round, &bet_id).await;
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
            self.arbiter.cancel_bet(round, &bet_id).await;
            return Ok((stored, balance));
        }
        metrics::counter!("crashfleet_bets_total").increment(1);
        metrics::counter!("crashfleet_wagered_total").increment(stake as u64);
        self.feed.announce(stored.view());
        let _ = self
            .bus
            .publish_private(player.id, &ServerMessage::Balance { balance })
            .await;
        Ok((stored, balance))
    }

    /// The answer to a bet whose key was already used: the first bet when this is a retry of the same
    /// request for a round still in play, `idempotency_key_used` when that bet's round is over (every
    /// bet needs its own key), `idempotency_conflict` when the request differs.
    async fn first_bet(
        &self,
        first: BetRecord,
        stake: i64,
        auto: Option<u64>,
    ) -> Result<(BetRecord, i64)> {
        if first.stake != stake || first.auto_cashout_x100 != auto {
            return Err(Error::IdempotencyConflict);
        }
        let round_open = self
            .ledger
            .round(&first.table, first.round)
            .await?
            .is_some_and(|r| r.status == RoundStatus::Open);
        if !round_open {
            return Err(Error::KeyUsed {
                bet_id: first.bet_id,
                round: first.round,
            });
        }
        let balance = self
            .ledger
            .player(&first.player_id)
            .await?
            .map_or(0, |p| p.balance);
        Ok((first, balance))
    }

    pub async fn cash_out(&self, player: Player<'_>, key: &str, bet_id: &str) -> Result<Cashed> {
        let started = std::time::Instant::now();
        let decided = self.accept_cash_out(player, key, bet_id).await;
        observe("crashfleet_cashout_duration_seconds", started, &decided);
        let (cash_out, auto_target) = decided?;
        let receipt = self.table.notary.cash_out(&cash_out, auto_target);
        Ok(Cashed { cash_out, receipt })
    }

    /// The cash-out and the bet's auto-cash-out target (which its receipt states).
    async fn accept_cash_out(
        &self,
        player: Player<'_>,
        key: &str,
        bet_id: &str,
    ) -> Result<(CashOut, Option<u64>)> {
        check_key(key)?;
        if bet_id.is_empty() || bet_id.len() > 64 {
            return Err(Error::UnknownBet(bet_id.chars().take(64).collect()));
        }
        self.limiter.check(player.id)?;
        let _one_at_a_time = self.key_locks.lock(player.id, key).await;
        let bet = self
            .ledger
            .bet(bet_id)
            .await?
            .ok_or_else(|| Error::UnknownBet(bet_id.to_string()))?;
        if bet.player_id != player.id {
            return Err(Error::Forbidden("this is not your bet".into()));
        }
        if bet.status == BetStatus::Won && bet.cashout_key.as_deref() == Some(key) {
            // A retry of the cash-out that won: the first outcome again, no money moves.
            let auto_target = bet.auto_cashout_x100;
            return Ok((
                CashOut {
                    round: bet.round,
                    bet_id: bet.bet_id,
                    player_id: bet.player_id,
                    username: bet.username,
                    stake: bet.stake,
                    multiplier_x100: bet.cashout_x100.unwrap_or(100),
                    payout: bet.payout.unwrap_or(0),
                    // The instant the cash-out was decided (stored as the bet's settlement time),
                    // so the retry's receipt is the first one's.
                    at_ms: bet.settled_at_ms.unwrap_or(bet.placed_at_ms),
                    auto: false,
                    key: bet.cashout_key,
                },
                auto_target,
            ));
        }
        match bet.status {
            BetStatus::Open => {}
            // The round crashed (and was settled) before this cash-out arrived.
            BetStatus::Lost => return Err(Error::TooLate),
            BetStatus::Won | BetStatus::Refunded => return Err(Error::AlreadySettled),
        }
        let decision = match self.arbiter.cash_out(bet_id, player.id, key).await {
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
        match self
            .ledger
            .settle_cash_out(&decision, Some(key), decision.at_ms)
            .await
        {
            Ok(Some(balance)) => {
                let _ = self
                    .bus
                    .publish_private(player.id, &ServerMessage::Balance { balance })
                    .await;
            }
            Ok(None) => {}
            Err(e) => {
                // The decision stands; the crash settlement pays it.
                tracing::warn!(error = %e, bet = bet_id, "cash-out decided but not yet paid; the settlement will pay it");
            }
        }
        crate::runner::announce_cash_out(self.bus.as_ref(), &decision).await;
        Ok((decision, bet.auto_cashout_x100))
    }
}

#[cfg(test)]
mod tests {
    //! The order of the game's rules, on the real SQLite ledger and the in-process arbiter with
    //! a clock the test moves (tokio's paused clock would also move the ledger's pool timeouts):
    //! which refusal wins when several apply, and what each one leaves unmoved.

    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::engine::{Curve, RoundPlan, Rules};
    use crate::fairness::{Chain, CrashCalculator};
    use crate::ledger::SqlLedger;
    use crate::ports::{Commitment, PlayerRecord};
    use crate::standalone::{LocalArbiter, LocalBus};

    const TABLE: &str = "main";
    const CREDIT: i64 = 10_000;

    fn rules() -> Rules {
        Rules {
            min_stake: 10,
            max_stake: 1_000,
            max_payout: 100_000,
            bets_per_player: 2,
            max_x100: 10_000,
            betting_ms: 5_000,
            pause_ms: 1_000,
        }
    }

    /// Time stands still until the test moves it.
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    struct Rig {
        game: Game,
        curve: Curve,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    /// A game on a fresh ledger, `per_second` money requests allowed per player.
    async fn rig(per_second: u32) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger: Arc<dyn Ledger> = Arc::new(SqlLedger::connect(&url, 2).await.expect("ledger"));
        let manual = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
        let clock: Arc<dyn Clock> = manual.clone();
        let curve = Curve::from_doubling_ms(4_000);
        let chain = Chain::new([7; 32], 10).expect("chain");
        ledger
            .commit_fairness(&Commitment {
                table: TABLE.into(),
                terminating_hash: crate::fairness::to_hex(&chain.terminating_hash()),
                salt: "salt".into(),
                chain_length: 10,
                house_edge_bp: 100,
                max_x100: 10_000,
                created_at_ms: clock.now_ms(),
                signing_key: None,
            })
            .await
            .expect("commitment");
        ledger.claim_term(TABLE, 1).await.expect("term");
        let arbiter: Arc<dyn Arbiter> = Arc::new(LocalArbiter::new(clock.clone(), curve, rules()));
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let (feed, _task) = BetFeed::start(
            bus.clone(),
            tokio_util::sync::CancellationToken::new(),
            &tokio_util::task::TaskTracker::new(),
        );
        let game = Game {
            table: TableSpec {
                id: TABLE.into(),
                node_id: "n1".into(),
                chain: Arc::new(chain),
                calculator: CrashCalculator::new("salt", 100, 10_000).expect("calculator"),
                curve,
                rules: rules(),
                tick_ms: 100,
                paused: false,
                notary: Arc::new(crate::receipts::Notary::new(
                    crashfleet_core::settlement::signing::SigningKey::from_seed(&[3; 32]),
                    TABLE,
                )),
            },
            ledger,
            arbiter,
            bus,
            clock,
            limiter: PlayerLimiter::new(per_second),
            key_locks: KeyLocks::default(),
            feed,
        };
        Rig {
            game,
            curve,
            clock: manual,
            _dir: dir,
        }
    }

    impl Rig {
        fn advance(&self, ms: u64) {
            self.clock.0.fetch_add(ms as i64, Ordering::SeqCst);
        }

        async fn player(&self, name: &str) -> PlayerRecord {
            let now = self.game.clock.now_ms();
            self.game
                .ledger
                .register(name, "x", CREDIT, now)
                .await
                .expect("register")
        }

        /// Opens round `number` now, crashing at `crash_x100`, in the arbiter and the ledger.
        async fn open(&self, number: u64, crash_x100: u64) -> RoundPlan {
            let plan = RoundPlan::new(
                number,
                [number as u8; 32],
                crash_x100,
                self.game.clock.now_ms(),
                &rules(),
                &self.curve,
            );
            self.game
                .ledger
                .open_round(TABLE, 1, &plan)
                .await
                .expect("ledger round");
            self.game
                .arbiter
                .open_round(1, plan.clone())
                .await
                .expect("arbiter round");
            plan
        }

        async fn balance(&self, p: &PlayerRecord) -> i64 {
            self.game
                .ledger
                .player(&p.id)
                .await
                .expect("player")
                .expect("exists")
                .balance
        }
    }

    fn who(p: &PlayerRecord) -> Player<'_> {
        Player {
            id: &p.id,
            username: &p.username,
        }
    }

    #[tokio::test]
    async fn a_malformed_key_is_refused_before_the_stake_the_limit_or_the_window() {
        let r = rig(1).await;
        let p = r.player("alice").await;
        // No round is open and the stake is out of range: the key is still what is reported.
        for _ in 0..5 {
            let e = r.game.place_bet(who(&p), "bad key", 1, None).await;
            assert_eq!(e.map(|_| ()), Err(Error::InvalidIdempotencyKey));
        }
        // A bad stake with a good key is the stake's fault, and neither was charged to the limit.
        for _ in 0..5 {
            let e = r.game.place_bet(who(&p), "k", 1, None).await;
            assert!(matches!(e, Err(Error::InvalidAmount(_))), "{e:?}");
        }
        r.open(1, 500).await;
        let placed = r
            .game
            .place_bet(who(&p), "k1", 100, None)
            .await
            .expect("bet");
        assert_eq!((placed.bet.stake, placed.balance), (100, CREDIT - 100));
    }

    #[tokio::test]
    async fn the_rate_limit_comes_before_the_ledger_and_moves_nothing() {
        let r = rig(1).await;
        let p = r.player("bob").await;
        r.open(1, 500).await;
        // The burst is twice the rate: two requests pass, the third is refused.
        r.game
            .place_bet(who(&p), "a", 100, None)
            .await
            .expect("first");
        r.game
            .place_bet(who(&p), "b", 100, None)
            .await
            .expect("second");
        let third = r.game.place_bet(who(&p), "c", 100, None).await;
        assert_eq!(third.map(|_| ()), Err(Error::RateLimited));
        assert_eq!(r.balance(&p).await, CREDIT - 200);
        // Another player has a budget of their own.
        let q = r.player("carol").await;
        r.game
            .place_bet(who(&q), "a", 100, None)
            .await
            .expect("carol");
    }

    #[tokio::test]
    async fn a_retry_finds_its_bet_even_after_betting_closed_and_a_changed_request_conflicts() {
        let r = rig(100).await;
        let p = r.player("dave").await;
        r.open(1, 5_000).await;
        let first = r
            .game
            .place_bet(who(&p), "k", 100, Some(200))
            .await
            .expect("bet");
        // Into the flight: betting is closed, but the key's bet is the answer, not a refusal.
        r.advance(rules().betting_ms + 100);
        let again = r
            .game
            .place_bet(who(&p), "k", 100, Some(200))
            .await
            .expect("retry");
        assert_eq!(again.bet.bet_id, first.bet.bet_id);
        assert_eq!(again.balance, CREDIT - 100, "charged once");
        // The retry's receipt is the first one, byte for byte.
        assert_eq!(again.receipt, first.receipt);
        let changed = r.game.place_bet(who(&p), "k", 150, Some(200)).await;
        assert_eq!(changed.map(|_| ()), Err(Error::IdempotencyConflict));
        // A new key in the flight meets the closed window, and moves nothing.
        let late = r.game.place_bet(who(&p), "k2", 100, None).await;
        assert_eq!(late.map(|_| ()), Err(Error::BettingClosed));
        assert_eq!(r.balance(&p).await, CREDIT - 100);
    }

    #[tokio::test]
    async fn the_per_player_bet_limit_refuses_before_the_ledger_debits() {
        let r = rig(100).await;
        let p = r.player("erin").await;
        r.open(1, 500).await;
        r.game.place_bet(who(&p), "1", 100, None).await.expect("1");
        r.game.place_bet(who(&p), "2", 100, None).await.expect("2");
        let third = r.game.place_bet(who(&p), "3", 100, None).await;
        assert_eq!(third.map(|_| ()), Err(Error::BetLimit(2)));
        assert_eq!(r.balance(&p).await, CREDIT - 200);
    }

    #[tokio::test]
    async fn a_cash_out_checks_the_owner_before_the_round_and_a_retry_is_paid_once() {
        let r = rig(100).await;
        let p = r.player("frank").await;
        let thief = r.player("grace").await;
        r.open(1, 5_000).await;
        let bet = r
            .game
            .place_bet(who(&p), "b", 100, None)
            .await
            .expect("bet")
            .bet;
        // Still betting (not flying): the owner check comes first for someone else's bet.
        let stolen = r.game.cash_out(who(&thief), "c", &bet.bet_id).await;
        assert!(matches!(stolen, Err(Error::Forbidden(_))), "{stolen:?}");
        let early = r.game.cash_out(who(&p), "c", &bet.bet_id).await;
        assert_eq!(early.map(|_| ()), Err(Error::NotFlying));
        let unknown = r.game.cash_out(who(&p), "c", "no-such-bet").await;
        assert!(matches!(unknown, Err(Error::UnknownBet(_))), "{unknown:?}");
        // One second into the flight (2x doubles every 4 s: 1.18x), then the same key again.
        r.advance(rules().betting_ms + 1_000);
        let cashed = r
            .game
            .cash_out(who(&p), "c", &bet.bet_id)
            .await
            .expect("cash-out");
        let won = &cashed.cash_out;
        assert!(won.multiplier_x100 > 100 && won.payout == 100 * won.multiplier_x100 as i64 / 100);
        assert_eq!(
            (cashed.receipt.multiplier_x100, cashed.receipt.payout),
            (Some(won.multiplier_x100), Some(won.payout as u64))
        );
        r.advance(500);
        let again = r
            .game
            .cash_out(who(&p), "c", &bet.bet_id)
            .await
            .expect("retry");
        assert_eq!(
            (again.cash_out.multiplier_x100, again.cash_out.payout),
            (won.multiplier_x100, won.payout)
        );
        // Half a second later, the retry's receipt still states the first cash-out's instant.
        assert_eq!(again.receipt, cashed.receipt);
        assert_eq!(r.balance(&p).await, CREDIT - 100 + won.payout, "paid once");
        let other_key = r.game.cash_out(who(&p), "d", &bet.bet_id).await;
        assert_eq!(other_key.map(|_| ()), Err(Error::AlreadySettled));
    }
}
