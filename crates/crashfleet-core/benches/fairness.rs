//! Benchmarks of the fairness hot paths: crash points (the keyed HMAC state reused per table,
//! against re-keying every round to show why), a round-hash lookup in a 10,000,000-link chain,
//! and building a 1,000,000-link chain. Run with `cargo bench -p game-node --bench fairness`;
//! figures are quoted in docs/FAIRNESS-NOTES.md.

use std::hint::black_box;

use crashfleet_core::fairness::{
    CHECKPOINT_EVERY, Chain, CrashCalculator, Hash32, crash_x100_from_r, r_from_hmac, sha256,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SALT: &str = "0000000000000000000fa3b65e43e4240d71762a5bf397d5304b2596d116859c";
const SEED: Hash32 = [0x42; 32];

/// Crash points per criterion iteration: enough distinct inputs that nothing is cached or
/// hoisted, few enough (32 KiB) to stay in L1, so the figure is the computation itself.
const BATCH: usize = 1024;

/// A cheap, deterministic stream of round numbers spread over the chain (xorshift64).
struct Rounds(u64);

impl Rounds {
    fn next(&mut self, length: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % length + 1
    }
}

fn crash_points(c: &mut Criterion) {
    let calc = CrashCalculator::new(SALT, 100, 100_000_000).expect("valid parameters");
    let mut h = SEED;
    let hashes: Vec<Hash32> = (0..BATCH)
        .map(|_| {
            h = sha256(&h);
            h
        })
        .collect();

    let mut group = c.benchmark_group("crash_point");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("keyed_hmac_reused", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for h in &hashes {
                acc = acc.wrapping_add(calc.crash_x100(black_box(h)));
            }
            acc
        })
    });
    // The naive way: derive the key block from the salt for every round (two more compressions).
    group.bench_function("hmac_rekeyed_each_round", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for h in &hashes {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(black_box(SALT).as_bytes()).expect("key");
                mac.update(black_box(h));
                let r = r_from_hmac(&mac.finalize().into_bytes().into());
                acc = acc.wrapping_add(crash_x100_from_r(r, 100));
            }
            acc
        })
    });
    // The integer formula alone, to show what share of a crash point it costs.
    group.bench_function("formula_only", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for (i, h) in hashes.iter().enumerate() {
                let r = r_from_hmac(black_box(h)) ^ i as u64;
                acc = acc.wrapping_add(crash_x100_from_r(r, 100));
            }
            acc
        })
    });
    group.finish();
}

fn chain_lookup(c: &mut Criterion) {
    const LENGTH: u64 = 10_000_000;
    let chain = Chain::new(SEED, LENGTH).expect("valid length");
    eprintln!(
        "chain of {LENGTH} links: {} checkpoints, {} bytes",
        chain.checkpoint_count(),
        chain.checkpoint_count() * std::mem::size_of::<Hash32>()
    );
    let mut group = c.benchmark_group("chain_10M");
    group.throughput(Throughput::Elements(1));
    let mut rounds = Rounds(0x9e37_79b9_7f4a_7c15);
    group.bench_function("round_hash_random", |b| {
        b.iter(|| chain.round_hash(black_box(rounds.next(LENGTH))))
    });
    // The slowest lookup: the link just below a checkpoint, CHECKPOINT_EVERY - 1 hashes away.
    let worst_round = LENGTH - (1000 * CHECKPOINT_EVERY - 1);
    group.bench_function("round_hash_worst_case", |b| {
        b.iter(|| chain.round_hash(black_box(worst_round)))
    });
    group.bench_function("sha256_one_link", |b| b.iter(|| sha256(black_box(&SEED))));
    group.finish();
}

fn chain_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain_build");
    // Each sample hashes a million links (~0.1 s); ten samples are plenty for a start-up cost.
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("new_1M", |b| {
        b.iter_batched(
            || SEED,
            |seed| Chain::new(seed, 1_000_000),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, crash_points, chain_lookup, chain_build);
criterion_main!(benches);
