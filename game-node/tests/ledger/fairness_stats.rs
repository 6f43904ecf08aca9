//! Statistical test of the crash-point distribution through the real pipeline (HMAC-SHA256 of a
//! round hash → r → integer formula), against probabilities computed exactly from the formula.
//!
//! r is uniform over 0..2^52, so for an integer threshold m > 100 (hundredths):
//!   crash_x100 >= m  ⇔  (10000 - e)·2^52 / ((2^52 - r)·100) >= m  ⇔  2^52 - r <= N / (100·m)
//! with N = (10000 - e)·2^52, and since 2^52 - r is an integer in 1..=2^52,
//!   P(crash_x100 >= m) = min(2^52, floor(N / (100·m))) / 2^52   exactly,
//! which differs from the advertised (1 - edge)/x, x = m/100, by less than 2^-52: the floor in
//! the formula costs players nothing at whole-cent targets. Measured frequencies must lie within
//! `Z` standard errors, sqrt(p(1-p)/n), of the exact value; the bounds come from the sample size.
//!
//! The inputs are deterministic (a counter), so a run that passes always passes.
//! 1,000,000 outcomes by default; set CRASHFLEET_STATS_OUTCOMES=100000000 for the long run
//! (best with `--release`). Figures are printed with eprintln! (`-- --nocapture` shows them).

use std::time::Instant;

use game_node::fairness::{CrashCalculator, Hash32, crash_x100_from_r};

/// Outcomes in the normal suite: enough for ±0.07 % (6 SE) on the instant-crash rate, and a few
/// seconds in the dev profile.
const DEFAULT_OUTCOMES: u64 = 1_000_000;

/// Width of the acceptance band in standard errors. With ~40 checks, 6 SE leaves a false-alarm
/// chance of ~1e-7 for a correct implementation, while any real bias of the size a wrong
/// formula produces (percent level) is caught many times over at these sample sizes.
const Z: f64 = 6.0;

/// Thresholds in hundredths: 1.01x, 1.5x, 2x, 5x, 10x, 100x.
const THRESHOLDS_X100: [u64; 6] = [101, 150, 200, 500, 1_000, 10_000];

/// Edges: none, the default 1 %, and 2.5 %.
const EDGES_BP: [u32; 3] = [0, 100, 250];

/// Fixed auto-cash-out target for the return-to-player check: 2.00x.
const RTP_TARGET_X100: u64 = 200;

const TWO_52: u128 = 1 << 52;
const CAP_X100: u64 = 100_000_000;
const SALT: &str = "0000000000000000000fa3b65e43e4240d71762a5bf397d5304b2596d116859c";

/// Counts for one edge.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// `at_least[j]`: outcomes with crash_x100 >= THRESHOLDS_X100[j].
    at_least: [u64; THRESHOLDS_X100.len()],
    instant: u64,
    /// Sum of crash_x100 capped at 100x: a cheap sanity figure, not asserted.
    sum_capped: u128,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (a, b) in self.at_least.iter_mut().zip(other.at_least) {
            *a += b;
        }
        self.instant += other.instant;
        self.sum_capped += other.sum_capped;
    }
}

/// The exact P(crash_x100 >= m) for uniform r (see the module comment).
fn exact_p_at_least(m: u64, edge_bp: u32) -> f64 {
    if m <= 100 {
        return 1.0;
    }
    let n = u128::from(10_000 - edge_bp) * TWO_52;
    let favourable = (n / (100 * u128::from(m))).min(TWO_52);
    favourable as f64 / TWO_52 as f64
}

/// The "round hash" for outcome `i`: the counter, padded with a fixed tag. HMAC-SHA256 is a
/// pseudo-random function, so distinct messages already give independent uniform r; hashing the
/// counter first (as a chain would) only doubles the cost, which matters in the dev profile.
fn input(i: u64) -> Hash32 {
    let mut message = [0x5a_u8; 32];
    message[..8].copy_from_slice(&i.to_le_bytes());
    message
}

fn tally_range(calc: &CrashCalculator, from: u64, to: u64) -> [Tally; EDGES_BP.len()] {
    let mut tallies = [Tally::default(); EDGES_BP.len()];
    for i in from..to {
        let h = input(i);
        let r = calc.r(&h);
        // Spot-check that the calculator's own path agrees with r → formula → cap.
        if i % 64 == 0 {
            assert_eq!(
                calc.crash_x100(&h),
                crash_x100_from_r(r, calc.house_edge_bp()).min(CAP_X100)
            );
        }
        for (tally, edge) in tallies.iter_mut().zip(EDGES_BP) {
            let crash = crash_x100_from_r(r, edge).min(CAP_X100);
            for (count, m) in tally.at_least.iter_mut().zip(THRESHOLDS_X100) {
                *count += u64::from(crash >= m);
            }
            tally.instant += u64::from(crash == 100);
            tally.sum_capped += u128::from(crash.min(10_000));
        }
    }
    tallies
}

fn outcomes() -> u64 {
    match std::env::var("CRASHFLEET_STATS_OUTCOMES") {
        Ok(text) => {
            let n: u64 = text
                .trim()
                .parse()
                .expect("CRASHFLEET_STATS_OUTCOMES must be a positive integer");
            assert!(
                n >= 1_000,
                "CRASHFLEET_STATS_OUTCOMES={n} is too small to test"
            );
            n
        }
        Err(_) => DEFAULT_OUTCOMES,
    }
}

/// Checks a measured proportion against its exact probability; returns the deviation in SE.
fn check_proportion(what: &str, count: u64, n: u64, p: f64) -> f64 {
    let measured = count as f64 / n as f64;
    let se = (p * (1.0 - p) / n as f64).sqrt();
    let z = (measured - p) / se;
    eprintln!("  {what:<28} measured {measured:.6}  exact {p:.6}  ({z:+.2} SE, SE {se:.2e})");
    assert!(
        z.abs() <= Z,
        "{what}: measured {measured} vs exact {p}: {z:.2} standard errors (bound {Z})"
    );
    z
}

#[test]
fn crash_distribution_matches_the_formula() {
    let n = outcomes();
    // The calculator's own edge is the default 1 %; the other edges reuse its r.
    let calc = CrashCalculator::new(SALT, 100, CAP_X100).expect("valid parameters");
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u64;
    let started = Instant::now();
    let per_thread: Vec<[Tally; EDGES_BP.len()]> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let calc = calc.clone();
                scope.spawn(move || tally_range(&calc, n * t / threads, n * (t + 1) / threads))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut tallies = [Tally::default(); EDGES_BP.len()];
    for part in &per_thread {
        for (total, t) in tallies.iter_mut().zip(part) {
            total.add(t);
        }
    }
    eprintln!(
        "fairness_stats: {n} outcomes in {:.2} s on {threads} threads ({:.0} outcomes/s, \
         debug builds are far slower than release)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );

    let mut worst = 0.0_f64;
    for (tally, edge) in tallies.iter().zip(EDGES_BP) {
        let keep = 1.0 - f64::from(edge) / 10_000.0;
        eprintln!("edge {edge} bp:");
        for (count, m) in tally.at_least.iter().zip(THRESHOLDS_X100) {
            let exact = exact_p_at_least(m, edge);
            let advertised = keep / (m as f64 / 100.0);
            // The floor in the formula must not move P(crash >= x) off (1 - edge)/x.
            assert!(
                (exact - advertised).abs() < 1e-12,
                "exact {exact} vs advertised {advertised} at {m}"
            );
            let z = check_proportion(
                &format!("P(crash >= {}.{:02}x)", m / 100, m % 100),
                *count,
                n,
                exact,
            );
            worst = worst.max(z.abs());
        }

        let p_instant = 1.0 - exact_p_at_least(101, edge);
        let z = check_proportion("P(crash = 1.00x)", tally.instant, n, p_instant);
        worst = worst.max(z.abs());

        // Return to player for a bet that always auto-cashes out at the target: each round pays
        // target/100 with probability p, else 0; mean target/100·p, SE target/100·sqrt(p(1-p)/n).
        let p_win = exact_p_at_least(RTP_TARGET_X100, edge);
        let j = THRESHOLDS_X100
            .iter()
            .position(|m| *m == RTP_TARGET_X100)
            .expect("target is one of the thresholds");
        let payout = RTP_TARGET_X100 as f64 / 100.0;
        let rtp = payout * tally.at_least[j] as f64 / n as f64;
        let rtp_exact = payout * p_win;
        let se = payout * (p_win * (1.0 - p_win) / n as f64).sqrt();
        let z = (rtp - rtp_exact) / se;
        eprintln!(
            "  RTP at {:.2}x auto-cash-out    measured {rtp:.6}  exact {rtp_exact:.6}  ({z:+.2} SE, SE {se:.2e})",
            payout
        );
        assert!(z.abs() <= Z, "RTP {rtp} vs {rtp_exact}: {z:.2} SE");
        assert!((rtp_exact - keep).abs() < 1e-12, "RTP should be 1 - edge");
        worst = worst.max(z.abs());

        eprintln!(
            "  mean crash point capped at 100x: {:.4}x",
            tally.sum_capped as f64 / n as f64 / 100.0
        );
    }
    eprintln!("largest deviation: {worst:.2} SE (bound {Z})");
}

#[test]
fn exact_probabilities_are_consistent() {
    // With no edge a round crashes at 1.00x iff 2^52 / (2^52 - r) < 1.01: 1/101 of the range.
    let p = 1.0 - exact_p_at_least(101, 0);
    assert!((p - 1.0 / 101.0).abs() < 1e-12, "{p}");
    // With a 100 % edge nothing ever reaches 1.01x.
    assert_eq!(exact_p_at_least(101, 10_000), 0.0);
    assert_eq!(exact_p_at_least(100, 100), 1.0);
}
