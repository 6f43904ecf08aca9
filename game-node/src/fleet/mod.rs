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

use std::time::Duration;

pub mod arbiter;
pub mod bus;
pub mod elector;
pub mod lease;
pub mod presence;
pub mod redis;

/// Timings shared by both electors (see `game-node serve --help`).
///
/// Invariant (checked by `ServeConfig::validate`): `retry_period < renew_deadline < lease_duration`.
/// The leader renews every `retry_period`; if it has not renewed successfully for
/// `renew_deadline` (measured from when the last successful renewal was *sent*) it steps down,
/// which is before the lease can expire for anyone else, so two leaders never act at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        ElectionTimings {
            lease_duration: Duration::from_millis(1_200),
            renew_deadline: Duration::from_millis(800),
            retry_period: Duration::from_millis(200),
        }
    }
}

/// The renewal deadline rule both electors follow: `true` (and logged) when no renewal has
/// succeeded for the renew deadline, counted from when the last successful one was sent, so the
/// holder steps down before its lease can expire for anyone else.
pub(crate) fn renew_deadline_missed(
    last_ok: tokio::time::Instant,
    timings: &ElectionTimings,
    what: &str,
) -> bool {
    let missed = tokio::time::Instant::now() >= last_ok + timings.renew_deadline;
    if missed {
        tracing::warn!(
            deadline_ms = timings.renew_deadline.as_millis() as u64,
            "no renewal of the {what} within the deadline; stepping down before it can expire"
        );
    }
    missed
}

/// Waits one retry period between acquisition attempts; `true` if shutdown came first.
pub(crate) async fn retry_or_shutdown(
    timings: &ElectionTimings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(timings.retry_period) => false,
        _ = shutdown.cancelled() => true,
    }
}
