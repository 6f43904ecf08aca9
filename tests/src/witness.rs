//! A witness of a table's round log, as an auditor would keep one: it collects signed tree heads
//! from any node at any time (through faults, failovers and restarts), checks each signature with
//! the table's published key, and at the end proves that every head it saw is a prefix of the
//! newest one — the log was only ever appended to, whichever node served it.

use crashfleet_core::merkle::{Hash, verify_consistency};
use crashfleet_core::settlement::{TreeHead, signing};
use serde_json::Value;

use crate::api::Client;

pub struct LogWitness {
    key: [u8; 32],
    /// (size, root) of every head seen, in the order seen.
    heads: Vec<(u64, Hash)>,
}

fn hex_array<const N: usize>(v: &Value) -> Option<[u8; N]> {
    hex::decode(v.as_str()?).ok()?.try_into().ok()
}

impl LogWitness {
    /// A witness for the table `api` serves, with the key its fairness commitment publishes.
    pub async fn new(api: &Client) -> LogWitness {
        let (st, f) = api.get("/api/v1/fairness").await;
        assert_eq!(st, 200, "{f}");
        LogWitness {
            key: hex_array(&f["signing_key"]).expect("a 32-byte signing_key"),
            heads: Vec::new(),
        }
    }

    /// Heads seen so far.
    pub fn seen(&self) -> usize {
        self.heads.len()
    }

    /// Takes the current head from `api`; a node that cannot answer (down, cut off) is skipped.
    /// Returns a violation when the node signs something that does not verify.
    pub async fn observe(&mut self, api: &Client) -> Option<String> {
        let (st, head) = api.get("/api/v1/log/head").await;
        if st != 200 {
            return None;
        }
        let message = head["message"].as_str().and_then(|m| hex::decode(m).ok());
        let signature = hex_array::<64>(&head["signature"]);
        let (Some(message), Some(signature)) = (message, signature) else {
            return Some(format!("a head that is not hex: {head}"));
        };
        if !signing::verify(&self.key, &message, &signature) {
            return Some(format!("a head whose signature does not verify: {head}"));
        }
        match TreeHead::decode(&message) {
            Ok(t) => {
                self.heads.push((t.size, t.root));
                None
            }
            Err(e) => Some(format!("a signed head that does not decode ({e}): {head}")),
        }
    }

    /// Every head seen must be consistent with the newest one (RFC 9162 consistency proofs from
    /// `api`), and two heads of one size must have one root. Returns the violations.
    pub async fn check(&mut self, api: &Client) -> Vec<String> {
        let mut violations = Vec::new();
        if let Some(v) = self.observe(api).await {
            violations.push(v);
        }
        let Some(&(size, root)) = self.heads.iter().max_by_key(|(s, _)| *s) else {
            return vec!["no log head was ever seen".into()];
        };
        let mut sizes: Vec<(u64, Hash)> = self.heads.clone();
        sizes.sort();
        sizes.dedup();
        for pair in sizes.windows(2) {
            if pair[0].0 == pair[1].0 {
                violations.push(format!(
                    "two heads of size {} with different roots {} and {}",
                    pair[0].0,
                    hex::encode(pair[0].1),
                    hex::encode(pair[1].1)
                ));
            }
        }
        for &(old, old_root) in &sizes {
            if old == 0 || old == size {
                continue;
            }
            let (st, proof) = api
                .get(&format!("/api/v1/log/consistency?from={old}&to={size}"))
                .await;
            let path: Option<Vec<Hash>> = proof["path"]
                .as_array()
                .and_then(|p| p.iter().map(hex_array::<32>).collect());
            let consistent = st == 200
                && path.is_some_and(|p| verify_consistency(&old_root, old, &root, size, &p));
            if !consistent {
                violations.push(format!(
                    "the head of size {old} is not a prefix of the head of size {size} ({st}: {proof})"
                ));
            }
        }
        violations
    }
}
