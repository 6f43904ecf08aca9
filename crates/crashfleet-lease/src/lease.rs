//! The `kubernetes` leader election: a `coordination.k8s.io/v1` Lease per table, in the manner of
//! client-go's leaderelection, with fencing terms.
//!
//! - `holderIdentity` is the node id; the term is `leaseTransitions` after this node's takeover,
//!   raised to the ledger's newest term + 1 so a deleted and recreated Lease never restarts terms.
//! - Expiry is judged like client-go: by when *this node observed* the current record change
//!   (resourceVersion) plus `leaseDurationSeconds`, on the local monotonic clock — never by
//!   comparing the holder's `renewTime` with the local wall clock, so clock skew between nodes
//!   cannot make a live leader look expired.
//! - Every write is a `replace` carrying the resourceVersion read (optimistic concurrency): two
//!   candidates racing for an expired Lease cannot both win.
//! - The holder renews every retry period and steps down (cancels [`Leadership::lost`]) when no
//!   renewal has succeeded for the renew deadline, measured from when the last successful renewal
//!   was sent: before any other node can see the lease expire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crashfleet_core::error::{Error, Result};

use crate::{ElectionTimings, LeaderElector, Leadership, TermFloor};

pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    node_id: String,
    timings: ElectionTimings,
    /// Where fencing terms must stay above (the table's ledger); `None` for leases that fence
    /// nothing (the operator's own).
    ledger: Option<Arc<dyn TermFloor>>,
    table: String,
    /// The last record seen and when this node first saw it (for expiry).
    observed: Mutex<Option<(String, Instant)>>,
    /// The renewal task's token while leading.
    held: Mutex<Option<CancellationToken>>,
    /// The newest round the leader finished, published on the Lease with each renewal.
    rounds_played: Arc<AtomicU64>,
    /// [`PAUSED_ANNOTATION`] as last read with the Lease.
    paused: Arc<AtomicBool>,
    /// Where the renewal task runs, so the owner's shutdown can wait for it.
    tasks: TaskTracker,
}

/// Annotation on the Lease with the newest finished round (read by the operator for
/// `status.fairness.roundsPlayed` and chain-exhaustion warnings).
pub const ROUNDS_PLAYED_ANNOTATION: &str = "crashfleet.dev/rounds-played";
/// Annotation on the Lease that pauses the table when `"true"` (written by the operator from
/// `spec.paused`; the holder keeps it, since every write carries the record it read).
pub const PAUSED_ANNOTATION: &str = "crashfleet.dev/paused";

/// Whether `lease` carries [`PAUSED_ANNOTATION`] `"true"`.
pub fn lease_paused(lease: &Lease) -> bool {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The namespace of the Lease when `--lease-namespace` is not given: `$POD_NAMESPACE`, else the
/// in-cluster service account's namespace, else the client's default (kubeconfig context).
pub fn default_namespace(client: &kube::Client) -> String {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.trim().is_empty()
    {
        return ns.trim().to_string();
    }
    if let Ok(ns) =
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        && !ns.trim().is_empty()
    {
        return ns.trim().to_string();
    }
    client.default_namespace().to_string()
}

fn api_error(e: kube::Error) -> Error {
    Error::Unavailable(format!("kubernetes API: {e}"))
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaseElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        node_id: &str,
        timings: ElectionTimings,
        ledger: Arc<dyn TermFloor>,
        table: &str,
    ) -> LeaseElector {
        LeaseElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            node_id: node_id.to_string(),
            timings,
            ledger: Some(ledger),
            table: table.to_string(),
            observed: Mutex::new(None),
            held: Mutex::new(None),
            rounds_played: Arc::new(AtomicU64::new(0)),
            paused: Arc::new(AtomicBool::new(false)),
            tasks: TaskTracker::new(),
        }
    }

    /// A Lease whose terms guard no ledger (e.g. the operator's active/standby election).
    pub fn without_ledger(
        client: kube::Client,
        namespace: &str,
        name: &str,
        holder: &str,
        timings: ElectionTimings,
    ) -> LeaseElector {
        LeaseElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            node_id: holder.to_string(),
            timings,
            ledger: None,
            table: String::new(),
            observed: Mutex::new(None),
            held: Mutex::new(None),
            rounds_played: Arc::new(AtomicU64::new(0)),
            paused: Arc::new(AtomicBool::new(false)),
            tasks: TaskTracker::new(),
        }
    }

    /// Runs the renewal task on `tasks` (the owner's), so its shutdown waits for the renewals to
    /// stop.
    pub fn tracked_by(mut self, tasks: TaskTracker) -> LeaseElector {
        self.tasks = tasks;
        self
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up.
    fn lease_seconds(&self) -> i32 {
        self.timings
            .lease_duration
            .as_millis()
            .div_ceil(1_000)
            .max(1) as i32
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.node_id.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt; `Some((term, lease))` when this node now holds the Lease.
    async fn try_acquire(&self) -> Result<Option<(u64, Lease)>> {
        let ledger_term = match &self.ledger {
            Some(l) => l.newest_term(&self.table).await?,
            None => 0,
        };
        let floor = i32::try_from(ledger_term + 1)
            .map_err(|_| Error::Internal("leadership term out of range".into()))?;
        let Some(current) = self.api.get_opt(&self.name).await.map_err(api_error)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(floor)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => Ok(Some((floor as u64, l))),
                // Another candidate created it first.
                Err(e) if conflict(&e) => Ok(None),
                Err(e) => Err(api_error(e)),
            };
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(1).max(1) as u64);
        let expired = {
            let mut observed = self.observed.lock().await;
            let seen_at = match observed.as_ref() {
                Some((seen_rv, at)) if *seen_rv == rv => *at,
                _ => {
                    let at = Instant::now();
                    *observed = Some((rv.clone(), at));
                    at
                }
            };
            holder.is_none() || seen_at.elapsed() >= duration
        };
        if !expired {
            return Ok(None);
        }
        let transitions = (spec.lease_transitions.unwrap_or(0) + 1).max(floor);
        let mut next = current.clone();
        next.spec = Some(self.spec(transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                info!(previous = ?holder, "took over the expired Lease");
                Ok(Some((transitions as u64, l)))
            }
            Err(e) if conflict(&e) => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    }
}

/// Renews every retry period; cancels `lost` on a stolen Lease or a missed renew deadline.
#[allow(clippy::too_many_arguments)]
async fn renew(
    api: Api<Lease>,
    name: String,
    node_id: String,
    timings: ElectionTimings,
    mut lease: Lease,
    mut last_ok: Instant,
    lost: CancellationToken,
    rounds_played: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(timings.retry_period) => {}
            _ = lost.cancelled() => return,
        }
        let deadline = last_ok + timings.renew_deadline;
        let sent = Instant::now();
        let mut next = lease.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        let played = rounds_played.load(Ordering::Relaxed);
        if played > 0 {
            next.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ROUNDS_PLAYED_ANNOTATION.into(), played.to_string());
        }
        let pp = PostParams::default();
        let attempt = api.replace(&name, &pp, &next);
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(l)) => {
                paused.store(lease_paused(&l), Ordering::Relaxed);
                lease = l;
                last_ok = sent;
            }
            Ok(Err(e)) if conflict(&e) => {
                // Someone else wrote the Lease: see who holds it now.
                match api.get(&name).await {
                    Ok(l) => {
                        let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone());
                        if holder.as_deref() != Some(node_id.as_str()) {
                            warn!(holder = ?holder, "the Lease was taken by another node; stepping down");
                            lost.cancel();
                            return;
                        }
                        paused.store(lease_paused(&l), Ordering::Relaxed);
                        lease = l;
                    }
                    Err(e) => warn!(error = %e, "reading the Lease failed"),
                }
            }
            Ok(Err(e)) => warn!(error = %e, "renewing the Lease failed"),
            Err(_) => {}
        }
        if crate::renew_deadline_missed(last_ok, &timings, "Lease") {
            lost.cancel();
            return;
        }
    }
}

#[async_trait]
impl LeaderElector for LeaseElector {
    async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<Leadership>> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let sent = Instant::now();
            match self.try_acquire().await {
                Ok(Some((term, lease))) => {
                    self.paused.store(lease_paused(&lease), Ordering::Relaxed);
                    let lost = shutdown.child_token();
                    *self.held.lock().await = Some(lost.clone());
                    self.tasks.spawn(renew(
                        self.api.clone(),
                        self.name.clone(),
                        self.node_id.clone(),
                        self.timings,
                        lease,
                        sent,
                        lost.clone(),
                        self.rounds_played.clone(),
                        self.paused.clone(),
                    ));
                    info!(lease = %self.name, term, "acquired the Lease");
                    return Ok(Some(Leadership { term, lost }));
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "trying the Lease failed"),
            }
            if crate::retry_or_shutdown(&self.timings, shutdown).await {
                return Ok(None);
            }
        }
    }

    async fn release(&self) {
        let Some(lost) = self.held.lock().await.take() else {
            return;
        };
        lost.cancel();
        // Clear the holder so another replica takes over at its next retry, not after expiry.
        let released = tokio::time::timeout(Duration::from_millis(500), async {
            let mut lease = self.api.get(&self.name).await?;
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.node_id.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        })
        .await;
        match released {
            Ok(Ok(true)) => info!(lease = %self.name, "released the Lease"),
            Ok(Ok(false)) => info!(lease = %self.name, "the Lease was no longer ours"),
            Ok(Err(e)) => warn!(error = %e, "releasing the Lease failed; it expires by itself"),
            Err(_) => warn!("releasing the Lease timed out; it expires by itself"),
        }
    }

    fn hands_off(&self) -> bool {
        true
    }

    fn report_round(&self, number: u64) {
        self.rounds_played.fetch_max(number, Ordering::Relaxed);
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}
