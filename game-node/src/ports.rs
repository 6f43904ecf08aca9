//! The ports the node is built around: a clock, a ledger (money), an event bus, a bet/cash-out
//! arbiter and a leader elector. Standalone and fleet are two sets of adapters behind these traits,
//! not two code paths (see the crate root for which adapters exist).

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{BetRequest, CashOut, RoundPlan, Settlement};
use crate::error::{Error, Result};
use crate::protocol::{
    BetStatus, BetView, LobbyTable, NodeInfo, RoundStatus, RoundView, ServerMessage,
};

/// The authoritative clock, in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// Wall-clock time advanced by tokio's clock, so tests with paused time are deterministic and
/// production follows the system clock from start-up on (no jumps when NTP steps the clock).
#[derive(Debug, Clone)]
pub struct TokioClock {
    base_unix_ms: i64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        TokioClock::starting_at(unix)
    }

    pub fn starting_at(base_unix_ms: i64) -> TokioClock {
        TokioClock {
            base_unix_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant of a Unix-ms time, for `sleep_until`.
    pub fn instant_at(&self, unix_ms: i64) -> tokio::time::Instant {
        let delta = unix_ms - self.base_unix_ms;
        if delta <= 0 {
            self.base
        } else {
            self.base + std::time::Duration::from_millis(delta as u64)
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_unix_ms + self.base.elapsed().as_millis() as i64
    }
}

/// A player's account as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub balance: i64,
    /// Bumped by logout: tokens carry the version they were issued at and are refused once it is
    /// older than this (crate::auth explains why a version rather than short-lived tokens).
    pub token_version: u64,
}

/// A stored bet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetRecord {
    pub bet_id: String,
    pub table: String,
    pub round: u64,
    pub player_id: String,
    pub username: String,
    pub stake: i64,
    pub auto_cashout_x100: Option<u64>,
    pub status: BetStatus,
    pub cashout_x100: Option<u64>,
    pub payout: Option<i64>,
    pub placed_at_ms: i64,
    /// When it left `open`: the cash-out's instant for a won bet, the settlement's otherwise.
    pub settled_at_ms: Option<i64>,
    pub idempotency_key: String,
    /// The idempotency key of the cash-out that won it (manual cash-outs only).
    pub cashout_key: Option<String>,
}

impl BetRecord {
    /// The bet's leaf in its round's settlement tree (`internal` while it is still open).
    pub fn settlement_leaf(&self) -> Result<crashfleet_core::settlement::SettlementLeaf> {
        settlement_leaf(
            self.bet_id.clone(),
            &self.player_id,
            self.stake,
            self.status,
            self.cashout_x100
                .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            self.payout,
        )
    }

    pub fn view(&self) -> BetView {
        BetView {
            bet_id: self.bet_id.clone(),
            round: self.round,
            username: self.username.clone(),
            stake: self.stake,
            auto_cashout_x100: self.auto_cashout_x100,
            status: self.status,
            cashout_x100: self.cashout_x100,
            payout: self.payout,
        }
    }
}

/// A stored round. `hash` and `crash_x100` are stored when the round opens (the leader needs
/// them to resume) but are only *served* once `status` is `crashed` or `voided`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRecord {
    pub table: String,
    pub number: u64,
    pub status: RoundStatus,
    /// Empty while the round is open: the ledger stores it only when the round ends.
    pub hash: String,
    /// 0 while the round is open, like `hash`.
    pub crash_x100: u64,
    pub opened_at_ms: i64,
    pub started_at_ms: i64,
    pub crashed_at_ms: Option<i64>,
    pub term: u64,
    /// What the settlement committed to; `None` while open (and for a round settled before
    /// settlement roots existed, until a node fills it in).
    pub settlement: Option<Settled>,
}

/// A settled round's commitment as stored: the settlement tree's root (hex), its bet count and
/// totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Settled {
    /// Hex of the RFC 6962 root over the round's settlement leaves.
    pub settlement_root: String,
    pub bets_count: u64,
    /// Sum of the stakes.
    pub wagered: u64,
    /// Sum of what went back to players: wins and refunds.
    pub paid: u64,
}

impl Settled {
    pub fn of(s: &crashfleet_core::settlement::SettlementSummary) -> Settled {
        Settled {
            settlement_root: hex::encode(s.root),
            bets_count: s.bets,
            wagered: s.wagered,
            paid: s.paid,
        }
    }
}

impl RoundRecord {
    /// The public view; secrets stay hidden while the round is open.
    pub fn view(&self) -> RoundView {
        let finished = self.status != RoundStatus::Open;
        RoundView {
            number: self.number,
            phase: if finished {
                crate::protocol::Phase::Crashed
            } else {
                crate::protocol::Phase::Betting
            },
            opened_at_ms: self.opened_at_ms,
            betting_closes_at_ms: self.started_at_ms,
            started_at_ms: self.started_at_ms,
            crashed_at_ms: self.crashed_at_ms,
            crash_x100: finished.then_some(self.crash_x100),
            hash: finished.then(|| self.hash.clone()),
        }
    }
}

/// A round's secrets as the ledger stores them once the round has ended (crashed or voided). While
/// a round is open the ledger holds neither: its row has no hash and no crash point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    /// The round's chain hash, hex.
    pub hash: String,
    pub crash_x100: u64,
}

impl Reveal {
    pub fn of(plan: &RoundPlan) -> Reveal {
        Reveal {
            hash: crate::fairness::to_hex(&plan.hash),
            crash_x100: plan.crash_x100,
        }
    }
}

/// A finished round as the history API serves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PublicRound {
    pub number: u64,
    /// `crashed` or `voided`.
    pub status: RoundStatus,
    pub hash: String,
    pub crash_x100: u64,
    pub opened_at_ms: i64,
    pub started_at_ms: i64,
    pub crashed_at_ms: Option<i64>,
    /// Hex root of the RFC 6962 tree over the round's settlement leaves (absent only for a round
    /// settled before roots existed and not yet sealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bets_count: Option<u64>,
    /// Sum of the stakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wagered: Option<u64>,
    /// Sum of what went back to players: wins and refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid: Option<u64>,
}

impl RoundRecord {
    /// `None` while the round is open: its secrets are not public yet.
    pub fn public(&self) -> Option<PublicRound> {
        (self.status != RoundStatus::Open).then(|| PublicRound {
            number: self.number,
            status: self.status,
            hash: self.hash.clone(),
            crash_x100: self.crash_x100,
            opened_at_ms: self.opened_at_ms,
            started_at_ms: self.started_at_ms,
            crashed_at_ms: self.crashed_at_ms,
            settlement_root: self.settlement.as_ref().map(|s| s.settlement_root.clone()),
            bets_count: self.settlement.as_ref().map(|s| s.bets_count),
            wagered: self.settlement.as_ref().map(|s| s.wagered),
            paid: self.settlement.as_ref().map(|s| s.paid),
        })
    }
}

/// The table's fairness commitment as stored once, before round 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    pub table: String,
    pub terminating_hash: String,
    pub salt: String,
    pub chain_length: u64,
    pub house_edge_bp: u32,
    pub max_x100: u64,
    pub created_at_ms: i64,
    /// The table's Ed25519 public key, hex; `None` for a table committed before receipts existed
    /// until a node stores its key ([`Commitments::adopt_signing_key`]).
    pub signing_key: Option<String>,
}

/// The conservation audit — sum(player balances) + house result = credits − withdrawals,
/// exactly — with the sums it compared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Audit {
    pub balanced: bool,
    pub player_balances: i64,
    pub credits: i64,
    pub withdrawals: i64,
    pub stakes: i64,
    pub payouts: i64,
    pub refunds: i64,
    /// stakes − payouts − refunds.
    pub house_result: i64,
    pub players: i64,
    pub bets: i64,
    /// Every broken rule found, in words; empty when balanced.
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LeaderboardRow {
    pub username: String,
    pub profit: i64,
    pub wagered: i64,
    pub bets: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TableStats {
    pub table: String,
    pub rounds: i64,
    pub voided_rounds: i64,
    pub bets: i64,
    pub wagered: i64,
    pub paid_out: i64,
    pub refunded: i64,
    pub house_result: i64,
    pub players: i64,
}

/// Money and history, in six parts so a caller (or a test double) takes only the part it uses.
/// Every money movement happens in one transaction and is idempotent.
pub trait Ledger: Commitments + RoundBook + Accounts + Wagers + History + Auditing {}

impl<T: Commitments + RoundBook + Accounts + Wagers + History + Auditing> Ledger for T {}

/// Every part of the [`Ledger`], to call their methods on a concrete ledger
/// (`use game_node::ports::ledger_parts::*`; on `dyn Ledger` they need no import).
pub mod ledger_parts {
    pub use super::{Accounts, Auditing, Commitments, History, RoundBook, Wagers};
}

/// The table's fairness commitment, stored once before round 1.
#[async_trait]
pub trait Commitments: Send + Sync + 'static {
    /// Stores the table's commitment if none exists; returns the stored one (callers refuse to
    /// start when it differs from their chain: a commitment is never silently replaced).
    async fn commit_fairness(&self, c: &Commitment) -> Result<Commitment>;

    async fn commitment(&self, table: &str) -> Result<Option<Commitment>>;

    /// Sets the salt of `table`'s commitment if no round has been played yet (a salt no round
    /// used can still be chosen — e.g. a public value announced after the terminating hash).
    /// `false` once any round exists: from then on the salt is final.
    async fn fix_salt(&self, table: &str, salt: &str) -> Result<bool>;

    /// Stores `key` (hex) as `table`'s signing key if it has none yet, and returns the stored one:
    /// callers refuse to start when it is not theirs (every receipt must verify against the one
    /// published key).
    async fn adopt_signing_key(&self, table: &str, key: &str) -> Result<String>;
}

/// What the round leader writes: leadership terms, rounds and their settlement. Every write
/// is fenced by the writer's term: refused with `Fenced` once a newer term holds the table.
#[async_trait]
pub trait RoundBook: Send + Sync + 'static {
    /// Records `term` as the table's newest leadership term; refuses an older one (fencing).
    async fn claim_term(&self, table: &str, term: u64) -> Result<()>;

    async fn current_term(&self, table: &str) -> Result<u64>;

    async fn last_round(&self, table: &str) -> Result<Option<RoundRecord>>;

    async fn open_rounds(&self, table: &str) -> Result<Vec<RoundRecord>>;

    /// Persists a round before any bet can reference it (fenced by `term`).
    async fn open_round(&self, table: &str, term: u64, plan: &RoundPlan) -> Result<()>;

    /// A leader's payout of a decided cash-out (an auto-cash-out, or one a void honours): like
    /// [`Wagers::settle_cash_out`] with the cash-out's own key, and fenced like every leader
    /// write: refused with `Fenced` once a newer term holds the table.
    async fn settle_leader_cash_out(
        &self,
        table: &str,
        term: u64,
        c: &CashOut,
        now_ms: i64,
    ) -> Result<Option<i64>>;

    /// Settles every open bet of the round (winners paid, the rest lost) and reveals the round
    /// (its hash and crash point are stored only now). Returns (player_id, balance) of players
    /// whose balance changed.
    async fn finish_round(
        &self,
        table: &str,
        term: u64,
        number: u64,
        reveal: &Reveal,
        crashed_at_ms: i64,
        settlements: &[Settlement],
    ) -> Result<Vec<(String, i64)>>;

    /// Voids a round: every open bet refunded; bets already won stay won. Returns changed balances.
    async fn void_round(
        &self,
        table: &str,
        term: u64,
        number: u64,
        reveal: &Reveal,
        now_ms: i64,
    ) -> Result<Vec<(String, i64)>>;
}

/// Players and their balances.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn register(
        &self,
        username: &str,
        password_hash: &str,
        initial_credit: i64,
        now_ms: i64,
    ) -> Result<PlayerRecord>;

    async fn player_by_name(&self, username: &str) -> Result<Option<PlayerRecord>>;

    /// One read by primary key: what every authenticated request resolves its token against.
    async fn player(&self, id: &str) -> Result<Option<PlayerRecord>>;

    /// Ends every session of the player: bumps its token version, so every token issued before
    /// is refused on every node. Returns the new version; `None` if there is no such player.
    async fn revoke_tokens(&self, player_id: &str) -> Result<Option<u64>>;

    /// Credits (positive) or debits (negative) a player; idempotent by `key`. Returns the balance.
    async fn adjust(&self, username: &str, amount: i64, key: &str, now_ms: i64) -> Result<i64>;
}

/// Bets as players place and cash them out.
#[async_trait]
pub trait Wagers: Send + Sync + 'static {
    /// The bet with this idempotency key, if the player already placed it.
    async fn bet_by_key(&self, player_id: &str, key: &str) -> Result<Option<BetRecord>>;

    /// Debits the stake and stores the bet, once per (player, key). Refused unless the round is open.
    async fn place_bet(&self, bet: &BetRecord) -> Result<(BetRecord, i64)>;

    /// Pays a decided cash-out (recording the request's idempotency key); a no-op returning
    /// `None` if the bet is already settled.
    async fn settle_cash_out(
        &self,
        c: &CashOut,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<i64>>;

    async fn bet(&self, bet_id: &str) -> Result<Option<BetRecord>>;
}

/// What the API reads back: rounds, bets, the leaderboard and the table's figures.
#[async_trait]
pub trait History: Send + Sync + 'static {
    async fn round(&self, table: &str, number: u64) -> Result<Option<RoundRecord>>;

    async fn round_bets(&self, table: &str, number: u64) -> Result<Vec<BetRecord>>;

    /// Finished rounds, newest first.
    async fn rounds(&self, table: &str, limit: u32) -> Result<Vec<RoundRecord>>;

    /// Finished rounds numbered after `after`, oldest first, at most `limit` (the round log reads
    /// what it has not appended yet).
    async fn rounds_after(&self, table: &str, after: u64, limit: u32) -> Result<Vec<RoundRecord>>;

    async fn player_bets(&self, player_id: &str, limit: u32) -> Result<Vec<BetRecord>>;

    async fn leaderboard(&self, limit: u32) -> Result<Vec<LeaderboardRow>>;

    async fn stats(&self, table: &str) -> Result<TableStats>;
}

/// The conservation audit and a liveness probe.
#[async_trait]
pub trait Auditing: Send + Sync + 'static {
    async fn audit(&self) -> Result<Audit>;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
}

/// Events buffered per receiver (the fan-out writers, the private-event router). A fan-out writer
/// that falls this far behind (about 10 s of ticks plus a burst of bets) resynchronises its sockets
/// from fresh snapshots instead of holding memory.
pub const BUS_CAPACITY: usize = 1024;

/// A serialised event as the WebSocket sends it: a reference-counted UTF-8 buffer (tungstenite's
/// text type), so the bus hands the same buffer to every receiver without a copy, and a text that
/// is known to be UTF-8 is never checked again. The fan-out frames it once per writer and every
/// socket sends those bytes. It carries nothing of HTTP.
pub type Frame = tokio_tungstenite::tungstenite::Utf8Bytes;

pub fn to_json(msg: &ServerMessage) -> Result<Frame> {
    serde_json::to_string(msg)
        .map(Into::into)
        .map_err(|e| Error::Internal(format!("serialising an event: {e}")))
}

/// An event for every player of the table, serialised once and shared by every socket.
#[derive(Debug, Clone)]
pub struct PublicEvent {
    /// Per-table sequence number assigned by the publisher, so receivers can detect gaps.
    /// [`PublicEvent::RESYNC`] (0) is not an event: the bus missed events (a gap, lag or a
    /// reconnect) and every socket must resynchronise from a fresh snapshot.
    pub seq: u64,
    pub json: Frame,
}

impl PublicEvent {
    pub const RESYNC: u64 = 0;

    pub fn resync() -> PublicEvent {
        PublicEvent {
            seq: Self::RESYNC,
            json: Frame::from_static(""),
        }
    }
}

/// An event for one player's sockets only.
#[derive(Debug, Clone)]
pub struct PrivateEvent {
    pub player_id: String,
    pub json: Frame,
}

/// Moves round events from the leader (and bet events from any node) to every node's sockets.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, msg: &crate::protocol::ServerMessage) -> Result<()>;
    /// A leader's round event: refused with [`Error::Fenced`](crate::error::Error::Fenced) when
    /// `term` is no longer the table's newest, so a deposed leader's late ticks or crash never
    /// reach players. In process there is only one leader.
    async fn publish_as_leader(
        &self,
        _term: u64,
        msg: &crate::protocol::ServerMessage,
    ) -> Result<()> {
        self.publish(msg).await
    }
    async fn publish_private(
        &self,
        player_id: &str,
        msg: &crate::protocol::ServerMessage,
    ) -> Result<()>;
    /// Events for all sockets of this node.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<PublicEvent>;
    /// Events for one player on this node.
    fn subscribe_private(&self) -> tokio::sync::broadcast::Receiver<PrivateEvent>;
}

/// One player's chat mute: until when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Mute {
    pub username: String,
    pub until_ms: i64,
}

/// The table's chat: posting (mute and rate limit checked, the line kept in the history and sent
/// to every socket of the table, in one order), the recent history and the mute list. In process
/// when standalone; in Redis for a fleet, so every node shares the history, the rate limit and
/// the mutes.
#[async_trait]
pub trait ChatRoom: Send + Sync + 'static {
    /// Posts a cleaned line (`crashfleet_core::chat::clean`) for its `username`: refused with
    /// `Muted` or `ChatThrottled`, and nothing is sent then.
    async fn post(&self, line: &crate::protocol::ChatLine) -> Result<()>;
    /// The latest lines, oldest first: at most `chat::HISTORY`, none older than
    /// `chat::HISTORY_TTL_MS`.
    async fn recent(&self) -> Result<Vec<crate::protocol::ChatLine>>;
    /// Mutes `username` until `until_ms`; a time in the past lifts the mute.
    async fn mute(&self, username: &str, until_ms: i64) -> Result<()>;
    /// The mutes in force now.
    async fn mutes(&self) -> Result<Vec<Mute>>;
}

/// Decides bets and cash-outs against one authoritative clock and the round's state, atomically.
#[async_trait]
pub trait Arbiter: Send + Sync + 'static {
    /// A new leader claims the arbiter for `term` before its first write (raising the arbiter's
    /// fence); refused with `Fenced` if a newer term already claimed it.
    async fn claim_term(&self, _term: u64, _node_id: &str) -> Result<()> {
        Ok(())
    }
    /// Starts deciding for a new round (leader only).
    async fn open_round(&self, term: u64, plan: RoundPlan) -> Result<()>;
    /// The public view of the current round and its bets.
    async fn current(&self) -> Option<(RoundView, Vec<BetView>)>;
    /// The round taking bets right now, if any (a cheaper question than [`Arbiter::current`]).
    async fn betting_round(&self) -> Result<Option<u64>> {
        Ok(self
            .current()
            .await
            .filter(|(view, _)| view.phase == crate::protocol::Phase::Betting)
            .map(|(view, _)| view.number))
    }
    async fn place_bet(&self, round: u64, req: BetRequest) -> Result<i64>;
    async fn cancel_bet(&self, round: u64, bet_id: &str);
    /// A manual cash-out, decided against the authoritative clock. `key` is the request's
    /// idempotency key: a retry with the key of the cash-out that won the bet gets the same
    /// decision back (the first answer may have been lost on the way).
    async fn cash_out(&self, bet_id: &str, player_id: &str, key: &str) -> Result<CashOut>;
    /// Auto-cash-outs due by now (leader only), and when the next one falls due.
    async fn due_auto_cashouts(&self, term: u64) -> Result<(Vec<CashOut>, Option<i64>)>;
    /// Ends the round (leader only): late auto-cash-outs and every bet's outcome.
    async fn crash(&self, term: u64) -> Result<(Vec<CashOut>, Vec<Settlement>)>;
    /// Forgets the round (voided or finished elsewhere).
    async fn clear(&self);
    /// A new leader (term `term`) takes over round `number` if this arbiter still holds it and it
    /// has not crashed: from then on only `term` may crash it. `None` when the state is gone (an
    /// in-process arbiter after a restart, a Redis that lost its data): the round is then voided.
    async fn adopt(&self, term: u64, number: u64) -> Result<Option<RoundPlan>>;
    /// Stops deciding for round `number` (it is being voided): from this instant every bet and
    /// cash-out on it is refused. Returns the cash-outs it had already accepted, which the void
    /// honours (pays) instead of refunding.
    async fn void(&self, term: u64, number: u64) -> Result<Vec<CashOut>>;
    fn clock(&self) -> Arc<dyn Clock>;
}

pub use crashfleet_lease::{LeaderElector, Leadership};

/// Who leads the table, as the fleet view reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node_id: String,
    pub term: u64,
}

/// This node's figures, fresh at every call: what its heartbeats and the single-node views report.
pub type NodeReport = Arc<dyn Fn() -> NodeInfo + Send + Sync>;

/// What the node knows of its fleet: `GET /api/v1/fleet`, `GET /api/v1/lobby`, the part of
/// readiness that depends on the fleet's shared store, and this node's own heartbeat. The Redis
/// presence implements it for a fleet; a single node is its own fleet
/// ([`crate::standalone::LocalFleet`]). The HTTP edge only ever sees this port.
#[async_trait]
pub trait FleetView: Send + Sync + 'static {
    /// The table's leader (`None` while nobody holds it) and its live nodes, sorted by id.
    async fn fleet(&self) -> Result<(Option<LeaderInfo>, Vec<NodeInfo>)>;
    /// Every live table with its phase, multiplier and players online, sorted by region, table.
    async fn lobby(&self) -> Result<Vec<LobbyTable>>;
    /// `Err` when the store the view is read from cannot be reached: the node is not ready.
    async fn ready(&self) -> Result<()>;
    /// Announces this node until `shutdown`, then withdraws it at once rather than after its
    /// heartbeat expires, on a task of `tasks` (nothing for a single node).
    fn announce(self: Arc<Self>, tasks: &TaskTracker, shutdown: CancellationToken);
}

/// A settled bet's leaf in its round's settlement tree, from its stored columns: won (at its
/// cash-out multiplier), lost, or refunded; `internal` for a bet still open (a settled round has
/// none).
pub fn settlement_leaf(
    bet_id: String,
    player_id: &str,
    stake: i64,
    status: BetStatus,
    cashout_x100: Option<i64>,
    payout: Option<i64>,
) -> Result<crashfleet_core::settlement::SettlementLeaf> {
    use crashfleet_core::settlement::Outcome as Leaf;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    let (outcome, multiplier_x100) = match status {
        BetStatus::Won => (Leaf::Won, cashout_x100.map(unsigned)),
        BetStatus::Lost => (Leaf::Lost, None),
        BetStatus::Refunded => (Leaf::Refunded, None),
        BetStatus::Open => {
            return Err(Error::Internal(format!(
                "bet {bet_id} is still open in a settled round"
            )));
        }
    };
    Ok(crashfleet_core::settlement::SettlementLeaf {
        player: crashfleet_core::settlement::player_hash(player_id),
        bet_id,
        stake: unsigned(stake),
        outcome,
        multiplier_x100,
        payout: unsigned(payout.unwrap_or(0)),
    })
}
