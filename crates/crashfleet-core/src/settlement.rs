//! The byte formats of verifiable settlement: what the table's Ed25519 key signs (a bet's or a
//! cash-out's receipt, a tree head of the round log) and what the Merkle trees hold (one leaf per
//! bet of a round, one leaf per round in the log).
//!
//! Every format is canonical — one value, one encoding — so a signature or a hash covers exactly
//! the fields and a verifier in any language re-derives the bytes without a JSON library:
//!
//! - it starts with its tag: one byte giving the tag's length, then the tag's ASCII bytes
//!   (`crashfleet/receipt/v1`, `crashfleet/settlement-leaf/v1`, `crashfleet/log-leaf/v1`,
//!   `crashfleet/tree-head/v1`), so bytes signed or hashed as one kind are never valid as another;
//! - then its fields in the documented order: integers big-endian and fixed width (`u8`, `u64`,
//!   and `i64` as its two's-complement `u64`), hashes as their 32 bytes, text as a `u16`
//!   big-endian byte length and then its UTF-8 bytes;
//! - an absent value is `0` where 0 is not a valid value (an auto-cash-out target or a
//!   multiplier is at least 1.01×, i.e. 101);
//! - nothing follows the last field: [`decode`](Receipt::decode) refuses trailing bytes.
//!
//! Decoding checks everything (tag, lengths, UTF-8, known kinds) and never panics: the bytes come
//! from players' files and other servers.

use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const RECEIPT_TAG: &str = "crashfleet/receipt/v1";
const SETTLEMENT_LEAF_TAG: &str = "crashfleet/settlement-leaf/v1";
const LOG_LEAF_TAG: &str = "crashfleet/log-leaf/v1";
const TREE_HEAD_TAG: &str = "crashfleet/tree-head/v1";

/// A format's bytes that do not decode: what is wrong with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// The hash that stands for a player in receipts and proofs: SHA-256 of
/// `crashfleet/player/v1` ‖ 0x00 ‖ the player's id. Public proofs show it instead of the id; the
/// player, who knows their id, recomputes it.
pub fn player_hash(player_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"crashfleet/player/v1\x00");
    h.update(player_id.as_bytes());
    h.finalize().into()
}

/// What a receipt attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// A bet accepted: its stake taken.
    Bet = 1,
    /// A cash-out the player asked for, accepted at a multiplier.
    CashOut = 2,
    /// A cash-out at the bet's auto target, made by the round's leader.
    AutoCashOut = 3,
}

/// A signed statement of one accepted money decision. Encoded (in this order): tag, kind (`u8`),
/// table (text), round (`u64`), bet id (text), player hash (32 bytes), stake (`u64`),
/// auto-cash-out target ×100 (`u64`, 0: none), server time in ms since the Unix epoch (`i64`),
/// multiplier ×100 (`u64`, 0 for a bet), payout (`u64`, 0 for a bet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub kind: ReceiptKind,
    pub table: String,
    pub round: u64,
    pub bet_id: String,
    pub player: Hash,
    pub stake: u64,
    pub auto_cashout_x100: Option<u64>,
    pub at_ms: i64,
    /// The cash-out's multiplier ×100 (`None` for a bet).
    pub multiplier_x100: Option<u64>,
    /// The cash-out's payout (`None` for a bet).
    pub payout: Option<u64>,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(RECEIPT_TAG);
        w.u8(self.kind as u8);
        w.text(&self.table);
        w.u64(self.round);
        w.text(&self.bet_id);
        w.hash(&self.player);
        w.u64(self.stake);
        w.u64(self.auto_cashout_x100.unwrap_or(0));
        w.i64(self.at_ms);
        w.u64(self.multiplier_x100.unwrap_or(0));
        w.u64(self.payout.unwrap_or(0));
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Receipt, FormatError> {
        let mut r = Reader::new(bytes, RECEIPT_TAG)?;
        let kind = match r.u8()? {
            1 => ReceiptKind::Bet,
            2 => ReceiptKind::CashOut,
            3 => ReceiptKind::AutoCashOut,
            k => return Err(FormatError(format!("unknown receipt kind {k}"))),
        };
        let receipt = Receipt {
            kind,
            table: r.text()?,
            round: r.u64()?,
            bet_id: r.text()?,
            player: r.hash()?,
            stake: r.u64()?,
            auto_cashout_x100: none_if_zero(r.u64()?),
            at_ms: r.i64()?,
            multiplier_x100: none_if_zero(r.u64()?),
            payout: match (kind, r.u64()?) {
                (ReceiptKind::Bet, 0) => None,
                (ReceiptKind::Bet, p) => {
                    return Err(FormatError(format!("a bet's receipt with a payout ({p})")));
                }
                (_, p) => Some(p),
            },
        };
        r.end()?;
        if (kind == ReceiptKind::Bet) != receipt.multiplier_x100.is_none() {
            return Err(FormatError(
                "a cash-out's receipt needs a multiplier and a bet's has none".into(),
            ));
        }
        Ok(receipt)
    }
}

/// How a bet ended, in a settlement leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Lost = 0,
    Won = 1,
    /// The round was voided and the stake returned.
    Refunded = 2,
}

/// One bet of a settled round: a leaf of the round's settlement tree. Encoded: tag, bet id
/// (text), player hash, stake (`u64`), outcome (`u8`: 0 lost, 1 won, 2 refunded), multiplier ×100
/// (`u64`, 0 unless won), payout (`u64`: what the player got back; 0 when lost, the stake when
/// refunded). A round's leaves are ordered by bet id (bytewise), which for crashfleet's
/// time-ordered ids is the order the bets were placed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementLeaf {
    pub bet_id: String,
    pub player: Hash,
    pub stake: u64,
    pub outcome: Outcome,
    pub multiplier_x100: Option<u64>,
    pub payout: u64,
}

impl SettlementLeaf {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(SETTLEMENT_LEAF_TAG);
        w.text(&self.bet_id);
        w.hash(&self.player);
        w.u64(self.stake);
        w.u8(self.outcome as u8);
        w.u64(self.multiplier_x100.unwrap_or(0));
        w.u64(self.payout);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<SettlementLeaf, FormatError> {
        let mut r = Reader::new(bytes, SETTLEMENT_LEAF_TAG)?;
        let leaf = SettlementLeaf {
            bet_id: r.text()?,
            player: r.hash()?,
            stake: r.u64()?,
            outcome: match r.u8()? {
                0 => Outcome::Lost,
                1 => Outcome::Won,
                2 => Outcome::Refunded,
                o => return Err(FormatError(format!("unknown outcome {o}"))),
            },
            multiplier_x100: none_if_zero(r.u64()?),
            payout: r.u64()?,
        };
        r.end()?;
        Ok(leaf)
    }
}

/// What a settled round commits to: the root of the RFC 6962 tree over its settlement leaves (in
/// canonical order), how many bets it had, and what they staked and were paid (wins and refunds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementSummary {
    pub root: Hash,
    pub bets: u64,
    pub wagered: u64,
    pub paid: u64,
}

/// Puts a round's leaves in canonical order (by bet id, bytewise — never a database collation)
/// and commits to them.
pub fn settle(leaves: &mut [SettlementLeaf]) -> SettlementSummary {
    leaves.sort_unstable_by(|a, b| a.bet_id.as_bytes().cmp(b.bet_id.as_bytes()));
    let tree = crate::merkle::Tree::from_leaves(leaves.iter().map(SettlementLeaf::encode));
    SettlementSummary {
        root: tree.root(),
        bets: leaves.len() as u64,
        wagered: leaves.iter().fold(0u64, |s, l| s.saturating_add(l.stake)),
        paid: leaves.iter().fold(0u64, |s, l| s.saturating_add(l.payout)),
    }
}

/// How a round ended, in the round log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundEnd {
    Crashed = 1,
    /// Voided: every open bet refunded.
    Voided = 2,
}

/// One settled round: a leaf of the table's round log. Encoded: tag, round number (`u64`), the
/// round's hash from the chain (32 bytes), how it ended (`u8`: 1 crashed, 2 voided), crash point
/// ×100 (`u64`), settlement root (32 bytes), bets (`u64`), wagered (`u64`), paid (`u64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLeaf {
    pub round: u64,
    pub round_hash: Hash,
    pub end: RoundEnd,
    pub crash_x100: u64,
    pub settlement_root: Hash,
    pub bets: u64,
    pub wagered: u64,
    pub paid: u64,
}

impl LogLeaf {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(LOG_LEAF_TAG);
        w.u64(self.round);
        w.hash(&self.round_hash);
        w.u8(self.end as u8);
        w.u64(self.crash_x100);
        w.hash(&self.settlement_root);
        w.u64(self.bets);
        w.u64(self.wagered);
        w.u64(self.paid);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<LogLeaf, FormatError> {
        let mut r = Reader::new(bytes, LOG_LEAF_TAG)?;
        let leaf = LogLeaf {
            round: r.u64()?,
            round_hash: r.hash()?,
            end: match r.u8()? {
                1 => RoundEnd::Crashed,
                2 => RoundEnd::Voided,
                e => return Err(FormatError(format!("unknown round end {e}"))),
            },
            crash_x100: r.u64()?,
            settlement_root: r.hash()?,
            bets: r.u64()?,
            wagered: r.u64()?,
            paid: r.u64()?,
        };
        r.end()?;
        Ok(leaf)
    }
}

/// A signed statement of the round log's size and root at a time. Encoded: tag, table (text),
/// size (`u64`), root (32 bytes), time in ms since the Unix epoch (`i64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    pub table: String,
    pub size: u64,
    pub root: Hash,
    pub timestamp_ms: i64,
}

impl TreeHead {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TREE_HEAD_TAG);
        w.text(&self.table);
        w.u64(self.size);
        w.hash(&self.root);
        w.i64(self.timestamp_ms);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<TreeHead, FormatError> {
        let mut r = Reader::new(bytes, TREE_HEAD_TAG)?;
        let head = TreeHead {
            table: r.text()?,
            size: r.u64()?,
            root: r.hash()?,
            timestamp_ms: r.i64()?,
        };
        r.end()?;
        Ok(head)
    }
}

fn none_if_zero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// Appends fields in the formats' encoding.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: &str) -> Writer {
        let mut w = Writer(Vec::with_capacity(128));
        // Tags are constants of this module, all shorter than 256 bytes.
        w.u8(tag.len() as u8);
        w.0.extend_from_slice(tag.as_bytes());
        w
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn hash(&mut self, h: &Hash) {
        self.0.extend_from_slice(h);
    }

    /// Text longer than 65,535 bytes is cut at a character boundary below that (ids and table
    /// names are far shorter: validated at 64 bytes).
    fn text(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.extend_from_slice(&(end as u16).to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
}

/// Reads fields back, refusing anything short, long or malformed.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], tag: &str) -> Result<Reader<'a>, FormatError> {
        let mut r = Reader(bytes);
        let len = r.u8()? as usize;
        if r.take(len)? != tag.as_bytes() {
            return Err(FormatError(format!("not a {tag} message")));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError("the message ends too early".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(b))
    }

    fn hash(&mut self) -> Result<Hash, FormatError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(h)
    }

    fn text(&mut self) -> Result<String, FormatError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        let len = u16::from_be_bytes(b) as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| FormatError("text that is not UTF-8".into()))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(FormatError(format!(
                "{} bytes after the last field",
                self.0.len()
            )))
        }
    }
}

/// Signing and checking with the table's Ed25519 key (RFC 8032: plain Ed25519, no prehash, no
/// context), over exactly the bytes of a format above.
pub mod signing {
    use ed25519_dalek::{Signer, Verifier};

    /// The table's signing key (its 32-byte secret seed).
    pub struct SigningKey(ed25519_dalek::SigningKey);

    impl SigningKey {
        /// A fresh key from the operating system's randomness.
        pub fn generate() -> SigningKey {
            let mut seed = [0u8; 32];
            rand::fill(&mut seed);
            SigningKey::from_seed(&seed)
        }

        pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
            SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
        }

        /// The secret seed, to store (mode 0600, or a Kubernetes Secret); never log it.
        pub fn seed(&self) -> [u8; 32] {
            self.0.to_bytes()
        }

        /// The public key players check signatures with.
        pub fn public_key(&self) -> [u8; 32] {
            self.0.verifying_key().to_bytes()
        }

        pub fn sign(&self, message: &[u8]) -> [u8; 64] {
            self.0.sign(message).to_bytes()
        }
    }

    impl std::fmt::Debug for SigningKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // Never the seed.
            write!(f, "SigningKey(public {})", hex::encode(self.public_key()))
        }
    }

    /// Whether `signature` is `public_key`'s Ed25519 signature of exactly `message` (strict:
    /// non-canonical encodings and small-order keys are refused).
    pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &sig).is_ok() && key.verify(message, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {

    /// The README's worked example ("What you can prove as a player"), whose bytes and hashes were
    /// computed with Python's hashlib from the documented layout, not with this code.
    #[test]
    fn the_readme_three_bet_round() {
        let leaf = |id: &str, player: &str, stake, outcome, m, payout| SettlementLeaf {
            bet_id: id.into(),
            player: player_hash(player),
            stake,
            outcome,
            multiplier_x100: m,
            payout,
        };
        let mut leaves = vec![
            leaf("bet-c", "carol", 200, Outcome::Won, Some(120), 240),
            leaf("bet-a", "alice", 1_000, Outcome::Won, Some(250), 2_500),
            leaf("bet-b", "bob", 500, Outcome::Lost, None, 0),
        ];
        let summary = settle(&mut leaves);
        assert_eq!(
            hex::encode(leaves[0].encode()),
            "1d6372617368666c6565742f736574746c656d656e742d6c6561662f763100056265742d61\
             15cff20e718ae7b644401eb5d92cd4a903244979ae5f773a69431c3727eca0f8\
             00000000000003e80100000000000000fa00000000000009c4"
        );
        let hashes: Vec<String> = leaves
            .iter()
            .map(|l| hex::encode(crate::merkle::leaf_hash(&l.encode())))
            .collect();
        assert_eq!(
            hashes,
            [
                "050f58e5849a79227e2cb08e283f8f87935dd6dd824a265222f6bd5a1ee1fdf1",
                "0303096047c59a420077684d829e3ed2701283a3679b96e313c2e5d28de5ded7",
                "71938171afab1d2c68f4efa5243093725c5e818a26d8c0a184a4fa3363dd9758",
            ]
        );
        assert_eq!(
            hex::encode(summary.root),
            "c30e3b6720100983cc5effbc3e1f5a36de1c8f2919e6eb40cffa0918624369ed"
        );
        assert_eq!(
            (summary.bets, summary.wagered, summary.paid),
            (3, 1_700, 2_740)
        );
        // Alice's audit path: bob's leaf hash, then carol's.
        let tree = crate::merkle::Tree::from_leaves(leaves.iter().map(SettlementLeaf::encode));
        let path: Vec<String> = tree
            .inclusion_proof(0, 3)
            .expect("a path")
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(path, [hashes[1].clone(), hashes[2].clone()]);
    }

    #[test]
    fn a_settlement_is_ordered_by_bet_id_bytes_and_totals_wins_and_refunds() {
        let leaf = |id: &str, outcome, multiplier_x100, payout| SettlementLeaf {
            bet_id: id.into(),
            player: player_hash(id),
            stake: 100,
            outcome,
            multiplier_x100,
            payout,
        };
        // "B" (0x42) sorts before "a" (0x61) bytewise, whatever a locale would say.
        let mut leaves = vec![
            leaf("a", Outcome::Won, Some(250), 250),
            leaf("B", Outcome::Lost, None, 0),
            leaf("c", Outcome::Refunded, None, 100),
        ];
        let summary = settle(&mut leaves);
        let ids: Vec<_> = leaves.iter().map(|l| l.bet_id.as_str()).collect();
        assert_eq!(ids, ["B", "a", "c"]);
        assert_eq!((summary.bets, summary.wagered, summary.paid), (3, 300, 350));
        let expected = crate::merkle::Tree::from_leaves(leaves.iter().map(SettlementLeaf::encode));
        assert_eq!(summary.root, expected.root());
        // The input order does not matter.
        leaves.reverse();
        assert_eq!(settle(&mut leaves), summary);
        // No bets: the empty tree's root.
        assert_eq!(settle(&mut []).root, crate::merkle::empty_root());
    }

    use super::signing::{SigningKey, verify};
    use super::*;

    fn cash_out() -> Receipt {
        Receipt {
            kind: ReceiptKind::CashOut,
            table: "main".into(),
            round: 42,
            bet_id: "0193f0b2-7c1e-7a3b-9d2e-5f6a7b8c9d0e".into(),
            player: player_hash("player-1"),
            stake: 1_000,
            auto_cashout_x100: None,
            at_ms: 1_765_000_000_000,
            multiplier_x100: Some(187),
            payout: Some(1_870),
        }
    }

    /// The receipt's bytes, spelled out field by field: the documented layout, not whatever the
    /// encoder happens to do.
    #[test]
    fn a_receipt_is_its_documented_bytes() {
        let r = cash_out();
        let mut want = vec![21u8];
        want.extend_from_slice(b"crashfleet/receipt/v1");
        want.push(2);
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(b"main");
        want.extend_from_slice(&42u64.to_be_bytes());
        want.extend_from_slice(&[0, 36]);
        want.extend_from_slice(r.bet_id.as_bytes());
        want.extend_from_slice(&r.player);
        want.extend_from_slice(&1_000u64.to_be_bytes());
        want.extend_from_slice(&0u64.to_be_bytes());
        want.extend_from_slice(&1_765_000_000_000u64.to_be_bytes());
        want.extend_from_slice(&187u64.to_be_bytes());
        want.extend_from_slice(&1_870u64.to_be_bytes());
        assert_eq!(r.encode(), want);
        assert_eq!(Receipt::decode(&want), Ok(r));
    }

    #[test]
    fn every_format_round_trips_and_refuses_the_others() {
        let receipt = cash_out().encode();
        let bet = Receipt {
            kind: ReceiptKind::Bet,
            auto_cashout_x100: Some(250),
            multiplier_x100: None,
            payout: None,
            ..cash_out()
        };
        let settlement = SettlementLeaf {
            bet_id: "b".into(),
            player: player_hash("p"),
            stake: 5,
            outcome: Outcome::Won,
            multiplier_x100: Some(200),
            payout: 10,
        };
        let log = LogLeaf {
            round: 7,
            round_hash: [9; 32],
            end: RoundEnd::Voided,
            crash_x100: 0,
            settlement_root: [1; 32],
            bets: 3,
            wagered: 30,
            paid: 30,
        };
        let head = TreeHead {
            table: "main".into(),
            size: 8,
            root: [2; 32],
            timestamp_ms: -1,
        };
        assert_eq!(Receipt::decode(&bet.encode()), Ok(bet));
        assert_eq!(
            SettlementLeaf::decode(&settlement.encode()),
            Ok(settlement.clone())
        );
        assert_eq!(LogLeaf::decode(&log.encode()), Ok(log.clone()));
        assert_eq!(TreeHead::decode(&head.encode()), Ok(head.clone()));
        assert!(SettlementLeaf::decode(&receipt).is_err());
        assert!(Receipt::decode(&settlement.encode()).is_err());
        assert!(TreeHead::decode(&log.encode()).is_err());
        assert!(LogLeaf::decode(&head.encode()).is_err());
    }

    #[test]
    fn malformed_bytes_are_refused_never_a_panic() {
        let good = cash_out().encode();
        for cut in 0..good.len() {
            assert!(Receipt::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Receipt::decode(&long).is_err());
        let mut kind = good.clone();
        kind[22] = 9;
        assert!(Receipt::decode(&kind).is_err());
        // A bet's receipt that claims a payout.
        let mut bet = good.clone();
        bet[22] = 1;
        assert!(Receipt::decode(&bet).is_err());
        let mut utf8 = good;
        utf8[25] = 0xff;
        assert!(Receipt::decode(&utf8).is_err());
        // Every single-byte change either fails to decode or decodes to something else.
        let good = cash_out().encode();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x41;
            assert_ne!(Receipt::decode(&b).ok(), Some(cash_out()), "byte {i}");
        }
    }

    /// RFC 8032 §7.1, test 2 (a one-byte message): the library signs as the standard says.
    #[test]
    fn ed25519_matches_rfc_8032() {
        let seed: [u8; 32] =
            hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .expect("hex")
                .try_into()
                .expect("32");
        let key = SigningKey::from_seed(&seed);
        assert_eq!(
            hex::encode(key.public_key()),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
        );
        let sig = key.sign(&[0x72]);
        assert_eq!(
            hex::encode(sig),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
        assert!(verify(&key.public_key(), &[0x72], &sig));
    }

    #[test]
    fn a_signature_covers_exactly_its_message() {
        let key = SigningKey::generate();
        let msg = cash_out().encode();
        let sig = key.sign(&msg);
        assert!(verify(&key.public_key(), &msg, &sig));
        let mut paid_more = cash_out();
        paid_more.payout = Some(18_700);
        assert!(!verify(&key.public_key(), &paid_more.encode(), &sig));
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(!verify(&key.public_key(), &msg, &bent));
        let other = SigningKey::generate();
        assert!(!verify(&other.public_key(), &msg, &sig));
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed())));
    }
}
