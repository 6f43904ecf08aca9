//! Connection limits: counters that hand out a permit *before* a connection is admitted (so
//! concurrent arrivals cannot race past a cap), per client address and in total, plus the
//! per-socket frame budget. The permits release themselves when dropped, however the connection
//! ends. No I/O here; the listener (listener.rs) and the WebSocket gate (ws.rs) use them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The address a per-client cap is keyed by. Today the TCP peer: right for TCP connections, and
/// the one place to change when a proxy-forwarded client address (trusted proxies) should key the
/// WebSocket cap instead. IPv6 peers are keyed by their /64, the block one subscriber gets, so a
/// single host cannot dodge the cap by rotating addresses inside it.
pub fn client_key(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node-wide cap is reached.
    Full,
    /// This client address holds its share already.
    PerClient,
}

/// A node-wide count with a cap, taken with fetch-add-and-check so two arrivals can never both
/// see room for one.
#[derive(Debug)]
pub struct Counter {
    open: AtomicUsize,
    max: usize,
}

impl Counter {
    pub fn new(max: usize) -> Arc<Counter> {
        Arc::new(Counter {
            open: AtomicUsize::new(0),
            max,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// One slot, or `None` at the cap.
    pub fn try_acquire(self: &Arc<Self>) -> Option<CounterPermit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(CounterPermit(self.clone()))
    }
}

/// Holds one slot of a [`Counter`] until dropped.
#[derive(Debug)]
pub struct CounterPermit(Arc<Counter>);

impl Drop for CounterPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open connections per client address, capped (0 = no cap). The map only holds addresses with
/// an open connection, so it cannot grow past the number of open connections.
#[derive(Debug)]
pub struct PerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerClient {
    pub fn new(max: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    pub fn try_acquire(self: &Arc<Self>, key: IpAddr) -> Option<PerClientPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if self.max > 0 && *n >= self.max {
            if *n == 0 {
                open.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(PerClientPermit {
            owner: self.clone(),
            key,
        })
    }

    /// Open connections of `key` (for tests and diagnostics).
    pub fn open(&self, key: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&key).copied().unwrap_or(0)
    }
}

/// Holds one of a client's slots until dropped.
#[derive(Debug)]
pub struct PerClientPermit {
    owner: Arc<PerClient>,
    key: IpAddr,
}

impl Drop for PerClientPermit {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Both slots a connection needs: its client's and the node's. Taken together or not at all.
#[derive(Debug)]
pub struct Admission {
    _client: Option<PerClientPermit>,
    _total: CounterPermit,
}

/// A per-client cap under a node-wide cap.
#[derive(Debug, Clone)]
pub struct Gate {
    pub per_client: Arc<PerClient>,
    pub total: Arc<Counter>,
}

impl Gate {
    pub fn new(per_client: usize, total: usize) -> Gate {
        Gate {
            per_client: PerClient::new(per_client),
            total: Counter::new(total),
        }
    }

    /// Admits a connection from `key`; `per_client: false` skips the per-address cap (a trusted
    /// proxy's connection), never the total.
    pub fn admit(&self, key: IpAddr, per_client: bool) -> Result<Admission, Refused> {
        let client = if per_client {
            Some(self.per_client.try_acquire(key).ok_or(Refused::PerClient)?)
        } else {
            None
        };
        let total = self.total.try_acquire().ok_or(Refused::Full)?;
        Ok(Admission {
            _client: client,
            _total: total,
        })
    }
}

/// A token bucket: `rate` frames a second on average, `burst` at once. Time is passed in, so it
/// is tested without a clock.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl FrameBudget {
    pub fn new(rate: u32, burst: u32, now: Instant) -> FrameBudget {
        FrameBudget {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Spends one token for a frame arriving at `now`; false when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Descriptors the node keeps for itself beyond its client connections: the ledger's pool
/// (SQLite holds the database, its WAL and shared-memory files per connection: 3 × the pool;
/// PostgreSQL one socket each), Redis (a client and a subscriber, a few sockets), the listeners,
/// the runtime's epoll and wake-up descriptors, stdio, and files opened on demand (/proc at each
/// scrape). That is under 64 at the default pool of 8; 256 leaves room for a pool of 32 and
/// whatever a library opens, and is a small share of the 20,000+ a node serving players runs with.
pub const FD_RESERVE: u64 = 256;

/// Client connections a process with `nofile` descriptors may hold: the limit less
/// [`FD_RESERVE`], and never less than 1 (a node below the reserve still serves someone).
pub fn client_connection_budget(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
}

/// The process's soft descriptor limit, if the platform tells.
pub fn nofile_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&s| s != rlimit::INFINITY)
}

/// Kernel send buffer of every client socket (SO_SNDBUF; the kernel books twice this). Left to
/// autotuning, a client that stops reading can pin up to `tcp_wmem`'s maximum (4 MiB by default)
/// of kernel memory per socket until the write timeout; fixed, at most this. Our frames are small
/// (a tick ~100 bytes, a snapshot a few KiB) and the largest response (the page's script) is under
/// 64 KiB, which this carries in one round trip; a player 200 ms away still gets 300+ KiB/s.
pub const SOCKET_SEND_BUFFER: usize = 64 * 1024;

/// Accept-error backoff: first and longest pause. When the process or the system is out of
/// descriptors (EMFILE/ENFILE) accepting again at once fails again and spins a core; a pause lets
/// closing connections return descriptors. 100 ms at most keeps the listener responsive once
/// they do.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// The WebSocket connection limits (flags in config.rs say why each value).
#[derive(Debug)]
pub struct WsLimits {
    /// Open WebSocket connections per client address.
    pub per_client: Arc<PerClient>,
    /// The server pings this often.
    pub ping_interval: Duration,
    /// Closed after this long without hearing anything from the client.
    pub idle_timeout: Duration,
    /// Closed when a frame cannot be written (or flushed) within this.
    pub write_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_never_hands_out_more_than_its_cap() {
        let c = Counter::new(2);
        let a = c.try_acquire();
        let b = c.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(c.try_acquire().is_none());
        drop(a);
        assert!(c.try_acquire().is_some());
        assert_eq!(
            c.open(),
            1,
            "the failed and dropped permits gave their slot back"
        );
    }

    #[test]
    fn counter_holds_under_concurrent_arrivals() {
        let c = Counter::new(10);
        let held = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, held) = (c.clone(), held.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if let Some(p) = c.try_acquire() {
                            held.lock().expect("lock").push(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(held.lock().expect("lock").len(), 10);
    }

    #[test]
    fn per_client_caps_each_address_and_forgets_closed_ones() {
        let gate = Gate::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = gate.admit(a, true).expect("a1");
        let _a2 = gate.admit(a, true).expect("a2");
        assert_eq!(gate.admit(a, true).err(), Some(Refused::PerClient));
        let _b1 = gate.admit(b, true).expect("b1");
        assert_eq!(gate.admit(b, true).err(), Some(Refused::Full));
        assert_eq!(
            gate.per_client.open(b),
            1,
            "a refusal by the total gives the client slot back"
        );
        drop(a1);
        assert_eq!(gate.per_client.open(a), 1);
        assert!(gate.admit(b, true).is_ok());
        // A trusted proxy's connections skip the per-address cap, never the total.
        let proxy = Gate::new(1, 3);
        let p1 = proxy.admit(a, false).expect("p1");
        let _p2 = proxy
            .admit(a, false)
            .expect("p2: over the per-address cap of 1");
        let _p3 = proxy.admit(a, false).expect("p3");
        assert_eq!(proxy.admit(a, false).err(), Some(Refused::Full));
        drop(p1);
        assert_eq!(proxy.per_client.open(a), 0, "no per-address slot was taken");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:5".parse().expect("addr");
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:6".parse().expect("addr");
        let c: SocketAddr = "[2001:db8:1:3::1]:6".parse().expect("addr");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: SocketAddr = "[::ffff:10.1.2.3]:80".parse().expect("addr");
        assert_eq!(client_key(v4), "10.1.2.3".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn frame_budget_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(20, 40, t0);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 40);
        // One second later: 20 more, not 40.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 20);
        // Refilled to the burst, never past it.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 40);
    }

    #[test]
    fn the_budget_keeps_a_reserve() {
        assert_eq!(client_connection_budget(20_000), 19_744);
        assert_eq!(client_connection_budget(100), 1);
    }
}
