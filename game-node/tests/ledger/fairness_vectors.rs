//! Known-answer tests for the fairness scheme.
//!
//! `tests/data/fairness.json` is a verbatim copy of the project's shared `vectors/fairness.json`.
//! Its answers were computed outside this project, with Python's `hashlib`/`hmac` and exact
//! (arbitrary-precision) integers, per its "about" field; its 1 % column also matches the public
//! crash verifier's float formula. Nothing here is derived from our own code, so a bug in the
//! chain, the HMAC message/key encoding, the 52-bit extraction or the integer formula fails here.

use std::path::{Path, PathBuf};

use game_node::fairness::{
    Chain, CrashCalculator, crash_x100_from_r, parse_hash, sha256, to_hex, verify_commitment,
};
use game_node::verify::{VerifyArgs, run_verify};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    chain: ChainVectors,
    salt: String,
    rounds: Vec<RoundVector>,
    r_cases: Vec<RCase>,
}

#[derive(Deserialize)]
struct ChainVectors {
    h0: String,
    length: u64,
    terminating_hash: String,
    h500: String,
}

#[derive(Deserialize)]
struct RoundVector {
    round: u64,
    hash: String,
    crash_x100_edge_0bp: u64,
    crash_x100_edge_100bp: u64,
    crash_x100_edge_250bp: u64,
}

impl RoundVector {
    fn by_edge(&self) -> [(u32, u64); 3] {
        [
            (0, self.crash_x100_edge_0bp),
            (100, self.crash_x100_edge_100bp),
            (250, self.crash_x100_edge_250bp),
        ]
    }
}

#[derive(Deserialize)]
struct RCase {
    r: u64,
    edge_bp: u32,
    crash_x100: u64,
}

/// The default cap of `game-node verify` and of a table: 1,000,000.00x.
const DEFAULT_MAX_X100: u64 = 100_000_000;

fn data_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fairness.json")
}

fn vectors() -> Vectors {
    let text = std::fs::read_to_string(data_path()).expect("tests/data/fairness.json");
    serde_json::from_str(&text).expect("vectors parse")
}

fn hash(hex: &str) -> [u8; 32] {
    parse_hash(hex).expect("vector hashes are valid hex")
}

/// The copy must not drift from the shared original; where the original is not around (a
/// stand-alone checkout of the crate) the copy is all there is.
#[test]
fn copy_is_identical_to_the_shared_vectors() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/fairness.json");
    match std::fs::read(&shared) {
        Ok(original) => {
            let copy = std::fs::read(data_path()).expect("copy");
            assert!(
                copy == original,
                "tests/data/fairness.json differs from {}",
                shared.display()
            );
        }
        Err(err) => eprintln!("skipping: {} not readable: {err}", shared.display()),
    }
}

#[test]
fn chain_from_h0_reaches_the_commitment() {
    let v = vectors();
    let chain = Chain::new(hash(&v.chain.h0), v.chain.length).expect("valid length");
    assert_eq!(to_hex(&chain.terminating_hash()), v.chain.terminating_hash);
    assert_eq!(chain.link(500).map(|h| to_hex(&h)), Ok(v.chain.h500));
    assert_eq!(chain.link(0).map(|h| to_hex(&h)), Ok(v.chain.h0.clone()));
    // The last round of the chain uses h0 itself.
    assert_eq!(
        chain.round_hash(v.chain.length).map(|h| to_hex(&h)),
        Ok(v.chain.h0)
    );
}

#[test]
fn every_round_hash_and_crash_point() {
    let v = vectors();
    let chain = Chain::new(hash(&v.chain.h0), v.chain.length).expect("valid length");
    let terminating = chain.terminating_hash();
    assert_eq!(v.rounds.len(), 30);
    for round in &v.rounds {
        let h = chain.round_hash(round.round).expect("in range");
        assert_eq!(to_hex(&h), round.hash, "round {}", round.round);
        assert!(verify_commitment(&h, &terminating, round.round));
        assert!(!verify_commitment(&h, &terminating, round.round + 1));
        for (edge_bp, expected) in round.by_edge() {
            let calc = CrashCalculator::new(&v.salt, edge_bp, DEFAULT_MAX_X100).expect("valid");
            assert_eq!(
                calc.crash_x100(&h),
                expected,
                "round {} at {edge_bp} bp",
                round.round
            );
            assert_eq!(crash_x100_from_r(calc.r(&h), edge_bp), expected);
        }
    }
    // Rounds are consecutive and run backwards: SHA-256 of round k is round k-1.
    for pair in v.rounds.windows(2) {
        assert_eq!(pair[1].round, pair[0].round + 1);
        assert_eq!(to_hex(&sha256(&hash(&pair[1].hash))), pair[0].hash);
    }
}

#[test]
fn r_edge_cases() {
    let v = vectors();
    assert!(!v.r_cases.is_empty());
    for case in &v.r_cases {
        assert_eq!(
            crash_x100_from_r(case.r, case.edge_bp),
            case.crash_x100,
            "r={} edge={}",
            case.r,
            case.edge_bp
        );
    }
}

#[test]
fn verify_command_reproduces_the_rounds_as_json() {
    let v = vectors();
    let newest = v.rounds.last().expect("30 rounds");
    for edge_bp in [0, 100, 250] {
        let args = VerifyArgs {
            salt: v.salt.clone(),
            hash: newest.hash.to_uppercase(),
            count: v.rounds.len() as u64,
            json: true,
            terminating: Some(v.chain.terminating_hash.clone()),
            round: Some(newest.round),
            house_edge_bp: edge_bp,
            max_x100: DEFAULT_MAX_X100,
        };
        let mut out = Vec::new();
        let ok = run_verify(&args, &mut out).expect("valid input");
        assert!(ok, "commitment check");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        // One line per round, newest first, then the commitment verdict.
        assert_eq!(lines.len(), v.rounds.len() + 1, "{text}");
        for (line, round) in lines.iter().zip(v.rounds.iter().rev()) {
            let crash = round
                .by_edge()
                .iter()
                .find(|(e, _)| *e == edge_bp)
                .map(|(_, c)| *c)
                .expect("edge present");
            assert_eq!(
                *line,
                format!("{{\"hash\": \"{}\", \"crash_x100\": {crash}}}", round.hash)
            );
        }
        let verdict: serde_json::Value =
            serde_json::from_str(lines[v.rounds.len()]).expect("JSON verdict");
        assert_eq!(verdict["commitment_ok"], true);
        assert_eq!(verdict["round"], newest.round);
    }

    // Without the commitment flags the output is exactly the round lines.
    let args = VerifyArgs {
        salt: v.salt.clone(),
        hash: newest.hash.clone(),
        count: 30,
        json: true,
        terminating: None,
        round: None,
        house_edge_bp: 100,
        max_x100: DEFAULT_MAX_X100,
    };
    let mut out = Vec::new();
    assert!(run_verify(&args, &mut out).expect("valid input"));
    let expected: String = v
        .rounds
        .iter()
        .rev()
        .map(|r| {
            format!(
                "{{\"hash\": \"{}\", \"crash_x100\": {}}}\n",
                r.hash, r.crash_x100_edge_100bp
            )
        })
        .collect();
    assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
}

#[test]
fn verify_command_rejects_a_wrong_commitment() {
    let v = vectors();
    let round = &v.rounds[9];
    let args = VerifyArgs {
        salt: v.salt.clone(),
        hash: round.hash.clone(),
        count: 1,
        json: false,
        // h500 is a real link of the chain, but not the commitment.
        terminating: Some(v.chain.h500.clone()),
        round: Some(round.round),
        house_edge_bp: 100,
        max_x100: DEFAULT_MAX_X100,
    };
    let mut out = Vec::new();
    assert!(!run_verify(&args, &mut out).expect("valid input"));
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("commitment FAILED"), "{text}");
    // The human table shows the crash as players read it.
    assert!(text.contains("1.83x"), "{text}");
}
