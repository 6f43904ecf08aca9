//! The standalone adapters: an in-process event bus, an in-process arbiter (a mutex around the
//! pure [`ActiveRound`]), an always-leader elector and a fleet view of one node. Together with the SQLite ledger they make a
//! one-process game node; the fleet swaps each for a Redis or Kubernetes backed one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::engine::{ActiveRound, BetRequest, CashOut, Curve, RoundPlan, Rules, Settlement};
use crate::error::{Error, Result};
use crate::ports::{
    Arbiter, BUS_CAPACITY, Bus, Clock, FleetView, LeaderElector, LeaderInfo, Leadership, Ledger,
    NodeReport, PrivateEvent, PublicEvent, to_json,
};
use crate::protocol::{BetStatus, BetView, LobbyTable, NodeInfo, Phase, RoundView, ServerMessage};

/// The in-process bus: a broadcast channel for the table and one for per-player messages.
pub struct LocalBus {
    public: broadcast::Sender<PublicEvent>,
    private: broadcast::Sender<PrivateEvent>,
    seq: AtomicU64,
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus {
            public: broadcast::channel(BUS_CAPACITY).0,
            private: broadcast::channel(BUS_CAPACITY).0,
            seq: AtomicU64::new(0),
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, msg: &ServerMessage) -> Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No receivers (no sockets) is fine: there is nobody to tell.
        let _ = self.public.send(PublicEvent {
            seq,
            json: to_json(msg)?,
        });
        Ok(())
    }

    async fn publish_private(&self, player_id: &str, msg: &ServerMessage) -> Result<()> {
        let _ = self.private.send(PrivateEvent {
            player_id: player_id.to_string(),
            json: to_json(msg)?,
        });
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<PublicEvent> {
        self.public.subscribe()
    }

    fn subscribe_private(&self) -> broadcast::Receiver<PrivateEvent> {
        self.private.subscribe()
    }
}

/// Decides bets and cash-outs in process, against the node's clock.
pub struct LocalArbiter {
    clock: Arc<dyn Clock>,
    curve: Curve,
    rules: Rules,
    round: Mutex<Option<ActiveRound>>,
}

impl LocalArbiter {
    pub fn new(clock: Arc<dyn Clock>, curve: Curve, rules: Rules) -> LocalArbiter {
        LocalArbiter {
            clock,
            curve,
            rules,
            round: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Arbiter for LocalArbiter {
    async fn open_round(&self, _term: u64, plan: RoundPlan) -> Result<()> {
        *self.round.lock().await = Some(ActiveRound::new(plan, self.curve, self.rules.clone()));
        Ok(())
    }

    async fn current(&self) -> Option<(RoundView, Vec<BetView>)> {
        let guard = self.round.lock().await;
        let r = guard.as_ref()?;
        let view = r.plan.public_view(self.clock.now_ms());
        let bets = r
            .bets()
            .iter()
            .map(|b| BetView {
                bet_id: b.bet_id.clone(),
                round: r.plan.number,
                username: b.username.clone(),
                stake: b.stake,
                auto_cashout_x100: b.auto_cashout_x100,
                status: if b.announced {
                    BetStatus::Won
                } else {
                    BetStatus::Open
                },
                cashout_x100: b.cashed_out.filter(|_| b.announced).map(|(m, _)| m),
                payout: b
                    .cashed_out
                    .filter(|_| b.announced)
                    .map(|(m, _)| crate::engine::payout(b.stake, m, self.rules.max_payout)),
            })
            .collect();
        Some((view, bets))
    }

    /// Without cloning the round's bets: the default (via `current`) copied every bet of the round
    /// for each new bet, O(n²) over a betting window — 29 % of the node's CPU at 2,000 bets/s
    /// (perf, docs/BENCHMARKS.md).
    async fn betting_round(&self) -> Result<Option<u64>> {
        let guard = self.round.lock().await;
        Ok(guard
            .as_ref()
            .map(|r| r.plan.public_view(self.clock.now_ms()))
            .filter(|v| v.phase == crate::protocol::Phase::Betting)
            .map(|v| v.number))
    }

    async fn place_bet(&self, round: u64, req: BetRequest) -> Result<i64> {
        let mut guard = self.round.lock().await;
        let r = guard.as_mut().ok_or(Error::BettingClosed)?;
        if r.plan.number != round {
            return Err(Error::BettingClosed);
        }
        let now = self.clock.now_ms();
        r.place_bet(now, req)?;
        Ok(now)
    }

    async fn cancel_bet(&self, round: u64, bet_id: &str) {
        if let Some(r) = self.round.lock().await.as_mut()
            && r.plan.number == round
        {
            r.cancel_bet(bet_id);
        }
    }

    async fn cash_out(&self, bet_id: &str, player_id: &str, key: &str) -> Result<CashOut> {
        let mut guard = self.round.lock().await;
        let r = guard.as_mut().ok_or(Error::NotFlying)?;
        r.cash_out(self.clock.now_ms(), bet_id, player_id, key)
    }

    async fn due_auto_cashouts(&self, _term: u64) -> Result<(Vec<CashOut>, Option<i64>)> {
        let mut guard = self.round.lock().await;
        let Some(r) = guard.as_mut() else {
            return Ok((Vec::new(), None));
        };
        let now = self.clock.now_ms();
        let due = r.due_auto_cashouts(now);
        Ok((due, r.next_auto_instant(now)))
    }

    async fn crash(&self, _term: u64) -> Result<(Vec<CashOut>, Vec<Settlement>)> {
        let mut guard = self.round.lock().await;
        let r = guard.as_mut().ok_or(Error::NotFlying)?;
        Ok(r.settle())
    }

    async fn clear(&self) {
        *self.round.lock().await = None;
    }

    async fn adopt(&self, _term: u64, number: u64) -> Result<Option<RoundPlan>> {
        // In process there is only ever one leader: it can continue its own round.
        let guard = self.round.lock().await;
        Ok(guard
            .as_ref()
            .filter(|r| r.plan.number == number)
            .map(|r| r.plan.clone()))
    }

    async fn void(&self, _term: u64, number: u64) -> Result<Vec<CashOut>> {
        let mut guard = self.round.lock().await;
        let Some(r) = guard.as_ref().filter(|r| r.plan.number == number) else {
            return Ok(Vec::new());
        };
        let accepted = r.cashed_out();
        *guard = None;
        Ok(accepted)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

/// A single node always leads its table. Each start is a new term (one above the ledger's newest),
/// so the fencing path is exercised even standalone.
pub struct AlwaysLeader {
    term: u64,
}

impl AlwaysLeader {
    pub fn new(term: u64) -> AlwaysLeader {
        AlwaysLeader { term }
    }
}

#[async_trait]
impl LeaderElector for AlwaysLeader {
    async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<Leadership>> {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        Ok(Some(Leadership {
            term: self.term,
            lost: shutdown.child_token(),
        }))
    }

    async fn release(&self) {}
}

/// A single node is its whole fleet: it always leads (at the ledger's newest term), it is the only
/// live node, and the lobby is its one table.
pub struct LocalFleet {
    pub table: String,
    pub node: NodeReport,
    pub ledger: Arc<dyn Ledger>,
    pub arbiter: Arc<dyn Arbiter>,
    pub clock: Arc<dyn Clock>,
    pub curve: Curve,
}

#[async_trait]
impl FleetView for LocalFleet {
    async fn fleet(&self) -> Result<(Option<LeaderInfo>, Vec<NodeInfo>)> {
        let me = (self.node)();
        let leader = LeaderInfo {
            node_id: me.node_id.clone(),
            term: self.ledger.current_term(&self.table).await?,
        };
        Ok((Some(leader), vec![me]))
    }

    async fn lobby(&self) -> Result<Vec<LobbyTable>> {
        let now = self.clock.now_ms();
        let (phase, round, multiplier_x100) = match self.arbiter.current().await {
            Some((r, _)) => {
                let m = (r.phase == Phase::Flying).then(|| {
                    self.curve
                        .multiplier_x100((now - r.started_at_ms).max(0) as u64)
                });
                (r.phase, Some(r.number), m)
            }
            None => (Phase::Idle, None, None),
        };
        let me = (self.node)();
        Ok(vec![LobbyTable {
            table: self.table.clone(),
            region: me.region,
            phase,
            round,
            multiplier_x100,
            players_online: me.connections,
            nodes: 1,
            public_url: me.public_url,
        }])
    }

    async fn ready(&self) -> Result<()> {
        Ok(())
    }

    fn announce(self: Arc<Self>, _tasks: &tokio_util::task::TaskTracker, _: CancellationToken) {}
}
