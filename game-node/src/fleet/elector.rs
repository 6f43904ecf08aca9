//! The `redis` leader election: one lock per table, `SET NX PX` with a term from `INCR` in the
//! same script, renewed only by its holder, released on graceful shutdown.
//!
//! Safety against two leaders: the holder steps down (cancels [`Leadership::lost`]) when no
//! renewal has succeeded for `renew_deadline`, measured from when the last successful renewal was
//! *sent* — so before Redis can expire the lock (`lease_duration` after that renewal arrived)
//! and let another replica in. A leader paused past its lease (SIGSTOP, a long GC-like stall)
//! wakes up deposed; its writes carry its old term and both stores refuse them (fencing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::ElectionTimings;
use super::redis::{self as r, Keys, Scripts, int, text};
use crate::error::Result;
use crate::ports::{LeaderElector, Leadership, Ledger};

pub struct RedisElector {
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    node_id: String,
    timings: ElectionTimings,
    ledger: Arc<dyn Ledger>,
    /// The lock value ("<node> <term>") and the renewal task's token while leading.
    held: Mutex<Option<(String, CancellationToken)>>,
    /// The table's pause key as last read with the lock.
    paused: Arc<AtomicBool>,
    /// Where the renewal task runs, so the node's shutdown waits for it.
    tasks: TaskTracker,
}

impl RedisElector {
    pub fn new(
        client: Client,
        keys: Keys,
        scripts: Arc<Scripts>,
        node_id: &str,
        timings: ElectionTimings,
        ledger: Arc<dyn Ledger>,
        tasks: TaskTracker,
    ) -> RedisElector {
        RedisElector {
            client,
            keys,
            scripts,
            node_id: node_id.to_string(),
            timings,
            ledger,
            held: Mutex::new(None),
            paused: Arc::new(AtomicBool::new(false)),
            tasks,
        }
    }

    /// One attempt: `Some(term)` if this node now holds the lock.
    async fn try_acquire(&self) -> Result<Option<u64>> {
        // Terms only grow across the fleet's ledger, even if Redis lost its counter.
        let floor = self.ledger.current_term(self.keys.table()).await? + 1;
        let reply = r::run(
            &self.client,
            &self.scripts.acquire,
            vec![
                self.keys.leader(),
                self.keys.term(),
                self.keys.fence(),
                self.keys.paused(),
            ],
            vec![
                self.node_id.clone(),
                self.timings.lease_duration.as_millis().to_string(),
                floor.to_string(),
            ],
        )
        .await?;
        if int(reply.first()) != r::status::OK {
            return Ok(None);
        }
        self.paused.store(int(reply.get(2)) == 1, Ordering::Relaxed);
        Ok(Some(int(reply.get(1)).max(0) as u64))
    }
}

/// Renews every retry period; cancels `lost` on a lost lock or a missed renew deadline.
#[allow(clippy::too_many_arguments)]
async fn renew(
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    value: String,
    timings: ElectionTimings,
    mut last_ok: Instant,
    lost: CancellationToken,
    paused: Arc<AtomicBool>,
) {
    let lease_ms = timings.lease_duration.as_millis().to_string();
    loop {
        let deadline = last_ok + timings.renew_deadline;
        tokio::select! {
            _ = tokio::time::sleep(timings.retry_period) => {}
            _ = lost.cancelled() => return,
        }
        let sent = Instant::now();
        let attempt = r::run(
            &client,
            &scripts.renew,
            vec![keys.leader(), keys.paused()],
            vec![value.clone(), lease_ms.clone()],
        );
        // A renewal still in flight at the deadline counts as failed.
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(reply)) if int(reply.first()) == r::status::OK => {
                paused.store(int(reply.get(1)) == 1, Ordering::Relaxed);
                last_ok = sent;
            }
            Ok(Ok(reply)) => {
                warn!(holder = ?text(reply.get(1)), "the leader lock is held by someone else; stepping down");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "renewing the leader lock failed"),
            Err(_) => {}
        }
        if super::renew_deadline_missed(last_ok, &timings, "leader lock") {
            lost.cancel();
            return;
        }
    }
}

#[async_trait]
impl LeaderElector for RedisElector {
    async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<Leadership>> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let sent = Instant::now();
            match self.try_acquire().await {
                Ok(Some(term)) => {
                    let value = format!("{} {term}", self.node_id);
                    let lost = shutdown.child_token();
                    *self.held.lock().await = Some((value.clone(), lost.clone()));
                    self.tasks.spawn(renew(
                        self.client.clone(),
                        self.keys.clone(),
                        self.scripts.clone(),
                        value,
                        self.timings,
                        sent,
                        lost.clone(),
                        self.paused.clone(),
                    ));
                    info!(table = %self.keys.table(), term, "acquired the leader lock");
                    return Ok(Some(Leadership { term, lost }));
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "trying the leader lock failed"),
            }
            if super::retry_or_shutdown(&self.timings, shutdown).await {
                return Ok(None);
            }
        }
    }

    async fn release(&self) {
        let Some((value, lost)) = self.held.lock().await.take() else {
            return;
        };
        lost.cancel();
        let released = tokio::time::timeout(
            Duration::from_millis(500),
            r::run(
                &self.client,
                &self.scripts.release,
                vec![self.keys.leader()],
                vec![value],
            ),
        )
        .await;
        match released {
            Ok(Ok(reply)) if int(reply.first()) == r::status::OK => {
                info!(table = %self.keys.table(), "released the leader lock")
            }
            // Not ours any more, or Redis is unreachable: the lock expires by itself.
            _ => {
                info!(table = %self.keys.table(), "leader lock not released (expired or unreachable)")
            }
        }
    }

    fn hands_off(&self) -> bool {
        true
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}
