//! Measurements of a load run: HDR latency histograms, outcome counters by error code, and the
//! JSON report (`--json FILE`) whose keys are a contract for scripts and the benchmark charts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records, in microseconds (a minute). Larger values are clamped:
/// a request that slow is a failure anyway, and it still counts in `max_ms` as a minute.
const MAX_MICROS: u64 = 60_000_000;

/// Codes the game answers to a well-formed request when the game's rules say no. They are part of a
/// healthy run (a cash-out that loses the race with the crash gets `too_late`), so they are counted
/// apart from errors that mean something is wrong (transport failures, 5xx, `internal`).
pub const REFUSAL_CODES: &[&str] = &[
    "betting_closed",
    "bet_limit",
    "insufficient_funds",
    "not_flying",
    "too_late",
    "already_settled",
    "max_payout",
];

/// A latency histogram in microseconds (3 significant digits), shareable across tasks.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    pub fn new() -> Self {
        // Several shards so thousands of connection tasks recording ticks do not queue on one lock.
        let shards = (0..16)
            .map(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, MAX_MICROS, 3)
                        .expect("static histogram bounds are valid"),
                )
            })
            .collect();
        Latency { shards }
    }

    pub fn record(&self, shard: usize, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS);
        self.record_micros(shard, us);
    }

    pub fn record_micros(&self, shard: usize, us: u64) {
        let shard = &self.shards[shard % self.shards.len()];
        let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(us.clamp(1, MAX_MICROS));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("static histogram bounds are valid");
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// How far apart one broadcast reached its sockets: for each event (keyed by its `server_time_ms`),
/// the first and last local receive time over every connection. The spread (last − first) is what
/// a fan-out costs the last player, independent of clocks: both ends are read here.
pub struct Spread {
    shards: Vec<Mutex<Receipts>>,
}

/// Per event (`server_time_ms`): first and last receive time (µs) and how many sockets got it.
type Receipts = std::collections::HashMap<i64, (i64, i64, u32)>;

impl Spread {
    pub fn new() -> Self {
        Spread {
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn record(&self, shard: usize, event_ms: i64, received_us: i64) {
        let mut m = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = m.entry(event_ms).or_insert((received_us, received_us, 0));
        e.0 = e.0.min(received_us);
        e.1 = e.1.max(received_us);
        e.2 += 1;
    }

    /// The spread of every event at least `min_sockets` connections received, as a histogram.
    pub fn histogram(&self, min_sockets: u32) -> Histogram<u64> {
        let mut all = Receipts::default();
        for s in &self.shards {
            for (&k, &(lo, hi, n)) in s.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let e = all.entry(k).or_insert((lo, hi, 0));
                e.0 = e.0.min(lo);
                e.1 = e.1.max(hi);
                e.2 += n;
            }
        }
        let mut h = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("static histogram bounds are valid");
        for (lo, hi, n) in all.into_values() {
            if n >= min_sockets.max(2) {
                h.saturating_record(u64::try_from(hi - lo).unwrap_or(0).clamp(1, MAX_MICROS));
            }
        }
        h
    }
}

impl Default for Spread {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles of a histogram in milliseconds (three decimals), or zeros when it is empty.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if h.is_empty() {
            return Percentiles {
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Percentiles {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Outcomes of one kind of request (bets, or cash-outs).
#[derive(Default)]
pub struct Outcomes {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub latency: Latency,
    codes: Mutex<BTreeMap<String, u64>>,
}

impl Outcomes {
    /// A request that got an answer other than success: `code` is the server's stable code, or
    /// `transport`, `timeout`, `http_<status>` when there was none.
    pub fn fail(&self, code: &str) {
        let mut m = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(code.to_string()).or_default() += 1;
    }

    pub fn codes(&self) -> BTreeMap<String, u64> {
        self.codes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests the game refused by its rules (answered, not failed).
    pub fn refused(&self) -> u64 {
        self.codes()
            .iter()
            .filter(|(c, _)| REFUSAL_CODES.contains(&c.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn report(&self) -> RequestReport {
        let codes = self.codes();
        let refused = self.refused();
        let errors = codes
            .iter()
            .filter(|(c, _)| !REFUSAL_CODES.contains(&c.as_str()))
            .map(|(_, n)| n)
            .sum();
        let ok = self.ok.load(Ordering::Relaxed);
        let p = Percentiles::of(&self.latency.merged());
        RequestReport {
            sent: self.sent.load(Ordering::Relaxed),
            ok,
            refused,
            errors,
            p50_ms: p.p50_ms,
            p90_ms: p.p90_ms,
            p99_ms: p.p99_ms,
            p999_ms: p.p999_ms,
            max_ms: p.max_ms,
            by_code: codes,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestReport {
    /// Requests sent (scheduled and put on the wire).
    pub sent: u64,
    /// Answered with success.
    pub ok: u64,
    /// Refused by the game's rules (see `REFUSAL_CODES`), e.g. `too_late`: not a fault.
    pub refused: u64,
    /// Everything else that did not succeed: transport failures, timeouts, 5xx, `internal`, …
    pub errors: u64,
    /// Latency from the instant the request was *scheduled* (open loop, so a slow server cannot
    /// hide its queueing) to its answer, over answered requests of every outcome.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Non-success answers by code.
    pub by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WsReport {
    /// Connections that were open at the end of the ramp.
    pub connections: u64,
    /// Connections that failed to open or dropped before the end.
    pub connect_errors: u64,
    pub dropped: u64,
    /// Time to open every connection.
    pub ramp_s: f64,
    /// Delivery lag of `tick` messages: local receive time minus the message's `server_time_ms`
    /// (same machine, same clock: loopback targets only). Millisecond resolution on the server side.
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    pub tick_p999_ms: f64,
    pub tick_max_ms: f64,
    pub ticks: u64,
    /// Fan-out spread of a tick: the last connection's receive time minus the first's, over the
    /// ticks that at least 90 % of the connections received.
    pub tick_spread_p50_ms: f64,
    pub tick_spread_p99_ms: f64,
    pub tick_spread_max_ms: f64,
    /// Delivery lag of `crashed` (like a tick's) and its spread over the connections.
    pub crash_p99_ms: f64,
    pub crash_max_ms: f64,
    pub crash_spread_p99_ms: f64,
    pub crashes: u64,
    /// Every server message received on every connection.
    pub messages: u64,
    /// Round trip of `ping` → `pong`.
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    pub pings: u64,
    /// Full-picture `snapshot` messages after the first (resyncs after a bus gap or reconnect).
    pub resyncs: u64,
    /// Sockets a node dropped that reconnected and got their first snapshot again.
    pub reconnects: u64,
    /// From a drop to the next socket's first snapshot: the gap a player saw in the game.
    pub reconnect_gap_p50_ms: f64,
    pub reconnect_gap_max_ms: f64,
    /// Reconnect snapshots written before the drop or older than a round the player had seen.
    pub stale_snapshots: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerReport {
    /// Resident memory summed over the target nodes at the end of the ramp, from their
    /// `process_resident_memory_bytes` metric (null when a node does not export it).
    pub rss_bytes: Option<u64>,
    /// Resident memory before any connection was opened.
    pub rss_baseline_bytes: Option<u64>,
    /// (rss_bytes − rss_baseline_bytes) / connections.
    pub rss_per_connection_bytes: Option<u64>,
    /// The nodes' own connection gauge at the end of the ramp (summed).
    pub connections_reported: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub targets: Vec<String>,
    pub duration_s: f64,
    /// Offered bet rate while a betting window is open, per second.
    pub bet_rate: f64,
    pub via: String,
    pub players: u64,
    pub rounds: u64,
    /// Bets the schedule called for that no player could place (every player had used its
    /// `--bets-per-player` this round): raise `--players`.
    pub bets_unplaced: u64,
    pub bets: RequestReport,
    pub cashouts: RequestReport,
    pub ws: WsReport,
    pub server: ServerReport,
    /// CPU time of the nodes (`--node-pid`) and of the generator during the measured phase.
    pub cpu: super::cpu::CpuReport,
    /// Accepted bets and cash-outs, for checks against the ledger (not part of the JSON report).
    #[serde(skip)]
    pub accepted_bet_ids: Vec<String>,
    #[serde(skip)]
    pub accepted_cashouts: Vec<super::AcceptedCashOut>,
    /// Every answer to every cash-out request, retries included.
    #[serde(skip)]
    pub cashout_answers: Vec<super::CashOutAnswer>,
}

impl Report {
    /// The human summary printed at the end of a run.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "crashfleet-load: {} target(s), {:.1} s, {} round(s), {} player(s), bets via {} at {}/s while betting is open",
            self.targets.len(),
            self.duration_s,
            self.rounds,
            self.players,
            self.via,
            self.bet_rate
        );
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "", "sent", "ok", "refused", "errors", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, r) in [("bets", &self.bets), ("cash-outs", &self.cashouts)] {
            let _ = writeln!(
                s,
                "{:<10} {:>9} {:>9} {:>8} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name, r.sent, r.ok, r.refused, r.errors, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
            );
            for (code, n) in &r.by_code {
                let _ = writeln!(s, "{:<10}   {code}: {n}", "");
            }
        }
        if self.bets_unplaced > 0 {
            let _ = writeln!(
                s,
                "           {} scheduled bet(s) not placed: every player had used its bets for the round (raise --players)",
                self.bets_unplaced
            );
        }
        let w = &self.ws;
        let _ = writeln!(
            s,
            "websocket  {} connection(s) open (ramp {:.1} s, {} failed, {} dropped), {} messages, {} resync(s)",
            w.connections, w.ramp_s, w.connect_errors, w.dropped, w.messages, w.resyncs
        );
        if w.reconnects > 0 {
            let _ = writeln!(
                s,
                "           {} reconnect(s): drop to fresh snapshot p50 {:.0} ms, max {:.0} ms; {} stale snapshot(s)",
                w.reconnects, w.reconnect_gap_p50_ms, w.reconnect_gap_max_ms, w.stale_snapshots
            );
        }
        let _ = writeln!(
            s,
            "           tick lag p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms over {} ticks; ping p50 {:.2} ms, p99 {:.2} ms over {}",
            w.tick_p50_ms,
            w.tick_p99_ms,
            w.tick_p999_ms,
            w.tick_max_ms,
            w.ticks,
            w.ping_p50_ms,
            w.ping_p99_ms,
            w.pings
        );
        if w.ticks > 0 || w.crashes > 0 {
            let _ = writeln!(
                s,
                "           tick spread (last socket − first) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; crashed lag p99 {:.1} ms, max {:.1} ms, spread p99 {:.1} ms over {}",
                w.tick_spread_p50_ms,
                w.tick_spread_p99_ms,
                w.tick_spread_max_ms,
                w.crash_p99_ms,
                w.crash_max_ms,
                w.crash_spread_p99_ms,
                w.crashes
            );
        }
        let c = &self.cpu;
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.2}{unit}"));
        let _ = writeln!(
            s,
            "cpu        node {} ({} cores), generator {} ({} cores) over {:.1} s; per bet/cash-out: node {}, generator {}; per message: node {}, generator {}",
            opt(c.node_cpu_s, " s"),
            opt(c.node_cores, ""),
            opt(c.load_cpu_s, " s"),
            opt(c.load_cores, ""),
            c.wall_s,
            opt(c.node_us_per_request, " µs"),
            opt(c.load_us_per_request, " µs"),
            opt(c.node_us_per_message, " µs"),
            opt(c.load_us_per_message, " µs"),
        );
        if let Some(relay) = c.relay_cpu_s {
            let _ = writeln!(
                s,
                "relay      {relay:.2} s ({} cores) for {} events: {} per event relayed",
                opt(c.relay_cores, ""),
                c.events,
                opt(c.relay_us_per_event, " µs"),
            );
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match (
            self.server.rss_bytes,
            self.server.rss_baseline_bytes,
            self.server.rss_per_connection_bytes,
        ) {
            (Some(r), Some(b), per) => {
                let _ = writeln!(
                    s,
                    "server     RSS {:.1} MiB (baseline {:.1} MiB){}",
                    mib(r),
                    mib(b),
                    per.map(|p| format!(", {:.2} KiB per connection", p as f64 / 1024.0))
                        .unwrap_or_default()
                );
            }
            _ => {
                let _ = writeln!(s, "server     RSS not exported by the target(s)");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_values() {
        let l = Latency::new();
        for i in 1..=1000u64 {
            l.record_micros(i as usize, i * 1000);
        }
        let p = Percentiles::of(&l.merged());
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn a_broadcasts_spread_is_its_last_receipt_minus_its_first() {
        let s = Spread::new();
        // Event 1000 reached three sockets over 4 ms; event 2000 only one (no spread).
        s.record(0, 1000, 10_000);
        s.record(1, 1000, 14_000);
        s.record(2, 1000, 11_000);
        s.record(3, 2000, 20_000);
        let h = s.histogram(2);
        assert_eq!(h.len(), 1);
        let p = Percentiles::of(&h);
        assert!((p.max_ms - 4.0).abs() < 0.01, "{p:?}");
        // Below the quorum, an event does not count.
        assert_eq!(s.histogram(4).len(), 0);
    }

    #[test]
    fn refusals_and_errors_are_counted_apart() {
        let o = Outcomes::default();
        o.fail("too_late");
        o.fail("too_late");
        o.fail("transport");
        o.fail("internal");
        let r = o.report();
        assert_eq!((r.refused, r.errors), (2, 2));
        assert_eq!(r.by_code.get("too_late"), Some(&2));
    }

    #[test]
    fn empty_histograms_report_zeros() {
        let p = Percentiles::of(&Latency::new().merged());
        assert_eq!(p.p99_ms, 0.0);
    }
}
