//! Benchmarks of the Merkle trees behind verifiable settlement: a round's settlement root over
//! 100,000 bets (aim: under 50 ms), and proofs in a round log of 1,000,000 rounds (aim: under
//! 1 ms each). Run with `cargo bench -p crashfleet-core --bench merkle`.

use std::hint::black_box;

use crashfleet_core::merkle::{Tree, verify_consistency, verify_inclusion};
use crashfleet_core::settlement::{
    Outcome, Receipt, ReceiptKind, SettlementLeaf, player_hash, settle, signing,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A settlement leaf's size: bet id, player hash, stake, outcome, multiplier, payout.
const LEAF: usize = 96;

fn settlement_root(c: &mut Criterion) {
    let leaves: Vec<Vec<u8>> = (0..100_000u64)
        .map(|i| {
            let mut l = vec![0u8; LEAF];
            l[..8].copy_from_slice(&i.to_be_bytes());
            l
        })
        .collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.sample_size(20);
    g.bench_function("settlement root, 100000 bets", |b| {
        b.iter(|| Tree::from_leaves(black_box(&leaves)).root())
    });
    // What a settling transaction does after reading the round's rows: build each bet's
    // canonical leaf (player hash included), sort by bet id, encode, hash the tree.
    let bets: Vec<SettlementLeaf> = (0..100_000u64)
        .map(|i| SettlementLeaf {
            bet_id: format!(
                "01a24f21-{i:04x}-7000-8000-{:012x}",
                i.wrapping_mul(2_654_435_761)
            ),
            player: player_hash(&format!("player-{}", i % 5_000)),
            stake: 100 + i % 10_000,
            outcome: if i % 3 == 0 {
                Outcome::Won
            } else {
                Outcome::Lost
            },
            multiplier_x100: (i % 3 == 0).then_some(150),
            payout: if i % 3 == 0 { 150 } else { 0 },
        })
        .collect();
    g.bench_function("settle: sort, encode and root, 100000 bets", |b| {
        b.iter_batched(
            || bets.clone(),
            |mut leaves| settle(black_box(&mut leaves)),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Signing a receipt (on the bet path of every accepted bet and cash-out) and checking one.
fn receipts(c: &mut Criterion) {
    let key = signing::SigningKey::from_seed(&[7; 32]);
    let receipt = Receipt {
        kind: ReceiptKind::Bet,
        table: "main".into(),
        round: 123_456,
        bet_id: "01a24f21-783f-74a3-9618-d4f3278e1f40".into(),
        player: player_hash("76175851-1d55-40ed-9a9b-01b88e8c818e"),
        stake: 1_000,
        auto_cashout_x100: Some(250),
        at_ms: 1_796_622_552_164,
        multiplier_x100: None,
        payout: None,
    };
    let mut g = c.benchmark_group("receipts");
    g.bench_function("encode and sign a receipt", |b| {
        b.iter(|| key.sign(&black_box(&receipt).encode()))
    });
    let message = receipt.encode();
    let signature = key.sign(&message);
    let public = key.public_key();
    g.bench_function("verify a receipt", |b| {
        b.iter(|| signing::verify(&public, black_box(&message), black_box(&signature)))
    });
    g.finish();
}

fn log_proofs(c: &mut Criterion) {
    let log = Tree::from_leaves((0..1_000_000u64).map(u64::to_be_bytes));
    let size = log.len();
    let root = log.root();
    let mut g = c.benchmark_group("merkle");
    g.bench_function("log inclusion proof, 1000000 rounds, any size", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7_919) % size;
            log.inclusion_proof(black_box(i), black_box(size - i / 2))
        })
    });
    g.bench_function("log consistency proof, 1000000 rounds", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7_919) % size + 1;
            log.consistency_proof(black_box(i), black_box(size))
        })
    });
    let leaf = log.leaf(123_457).expect("leaf");
    let path = log.inclusion_proof(123_457, size).expect("path");
    g.bench_function("verify an inclusion proof, 1000000 rounds", |b| {
        b.iter(|| verify_inclusion(&root, size, 123_457, black_box(&leaf), black_box(&path)))
    });
    let old = log.root_at(654_321).expect("root");
    let proof = log.consistency_proof(654_321, size).expect("proof");
    g.bench_function("verify a consistency proof, 1000000 rounds", |b| {
        b.iter(|| verify_consistency(&old, 654_321, &root, size, black_box(&proof)))
    });
    g.finish();
}

criterion_group!(benches, settlement_root, log_proofs, receipts);
criterion_main!(benches);
