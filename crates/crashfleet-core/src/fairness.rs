//! Provable fairness: the secret hash chain a table commits to, and the crash point of a round.
//!
//! The scheme:
//! - h0 is 32 secret random bytes; h(i+1) = SHA-256(h(i)) over the raw 32 bytes, up to h(L).
//!   h(L), the *terminating hash*, is published before the first round.
//! - Round k (1..=L) uses h(L-k). Revealing a round's hash reveals nothing about later rounds
//!   (that would need a SHA-256 preimage), and anyone can hash it forward to the commitment.
//! - r = the top 52 bits of HMAC-SHA256(key = salt as UTF-8 text, message = the raw round hash);
//!   crash_x100 = max(100, floor((10000 - edge_bp) * 2^52 / ((2^52 - r) * 100))), exact in u128,
//!   then capped at the table's maximum.
//!
//! This module is pure: no I/O and no clock. [`Chain::generate`] takes the random number generator
//! the secret seed comes from; callers pass the operating system's (`rand::rngs::OsRng`), since a
//! seed from anywhere weaker would void the whole scheme, and the `TryCryptoRng` bound keeps
//! non-cryptographic generators out. Known answers computed outside the project live in `game-node/tests/ledger/fairness_vectors.rs`.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::TryCryptoRng;
use sha2::{Digest, Sha256};

/// A SHA-256 output, or a chain seed: always exactly 32 raw bytes.
pub type Hash32 = [u8; 32];

type HmacSha256 = Hmac<Sha256>;

/// Distance between the links a [`Chain`] keeps in memory.
///
/// Finding any link costs at most `CHECKPOINT_EVERY - 1` SHA-256 compressions from the nearest
/// checkpoint below it (1023 × ~49 ns with SHA-NI: 52 µs worst case, 26 µs on average, measured
/// by `benches/fairness.rs`), while memory is `32 B × (L / CHECKPOINT_EVERY + 1)`: 312,512 bytes
/// for a 10,000,000-link chain. Halving the interval would double the memory to save ~13 µs per
/// lookup, which a round every few seconds does not need. A power of two keeps the index
/// arithmetic a shift, though nothing depends on that.
pub const CHECKPOINT_EVERY: u64 = 1024;

/// The longest chain [`Chain::new`] accepts.
///
/// At one round every 10 s, 100,000,000 rounds last ~31 years, so no table needs more. The bound
/// keeps building a chain (one SHA-256 per link, ~21 M links/s: ~5 s for this length) and its
/// memory (~3 MB of checkpoints) predictable, and gives [`verify_commitment`] a limit on the work
/// an untrusted round number can demand.
pub const MAX_CHAIN_LENGTH: u64 = 100_000_000;

/// The longest salt [`CrashCalculator::new`] accepts, in bytes.
///
/// A salt is a public block hash or a similar token (64 characters); a longer one is almost
/// certainly a configuration mistake, and it is echoed by `/api/v1/fairness` on every request.
pub const MAX_SALT_LEN: usize = 1024;

/// House edges are in basis points: 10,000 bp = 100 %, which makes every round crash at 1.00x.
pub const MAX_HOUSE_EDGE_BP: u32 = 10_000;

/// The lowest possible crash point: 1.00x, in hundredths.
pub const MIN_CRASH_X100: u64 = 100;

/// 2^52: `r` is uniform over `0..R_RANGE`.
const R_RANGE: u64 = 1 << 52;

/// Everything that can be wrong with fairness input. Messages never echo hash or seed text,
/// because the input might be a secret seed read from a file.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FairnessError {
    #[error("invalid hash: {reason} (expected 64 hexadecimal characters, i.e. 32 bytes)")]
    InvalidHex { reason: String },
    #[error("round {round} is out of range: this chain has rounds 1 to {length}")]
    RoundOutOfRange { round: u64, length: u64 },
    #[error("link {index} is out of range: this chain has links 0 to {length}")]
    LinkOutOfRange { index: u64, length: u64 },
    #[error("invalid chain length {length}: it must be between 1 and {MAX_CHAIN_LENGTH}")]
    InvalidLength { length: u64 },
    #[error("invalid house edge {edge_bp} bp: it must be between 0 and {MAX_HOUSE_EDGE_BP} bp")]
    InvalidEdge { edge_bp: u32 },
    #[error("invalid crash cap {max_x100}: it must be at least {MIN_CRASH_X100} (1.00x)")]
    InvalidCap { max_x100: u64 },
    #[error("invalid salt: {reason}")]
    InvalidSalt { reason: String },
    #[error("could not get a random seed from the operating system: {reason}")]
    Entropy { reason: String },
}

impl FairnessError {
    /// A stable, machine-readable code for API error bodies; messages may change, codes do not.
    pub fn code(&self) -> &'static str {
        match self {
            FairnessError::InvalidHex { .. } => "invalid_hash",
            FairnessError::RoundOutOfRange { .. } => "round_out_of_range",
            FairnessError::LinkOutOfRange { .. } => "link_out_of_range",
            FairnessError::InvalidLength { .. } => "invalid_chain_length",
            FairnessError::InvalidEdge { .. } => "invalid_house_edge",
            FairnessError::InvalidCap { .. } => "invalid_crash_cap",
            FairnessError::InvalidSalt { .. } => "invalid_salt",
            FairnessError::Entropy { .. } => "entropy_unavailable",
        }
    }
}

/// One chain link: SHA-256 over the raw 32 bytes (not over their hex text).
pub fn sha256(h: &Hash32) -> Hash32 {
    Sha256::digest(h).into()
}

/// Parses 64 hexadecimal characters (either case, surrounding whitespace ignored) into 32 bytes.
pub fn parse_hash(hex: &str) -> Result<Hash32, FairnessError> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(FairnessError::InvalidHex {
            reason: format!("got {} characters", hex.chars().count()),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).map_err(|err| FairnessError::InvalidHex {
        reason: match err {
            // Name the position, not the character: the text may be a secret seed.
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("character {} is not hexadecimal", index + 1)
            }
            _ => "not hexadecimal".to_owned(),
        },
    })?;
    Ok(out)
}

/// Lower-case hex, the form every API response and the verifier print.
pub fn to_hex(h: &Hash32) -> String {
    hex::encode(h)
}

/// Formats a multiplier in hundredths as players read it: 259 → "2.59x".
pub fn format_x100(x100: u64) -> String {
    format!("{}.{:02}x", x100 / 100, x100 % 100)
}

/// A secret hash chain h0..h(L).
///
/// Only every [`CHECKPOINT_EVERY`]-th link is kept, so a 10,000,000-link chain costs ~300 KB and
/// any round's hash is found in well under a millisecond by hashing forward from the checkpoint
/// at or below it.
#[derive(Clone)]
pub struct Chain {
    /// L: the chain has links h0..=h(L) and rounds 1..=L.
    length: u64,
    /// `checkpoints[j]` = h(j × CHECKPOINT_EVERY) for every such index <= L; `checkpoints[0]` is
    /// the seed. These are the secrets: anyone holding one can compute every later round.
    checkpoints: Vec<Hash32>,
    /// h(L), the public commitment; kept so publishing it costs no hashing.
    terminating: Hash32,
}

impl Chain {
    /// Builds the chain from a secret seed h0 (one SHA-256 per link, done once at startup).
    pub fn new(seed: Hash32, length: u64) -> Result<Chain, FairnessError> {
        if length == 0 || length > MAX_CHAIN_LENGTH {
            return Err(FairnessError::InvalidLength { length });
        }
        // Checked above: length <= MAX_CHAIN_LENGTH, so the count fits in usize on any target.
        let capacity = usize::try_from(length / CHECKPOINT_EVERY + 1).unwrap_or(0);
        let mut checkpoints = Vec::with_capacity(capacity);
        checkpoints.push(seed);
        let mut h = seed;
        for i in 1..=length {
            h = sha256(&h);
            if i % CHECKPOINT_EVERY == 0 {
                checkpoints.push(h);
            }
        }
        Ok(Chain {
            length,
            checkpoints,
            terminating: h,
        })
    }

    /// Builds a chain from a fresh 32-byte seed drawn from `rng` (in production the operating
    /// system's, `rand::rngs::OsRng`). The caller must store the returned seed secretly: it is
    /// the table's whole future.
    pub fn generate<R: TryCryptoRng + ?Sized>(
        length: u64,
        rng: &mut R,
    ) -> Result<(Chain, Hash32), FairnessError> {
        // Validate first so a bad length does not consume entropy or report an RNG problem.
        if length == 0 || length > MAX_CHAIN_LENGTH {
            return Err(FairnessError::InvalidLength { length });
        }
        let mut seed = [0u8; 32];
        rng.try_fill_bytes(&mut seed)
            .map_err(|err| FairnessError::Entropy {
                reason: err.to_string(),
            })?;
        let chain = Chain::new(seed, length)?;
        Ok((chain, seed))
    }

    /// L, the number of rounds this chain can serve.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// h(L), the public commitment.
    pub fn terminating_hash(&self) -> Hash32 {
        self.terminating
    }

    /// The hash of round `round` (1..=L): h(L - round). Round L uses the seed itself.
    pub fn round_hash(&self, round: u64) -> Result<Hash32, FairnessError> {
        if round == 0 || round > self.length {
            return Err(FairnessError::RoundOutOfRange {
                round,
                length: self.length,
            });
        }
        self.link(self.length - round)
    }

    /// h(i) for i in 0..=L.
    pub fn link(&self, i: u64) -> Result<Hash32, FairnessError> {
        if i > self.length {
            return Err(FairnessError::LinkOutOfRange {
                index: i,
                length: self.length,
            });
        }
        let below = i / CHECKPOINT_EVERY;
        let mut h = usize::try_from(below)
            .ok()
            .and_then(|j| self.checkpoints.get(j))
            .copied()
            // Unreachable: every index <= L has its checkpoint. Reported, not panicked on.
            .ok_or(FairnessError::LinkOutOfRange {
                index: i,
                length: self.length,
            })?;
        for _ in 0..(i % CHECKPOINT_EVERY) {
            h = sha256(&h);
        }
        Ok(h)
    }

    /// How many links are kept in memory (each 32 bytes), for capacity planning and the bench.
    pub fn checkpoint_count(&self) -> usize {
        self.checkpoints.len()
    }
}

/// Shows only what is public: printing a chain in a log must never leak a secret link.
impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("length", &self.length)
            .field("terminating_hash", &to_hex(&self.terminating))
            .field("checkpoints", &self.checkpoints.len())
            .finish_non_exhaustive()
    }
}

/// Crash points for one table.
///
/// The HMAC-SHA256 state keyed with the salt (the key block already absorbed) is built once and
/// cloned per round, so a round costs two SHA-256 compressions and no key setup: that is what
/// makes it ~8.8 M/s per core (measured; re-keying every round halves it to ~4.7 M/s).
#[derive(Clone)]
pub struct CrashCalculator {
    /// HMAC state after absorbing the salt; cloned, never mutated.
    keyed: HmacSha256,
    /// The salt as given, for `/api/v1/fairness` and messages.
    salt: String,
    house_edge_bp: u32,
    /// Cap in hundredths; applied after the formula so the formula stays the public one.
    max_x100: u64,
}

impl CrashCalculator {
    /// `house_edge_bp` in 0..=10000 (10000 = every round crashes at 1.00x); `max_x100` >= 100.
    ///
    /// The salt is used verbatim as the HMAC key, so one with surrounding whitespace (a trailing
    /// newline from a file, say) is refused rather than silently producing different rounds.
    pub fn new(salt: &str, house_edge_bp: u32, max_x100: u64) -> Result<Self, FairnessError> {
        if salt.is_empty() {
            return Err(FairnessError::InvalidSalt {
                reason: "it is empty".to_owned(),
            });
        }
        if salt.len() > MAX_SALT_LEN {
            return Err(FairnessError::InvalidSalt {
                reason: format!("it is {} bytes, more than {MAX_SALT_LEN}", salt.len()),
            });
        }
        if salt.trim() != salt {
            return Err(FairnessError::InvalidSalt {
                reason: "it starts or ends with whitespace".to_owned(),
            });
        }
        if house_edge_bp > MAX_HOUSE_EDGE_BP {
            return Err(FairnessError::InvalidEdge {
                edge_bp: house_edge_bp,
            });
        }
        if max_x100 < MIN_CRASH_X100 {
            return Err(FairnessError::InvalidCap { max_x100 });
        }
        // HMAC accepts keys of any length; the error arm only exists because the trait is generic.
        let keyed = HmacSha256::new_from_slice(salt.as_bytes()).map_err(|_| {
            FairnessError::InvalidSalt {
                reason: "rejected as an HMAC key".to_owned(),
            }
        })?;
        Ok(CrashCalculator {
            keyed,
            salt: salt.to_owned(),
            house_edge_bp,
            max_x100,
        })
    }

    /// `r` for a round: the top 52 bits of HMAC-SHA256(salt, round hash).
    pub fn r(&self, round_hash: &Hash32) -> u64 {
        let mut mac = self.keyed.clone();
        mac.update(round_hash);
        r_from_hmac(&mac.finalize().into_bytes().into())
    }

    /// The round's crash point in hundredths, capped at `max_x100`.
    pub fn crash_x100(&self, round_hash: &Hash32) -> u64 {
        crash_x100_from_r(self.r(round_hash), self.house_edge_bp).min(self.max_x100)
    }

    pub fn salt(&self) -> &str {
        &self.salt
    }

    pub fn house_edge_bp(&self) -> u32 {
        self.house_edge_bp
    }

    pub fn max_x100(&self) -> u64 {
        self.max_x100
    }
}

/// The salt is public, but the HMAC state is noise in a log; show the table parameters.
impl fmt::Debug for CrashCalculator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashCalculator")
            .field("salt", &self.salt)
            .field("house_edge_bp", &self.house_edge_bp)
            .field("max_x100", &self.max_x100)
            .finish_non_exhaustive()
    }
}

/// The uncapped crash point for `r` (< 2^52):
/// max(100, floor((10000 - edge_bp) × 2^52 / ((2^52 - r) × 100))), exact in u128.
///
/// With a 1 % edge this equals the public verifier's float formula floor(99 / (1 - r / 2^52)).
/// Out-of-contract input saturates instead of panicking: `r` >= 2^52 counts as 2^52 - 1 (the
/// largest crash) and an edge above 10000 bp as 10000 (always 1.00x). [`CrashCalculator`]
/// validates its edge and [`r_from_hmac`] never returns 2^52 or more, so neither happens there.
pub fn crash_x100_from_r(r: u64, house_edge_bp: u32) -> u64 {
    let r = r.min(R_RANGE - 1);
    let edge = house_edge_bp.min(MAX_HOUSE_EDGE_BP);
    let numerator = u128::from(MAX_HOUSE_EDGE_BP - edge) * u128::from(R_RANGE);
    // r < 2^52, so the divisor is at least 100: no division by zero.
    let denominator = u128::from(R_RANGE - r) * 100;
    let crash = numerator / denominator;
    // The largest value, 100 × 2^52 (edge 0, r = 2^52 - 1), fits in u64 with room to spare.
    u64::try_from(crash).unwrap_or(u64::MAX).max(MIN_CRASH_X100)
}

/// The top 52 bits of an HMAC output (its first 13 hex digits), as an integer below 2^52.
pub fn r_from_hmac(mac: &[u8; 32]) -> u64 {
    let mut top = [0u8; 8];
    top.copy_from_slice(&mac[..8]);
    u64::from_be_bytes(top) >> 12
}

/// True iff hashing `hash` exactly `round` times gives `terminating`, i.e. `hash` is round
/// `round`'s hash of the chain committed to by `terminating`.
///
/// Distances above [`MAX_CHAIN_LENGTH`] are answered `false` without hashing: no chain we build
/// is that long, and the bound stops an untrusted round number from pinning a core.
pub fn verify_commitment(hash: &Hash32, terminating: &Hash32, round: u64) -> bool {
    if round > MAX_CHAIN_LENGTH {
        return false;
    }
    let mut h = *hash;
    for _ in 0..round {
        h = sha256(&h);
    }
    h == *terminating
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: Hash32 = [7u8; 32];

    /// The chain the slow, obvious way: every link.
    fn naive_links(seed: Hash32, length: u64) -> Vec<Hash32> {
        let mut links = vec![seed];
        for _ in 0..length {
            let next = sha256(links.last().expect("starts non-empty"));
            links.push(next);
        }
        links
    }

    #[test]
    fn sha256_known_answer() {
        // SHA-256 of 32 zero bytes, a widely published value.
        assert_eq!(
            to_hex(&sha256(&[0u8; 32])),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn every_link_matches_the_naive_chain_across_checkpoint_boundaries() {
        let length = 3 * CHECKPOINT_EVERY + 5;
        let naive = naive_links(SEED, length);
        let chain = Chain::new(SEED, length).expect("valid length");
        for (i, expected) in naive.iter().enumerate() {
            let i = i as u64;
            assert_eq!(chain.link(i).expect("in range"), *expected, "link {i}");
        }
        assert_eq!(chain.terminating_hash(), naive[length as usize]);
        assert_eq!(chain.checkpoint_count(), 4);
    }

    #[test]
    fn lengths_around_a_checkpoint() {
        for length in [
            1,
            2,
            CHECKPOINT_EVERY - 1,
            CHECKPOINT_EVERY,
            CHECKPOINT_EVERY + 1,
            2 * CHECKPOINT_EVERY,
        ] {
            let naive = naive_links(SEED, length);
            let chain = Chain::new(SEED, length).expect("valid length");
            assert_eq!(
                chain.terminating_hash(),
                naive[length as usize],
                "L={length}"
            );
            assert_eq!(
                chain.checkpoint_count() as u64,
                length / CHECKPOINT_EVERY + 1
            );
            for i in [
                0,
                length / 2,
                length - 1,
                length,
                CHECKPOINT_EVERY.min(length),
            ] {
                assert_eq!(chain.link(i), Ok(naive[i as usize]), "L={length} i={i}");
            }
        }
    }

    #[test]
    fn rounds_run_the_chain_in_reverse() {
        let length = CHECKPOINT_EVERY + 3;
        let chain = Chain::new(SEED, length).expect("valid length");
        // Round L uses the seed itself; round 1 hashes once to the commitment.
        assert_eq!(chain.round_hash(length), Ok(SEED));
        let round1 = chain.round_hash(1).expect("in range");
        assert_eq!(sha256(&round1), chain.terminating_hash());
        // SHA-256 of round k's hash is round k-1's hash.
        for k in 2..=length {
            let this = chain.round_hash(k).expect("in range");
            assert_eq!(Ok(sha256(&this)), chain.round_hash(k - 1), "round {k}");
        }
    }

    #[test]
    fn out_of_range_rounds_and_links_are_errors() {
        let chain = Chain::new(SEED, 10).expect("valid length");
        assert_eq!(
            chain.round_hash(0),
            Err(FairnessError::RoundOutOfRange {
                round: 0,
                length: 10
            })
        );
        assert_eq!(
            chain.round_hash(11),
            Err(FairnessError::RoundOutOfRange {
                round: 11,
                length: 10
            })
        );
        assert!(chain.round_hash(u64::MAX).is_err());
        assert_eq!(chain.link(10), Ok(chain.terminating_hash()));
        assert_eq!(
            chain.link(11),
            Err(FairnessError::LinkOutOfRange {
                index: 11,
                length: 10
            })
        );
    }

    #[test]
    fn invalid_lengths_are_refused() {
        for length in [0, MAX_CHAIN_LENGTH + 1, u64::MAX] {
            assert_eq!(
                Chain::new(SEED, length).map(|_| ()),
                Err(FairnessError::InvalidLength { length })
            );
            assert_eq!(
                Chain::generate(length, &mut rand::rngs::OsRng).map(|_| ()),
                Err(FairnessError::InvalidLength { length })
            );
        }
    }

    #[test]
    fn generate_draws_the_seed_from_the_rng_it_is_given() {
        use rand::SeedableRng;
        let (a, seed_a) =
            Chain::generate(7, &mut rand::rngs::StdRng::seed_from_u64(42)).expect("chain");
        let (b, seed_b) =
            Chain::generate(7, &mut rand::rngs::StdRng::seed_from_u64(42)).expect("chain");
        assert_eq!(seed_a, seed_b);
        assert_eq!(a.terminating_hash(), b.terminating_hash());
        assert_eq!(
            Chain::new(seed_a, 7).expect("chain").terminating_hash(),
            a.terminating_hash()
        );
    }

    #[test]
    fn generate_uses_a_fresh_seed() {
        let (chain, seed) = Chain::generate(5, &mut rand::rngs::OsRng).expect("OS RNG works");
        let (_, other) = Chain::generate(5, &mut rand::rngs::OsRng).expect("OS RNG works");
        assert_ne!(seed, other);
        assert_eq!(chain.round_hash(5), Ok(seed));
        assert!(verify_commitment(&seed, &chain.terminating_hash(), 5));
    }

    #[test]
    fn debug_shows_only_the_commitment() {
        let chain = Chain::new(SEED, 2 * CHECKPOINT_EVERY).expect("valid length");
        let printed = format!("{chain:?}");
        assert!(printed.contains(&to_hex(&chain.terminating_hash())));
        for i in 0..2 * CHECKPOINT_EVERY {
            let secret = to_hex(&chain.link(i).expect("in range"));
            assert!(!printed.contains(&secret), "link {i} leaked: {printed}");
        }
    }

    /// A production-sized chain, built once: checkpoints stay ~300 KB and deep links are right.
    /// Speed is measured by `benches/fairness.rs`, never asserted here. This is the slowest unit
    /// test: ~10 s in the dev profile, where the SHA-256 glue code is unoptimised; 0.5 s in release.
    #[test]
    fn ten_million_link_chain() {
        let length = 10_000_000;
        let chain = Chain::new(SEED, length).expect("valid length");
        let bytes = chain.checkpoint_count() * std::mem::size_of::<Hash32>();
        assert_eq!(chain.checkpoint_count(), 9_766);
        assert!(bytes < 320_000, "{bytes} bytes of checkpoints");
        // The link just below a checkpoint is the most expensive lookup; check it by hand.
        let i = 5_000 * CHECKPOINT_EVERY - 1;
        let mut h = chain.link(i - 3).expect("in range");
        for _ in 0..3 {
            h = sha256(&h);
        }
        assert_eq!(chain.link(i), Ok(h));
        assert_eq!(
            sha256(&chain.round_hash(1).expect("in range")),
            chain.terminating_hash()
        );
        assert_eq!(chain.round_hash(length), Ok(SEED));
    }

    #[test]
    fn parse_hash_accepts_either_case_and_surrounding_whitespace() {
        let lower = "2d24283803decababce66e522c3526100a6b7846a3757daeced0afa3c990a54d";
        let h = parse_hash(lower).expect("valid");
        assert_eq!(to_hex(&h), lower);
        assert_eq!(parse_hash(&lower.to_uppercase()), Ok(h));
        assert_eq!(parse_hash(&format!("  {lower}\n")), Ok(h));
    }

    #[test]
    fn parse_hash_refuses_bad_input_without_echoing_it() {
        let good = "2d24283803decababce66e522c3526100a6b7846a3757daeced0afa3c990a54d";
        let cases = [
            String::new(),
            good[..63].to_owned(),
            format!("{good}0"),
            format!("{}g", &good[..63]),
            format!("0x{}", &good[..62]),
            format!("{}é", &good[..62]),
            format!("{} {}", &good[..31], &good[32..]),
        ];
        for bad in cases {
            let err = parse_hash(&bad).expect_err("must be refused");
            assert_eq!(err.code(), "invalid_hash");
            let message = err.to_string();
            assert!(message.contains("64 hexadecimal"), "{message}");
            if bad.len() > 8 {
                assert!(!message.contains(&bad[..8]), "{message} echoes input");
            }
        }
    }

    #[test]
    fn r_is_the_top_52_bits() {
        let mut mac = [0u8; 32];
        mac[..8].copy_from_slice(&0xabcd_ef01_2345_6789u64.to_be_bytes());
        assert_eq!(r_from_hmac(&mac), 0x000a_bcde_f012_3456);
        assert_eq!(r_from_hmac(&[0xff; 32]), R_RANGE - 1);
        assert_eq!(r_from_hmac(&[0; 32]), 0);
    }

    #[test]
    fn crash_formula_edges() {
        // r = 2^51 is "half way": 2x before the edge.
        assert_eq!(crash_x100_from_r(R_RANGE / 2, 0), 200);
        assert_eq!(crash_x100_from_r(R_RANGE / 2, 100), 198);
        // A 100 % edge always crashes at 1.00x, even at the top of the range.
        assert_eq!(crash_x100_from_r(R_RANGE - 1, MAX_HOUSE_EDGE_BP), 100);
        // The top of the range with no edge is the largest value the formula can produce.
        assert_eq!(crash_x100_from_r(R_RANGE - 1, 0), 100 * R_RANGE);
        // Out-of-contract input saturates rather than dividing by zero or underflowing.
        assert_eq!(crash_x100_from_r(R_RANGE, 0), 100 * R_RANGE);
        assert_eq!(crash_x100_from_r(u64::MAX, 0), 100 * R_RANGE);
        assert_eq!(crash_x100_from_r(R_RANGE / 2, u32::MAX), 100);
    }

    #[test]
    fn crash_formula_matches_the_public_float_formula_at_one_percent() {
        // floor(99 / (1 - r/2^52)) in f64 is what the well-known public verifier computes; away
        // from exact integer boundaries the two agree. Spread r over the whole range.
        let mut r = 1u64;
        for _ in 0..10_000 {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r52 = r >> 12;
            let float = (99.0 / (1.0 - r52 as f64 / R_RANGE as f64)).floor() as u64;
            let exact = crash_x100_from_r(r52, 100);
            assert!(exact.abs_diff(float.max(100)) <= 1, "r={r52}");
        }
    }

    #[test]
    fn calculator_validates_its_parameters() {
        assert!(CrashCalculator::new("salt", 0, 100).is_ok());
        assert!(CrashCalculator::new("salt", MAX_HOUSE_EDGE_BP, u64::MAX).is_ok());
        assert_eq!(
            CrashCalculator::new("salt", 10_001, 1000).map(|_| ()),
            Err(FairnessError::InvalidEdge { edge_bp: 10_001 })
        );
        assert_eq!(
            CrashCalculator::new("salt", 100, 99).map(|_| ()),
            Err(FairnessError::InvalidCap { max_x100: 99 })
        );
        for salt in ["", " salt", "salt\n", &"s".repeat(MAX_SALT_LEN + 1)] {
            let err = CrashCalculator::new(salt, 100, 1000).expect_err("bad salt");
            assert_eq!(err.code(), "invalid_salt");
        }
    }

    #[test]
    fn calculator_caps_and_clones_independently() {
        let uncapped = CrashCalculator::new("salt", 0, u64::MAX).expect("valid");
        let capped = CrashCalculator::new("salt", 0, 150).expect("valid");
        let always_one = CrashCalculator::new("salt", MAX_HOUSE_EDGE_BP, 1000).expect("valid");
        let copy = uncapped.clone();
        let mut h = SEED;
        for _ in 0..1000 {
            h = sha256(&h);
            let x = uncapped.crash_x100(&h);
            assert_eq!(x, crash_x100_from_r(uncapped.r(&h), 0));
            // Cloning per round must not let one round's message leak into the next.
            assert_eq!(copy.crash_x100(&h), x);
            assert_eq!(capped.crash_x100(&h), x.min(150));
            assert_eq!(always_one.crash_x100(&h), 100);
        }
        let printed = format!("{uncapped:?}");
        assert!(printed.contains("salt") && printed.contains("house_edge_bp"));
    }

    #[test]
    fn commitment_check() {
        let chain = Chain::new(SEED, 50).expect("valid length");
        let t = chain.terminating_hash();
        for k in 1..=50 {
            let h = chain.round_hash(k).expect("in range");
            assert!(verify_commitment(&h, &t, k), "round {k}");
            assert!(!verify_commitment(&h, &t, k - 1));
            assert!(!verify_commitment(&h, &t, k + 1));
        }
        assert!(verify_commitment(&t, &t, 0));
        assert!(!verify_commitment(&SEED, &t, u64::MAX));
    }

    #[test]
    fn multipliers_print_with_two_decimals() {
        assert_eq!(format_x100(100), "1.00x");
        assert_eq!(format_x100(259), "2.59x");
        assert_eq!(format_x100(25977), "259.77x");
        assert_eq!(format_x100(105), "1.05x");
    }
}
