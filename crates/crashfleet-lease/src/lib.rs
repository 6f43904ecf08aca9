//! Leader election for crashfleet tables: the election port every elector implements, the timings
//! they share, and the `kubernetes` elector, a `coordination.k8s.io/v1` Lease with fencing terms
//! and the annotations the operator and the game nodes exchange on it.
//!
//! Its own crate so that the operator (which writes the pause annotation, reads the rounds played
//! and elects its own active replica with a Lease) depends on the election and the pure core, not
//! on the game node's database, HTTP and Redis stacks.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use crashfleet_core::error::Result;
use tokio_util::sync::CancellationToken;

pub mod lease;

pub use lease::{LeaseElector, PAUSED_ANNOTATION, ROUNDS_PLAYED_ANNOTATION, lease_paused};

/// This node's leadership of its table for one term.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub term: u64,
    /// Cancelled when leadership is lost (or about to be: electors step down early).
    pub lost: CancellationToken,
}

#[async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// Waits until this node leads (or shutdown). `None` on shutdown.
    async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<Leadership>>;
    /// Gives leadership up promptly (graceful shutdown hand-over).
    async fn release(&self);
    /// Whether another replica can take over this node's round when its leadership ends (a fleet),
    /// rather than the round being voided at once (standalone).
    fn hands_off(&self) -> bool {
        false
    }
    /// The leader finished round `number`: electors that publish progress (the Lease, for the
    /// operator's status and chain-exhaustion warnings) record it.
    fn report_round(&self, _number: u64) {}
    /// Whether the table's operator has paused it, as this node last read it with its election
    /// record (the Lease's `crashfleet.dev/paused` annotation, or the Redis key
    /// `crashfleet:{<table>}:paused`): re-read with every renewal, so pausing or resuming a fleet
    /// reaches its leader within a retry period and rolls no pod. A paused leader finishes the
    /// round in progress and opens no new one until the flag is cleared.
    fn paused(&self) -> bool {
        false
    }
}

/// Where a table's fencing terms must stay above: the newest term its ledger has recorded. A
/// Lease deleted and recreated restarts `leaseTransitions` at zero; raising every new term above
/// this keeps terms increasing, so a deposed leader's late writes stay refused.
#[async_trait]
pub trait TermFloor: Send + Sync + 'static {
    async fn newest_term(&self, table: &str) -> Result<u64>;
}

/// Timings shared by both electors (see `game-node serve --help`).
///
/// Invariant (checked by `ServeConfig::validate`): `retry_period < renew_deadline < lease_duration`.
/// The leader renews every `retry_period`; if it has not renewed successfully for
/// `renew_deadline` (measured from when the last successful renewal was *sent*) it steps down,
/// which is before the lease can expire for anyone else, so two leaders never act at once.
///
/// The defaults (800 / 550 / 100 ms) put a dead leader's successor in charge ~0.8 s after the
/// kill (the lease left since its last renewal, plus up to one retry period). They leave the
/// holder 250 ms between stepping down and the earliest instant anyone else can hold the lease:
/// the margin for a renewal's reply delayed on the way back, a scheduling stall between two checks
/// and the two clocks' rate difference (a few parts per million: microseconds over 800 ms). A
/// holder stalled for longer than that margin (SIGSTOP) is fenced by its term instead. A renewal
/// must then fail five times in a row (every 100 ms) before the holder gives up: one slow Redis
/// or API-server reply does not depose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        ElectionTimings {
            lease_duration: Duration::from_millis(800),
            renew_deadline: Duration::from_millis(550),
            retry_period: Duration::from_millis(100),
        }
    }
}

/// The renewal deadline rule both electors follow: `true` (and logged) when no renewal has
/// succeeded for the renew deadline, counted from when the last successful one was sent, so the
/// holder steps down before its lease can expire for anyone else.
pub fn renew_deadline_missed(
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
pub async fn retry_or_shutdown(
    timings: &ElectionTimings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(timings.retry_period) => false,
        _ = shutdown.cancelled() => true,
    }
}
