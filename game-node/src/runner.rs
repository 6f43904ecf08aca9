//! The round leader: while this node leads its table, it opens rounds, announces the flight, ticks,
//! pays auto-cash-outs at their instants, crashes and settles, round after round. Every decision
//! comes from the pure engine and the arbiter; every money movement from the ledger; every
//! announcement goes out on the bus. Only the leader runs this loop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::engine::{CashOut, Curve, RoundPlan, Rules};
use crate::error::{Error, Result};
use crate::fairness::{Chain, CrashCalculator};
use crate::ports::{Arbiter, Bus, LeaderElector, Reveal, RoundBook};
use crate::protocol::ServerMessage;

/// How long the leader backs off after a failed round (ledger or bus unavailable) before retrying.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// How often a paused leader looks at the pause flag again (the elector refreshes it with each
/// renewal; this only bounds how long a resume waits on top).
const PAUSE_RECHECK: Duration = Duration::from_millis(200);

/// What the leader needs to know about its table.
#[derive(Clone)]
pub struct TableSpec {
    pub id: String,
    /// This node's id (recorded with the leadership it claims).
    pub node_id: String,
    pub chain: Arc<Chain>,
    pub calculator: CrashCalculator,
    pub curve: Curve,
    pub rules: Rules,
    pub tick_ms: u64,
    /// Open no new rounds (finish the one in progress).
    pub paused: bool,
    /// Signs receipts (and log heads) with the table's key.
    pub notary: Arc<crate::receipts::Notary>,
}

/// Crash points at or above these multipliers (hundredths) are counted
/// (`crashfleet_crash_points_reaching_total{x100}`), beside every crash point
/// (`crashfleet_crash_points_total`): a player who always cashes out at x returns x times the
/// share of rounds reaching x, which a fair table holds at 1 − edge. 2× watches the body of the
/// distribution, 10× its tail (a table that quietly capped high multipliers).
pub const RTP_PROBES_X100: [(u64, &str); 2] = [(200, "200"), (1_000, "1000")];

/// The metrics of a crashed round: the crash-point counters, when it ended, and how many rounds
/// the table's chain has left after it.
pub fn record_crash(spec: &TableSpec, number: u64, crash_x100: u64, crashed_at_ms: i64) {
    metrics::counter!("crashfleet_crash_points_total").increment(1);
    for (x100, label) in RTP_PROBES_X100 {
        if crash_x100 >= x100 {
            metrics::counter!("crashfleet_crash_points_reaching_total", "x100" => label)
                .increment(1);
        }
    }
    record_progress(spec, number, crashed_at_ms);
}

/// When the table's newest round ended and how many rounds its chain has left: set by the leader
/// after each round and by every node at start (from the ledger), so the gauges exist on every
/// node and the newest value wins across the fleet (`max by (table)`).
pub fn record_progress(spec: &TableSpec, number: u64, ended_at_ms: i64) {
    metrics::gauge!("crashfleet_last_round_timestamp_seconds").set(ended_at_ms as f64 / 1_000.0);
    metrics::gauge!("crashfleet_chain_rounds_left")
        .set(spec.chain.length().saturating_sub(number) as f64);
}

/// The ports the leader drives.
#[derive(Clone)]
pub struct Ports {
    /// What the leader writes: terms, rounds, settlements (the rest of the ledger it never uses).
    pub ledger: Arc<dyn RoundBook>,
    pub arbiter: Arc<dyn Arbiter>,
    pub bus: Arc<dyn Bus>,
    pub elector: Arc<dyn LeaderElector>,
}

/// Why a leader stopped leading, other than its own shutdown, counted in
/// `crashfleet_step_downs_total{reason}`: `lost` (the lease or lock was taken, or not renewed in
/// time), `fenced` (a store refused a write for a newer term), `claim_refused` (the term could not
/// be claimed). Operators alert on it; tests assert on it instead of on log lines.
pub const STEP_DOWN_REASONS: [&str; 3] = ["lost", "fenced", "claim_refused"];

fn step_down(reason: &'static str) {
    metrics::counter!("crashfleet_step_downs_total", "reason" => reason).increment(1);
}

/// Runs until `shutdown`: waits for leadership, then plays rounds until it is lost.
pub async fn run(table: TableSpec, ports: Ports, shutdown: CancellationToken) {
    loop {
        let leadership = match ports.elector.acquire(&shutdown).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "leader election failed; retrying");
                if sleep_or_cancel(RETRY_AFTER_FAILURE, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let term = leadership.term;
        let previous = ports.ledger.current_term(&table.id).await.unwrap_or(0);
        let claimed = match ports.ledger.claim_term(&table.id, term).await {
            Ok(()) => ports.arbiter.claim_term(term, &table.node_id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = claimed {
            warn!(error = %e, term, "could not claim the leadership term; stepping down");
            step_down("claim_refused");
            ports.elector.release().await;
            if sleep_or_cancel(RETRY_AFTER_FAILURE, &shutdown).await {
                return;
            }
            continue;
        }
        info!(table = %table.id, term, previous, "leading the table");
        if previous > 0 && ports.elector.hands_off() {
            // Leadership changed hands within a fleet (a takeover, not a first start).
            metrics::counter!("crashfleet_failovers_total").increment(1);
        }
        metrics::gauge!("crashfleet_leader").set(1.0);
        metrics::gauge!("crashfleet_leader_term").set(term as f64);
        let leader = Leader {
            table: &table,
            ports: &ports,
            term,
            lost: leadership.lost.clone(),
        };
        let mut fenced = false;
        loop {
            match leader.play().await {
                Ok(()) => break,
                Err(e @ Error::Fenced { .. }) => {
                    error!(error = %e, "a newer leader holds the table; this node's writes were refused");
                    fenced = true;
                    break;
                }
                Err(e) => {
                    error!(error = %e, "round failed; recovering");
                    if sleep_or_cancel(RETRY_AFTER_FAILURE, &leader.lost).await {
                        break;
                    }
                }
            }
        }
        metrics::gauge!("crashfleet_leader").set(0.0);
        if fenced {
            step_down("fenced");
        } else if !shutdown.is_cancelled() {
            step_down("lost");
        }
        if ports.elector.hands_off() {
            // A fleet: the round's state lives in Redis and the next leader adopts it (or voids
            // it, honouring its accepted cash-outs). Voiding here would throw away a round
            // another replica can finish, and a deposed leader's writes are refused anyway.
            info!(table = %table.id, term, "leadership ended; the next leader continues the round");
        } else if let Err(e) = leader.void_open_rounds("the leader stopped").await {
            // Standalone: nobody else can finish the round, so refund it now.
            warn!(error = %e, "could not void the interrupted round; the next start will");
        }
        ports.arbiter.clear().await;
        ports.elector.release().await;
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Sleeps, or returns `true` early if `token` is cancelled.
async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = token.cancelled() => true,
    }
}

struct Leader<'a> {
    table: &'a TableSpec,
    ports: &'a Ports,
    term: u64,
    lost: CancellationToken,
}

impl Leader<'_> {
    fn now(&self) -> i64 {
        self.ports.arbiter.clock().now_ms()
    }

    /// Sleeps until the authoritative clock reads `at_ms`; `true` if leadership was lost first.
    async fn sleep_until(&self, at_ms: i64) -> bool {
        let wait = (at_ms - self.now()).max(0) as u64;
        sleep_or_cancel(Duration::from_millis(wait), &self.lost).await
    }

    /// Voids every open round: the cash-outs the arbiter accepted are paid, every other open
    /// stake is refunded.
    async fn void_open_rounds(&self, reason: &str) -> Result<()> {
        for r in self.ports.ledger.open_rounds(&self.table.id).await? {
            self.void_round(r.number, reason).await?;
        }
        Ok(())
    }

    /// Rounds open in the ledger when this term starts were interrupted (a restart, a dead or
    /// deposed leader, a SIGTERM hand-over). The newest is continued with its own crash point when
    /// the arbiter still holds it; any other is voided. Returns the round to continue.
    async fn recover_open_rounds(&self) -> Result<Option<RoundPlan>> {
        let open = self.ports.ledger.open_rounds(&self.table.id).await?;
        let newest = open.iter().map(|r| r.number).max();
        let mut resume = None;
        for r in &open {
            if Some(r.number) == newest
                && let Some(plan) = self.ports.arbiter.adopt(self.term, r.number).await?
            {
                let hash = self
                    .table
                    .chain
                    .round_hash(r.number)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                if plan.hash == hash && plan.crash_x100 == self.table.calculator.crash_x100(&hash) {
                    info!(
                        round = r.number,
                        term = self.term,
                        "continuing the interrupted round"
                    );
                    metrics::counter!("crashfleet_adopted_rounds_total").increment(1);
                    resume = Some(plan);
                    continue;
                }
                error!(
                    round = r.number,
                    "the arbiter's round does not match the hash chain; voiding it"
                );
            }
            self.void_round(
                r.number,
                "the round was interrupted (node restart or leader change)",
            )
            .await?;
        }
        Ok(resume)
    }

    /// Round `number`'s hash and crash point, derived from the chain: the ledger does not hold
    /// them while a round is open, so a leader voiding or resuming a round recomputes them.
    fn reveal(&self, number: u64) -> Result<Reveal> {
        let hash = self
            .table
            .chain
            .round_hash(number)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Reveal {
            hash: crate::fairness::to_hex(&hash),
            crash_x100: self.table.calculator.crash_x100(&hash),
        })
    }

    /// Voids one round: the arbiter stops deciding for it, the cash-outs it had accepted are paid
    /// (an accepted cash-out is never lost), every other open stake is refunded.
    async fn void_round(&self, number: u64, reason: &str) -> Result<()> {
        let accepted = self.ports.arbiter.void(self.term, number).await?;
        for c in &accepted {
            self.pay(c).await?;
        }
        let reveal = self.reveal(number)?;
        let balances = self
            .ports
            .ledger
            .void_round(&self.table.id, self.term, number, &reveal, self.now())
            .await?;
        warn!(
            round = number,
            honoured = accepted.len(),
            refunds = balances.len(),
            reason,
            "round voided"
        );
        metrics::counter!("crashfleet_voided_rounds_total").increment(1);
        self.ports
            .bus
            .publish_as_leader(
                self.term,
                &ServerMessage::RoundVoided {
                    round: number,
                    reason: reason.to_string(),
                    server_time_ms: self.now(),
                },
            )
            .await?;
        self.publish_settled(number).await;
        self.publish_balances(&balances).await;
        Ok(())
    }

    /// Announces what round `number`'s settlement committed to, as the ledger stored it. Best
    /// effort: the commitment is in the ledger (and served by `/api/v1/rounds/{n}`) either way.
    async fn publish_settled(&self, number: u64) {
        let stored = match self.ports.ledger.last_round(&self.table.id).await {
            Ok(Some(r)) if r.number == number => r.settlement,
            _ => None,
        };
        if let Some(s) = stored {
            let _ = self
                .ports
                .bus
                .publish_as_leader(
                    self.term,
                    &ServerMessage::Settled {
                        round: number,
                        settlement_root: s.settlement_root,
                        bets_count: s.bets_count,
                        wagered: s.wagered,
                        paid: s.paid,
                    },
                )
                .await;
        }
    }

    async fn publish_balances(&self, balances: &[(String, i64)]) {
        for (player, balance) in balances {
            let _ = self
                .ports
                .bus
                .publish_private(player, &ServerMessage::Balance { balance: *balance })
                .await;
        }
    }

    /// Pays a decided auto-cash-out and tells everyone.
    async fn pay(&self, c: &CashOut) -> Result<()> {
        if let Some(balance) = self
            .ports
            .ledger
            .settle_leader_cash_out(&self.table.id, self.term, c, c.at_ms)
            .await?
        {
            self.publish_balances(&[(c.player_id.clone(), balance)])
                .await;
        }
        announce_cash_out(self.ports.bus.as_ref(), c).await;
        self.send_auto_receipt(c).await;
        Ok(())
    }

    /// Sends the owner of an auto-cashed-out bet the signed receipt of that cash-out. Best effort
    /// like every private event: the cash-out stands and is settled whether or not it arrives.
    async fn send_auto_receipt(&self, c: &CashOut) {
        if !c.auto {
            return;
        }
        let receipt = self.table.notary.cash_out(c, Some(c.multiplier_x100));
        let _ = self
            .ports
            .bus
            .publish_private(
                &c.player_id,
                &ServerMessage::AutoCashOut {
                    round: c.round,
                    bet_id: c.bet_id.clone(),
                    multiplier_x100: c.multiplier_x100,
                    payout: c.payout,
                    receipt,
                },
            )
            .await;
    }

    /// Plays rounds until leadership is lost.
    async fn play(&self) -> Result<()> {
        let mut resume = self.recover_open_rounds().await?;
        let spec = self.table;
        while !self.lost.is_cancelled() {
            if let Some(plan) = resume.take() {
                if self.run_round(&plan, true).await? {
                    return Ok(());
                }
                continue;
            }
            let number = self
                .ports
                .ledger
                .last_round(&spec.id)
                .await?
                .map_or(0, |r| r.number)
                + 1;
            if spec.paused || self.ports.elector.paused() {
                info!(table = %spec.id, "the table is paused: no new rounds until it is resumed");
                // Alert rules leave a paused table alone: no rounds is what it was told.
                metrics::gauge!("crashfleet_table_paused").set(1.0);
                // `--paused` holds for this process's life; the fleet's flag may be cleared.
                while spec.paused || self.ports.elector.paused() {
                    tokio::select! {
                        () = self.lost.cancelled() => return Ok(()),
                        () = tokio::time::sleep(PAUSE_RECHECK) => {}
                    }
                }
                metrics::gauge!("crashfleet_table_paused").set(0.0);
                info!(table = %spec.id, "the table is resumed");
                continue;
            }
            if number > spec.chain.length() {
                error!(
                    table = %spec.id,
                    "the hash chain is exhausted: no more rounds can be played with this commitment"
                );
                self.lost.cancelled().await;
                return Ok(());
            }
            let hash = spec
                .chain
                .round_hash(number)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let crash = spec.calculator.crash_x100(&hash);
            let plan = RoundPlan::new(number, hash, crash, self.now(), &spec.rules, &spec.curve);
            self.ports
                .ledger
                .open_round(&spec.id, self.term, &plan)
                .await?;
            self.ports
                .arbiter
                .open_round(self.term, plan.clone())
                .await?;
            if self.run_round(&plan, false).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One round from its opening announcement to the end of the pause after the crash (or, when
    /// `resumed`, from wherever the previous leader left it). Returns `true` if leadership was lost.
    async fn run_round(&self, plan: &RoundPlan, resumed: bool) -> Result<bool> {
        let spec = self.table;
        let number = plan.number;
        {
            let now = self.now();
            if now < plan.started_at_ms || !resumed {
                // Announced again on a resume: replicas that missed the first get the window.
                self.ports
                    .bus
                    .publish_as_leader(
                        self.term,
                        &ServerMessage::RoundOpen {
                            round: number,
                            opened_at_ms: plan.opened_at_ms,
                            betting_closes_at_ms: plan.started_at_ms,
                            server_time_ms: now,
                        },
                    )
                    .await?;
            }
            if self.sleep_until(plan.started_at_ms).await {
                return Ok(true);
            }
            self.ports
                .bus
                .publish_as_leader(
                    self.term,
                    &ServerMessage::Flying {
                        round: number,
                        started_at_ms: plan.started_at_ms,
                        server_time_ms: self.now(),
                    },
                )
                .await?;
            if self.fly(plan).await? {
                return Ok(true);
            }
            let (late, settlements) = self.ports.arbiter.crash(self.term).await?;
            for c in &late {
                announce_cash_out(self.ports.bus.as_ref(), c).await;
                self.send_auto_receipt(c).await;
            }
            let balances = self
                .ports
                .ledger
                .finish_round(
                    &spec.id,
                    self.term,
                    number,
                    &Reveal::of(plan),
                    plan.crash_at_ms,
                    &settlements,
                )
                .await?;
            metrics::counter!("crashfleet_rounds_total").increment(1);
            record_crash(spec, number, plan.crash_x100, plan.crash_at_ms);
            self.ports.elector.report_round(number);
            self.ports
                .bus
                .publish_as_leader(
                    self.term,
                    &ServerMessage::Crashed {
                        round: number,
                        crash_x100: plan.crash_x100,
                        hash: crate::fairness::to_hex(&plan.hash),
                        crashed_at_ms: plan.crash_at_ms,
                        next_round_at_ms: plan.next_round_at_ms,
                        server_time_ms: self.now(),
                    },
                )
                .await?;
            self.publish_settled(number).await;
            self.publish_balances(&balances).await;
            if self.sleep_until(plan.next_round_at_ms).await {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The flight: ticks at the configured rate, auto-cash-outs at their exact instants, until the
    /// crash instant. Returns `true` if leadership was lost.
    async fn fly(&self, plan: &RoundPlan) -> Result<bool> {
        let tick_ms = self.table.tick_ms.max(1) as i64;
        let mut next_tick = plan.started_at_ms;
        loop {
            let (due, next_auto) = self.ports.arbiter.due_auto_cashouts(self.term).await?;
            for c in &due {
                self.pay(c).await?;
            }
            let now = self.now();
            if now >= plan.crash_at_ms {
                return Ok(false);
            }
            if now >= next_tick {
                let elapsed = (now - plan.started_at_ms).max(0) as u64;
                self.ports
                    .bus
                    .publish_as_leader(
                        self.term,
                        &ServerMessage::Tick {
                            round: plan.number,
                            multiplier_x100: self.table.curve.multiplier_x100(elapsed),
                            elapsed_ms: elapsed,
                            server_time_ms: now,
                        },
                    )
                    .await?;
                // Skip ticks missed while busy instead of bursting them.
                while next_tick <= now {
                    next_tick += tick_ms;
                }
            }
            let wake = next_tick
                .min(next_auto.unwrap_or(i64::MAX))
                .min(plan.crash_at_ms);
            if self.sleep_until(wake).await {
                return Ok(true);
            }
        }
    }
}

/// Tells every player about a cash-out (manual ones are announced by the node that took them).
pub async fn announce_cash_out(bus: &dyn Bus, c: &CashOut) {
    metrics::counter!("crashfleet_cashouts_total").increment(1);
    let _ = bus
        .publish(&ServerMessage::CashedOut {
            round: c.round,
            bet_id: c.bet_id.clone(),
            username: c.username.clone(),
            multiplier_x100: c.multiplier_x100,
            payout: c.payout,
            auto: c.auto,
        })
        .await;
}
