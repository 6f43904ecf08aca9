//! The table's notary: signs a receipt for every accepted bet and cash-out with the table's
//! Ed25519 key, so a player holds the house to what it accepted.
//!
//! A receipt is built only from what the ledger stores (a bet's id, round, stake, target and
//! placement time; a cash-out's multiplier, payout and instant), and Ed25519 signatures are
//! deterministic, so a retried request gets byte-for-byte the receipt of its first answer.

use crashfleet_core::settlement::signing::SigningKey;
use crashfleet_core::settlement::{Receipt, ReceiptKind, player_hash};

use crate::engine::CashOut;
use crate::ports::BetRecord;
use crate::protocol::SignedReceipt;

/// Signs receipts for one table.
pub struct Notary {
    key: SigningKey,
    table: String,
    public_hex: String,
}

impl Notary {
    pub fn new(key: SigningKey, table: &str) -> Notary {
        Notary {
            public_hex: hex::encode(key.public_key()),
            key,
            table: table.to_string(),
        }
    }

    /// The public key every receipt verifies against, hex.
    pub fn public_key_hex(&self) -> &str {
        &self.public_hex
    }

    /// The key itself, for signing log heads.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The receipt of an accepted bet: its stake taken, at `placed_at_ms`.
    pub fn bet(&self, bet: &BetRecord) -> SignedReceipt {
        self.sign(&Receipt {
            kind: ReceiptKind::Bet,
            table: self.table.clone(),
            round: bet.round,
            bet_id: bet.bet_id.clone(),
            player: player_hash(&bet.player_id),
            stake: amount(bet.stake),
            auto_cashout_x100: bet.auto_cashout_x100,
            at_ms: bet.placed_at_ms,
            multiplier_x100: None,
            payout: None,
        })
    }

    /// The receipt of an accepted cash-out; `auto_target` is the bet's auto-cash-out target (the
    /// multiplier itself when the target triggered it).
    pub fn cash_out(&self, c: &CashOut, auto_target: Option<u64>) -> SignedReceipt {
        self.sign(&Receipt {
            kind: if c.auto {
                ReceiptKind::AutoCashOut
            } else {
                ReceiptKind::CashOut
            },
            table: self.table.clone(),
            round: c.round,
            bet_id: c.bet_id.clone(),
            player: player_hash(&c.player_id),
            stake: amount(c.stake),
            auto_cashout_x100: if c.auto {
                Some(c.multiplier_x100)
            } else {
                auto_target
            },
            at_ms: c.at_ms,
            multiplier_x100: Some(c.multiplier_x100),
            payout: Some(amount(c.payout)),
        })
    }

    fn sign(&self, receipt: &Receipt) -> SignedReceipt {
        let started = std::time::Instant::now();
        let signed = SignedReceipt::sign(receipt, &self.key);
        metrics::histogram!("crashfleet_receipt_sign_seconds")
            .record(started.elapsed().as_secs_f64());
        signed
    }
}

/// Stakes and payouts are never negative (the ledger's CHECKs); a receipt states them unsigned.
fn amount(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BetStatus, ReceiptKindView};

    fn bet() -> BetRecord {
        BetRecord {
            bet_id: "0190b7a4-0000-7000-8000-000000000001".into(),
            table: "main".into(),
            round: 42,
            player_id: "player-1".into(),
            username: "alice".into(),
            stake: 1_000,
            auto_cashout_x100: Some(250),
            status: BetStatus::Open,
            cashout_x100: None,
            payout: None,
            placed_at_ms: 1_700_000_000_123,
            settled_at_ms: None,
            idempotency_key: "k".into(),
            cashout_key: None,
        }
    }

    #[test]
    fn receipts_verify_and_state_what_was_accepted() {
        let notary = Notary::new(SigningKey::from_seed(&[9; 32]), "main");
        let public: [u8; 32] = hex::decode(notary.public_key_hex())
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let b = bet();
        let signed = notary.bet(&b);
        assert_eq!(signed.kind, ReceiptKindView::Bet);
        let r = signed.verify(&public).expect("verifies");
        assert_eq!((r.round, r.stake, r.at_ms), (42, 1_000, b.placed_at_ms));
        assert_eq!(r.player, player_hash("player-1"));
        assert_eq!(r.auto_cashout_x100, Some(250));
        // Deterministic: a retry's receipt is the first one, byte for byte.
        assert_eq!(notary.bet(&b), signed);

        let c = CashOut {
            round: 42,
            bet_id: b.bet_id.clone(),
            player_id: b.player_id.clone(),
            username: b.username.clone(),
            stake: b.stake,
            multiplier_x100: 187,
            payout: 1_870,
            at_ms: b.placed_at_ms + 9_000,
            auto: false,
            key: Some("c".into()),
        };
        let r = notary
            .cash_out(&c, Some(250))
            .verify(&public)
            .expect("verifies");
        assert_eq!((r.multiplier_x100, r.payout), (Some(187), Some(1_870)));
        assert_eq!(
            (r.kind, r.auto_cashout_x100),
            (ReceiptKind::CashOut, Some(250))
        );
        let auto = notary
            .cash_out(
                &CashOut {
                    auto: true,
                    multiplier_x100: 250,
                    payout: 2_500,
                    ..c
                },
                Some(250),
            )
            .verify(&public)
            .expect("verifies");
        assert_eq!(auto.kind, ReceiptKind::AutoCashOut);

        // Another key's receipt does not verify, and neither does a changed message.
        let other = Notary::new(SigningKey::from_seed(&[8; 32]), "main").bet(&b);
        assert!(other.verify(&public).is_err());
        let mut forged = signed.clone();
        forged
            .message
            .replace_range(forged.message.len() - 2.., "ff");
        assert!(forged.verify(&public).is_err());
    }
}
