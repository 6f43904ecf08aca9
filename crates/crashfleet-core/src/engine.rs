//! The round engine: pure decisions about one round, with no I/O and no clock of its own.
//!
//! Every function takes the authoritative time (`now_ms`, Unix milliseconds) as an argument, so the
//! same code decides in the standalone arbiter (a mutex around [`ActiveRound`]), is mirrored by the
//! fleet's Redis script, and is tested over whole timelines without sleeping.
//!
//! A round's timeline, fixed when it opens:
//! ```text
//! opened_at ──betting──▶ started_at (= betting_closes_at) ──flying──▶ crash_at ──pause──▶ next round
//! ```
//! `crash_at = started_at + curve.elapsed_for(crash_x100)`: the first millisecond at which the
//! integer multiplier reaches the crash point. A cash-out at `now` is accepted iff
//! `started_at <= now < crash_at`, and pays `curve.multiplier_x100(now - started_at)`, which is
//! then strictly below the crash point because the curve is monotone.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::fairness::Hash32;
use crate::protocol::Phase;

/// The multiplier curve `m(t) = e^(g·t)`, evaluated to integer hundredths.
///
/// `f64` is used only to map a time to hundredths; the result is an integer and is made monotone
/// (non-decreasing in t) by construction: [`Curve::multiplier_x100`] is floor(100·e^(g·t)) and
/// [`Curve::elapsed_for`] searches the *same* function, so "before the crash instant" and "below
/// the crash point" can never disagree. A test checks monotonicity over every millisecond up to
/// the cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    growth_per_ms: f64,
}

/// The largest multiplier the curve is evaluated to (1,000,000.00×); tables cap far below it.
const CURVE_MAX_X100: u64 = 100_000_000;

impl Curve {
    /// A curve that reaches 2.00× after `doubling_ms`.
    pub fn from_doubling_ms(doubling_ms: u64) -> Curve {
        let doubling = doubling_ms.max(1) as f64;
        Curve {
            growth_per_ms: std::f64::consts::LN_2 / doubling,
        }
    }

    pub fn growth_per_ms(&self) -> f64 {
        self.growth_per_ms
    }

    /// The multiplier after `elapsed_ms` of flight, floored to hundredths, at least 1.00×.
    pub fn multiplier_x100(&self, elapsed_ms: u64) -> u64 {
        let m = 100.0 * (self.growth_per_ms * elapsed_ms as f64).exp();
        if !m.is_finite() || m >= CURVE_MAX_X100 as f64 {
            return CURVE_MAX_X100;
        }
        (m.floor() as u64).max(100)
    }

    /// The first millisecond of flight at which the multiplier reaches `x100`.
    pub fn elapsed_for(&self, x100: u64) -> u64 {
        let x100 = x100.clamp(100, CURVE_MAX_X100);
        if x100 <= 100 {
            return 0;
        }
        // Start from the analytic inverse, then correct by stepping: float rounding may put the
        // estimate a millisecond or two off either way.
        let estimate = ((x100 as f64 / 100.0).ln() / self.growth_per_ms).floor();
        let mut t = if estimate.is_finite() && estimate > 0.0 {
            estimate as u64
        } else {
            0
        };
        while t > 0 && self.multiplier_x100(t - 1) >= x100 {
            t -= 1;
        }
        while self.multiplier_x100(t) < x100 {
            t += 1;
        }
        t
    }
}

/// Table rules that decide whether a bet is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub min_stake: i64,
    pub max_stake: i64,
    /// Largest payout of one bet; manual cash-outs above it are paid this amount.
    pub max_payout: i64,
    pub bets_per_player: u32,
    /// The table's crash-point cap; auto-cash-out targets above it are refused.
    pub max_x100: u64,
    pub betting_ms: u64,
    pub pause_ms: u64,
}

/// `floor(stake × multiplier_x100 / 100)`, exact, capped at `max_payout`: a
/// payout never rounds up and never exceeds the table's maximum.
pub fn payout(stake: i64, multiplier_x100: u64, max_payout: i64) -> i64 {
    let p = (stake.max(0) as u128 * multiplier_x100 as u128) / 100;
    i64::try_from(p).unwrap_or(i64::MAX).min(max_payout)
}

/// Everything fixed about a round when it opens. `hash` and `crash_x100` are secret until it crashes.
#[derive(Clone, PartialEq, Eq)]
pub struct RoundPlan {
    pub number: u64,
    pub hash: Hash32,
    pub crash_x100: u64,
    pub opened_at_ms: i64,
    pub started_at_ms: i64,
    pub crash_at_ms: i64,
    pub next_round_at_ms: i64,
}

impl RoundPlan {
    /// The public view of the round at `now_ms`: the hash and the crash point appear only once
    /// it has crashed.
    pub fn public_view(&self, now_ms: i64) -> crate::protocol::RoundView {
        let phase = self.phase(now_ms);
        let crashed = phase == Phase::Crashed;
        crate::protocol::RoundView {
            number: self.number,
            phase,
            opened_at_ms: self.opened_at_ms,
            betting_closes_at_ms: self.started_at_ms,
            started_at_ms: self.started_at_ms,
            crashed_at_ms: crashed.then_some(self.crash_at_ms),
            crash_x100: crashed.then_some(self.crash_x100),
            hash: crashed.then(|| crate::fairness::to_hex(&self.hash)),
        }
    }

    /// The instant an auto-cash-out target is reached, if the round gets there (a target equal to
    /// the crash point pays: the multiplier reaches it at the crash instant itself). Both arbiters
    /// decide auto-cash-outs with this one rule.
    pub fn auto_instant(&self, curve: &Curve, target: u64) -> Option<i64> {
        (target <= self.crash_x100).then(|| self.started_at_ms + curve.elapsed_for(target) as i64)
    }

    /// The multiplier a manual cash-out accepted at `now_ms` pays: the curve at that instant, and
    /// never the crash point itself (a cash-out at the crash instant is refused before this).
    pub fn manual_multiplier(&self, curve: &Curve, now_ms: i64) -> u64 {
        curve
            .multiplier_x100((now_ms - self.started_at_ms).max(0) as u64)
            .min(self.crash_x100.saturating_sub(1).max(100))
    }
}

impl std::fmt::Debug for RoundPlan {
    // The hash and crash point must never reach a log before the round ends: anyone who
    // read it could cash out knowing the crash point.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundPlan")
            .field("number", &self.number)
            .field("opened_at_ms", &self.opened_at_ms)
            .field("started_at_ms", &self.started_at_ms)
            .finish_non_exhaustive()
    }
}

impl RoundPlan {
    /// Lays out a round opening at `opened_at_ms`.
    pub fn new(
        number: u64,
        hash: Hash32,
        crash_x100: u64,
        opened_at_ms: i64,
        rules: &Rules,
        curve: &Curve,
    ) -> RoundPlan {
        let started_at_ms = opened_at_ms + rules.betting_ms as i64;
        RoundPlan::resumed(
            number,
            hash,
            crash_x100,
            opened_at_ms,
            started_at_ms,
            rules,
            curve,
        )
    }

    /// The plan of a round whose start is already recorded (a new leader finishing it).
    pub fn resumed(
        number: u64,
        hash: Hash32,
        crash_x100: u64,
        opened_at_ms: i64,
        started_at_ms: i64,
        rules: &Rules,
        curve: &Curve,
    ) -> RoundPlan {
        let crash_at_ms = started_at_ms + curve.elapsed_for(crash_x100) as i64;
        RoundPlan {
            number,
            hash,
            crash_x100,
            opened_at_ms,
            started_at_ms,
            crash_at_ms,
            next_round_at_ms: crash_at_ms + rules.pause_ms as i64,
        }
    }

    pub fn phase(&self, now_ms: i64) -> Phase {
        if now_ms < self.started_at_ms {
            Phase::Betting
        } else if now_ms < self.crash_at_ms {
            Phase::Flying
        } else {
            Phase::Crashed
        }
    }
}

/// A bet as the arbiter tracks it during its round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetState {
    pub bet_id: String,
    pub player_id: String,
    pub username: String,
    pub stake: i64,
    pub auto_cashout_x100: Option<u64>,
    /// Set once cashed out: (multiplier, instant).
    pub cashed_out: Option<(u64, i64)>,
    /// The idempotency key of the manual cash-out that won it, so a retry with that key gets the
    /// same decision back (its first answer may have been lost).
    pub cashout_key: Option<String>,
    /// True once the cash-out was announced/paid (auto-cash-outs are discovered by the leader).
    pub announced: bool,
}

/// A bet as a player asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetRequest {
    pub bet_id: String,
    pub player_id: String,
    pub username: String,
    pub stake: i64,
    pub auto_cashout_x100: Option<u64>,
}

/// A decided cash-out: final, whatever happens to the ledger write that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashOut {
    pub round: u64,
    pub bet_id: String,
    pub player_id: String,
    pub username: String,
    pub stake: i64,
    pub multiplier_x100: u64,
    pub payout: i64,
    pub at_ms: i64,
    pub auto: bool,
    /// The idempotency key of the manual request that decided it (`None` for an auto-cash-out).
    /// Stored with the payout, so a retry with the same key finds its first outcome.
    pub key: Option<String>,
}

/// How a bet ends when its round crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Won { multiplier_x100: u64, payout: i64 },
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub bet_id: String,
    pub player_id: String,
    pub outcome: Outcome,
    /// For a manual cash-out not paid before the crash: its request's idempotency key.
    pub cashout_key: Option<String>,
}

/// Checks a bet's own numbers against the rules (phase-independent, so handlers can refuse early).
pub fn validate_bet(rules: &Rules, stake: i64, auto: Option<u64>) -> Result<()> {
    if stake <= 0 {
        return Err(Error::InvalidAmount("the stake must be positive".into()));
    }
    if stake < rules.min_stake || stake > rules.max_stake {
        return Err(Error::InvalidAmount(format!(
            "the stake must be between {} and {}",
            rules.min_stake, rules.max_stake
        )));
    }
    if let Some(a) = auto {
        if a < 101 || a > rules.max_x100 {
            return Err(Error::InvalidMultiplier(format!(
                "auto-cash-out must be between 101 and {} (hundredths)",
                rules.max_x100
            )));
        }
        if (stake as u128 * a as u128) / 100 > rules.max_payout as u128 {
            return Err(Error::MaxPayout(rules.max_payout));
        }
    }
    Ok(())
}

/// The state of the round in progress, as the arbiter holds it.
#[derive(Debug, Clone)]
pub struct ActiveRound {
    pub plan: RoundPlan,
    pub curve: Curve,
    pub rules: Rules,
    bets: Vec<BetState>,
    index: HashMap<String, usize>,
    per_player: HashMap<String, u32>,
}

impl ActiveRound {
    pub fn new(plan: RoundPlan, curve: Curve, rules: Rules) -> ActiveRound {
        ActiveRound {
            plan,
            curve,
            rules,
            bets: Vec::new(),
            index: HashMap::new(),
            per_player: HashMap::new(),
        }
    }

    pub fn bets(&self) -> &[BetState] {
        &self.bets
    }

    pub fn bet(&self, bet_id: &str) -> Option<&BetState> {
        self.index.get(bet_id).map(|&i| &self.bets[i])
    }

    /// Accepts a bet iff `now` is inside the betting window and the player has bets left.
    pub fn place_bet(&mut self, now_ms: i64, req: BetRequest) -> Result<()> {
        validate_bet(&self.rules, req.stake, req.auto_cashout_x100)?;
        if now_ms < self.plan.opened_at_ms || now_ms >= self.plan.started_at_ms {
            return Err(Error::BettingClosed);
        }
        if self.index.contains_key(&req.bet_id) {
            return Err(Error::IdempotencyConflict);
        }
        let count = self.per_player.entry(req.player_id.clone()).or_default();
        if *count >= self.rules.bets_per_player {
            return Err(Error::BetLimit(self.rules.bets_per_player));
        }
        *count += 1;
        self.index.insert(req.bet_id.clone(), self.bets.len());
        self.bets.push(BetState {
            bet_id: req.bet_id,
            player_id: req.player_id,
            username: req.username,
            stake: req.stake,
            auto_cashout_x100: req.auto_cashout_x100,
            cashed_out: None,
            cashout_key: None,
            announced: false,
        });
        Ok(())
    }

    /// Withdraws a bet the ledger refused (e.g. insufficient funds); it never moved money.
    pub fn cancel_bet(&mut self, bet_id: &str) {
        let Some(i) = self.index.remove(bet_id) else {
            return;
        };
        let bet = self.bets.remove(i);
        if let Some(c) = self.per_player.get_mut(&bet.player_id) {
            *c = c.saturating_sub(1);
        }
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
    }

    fn auto_instant(&self, target: u64) -> Option<i64> {
        self.plan.auto_instant(&self.curve, target)
    }

    /// A manual cash-out at `now`: accepted iff the round is flying and has not crashed; pays the
    /// multiplier at that instant, or the auto target if that was reached first. A retry with the
    /// key of the cash-out that won the bet gets that decision again, whenever it arrives.
    pub fn cash_out(
        &mut self,
        now_ms: i64,
        bet_id: &str,
        player_id: &str,
        key: &str,
    ) -> Result<CashOut> {
        let i = *self
            .index
            .get(bet_id)
            .ok_or_else(|| Error::UnknownBet(bet_id.to_string()))?;
        if self.bets[i].player_id != player_id {
            return Err(Error::Forbidden("this is not your bet".into()));
        }
        if self.bets[i].cashed_out.is_some() && self.bets[i].cashout_key.as_deref() == Some(key) {
            return Ok(self.decision(i, false));
        }
        if now_ms < self.plan.started_at_ms {
            return Err(Error::NotFlying);
        }
        if now_ms >= self.plan.crash_at_ms {
            return Err(Error::TooLate);
        }
        let bet = &self.bets[i];
        if bet.cashed_out.is_some() {
            return Err(Error::AlreadySettled);
        }
        // An auto-cash-out whose instant has passed already won: it pays its target, and the
        // manual request is a duplicate (paying both would pay one bet twice).
        if let Some(target) = bet.auto_cashout_x100
            && let Some(at) = self.auto_instant(target)
            && at <= now_ms
        {
            return Err(Error::AlreadySettled);
        }
        let multiplier = self.plan.manual_multiplier(&self.curve, now_ms);
        self.bets[i].cashed_out = Some((multiplier, now_ms));
        self.bets[i].cashout_key = Some(key.to_string());
        self.bets[i].announced = true;
        Ok(self.decision(i, false))
    }

    fn decision(&self, i: usize, auto: bool) -> CashOut {
        let bet = &self.bets[i];
        let (multiplier_x100, at_ms) = bet.cashed_out.unwrap_or((100, self.plan.started_at_ms));
        CashOut {
            round: self.plan.number,
            bet_id: bet.bet_id.clone(),
            player_id: bet.player_id.clone(),
            username: bet.username.clone(),
            stake: bet.stake,
            multiplier_x100,
            payout: payout(bet.stake, multiplier_x100, self.rules.max_payout),
            at_ms,
            auto,
            key: if auto { None } else { bet.cashout_key.clone() },
        }
    }

    /// Every cash-out accepted so far (manual or auto), e.g. for a void to honour.
    pub fn cashed_out(&self) -> Vec<CashOut> {
        (0..self.bets.len())
            .filter(|&i| self.bets[i].cashed_out.is_some())
            .map(|i| {
                let auto =
                    self.bets[i].cashed_out.map(|(m, _)| m) == self.bets[i].auto_cashout_x100;
                self.decision(i, auto)
            })
            .collect()
    }

    /// The earliest auto-cash-out instant still to come after `now`, so the leader wakes exactly
    /// then (paid at that instant, not at the next tick).
    pub fn next_auto_instant(&self, now_ms: i64) -> Option<i64> {
        self.bets
            .iter()
            .filter(|b| b.cashed_out.is_none())
            .filter_map(|b| b.auto_cashout_x100.and_then(|a| self.auto_instant(a)))
            .filter(|&at| at > now_ms)
            .min()
    }

    /// Auto-cash-outs whose instant is `<= now`, marked as cashed at exactly their target.
    pub fn due_auto_cashouts(&mut self, now_ms: i64) -> Vec<CashOut> {
        let mut due = Vec::new();
        for i in 0..self.bets.len() {
            let bet = &self.bets[i];
            if bet.cashed_out.is_some() {
                continue;
            }
            let Some(target) = bet.auto_cashout_x100 else {
                continue;
            };
            let Some(at) = self.auto_instant(target) else {
                continue;
            };
            if at <= now_ms {
                self.bets[i].cashed_out = Some((target, at));
                self.bets[i].announced = true;
                due.push(self.decision(i, true));
            }
        }
        due
    }

    /// Final outcomes once the round has crashed: every bet won at its cash-out or lost.
    /// Auto-cash-outs not yet discovered (the leader may have been late) are decided here too.
    pub fn settle(&mut self) -> (Vec<CashOut>, Vec<Settlement>) {
        let late_autos = self.due_auto_cashouts(self.plan.crash_at_ms);
        let settlements = self
            .bets
            .iter()
            .map(|b| Settlement {
                bet_id: b.bet_id.clone(),
                player_id: b.player_id.clone(),
                outcome: match b.cashed_out {
                    Some((m, _)) => Outcome::Won {
                        multiplier_x100: m,
                        payout: payout(b.stake, m, self.rules.max_payout),
                    },
                    None => Outcome::Lost,
                },
                cashout_key: b.cashout_key.clone(),
            })
            .collect();
        (late_autos, settlements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            min_stake: 10,
            max_stake: 1_000_000,
            max_payout: 100_000_000,
            bets_per_player: 2,
            max_x100: 100_000_000,
            betting_ms: 5_000,
            pause_ms: 3_000,
        }
    }

    fn round(crash_x100: u64) -> ActiveRound {
        let curve = Curve::from_doubling_ms(11_500);
        let plan = RoundPlan::new(7, [0u8; 32], crash_x100, 1_000, &rules(), &curve);
        ActiveRound::new(plan, curve, rules())
    }

    fn bet(id: &str, player: &str, stake: i64, auto: Option<u64>) -> BetRequest {
        BetRequest {
            bet_id: id.into(),
            player_id: player.into(),
            username: player.into(),
            stake,
            auto_cashout_x100: auto,
        }
    }

    #[test]
    fn curve_doubles_at_the_configured_time_and_is_monotone_to_the_cap() {
        let c = Curve::from_doubling_ms(11_500);
        assert_eq!(c.multiplier_x100(0), 100);
        assert_eq!(c.multiplier_x100(11_500), 200);
        assert!(c.multiplier_x100(11_499) < 200);
        let mut last = 0;
        let end = c.elapsed_for(CURVE_MAX_X100);
        for t in 0..=end {
            let m = c.multiplier_x100(t);
            assert!(m >= last, "curve decreased at t={t}");
            last = m;
        }
        assert_eq!(last, CURVE_MAX_X100);
    }

    #[test]
    fn elapsed_for_is_the_first_instant_reaching_the_multiplier() {
        let c = Curve::from_doubling_ms(11_500);
        for x in [100u64, 101, 150, 199, 200, 259, 1_000, 25_977, 1_000_000] {
            let t = c.elapsed_for(x);
            assert!(c.multiplier_x100(t) >= x);
            if t > 0 {
                assert!(c.multiplier_x100(t - 1) < x, "x={x} t={t}");
            }
        }
    }

    #[test]
    fn payout_is_floored_and_exact() {
        assert_eq!(payout(333, 150, i64::MAX), 499);
        assert_eq!(payout(100, 101, i64::MAX), 101);
        assert_eq!(payout(1, 199, i64::MAX), 1);
        assert_eq!(payout(1_000_000, 100_000_000, 5), 5);
        assert_eq!(payout(i64::MAX, 100_000_000, i64::MAX), i64::MAX);
    }

    #[test]
    fn bets_only_inside_the_window_and_within_limits() {
        let mut r = round(250);
        assert_eq!(
            r.place_bet(999, bet("a", "p", 100, None)),
            Err(Error::BettingClosed)
        );
        assert_eq!(r.place_bet(1_000, bet("a", "p", 100, None)), Ok(()));
        assert_eq!(r.place_bet(5_999, bet("b", "p", 100, None)), Ok(()));
        assert_eq!(
            r.place_bet(5_999, bet("c", "p", 100, None)),
            Err(Error::BetLimit(2))
        );
        assert_eq!(
            r.place_bet(6_000, bet("d", "q", 100, None)),
            Err(Error::BettingClosed)
        );
        assert!(matches!(
            r.place_bet(2_000, bet("e", "q", 0, None)),
            Err(Error::InvalidAmount(_))
        ));
        assert!(matches!(
            r.place_bet(2_000, bet("e", "q", -5, None)),
            Err(Error::InvalidAmount(_))
        ));
        assert!(matches!(
            r.place_bet(2_000, bet("e", "q", 100, Some(100))),
            Err(Error::InvalidMultiplier(_))
        ));
        assert!(matches!(
            r.place_bet(2_000, bet("e", "q", 1_000_000, Some(100_000_000))),
            Err(Error::MaxPayout(_))
        ));
        r.cancel_bet("a");
        assert_eq!(r.place_bet(3_000, bet("f", "p", 100, None)), Ok(()));
        assert_eq!(r.bets().len(), 2);
    }

    #[test]
    fn cash_out_pays_the_instant_multiplier_strictly_before_the_crash() {
        let mut r = round(250);
        r.place_bet(1_000, bet("a", "p", 1_000, None)).expect("bet");
        r.place_bet(1_000, bet("b", "q", 1_000, None)).expect("bet");
        assert_eq!(r.cash_out(5_999, "a", "p", "k"), Err(Error::NotFlying));
        assert!(matches!(
            r.cash_out(6_500, "a", "q", "k"),
            Err(Error::Forbidden(_))
        ));
        let crash_at = r.plan.crash_at_ms;
        let c = r.cash_out(crash_at - 1, "a", "p", "k").expect("in time");
        assert!(c.multiplier_x100 < 250, "never at or above the crash point");
        assert_eq!(c.payout, 1_000 * c.multiplier_x100 as i64 / 100);
        assert_eq!(
            r.cash_out(crash_at - 1, "a", "p", "k2"),
            Err(Error::AlreadySettled),
            "another request (another key) cannot cash the bet out again"
        );
        // A retry of the winning request gets its decision back, even past the crash instant.
        assert_eq!(r.cash_out(crash_at + 5, "a", "p", "k"), Ok(c.clone()));
        assert_eq!(c.key.as_deref(), Some("k"));
        assert_eq!(r.cash_out(crash_at, "b", "q", "k"), Err(Error::TooLate));
        let (_, s) = r.settle();
        assert_eq!(
            s.iter().map(|s| s.outcome.clone()).collect::<Vec<_>>(),
            vec![
                Outcome::Won {
                    multiplier_x100: c.multiplier_x100,
                    payout: c.payout
                },
                Outcome::Lost
            ]
        );
    }

    #[test]
    fn auto_cash_out_wins_exactly_its_target_iff_target_at_most_crash() {
        let mut r = round(250);
        r.place_bet(1_000, bet("at", "p", 100, Some(250)))
            .expect("bet");
        r.place_bet(1_000, bet("above", "q", 100, Some(251)))
            .expect("bet");
        r.place_bet(1_000, bet("below", "s", 100, Some(120)))
            .expect("bet");
        let t120 = r.plan.started_at_ms + r.curve.elapsed_for(120) as i64;
        assert_eq!(r.next_auto_instant(6_000), Some(t120));
        assert!(r.due_auto_cashouts(t120 - 1).is_empty());
        let due = r.due_auto_cashouts(t120);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].multiplier_x100, due[0].at_ms), (120, t120));
        // A manual cash-out after the auto instant is a duplicate, never a second payment.
        assert_eq!(
            r.cash_out(t120 + 500, "below", "s", "k"),
            Err(Error::AlreadySettled)
        );
        let (late, settled) = r.settle();
        assert_eq!(late.len(), 1, "the target equal to the crash point wins");
        assert_eq!(late[0].multiplier_x100, 250);
        assert_eq!(late[0].at_ms, r.plan.crash_at_ms);
        let outcomes: Vec<_> = settled.iter().map(|s| s.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Won {
                    multiplier_x100: 250,
                    payout: 250
                },
                Outcome::Lost,
                Outcome::Won {
                    multiplier_x100: 120,
                    payout: 120
                },
            ]
        );
    }

    #[test]
    fn instant_crash_accepts_no_cash_out() {
        let mut r = round(100);
        assert_eq!(r.plan.crash_at_ms, r.plan.started_at_ms);
        r.place_bet(1_000, bet("a", "p", 100, Some(101)))
            .expect("bet");
        assert_eq!(
            r.cash_out(r.plan.started_at_ms, "a", "p", "k"),
            Err(Error::TooLate)
        );
        let (late, s) = r.settle();
        assert!(late.is_empty());
        assert_eq!(s[0].outcome, Outcome::Lost);
    }

    #[test]
    fn plan_debug_never_shows_the_secret() {
        let curve = Curve::from_doubling_ms(11_500);
        let plan = RoundPlan::new(1, [0xab; 32], 4242, 0, &rules(), &curve);
        let s = format!("{plan:?}");
        assert!(!s.contains("4242") && !s.contains("abab"), "{s}");
    }
}
