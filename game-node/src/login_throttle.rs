//! Per-username login throttling: after a few failed logins for one username, further attempts
//! are refused (429 `rate_limited` with `Retry-After`) for a delay that doubles with every
//! further failure, without running argon2. A success resets the username.
//!
//! Per-address limits cannot stop a guesser spread over many addresses (400 guesses on one
//! account took 7.6 s, bounded only by argon2's speed); this bounds guesses per account instead:
//! after [`FREE_FAILURES`] failures, 1 s, 2 s, 4 s … up to [`MAX_DELAY`] between guesses, so a
//! few hundred guesses take hours, while a player who mistypes a few times waits seconds.
//! Unknown usernames are tracked like real ones, so the throttle does not reveal which exist.
//! The cost is deliberate: an attacker can keep a known username locked (each failure re-arms
//! the delay); its owner can still log in on any node once the delay passes.
//!
//! **Per node.** The state lives in this node's memory: in a fleet of N replicas a guesser
//! spread over all of them gets N times the guesses (still exponentially slowed on each).
//! Sharing it (Redis) would make every login depend on Redis; for now it is per node.
//!
//! Pure: every method takes `now`, so tests drive the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures allowed before the first delay: a player may mistype a few times unhindered.
pub const FREE_FAILURES: u32 = 5;
/// The first delay, doubled by every further failure.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest delay (~5 minutes): long enough that guessing is hopeless (≤ 12 guesses an hour),
/// short enough that a locked-out owner is not locked out for long.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// A username with no failure for this long is forgotten (its count starts again from zero).
/// Longer than [`MAX_DELAY`], so an attacker cannot reset a count by waiting out one delay.
pub const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Most usernames tracked at once (~100 bytes each: ≤ ~10 MB). Every entry costs one argon2
/// check, which the password threads limit to at most ~250/s per node (4 threads at ~16 ms), so
/// pushing a live entry out (the oldest go first when the map is full) takes ≥ 400 s of the
/// node's whole password capacity — far more work than the few guesses it would buy.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// The delay after `failures` failures: none up to [`FREE_FAILURES`], then 1 s doubling.
pub fn delay_after(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
    Some(BASE_DELAY.saturating_mul(factor).min(MAX_DELAY))
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: std::sync::Mutex<HashMap<String, Entry>>,
}

/// Usernames are case-insensitive (the ledger's unique index is on `lower(username)`).
fn key(username: &str) -> String {
    username.to_lowercase()
}

impl LoginThrottle {
    pub fn new() -> LoginThrottle {
        LoginThrottle::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(remaining)` while `username` is throttled.
    pub fn check(&self, username: &str, now: Instant) -> Result<(), Duration> {
        match self
            .lock()
            .get(&key(username))
            .and_then(|e| e.blocked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed login; returns the delay it started, if any.
    pub fn failed(&self, username: &str, now: Instant) -> Option<Duration> {
        let mut m = self.lock();
        let k = key(username);
        if !m.contains_key(&k) && m.len() >= MAX_TRACKED {
            prune(&mut m, now);
        }
        let e = m.entry(k).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.last_failure) >= FORGET_AFTER {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let delay = delay_after(e.failures);
        e.blocked_until = delay.map(|d| now + d);
        delay
    }

    /// A successful login forgets the username's failures.
    pub fn succeeded(&self, username: &str) {
        self.lock().remove(&key(username));
    }

    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Drops forgotten entries; if that freed nothing, the oldest tenth, so the map stays under
/// the cap.
fn prune(m: &mut HashMap<String, Entry>, now: Instant) {
    m.retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
    if m.len() < MAX_TRACKED {
        return;
    }
    let mut by_age: Vec<(Instant, String)> =
        m.iter().map(|(k, e)| (e.last_failure, k.clone())).collect();
    let cut = (by_age.len() / 10).max(1);
    by_age.select_nth_unstable_by_key(cut - 1, |(t, _)| *t);
    for (_, k) in &by_age[..cut] {
        m.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_to_the_cap() {
        assert_eq!(delay_after(FREE_FAILURES - 1), None);
        assert_eq!(delay_after(FREE_FAILURES), Some(Duration::from_secs(1)));
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(Duration::from_secs(2)));
        assert_eq!(delay_after(FREE_FAILURES + 3), Some(Duration::from_secs(8)));
        assert_eq!(delay_after(FREE_FAILURES + 9), Some(MAX_DELAY));
        assert_eq!(delay_after(u32::MAX), Some(MAX_DELAY));
    }

    #[test]
    fn failures_throttle_a_username_until_the_delay_passes_and_success_resets() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(t.failed("Alice", t0), None);
            assert_eq!(t.check("alice", t0), Ok(()));
        }
        assert_eq!(t.failed("alice", t0), Some(Duration::from_secs(1)));
        assert_eq!(t.check("ALICE", t0), Err(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(t.check("alice", t1), Err(Duration::from_millis(600)));
        assert_eq!(
            t.check("bob", t1),
            Ok(()),
            "other usernames are not affected"
        );
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(t.check("alice", t2), Ok(()));
        assert_eq!(t.failed("alice", t2), Some(Duration::from_secs(2)));
        assert_eq!(t.check("alice", t2), Err(Duration::from_secs(2)));
        t.succeeded("alice");
        assert_eq!(t.check("alice", t2), Ok(()));
        assert_eq!(
            t.failed("alice", t2),
            None,
            "a success starts the count again"
        );
    }

    #[test]
    fn old_failures_are_forgotten() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("carol", t0);
        }
        assert_eq!(t.failed("carol", t0 + FORGET_AFTER), None);
    }

    #[test]
    fn memory_is_bounded() {
        let t = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            t.failed(&format!("u{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        let later = t0 + Duration::from_millis(MAX_TRACKED as u64);
        t.failed("newcomer", later);
        assert!(t.tracked() <= MAX_TRACKED, "{}", t.tracked());
        assert!(t.tracked() >= MAX_TRACKED * 8 / 10, "pruned too much");
        // The newest entries survive; the oldest were dropped.
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(&format!("u{}", MAX_TRACKED - 1), later);
        }
        assert!(t.check(&format!("u{}", MAX_TRACKED - 1), later).is_err());
        // Forgotten entries go first.
        let much_later = later + FORGET_AFTER + Duration::from_secs(1);
        for i in 0..MAX_TRACKED {
            t.failed(&format!("v{i}"), much_later);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }
}
