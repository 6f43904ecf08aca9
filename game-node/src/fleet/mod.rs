//! Fleet mode: the adapters that let several `game-node` replicas serve one table together.
//!
//! - [`redis`]: the Redis event bus (pub/sub with sequence numbers and snapshot resync), the
//!   Redis arbiter (Lua scripts deciding bets and cash-outs against Redis `TIME`), the Redis
//!   leader lock (`SET NX PX` + `INCR` term) and the heartbeats behind `/api/v1/fleet` and
//!   `/api/v1/lobby`.
//! - [`lease`]: leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Money never lives here: PostgreSQL holds it, and every leader write to either store carries
//! the leader's term so a deposed leader's late writes are refused (fencing).

pub mod arbiter;
pub mod bus;
pub mod chat;
pub mod elector;
/// The Lease elector, from its own crate (the operator shares it).
pub use crashfleet_lease::lease;
pub mod presence;
pub mod redis;

pub use crashfleet_lease::{ElectionTimings, renew_deadline_missed, retry_or_shutdown};

/// The ledger as the Lease elector's term floor: new terms stay above the newest term the
/// ledger recorded for the table.
pub struct LedgerTerms(pub std::sync::Arc<dyn crate::ports::Ledger>);

#[async_trait::async_trait]
impl crashfleet_lease::TermFloor for LedgerTerms {
    async fn newest_term(&self, table: &str) -> crate::error::Result<u64> {
        self.0.current_term(table).await
    }
}
