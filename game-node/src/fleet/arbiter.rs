//! The fleet's arbiter: every bet and cash-out, on whichever replica it arrives, is decided by one
//! Lua script in Redis against Redis `TIME` and the round's state, atomically. Two replicas can
//! therefore never disagree, and no cash-out is accepted at or after the crash instant.
//!
//! What the scripts decide is *time and state* (inside the window? before the crash? already
//! settled?); what a decision is worth (multiplier, payout) is computed here by the same pure
//! rules the in-process arbiter uses ([`RoundPlan::manual_multiplier`], [`RoundPlan::auto_instant`],
//! [`payout`]), so standalone and fleet pay identically.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::HashesInterface;
use serde::{Deserialize, Serialize};

use super::redis::{self as r, Keys, ROUND_KEYS_TTL_MS, RedisClock, Scripts, int, status, text};
use crate::engine::{BetRequest, CashOut, Curve, Outcome, RoundPlan, Rules, Settlement, payout};
use crate::error::{Error, Result};
use crate::ports::{Arbiter, Clock};
use crate::protocol::{BetStatus, BetView, Phase, RoundView};

/// A bet as the arbiter stores it (immutable once placed; its cash-out lives beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredBet {
    bet_id: String,
    player_id: String,
    username: String,
    stake: i64,
    auto_x100: Option<u64>,
    /// When the auto-cash-out target is reached in this round, if it is (fixed at placement).
    auto_at_ms: Option<i64>,
}

/// A recorded cash-out as [`parse_cash`] reads it: (instant, auto, key of a manual one).
type Cash = (i64, bool, Option<String>);

/// A recorded cash-out: `"<instant ms> <1 if auto>[ <idempotency key of a manual one>]"` (keys are
/// printable ASCII without spaces). Returns (instant, auto, key).
fn parse_cash(s: &str) -> Option<Cash> {
    let mut parts = s.splitn(3, ' ');
    let at = parts.next()?.parse::<f64>().ok()? as i64;
    let auto = parts.next()? == "1";
    let key = parts.next().filter(|k| !k.is_empty()).map(str::to_string);
    Some((at, auto, key))
}

pub struct RedisArbiter {
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    clock: Arc<RedisClock>,
    curve: Curve,
    rules: Rules,
    doubling_ms: u64,
}

impl RedisArbiter {
    pub fn new(
        client: Client,
        keys: Keys,
        scripts: Arc<Scripts>,
        clock: Arc<RedisClock>,
        rules: Rules,
        doubling_ms: u64,
    ) -> RedisArbiter {
        RedisArbiter {
            client,
            keys,
            scripts,
            clock,
            curve: Curve::from_doubling_ms(doubling_ms),
            rules,
            doubling_ms,
        }
    }

    /// The round hash, read back into a plan (`None` when Redis holds no round).
    async fn stored_round(&self) -> Result<Option<(RoundPlan, String)>> {
        let h: HashMap<String, String> = self
            .client
            .hgetall(self.keys.round())
            .await
            .map_err(r::unavailable)?;
        Ok(plan_from_hash(&h))
    }

    fn bet_keys(&self, round: u64) -> Vec<String> {
        vec![
            self.keys.round(),
            self.keys.bets(round),
            self.keys.owners(round),
            self.keys.counts(round),
            self.keys.autos(round),
        ]
    }

    fn decision(
        &self,
        plan_started: i64,
        crash_x100: u64,
        bet: &StoredBet,
        at: i64,
        auto: bool,
    ) -> CashOut {
        let multiplier_x100 = if auto {
            bet.auto_x100.unwrap_or(100)
        } else {
            // Only the start and crash point matter for a manual multiplier.
            let plan = RoundPlan {
                number: 0,
                hash: [0; 32],
                crash_x100,
                opened_at_ms: plan_started,
                started_at_ms: plan_started,
                crash_at_ms: i64::MAX,
                next_round_at_ms: i64::MAX,
            };
            plan.manual_multiplier(&self.curve, at)
        };
        CashOut {
            round: 0,
            bet_id: bet.bet_id.clone(),
            player_id: bet.player_id.clone(),
            username: bet.username.clone(),
            stake: bet.stake,
            multiplier_x100,
            payout: payout(bet.stake, multiplier_x100, self.rules.max_payout),
            at_ms: at,
            auto,
            key: None,
        }
    }

    /// Ends round `number` in Redis (`crashed` or `void`) and reads back every bet with its
    /// recorded cash-out.
    async fn close(
        &self,
        term: u64,
        number: u64,
        state: &str,
    ) -> Result<Option<(i64, Vec<(StoredBet, Option<Cash>)>)>> {
        let reply = r::run(
            &self.client,
            &self.scripts.close_round,
            vec![
                self.keys.fence(),
                self.keys.round(),
                self.keys.bets(number),
                self.keys.cashes(number),
            ],
            vec![term.to_string(), number.to_string(), state.to_string()],
        )
        .await?;
        match int(reply.first()) {
            status::OK => {}
            status::FENCED => return Err(r::fenced(term, &reply)),
            _ => return Ok(None),
        }
        let now = int(reply.get(1));
        let mut bets = Vec::new();
        for pair in reply[2..].chunks(2) {
            let Some(bet) = text(pair.first()).and_then(|j| serde_json::from_str(&j).ok()) else {
                continue;
            };
            let cash = text(pair.get(1)).and_then(|c| parse_cash(&c));
            bets.push((bet, cash));
        }
        Ok(Some((now, bets)))
    }
}

/// A round plan from the stored hash, with its state.
pub(crate) fn plan_from_hash(h: &HashMap<String, String>) -> Option<(RoundPlan, String)> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
    let hash = crate::fairness::parse_hash(h.get("hash")?).ok()?;
    Some((
        RoundPlan {
            number: num("number")? as u64,
            hash,
            crash_x100: num("crash_x100")? as u64,
            opened_at_ms: num("opened")?,
            started_at_ms: num("started")?,
            crash_at_ms: num("crash_at")?,
            next_round_at_ms: num("next_at")?,
        },
        h.get("state")?.clone(),
    ))
}

#[async_trait]
impl Arbiter for RedisArbiter {
    async fn claim_term(&self, term: u64, node_id: &str) -> Result<()> {
        let reply = r::run(
            &self.client,
            &self.scripts.claim,
            vec![self.keys.fence(), self.keys.leader_info()],
            vec![term.to_string(), node_id.to_string()],
        )
        .await?;
        match int(reply.first()) {
            status::OK => Ok(()),
            status::FENCED => Err(r::fenced(term, &reply)),
            other => Err(Error::Internal(format!("claim answered {other}"))),
        }
    }

    async fn open_round(&self, term: u64, plan: RoundPlan) -> Result<()> {
        let reply = r::run(
            &self.client,
            &self.scripts.open_round,
            vec![self.keys.fence(), self.keys.round()],
            vec![
                term.to_string(),
                plan.number.to_string(),
                plan.opened_at_ms.to_string(),
                plan.started_at_ms.to_string(),
                plan.crash_at_ms.to_string(),
                plan.next_round_at_ms.to_string(),
                plan.crash_x100.to_string(),
                crate::fairness::to_hex(&plan.hash),
                self.doubling_ms.to_string(),
            ],
        )
        .await?;
        match int(reply.first()) {
            status::OK => Ok(()),
            status::FENCED => Err(r::fenced(term, &reply)),
            other => Err(Error::Internal(format!("open_round answered {other}"))),
        }
    }

    async fn current(&self) -> Option<(RoundView, Vec<BetView>)> {
        let (plan, state) = self.stored_round().await.ok()??;
        if state == "void" {
            return None;
        }
        let now = self.clock.now_ms();
        let mut view = plan.public_view(now);
        if state == "crashed" && view.phase != Phase::Crashed {
            // Closed by the leader a hair before this node's clock reached the instant.
            view = plan.public_view(plan.crash_at_ms);
        }
        let bets: HashMap<String, String> = self
            .client
            .hgetall(self.keys.bets(plan.number))
            .await
            .ok()?;
        let cashes: HashMap<String, String> = self
            .client
            .hgetall(self.keys.cashes(plan.number))
            .await
            .ok()?;
        let mut views: Vec<BetView> = bets
            .values()
            .filter_map(|j| serde_json::from_str::<StoredBet>(j).ok())
            .map(|b| {
                let cash = cashes.get(&b.bet_id).and_then(|c| parse_cash(c));
                let won = cash.map(|(at, auto, _)| {
                    self.decision(plan.started_at_ms, plan.crash_x100, &b, at, auto)
                });
                BetView {
                    bet_id: b.bet_id.clone(),
                    round: plan.number,
                    username: b.username.clone(),
                    stake: b.stake,
                    auto_cashout_x100: b.auto_x100,
                    status: if won.is_some() {
                        BetStatus::Won
                    } else {
                        BetStatus::Open
                    },
                    cashout_x100: won.as_ref().map(|c| c.multiplier_x100),
                    payout: won.as_ref().map(|c| c.payout),
                }
            })
            .collect();
        views.sort_by(|a, b| a.bet_id.cmp(&b.bet_id));
        Some((view, views))
    }

    async fn betting_round(&self) -> Result<Option<u64>> {
        let Some((plan, state)) = self.stored_round().await? else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        Ok((state == "open" && now < plan.started_at_ms).then_some(plan.number))
    }

    async fn place_bet(&self, round: u64, req: BetRequest) -> Result<i64> {
        crate::engine::validate_bet(&self.rules, req.stake, req.auto_cashout_x100)?;
        // The auto instant needs the plan (start and crash point): read it, then let the script
        // re-check the window against Redis TIME.
        let (plan, _) = self
            .stored_round()
            .await?
            .filter(|(p, _)| p.number == round)
            .ok_or(Error::BettingClosed)?;
        let auto_at_ms = req
            .auto_cashout_x100
            .and_then(|a| plan.auto_instant(&self.curve, a));
        let stored = StoredBet {
            bet_id: req.bet_id.clone(),
            player_id: req.player_id.clone(),
            username: req.username,
            stake: req.stake,
            auto_x100: req.auto_cashout_x100,
            auto_at_ms,
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| Error::Internal(format!("serialising a bet: {e}")))?;
        let reply = r::run(
            &self.client,
            &self.scripts.place_bet,
            self.bet_keys(round),
            vec![
                round.to_string(),
                req.bet_id,
                json,
                req.player_id,
                self.rules.bets_per_player.to_string(),
                auto_at_ms.unwrap_or(-1).to_string(),
                ROUND_KEYS_TTL_MS.to_string(),
            ],
        )
        .await?;
        match int(reply.first()) {
            status::OK => Ok(int(reply.get(1))),
            status::LIMIT => Err(Error::BetLimit(self.rules.bets_per_player)),
            status::DUPLICATE => Err(Error::IdempotencyConflict),
            _ => Err(Error::BettingClosed),
        }
    }

    async fn cancel_bet(&self, round: u64, bet_id: &str) {
        if let Err(e) = r::run(
            &self.client,
            &self.scripts.cancel_bet,
            self.bet_keys(round),
            vec![round.to_string(), bet_id.to_string()],
        )
        .await
        {
            // The bet never moved money; the worst case is a phantom entry in the round's bet
            // list, which the crash settlement ignores (the ledger has no such bet).
            tracing::warn!(error = %e, bet = bet_id, "could not withdraw a refused bet from Redis");
        }
    }

    async fn cash_out(&self, bet_id: &str, player_id: &str, key: &str) -> Result<CashOut> {
        // The bet's round: the one being played (a bet of an older round is settled or voided).
        let round: Option<String> = self
            .client
            .hget(self.keys.round(), "number")
            .await
            .map_err(r::unavailable)?;
        let round = round
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(Error::NotFlying)?;
        let reply = r::run(
            &self.client,
            &self.scripts.cash_out,
            vec![
                self.keys.round(),
                self.keys.bets(round),
                self.keys.owners(round),
                self.keys.autos(round),
                self.keys.cashes(round),
            ],
            vec![
                round.to_string(),
                bet_id.to_string(),
                player_id.to_string(),
                ROUND_KEYS_TTL_MS.to_string(),
                key.to_string(),
            ],
        )
        .await?;
        match int(reply.first()) {
            status::OK => {}
            status::UNKNOWN => return Err(Error::UnknownBet(bet_id.to_string())),
            status::FORBIDDEN => return Err(Error::Forbidden("this is not your bet".into())),
            status::SETTLED => return Err(Error::AlreadySettled),
            status::TOO_LATE => return Err(Error::TooLate),
            _ => return Err(Error::NotFlying),
        }
        let at = int(reply.get(1));
        let started = int(reply.get(2));
        let crash_x100 = int(reply.get(3)).max(0) as u64;
        let bet: StoredBet = text(reply.get(4))
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or_else(|| Error::Internal("a cashed-out bet has no record in Redis".into()))?;
        let mut c = self.decision(started, crash_x100, &bet, at, false);
        c.round = round;
        c.key = Some(key.to_string());
        Ok(c)
    }

    async fn due_auto_cashouts(&self, term: u64) -> Result<(Vec<CashOut>, Option<i64>)> {
        let Some((plan, state)) = self.stored_round().await? else {
            return Ok((Vec::new(), None));
        };
        if state != "open" {
            return Ok((Vec::new(), None));
        }
        let reply = r::run(
            &self.client,
            &self.scripts.due_autos,
            vec![
                self.keys.fence(),
                self.keys.round(),
                self.keys.bets(plan.number),
                self.keys.autos(plan.number),
                self.keys.cashes(plan.number),
            ],
            vec![
                term.to_string(),
                plan.number.to_string(),
                ROUND_KEYS_TTL_MS.to_string(),
            ],
        )
        .await?;
        match int(reply.first()) {
            status::OK => {}
            status::FENCED => return Err(r::fenced(term, &reply)),
            other => return Err(Error::Internal(format!("due_autos answered {other}"))),
        }
        let next = Some(int(reply.get(1))).filter(|&n| n >= 0);
        let mut due = Vec::new();
        for pair in reply.get(2..).unwrap_or_default().chunks(2) {
            let Some(bet) =
                text(pair.first()).and_then(|j| serde_json::from_str::<StoredBet>(&j).ok())
            else {
                continue;
            };
            let at = int(pair.get(1));
            let mut c = self.decision(plan.started_at_ms, plan.crash_x100, &bet, at, true);
            c.round = plan.number;
            due.push(c);
        }
        Ok((due, next))
    }

    async fn crash(&self, term: u64) -> Result<(Vec<CashOut>, Vec<Settlement>)> {
        let (plan, _) = self.stored_round().await?.ok_or(Error::NotFlying)?;
        let (_, bets) = self
            .close(term, plan.number, "crashed")
            .await?
            .ok_or(Error::NotFlying)?;
        let mut late = Vec::new();
        let mut settlements = Vec::new();
        for (bet, cash) in bets {
            let cashout_key = cash.as_ref().and_then(|c| c.2.clone());
            let won = match cash {
                Some((at, auto, _)) => {
                    Some(self.decision(plan.started_at_ms, plan.crash_x100, &bet, at, auto))
                }
                // An auto-cash-out the leader had not marked yet (it was late): its target was
                // reached before the crash, so it won (the same rule as the in-process engine).
                None => bet
                    .auto_at_ms
                    .filter(|&at| at <= plan.crash_at_ms)
                    .map(|at| {
                        let mut c =
                            self.decision(plan.started_at_ms, plan.crash_x100, &bet, at, true);
                        c.round = plan.number;
                        late.push(c.clone());
                        c
                    }),
            };
            settlements.push(Settlement {
                bet_id: bet.bet_id.clone(),
                player_id: bet.player_id.clone(),
                outcome: match won {
                    Some(c) => Outcome::Won {
                        multiplier_x100: c.multiplier_x100,
                        payout: c.payout,
                    },
                    None => Outcome::Lost,
                },
                cashout_key,
            });
        }
        Ok((late, settlements))
    }

    async fn clear(&self) {
        // The round's state stays in Redis for the next leader to adopt or void.
    }

    async fn adopt(&self, term: u64, number: u64) -> Result<Option<RoundPlan>> {
        let reply = r::run(
            &self.client,
            &self.scripts.adopt,
            vec![self.keys.fence(), self.keys.round()],
            vec![term.to_string(), number.to_string()],
        )
        .await?;
        match int(reply.first()) {
            status::OK => {}
            status::FENCED => return Err(r::fenced(term, &reply)),
            _ => return Ok(None),
        }
        let Some(hash) = text(reply.get(6)).and_then(|h| crate::fairness::parse_hash(&h).ok())
        else {
            return Ok(None);
        };
        Ok(Some(RoundPlan {
            number,
            hash,
            crash_x100: int(reply.get(5)).max(0) as u64,
            opened_at_ms: int(reply.get(1)),
            started_at_ms: int(reply.get(2)),
            crash_at_ms: int(reply.get(3)),
            next_round_at_ms: int(reply.get(4)),
        }))
    }

    async fn void(&self, term: u64, number: u64) -> Result<Vec<CashOut>> {
        let Some((plan, _)) = self
            .stored_round()
            .await?
            .filter(|(p, _)| p.number == number)
        else {
            // Redis no longer holds the round (it restarted): nothing was decided that the
            // ledger does not already know; the void refunds every open stake.
            return Ok(Vec::new());
        };
        let Some((now, bets)) = self.close(term, number, "void").await? else {
            return Ok(Vec::new());
        };
        // Honoured: every recorded cash-out, and every auto-cash-out whose instant had come
        // before the void (it was reached; the leader that should have marked it was gone).
        let until = now.min(plan.crash_at_ms);
        Ok(bets
            .into_iter()
            .filter_map(|(bet, cash)| {
                let (at, auto, key) = match cash {
                    Some(c) => c,
                    None => (bet.auto_at_ms.filter(|&at| at <= until)?, true, None),
                };
                let mut c = self.decision(plan.started_at_ms, plan.crash_x100, &bet, at, auto);
                c.round = number;
                c.key = key;
                Some(c)
            })
            .collect())
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}
