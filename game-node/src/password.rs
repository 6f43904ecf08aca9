//! The password threads: every argon2 hash and check of a node runs here, behind a bounded queue
//! with a per-client share, and a job whose requester has gone is skipped instead of computed.
//!
//! Why it is shaped like this (a login flood is the cheapest way to starve a node of CPU: each
//! guess costs the node ~20-40 ms of argon2 and the attacker one small request):
//! - **Dedicated threads**, not tokio's blocking pool: each argon2 call works in 19 MiB; on the
//!   blocking pool (up to 512 threads) a burst of registrations spread those blocks over many
//!   malloc arenas that keep them — a load test of 300 sign-ups left a node at 1.7 GB RSS. Two
//!   threads (or one per core up to four) bound both that memory and the CPU sign-ups can take from
//!   the game.
//! - **A bounded queue** ([`QUEUE_PER_THREAD`]): an unbounded one let 720 logins queue and a real
//!   player's login wait 11.4 s. When it is full the request is answered `busy` (503 with
//!   `Retry-After`) at once, without work.
//! - **A share per client** ([`JOBS_PER_CLIENT`]): jobs queued or running for one client address.
//!   Without it a few addresses fill the whole queue and everybody else gets `busy`.
//! - **Abandoned jobs are skipped**: a request whose client disconnected drops its answer channel;
//!   the thread sees that (`oneshot::Sender::is_closed`) and does not compute the hash.
//!
//! `crashfleet_password_jobs_total{outcome}` counts every job: `run`, `skipped` (abandoned before
//! a thread took it) and `refused` (queue or client share full).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// One argon2id computation at the default cost (m = 19 MiB, t = 2): 15.7-16.6 ms measured on the
/// development machines with the cores shared (`cargo test -p game-node --lib argon2_cost --
/// --ignored --nocapture`); rounded up to 25 ms for slower or busier cores.
pub const ARGON2_MS: u64 = 25;
/// How long a job may wait in a full queue: a login should answer well inside a second.
pub const TARGET_WAIT_MS: u64 = 500;
/// Queue slots per password thread: a full queue drains in `QUEUE_PER_THREAD × ARGON2_MS` =
/// 16 × 25 ms = 400 ms ≤ [`TARGET_WAIT_MS`], leaving room for slower, shared cores.
pub const QUEUE_PER_THREAD: usize = (TARGET_WAIT_MS / ARGON2_MS) as usize * 4 / 5;
/// Password jobs one client address may have queued or running at once. A person logs in or
/// registers one request at a time; two leaves room for a double click. With 2 threads the
/// queue holds 32 jobs, so it takes more than 16 addresses to fill it: 8 flooding addresses
/// leave half of it to everybody else.
pub const JOBS_PER_CLIENT: usize = 2;
/// `Retry-After` of a refused job: a full queue drains within [`TARGET_WAIT_MS`], so one second
/// (the header's unit) is always enough for a slot to free up.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// What the metric counts a job as.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Run,
    Skipped,
    Refused,
}

fn count(outcome: Outcome) {
    let label = match outcome {
        Outcome::Run => "run",
        Outcome::Skipped => "skipped",
        Outcome::Refused => "refused",
    };
    metrics::counter!("crashfleet_password_jobs_total", "outcome" => label).increment(1);
}

/// A queued job: it computes and answers, or — if nobody waits for the answer any more — returns
/// without computing. Returns whether it ran.
type Job = Box<dyn FnOnce() -> bool + Send>;

/// The key a client's share is counted under: the address itself, or for IPv6 its /64 (one
/// subscriber usually holds a whole /64, so per-address shares would be free for the taking).
fn share_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Jobs queued or running per client. Entries exist only while a client has jobs, so the map
/// holds at most queue capacity + threads entries.
#[derive(Default)]
struct Shares(Mutex<HashMap<IpAddr, usize>>);

impl Shares {
    fn take(self: &Arc<Self>, key: IpAddr) -> Option<ShareGuard> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= JOBS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ShareGuard {
            shares: self.clone(),
            key,
        })
    }
}

/// Gives the client's slot back however the job ends: run, skipped, or refused by a full queue.
struct ShareGuard {
    shares: Arc<Shares>,
    key: IpAddr,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut m = self.shares.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// A node's password threads. Dropping the pool (with the node) stops its threads once the
/// queue is empty.
pub struct PasswordPool {
    queue: SyncSender<Job>,
    shares: Arc<Shares>,
    threads: usize,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        // The job counts itself (run or skipped) before it answers.
        let _ran = job();
    }
}

impl PasswordPool {
    /// Starts two threads, or one per core up to four.
    pub fn start() -> PasswordPool {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        PasswordPool::with_threads(threads)
    }

    pub fn with_threads(threads: usize) -> PasswordPool {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * QUEUE_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            match std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || worker(rx))
            {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start password thread {i}: {e}"),
            }
        }
        PasswordPool {
            queue: tx,
            shares: Arc::default(),
            threads: started,
        }
    }

    /// Takes a slot of `client`'s share, or refuses at once with `busy`. Handlers admit before
    /// any other work (a ledger read), so a refused request costs next to nothing.
    pub fn admit(&self, client: IpAddr) -> Result<Admission<'_>> {
        match self.shares.take(share_key(client)) {
            Some(share) => Ok(Admission { pool: self, share }),
            None => Err(refused()),
        }
    }

    /// Runs `f` on a password thread for `client` ([`PasswordPool::admit`] then
    /// [`Admission::run`]).
    pub async fn run<T: Send + 'static>(
        &self,
        client: IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        self.admit(client)?.run(f).await
    }
}

fn refused() -> Error {
    count(Outcome::Refused);
    Error::Busy {
        what: "password work",
        retry_after_secs: BUSY_RETRY_AFTER_SECS,
    }
}

/// A client's slot, held from admission until its job is done, skipped or refused.
pub struct Admission<'a> {
    pool: &'a PasswordPool,
    share: ShareGuard,
}

impl Admission<'_> {
    /// Queues `f`, or refuses with `busy` when the queue is full. If the caller stops waiting
    /// (its future dropped: the client went away), `f` is never run.
    pub async fn run<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let share = self.share;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                count(Outcome::Skipped);
                return false;
            }
            let out = f();
            // The slot frees and the job is counted when the work is done, before the caller
            // hears of it (so whoever reads the counter after the answer sees this job).
            drop(share);
            count(Outcome::Run);
            let _ = tx.send(out);
            true
        });
        match self.pool.queue.try_send(job) {
            Ok(()) => {}
            // The refused job (and with it the client's slot) is dropped here.
            Err(TrySendError::Full(_)) => return Err(refused()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Internal("password threads stopped".into()));
            }
        }
        rx.await
            .map_err(|_| Error::Internal("password thread failed".into()))
    }

    /// [`crate::auth::hash_password`] on the password threads.
    pub async fn hash(self, password: String) -> Result<String> {
        self.run(move || crate::auth::hash_password(&password))
            .await?
    }

    /// [`crate::auth::verify_password`] on the password threads; `false` without a hash (an
    /// unknown user costs the same work, so timing does not reveal which usernames exist).
    pub async fn verify(self, password: String, hash: Option<String>) -> Result<bool> {
        self.run(move || match hash {
            Some(h) => crate::auth::verify_password(&password, &h),
            None => {
                let _ = crate::auth::hash_password(&password);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// A job that blocks its thread until `gate` is released.
    fn blocker(gate: &Arc<(Mutex<bool>, std::sync::Condvar)>) -> impl FnOnce() + Send + 'static {
        let gate = gate.clone();
        move || {
            let (m, cv) = &*gate;
            let mut open = m.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn release(gate: &Arc<(Mutex<bool>, std::sync::Condvar)>) {
        *gate.0.lock().expect("gate") = true;
        gate.1.notify_all();
    }

    #[tokio::test]
    async fn a_client_gets_its_share_and_then_busy_and_others_still_get_in() {
        let pool = Arc::new(PasswordPool::with_threads(1));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut held = Vec::new();
        for _ in 0..JOBS_PER_CLIENT {
            let (p, f) = (pool.clone(), blocker(&gate));
            held.push(tokio::spawn(async move { p.run(A, f).await }));
        }
        // Wait until both of A's jobs are counted against its share.
        for _ in 0..200 {
            if pool.shares.0.lock().expect("shares").get(&A) == Some(&JOBS_PER_CLIENT) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let refused = pool.run(A, || ()).await;
        assert_eq!(
            refused,
            Err(Error::Busy {
                what: "password work",
                retry_after_secs: BUSY_RETRY_AFTER_SECS
            })
        );
        let other = {
            let p = pool.clone();
            tokio::spawn(async move { p.run(B, || 7).await })
        };
        release(&gate);
        for h in held {
            assert_eq!(h.await.expect("join"), Ok(()));
        }
        assert_eq!(other.await.expect("join"), Ok(7));
        // Every slot came back: the map is empty again.
        assert!(pool.shares.0.lock().expect("shares").is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = Arc::new(PasswordPool::with_threads(1));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let capacity = QUEUE_PER_THREAD;
        let mut held = Vec::new();
        // One running + `capacity` queued, each from its own address.
        for i in 0..=capacity {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(
                10,
                1,
                (i / 250) as u8,
                (i % 250) as u8,
            ));
            let (p, f) = (pool.clone(), blocker(&gate));
            held.push(tokio::spawn(async move { p.run(ip, f).await }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for _ in 0..200 {
            if pool.shares.0.lock().expect("shares").len() == capacity + 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let refused = pool.run(B, || ()).await;
        assert!(matches!(refused, Err(Error::Busy { .. })), "{refused:?}");
        release(&gate);
        for h in held {
            assert_eq!(h.await.expect("join"), Ok(()));
        }
    }

    #[tokio::test]
    async fn an_abandoned_job_is_not_run() {
        let pool = Arc::new(PasswordPool::with_threads(1));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let running = {
            let (p, f) = (pool.clone(), blocker(&gate));
            tokio::spawn(async move { p.run(A, f).await })
        };
        let ran = Arc::new(AtomicUsize::new(0));
        let abandoned = {
            let (p, ran) = (pool.clone(), ran.clone());
            tokio::spawn(async move {
                p.run(B, move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .await
            })
        };
        for _ in 0..200 {
            if pool.shares.0.lock().expect("shares").contains_key(&B) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        release(&gate);
        assert_eq!(running.await.expect("join"), Ok(()));
        // A later job runs after the abandoned one was skipped.
        assert_eq!(pool.run(A, || 1).await, Ok(1));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the abandoned job ran");
        assert!(pool.shares.0.lock().expect("shares").is_empty());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(share_key(a), share_key(b));
        assert_ne!(share_key(a), share_key(c));
        assert_eq!(share_key(A), A);
    }

    /// Measures one argon2id hash at the default cost (the figure behind [`ARGON2_MS`]).
    #[test]
    #[ignore = "a measurement, not a check: run with --ignored --nocapture"]
    fn argon2_cost() {
        let n = 20;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = crate::auth::hash_password("correct horse battery").expect("hash");
        }
        let per = t.elapsed() / n;
        println!("argon2id (m=19456 KiB, t=2, p=1): {per:?} per hash over {n} hashes");
    }
}
