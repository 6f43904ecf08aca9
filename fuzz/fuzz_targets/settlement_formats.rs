//! Receipts, settlement and log leaves and tree heads come back from players' files and other
//! servers: any bytes must decode to an error, never a panic, and whatever decodes must encode
//! back to exactly the same bytes (one value, one encoding — what a signature or a hash relies on).
//! The same bytes as a Merkle proof must never make verification panic.
#![no_main]

use crashfleet_core::merkle::{Hash, verify_consistency, verify_inclusion};
use crashfleet_core::settlement::{LogLeaf, Receipt, SettlementLeaf, TreeHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Receipt::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(l) = SettlementLeaf::decode(data) {
        assert_eq!(l.encode(), data);
    }
    if let Ok(l) = LogLeaf::decode(data) {
        assert_eq!(l.encode(), data);
    }
    if let Ok(h) = TreeHead::decode(data) {
        assert_eq!(h.encode(), data);
    }
    // Sizes and indexes from the first 16 bytes, hashes from the rest.
    if data.len() >= 16 {
        let a = u64::from_be_bytes(data[..8].try_into().unwrap_or_default());
        let b = u64::from_be_bytes(data[8..16].try_into().unwrap_or_default());
        let hashes: Vec<Hash> = data[16..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let root = hashes.first().copied().unwrap_or([0; 32]);
        let path = hashes.get(1..).unwrap_or(&[]);
        let _ = verify_inclusion(&root, b, a, &root, path);
        let _ = verify_consistency(&root, a, &root, b, path);
    }
});
