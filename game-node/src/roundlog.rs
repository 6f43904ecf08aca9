//! The table's public round log: an append-only RFC 6962 Merkle tree with one leaf per settled
//! round, in round order — {round, round hash, crashed or voided, crash point, settlement root,
//! bets, wagered, paid} — so anyone holding two signed tree heads can check that the history
//! between them was only ever appended to.
//!
//! The log is not a second copy of the money: it is derived from the ledger's settled rounds, which
//! every node reads, so it survives restarts and failovers unchanged (a new leader settles the next
//! round; every node appends it when it next looks). Each node keeps the tree's hashes in memory
//! (64 bytes per round: the leaf and the perfect subtrees above it) and appends what the ledger
//! settled since it last looked, before it answers any log request.
//!
//! Rounds are numbered 1, 2, 3… and settled in that order (a leader finishes or voids a round
//! before opening the next), so round `n` is leaf `n − 1`. A gap would make that false: the log
//! then stops growing at the gap and says so in the node's log, rather than skip a round.

use crashfleet_core::merkle::{Hash, Tree};
use crashfleet_core::settlement::{LogLeaf, RoundEnd, TreeHead};

use crate::error::{Error, Result};
use crate::ports::{Ledger, RoundRecord};
use crate::protocol::RoundStatus;
use crate::receipts::Notary;

/// Rounds read from the ledger per query while catching up (a node starting on a long history).
const SYNC_BATCH: u32 = 10_000;

pub struct RoundLog {
    table: String,
    tree: tokio::sync::Mutex<Tree>,
}

/// A signed statement of the log's size and root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SignedHead {
    pub size: u64,
    /// Hex of the RFC 6962 root of the first `size` leaves.
    pub root: String,
    pub timestamp_ms: i64,
    /// Hex of the signed bytes (tag `crashfleet/tree-head/v1`, table, size, root, timestamp).
    pub message: String,
    /// Hex of the table key's Ed25519 signature over `message`.
    pub signature: String,
}

impl RoundLog {
    pub fn new(table: &str) -> RoundLog {
        RoundLog {
            table: table.to_string(),
            tree: tokio::sync::Mutex::new(Tree::new()),
        }
    }

    /// The log leaf of a settled round, as stored.
    pub fn leaf(r: &RoundRecord) -> Result<LogLeaf> {
        let hash = crate::fairness::parse_hash(&r.hash)
            .map_err(|e| Error::Internal(format!("round {} has no valid hash: {e}", r.number)))?;
        let settled = r
            .settlement
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("round {} has no settlement root", r.number)))?;
        let root = crate::fairness::parse_hash(&settled.settlement_root)
            .map_err(|e| Error::Internal(format!("round {}'s settlement root: {e}", r.number)))?;
        Ok(LogLeaf {
            round: r.number,
            round_hash: hash,
            end: match r.status {
                RoundStatus::Voided => RoundEnd::Voided,
                _ => RoundEnd::Crashed,
            },
            crash_x100: r.crash_x100,
            settlement_root: root,
            bets: settled.bets_count,
            wagered: settled.wagered,
            paid: settled.paid,
        })
    }

    /// Appends every round the ledger settled since the last look, and returns the tree.
    pub async fn sync(&self, ledger: &dyn Ledger) -> Result<tokio::sync::MutexGuard<'_, Tree>> {
        let mut tree = self.tree.lock().await;
        loop {
            let rounds = ledger
                .rounds_after(&self.table, tree.len(), SYNC_BATCH)
                .await?;
            let mut appended = 0;
            for r in &rounds {
                if r.number != tree.len() + 1 {
                    tracing::error!(
                        table = %self.table,
                        expected = tree.len() + 1,
                        found = r.number,
                        "a gap in the settled rounds: the round log stops before it"
                    );
                    return Ok(tree);
                }
                tree.push(&Self::leaf(r)?.encode());
                appended += 1;
            }
            if appended < SYNC_BATCH as usize {
                return Ok(tree);
            }
        }
    }

    /// The current head, signed.
    pub async fn head(
        &self,
        ledger: &dyn Ledger,
        notary: &Notary,
        now_ms: i64,
    ) -> Result<SignedHead> {
        let tree = self.sync(ledger).await?;
        let head = TreeHead {
            table: self.table.clone(),
            size: tree.len(),
            root: tree.root(),
            timestamp_ms: now_ms,
        };
        drop(tree);
        let message = head.encode();
        Ok(SignedHead {
            size: head.size,
            root: hex::encode(head.root),
            timestamp_ms: now_ms,
            signature: hex::encode(notary.key().sign(&message)),
            message: hex::encode(message),
        })
    }

    /// Round `round`'s leaf (as stored, checked against the log), its index and its audit path in
    /// the log's first `size` leaves (`None`: the current size). `None` when the round is not in
    /// them.
    pub async fn inclusion(
        &self,
        ledger: &dyn Ledger,
        round: u64,
        size: Option<u64>,
    ) -> Result<Option<Inclusion>> {
        let tree = self.sync(ledger).await?;
        let size = size.unwrap_or(tree.len());
        if size > tree.len() {
            return Err(Error::BadRequest(format!(
                "size {size} is larger than the log ({} rounds)",
                tree.len()
            )));
        }
        if round == 0 || round > size {
            return Ok(None);
        }
        let index = round - 1;
        let path = tree
            .inclusion_proof(index, size)
            .ok_or_else(|| Error::Internal("no inclusion proof".into()))?;
        let logged = tree.leaf(index);
        let root = tree.root_at(size);
        drop(tree);
        let record = ledger
            .round(&self.table, round)
            .await?
            .ok_or(Error::UnknownRound(round))?;
        let leaf = Self::leaf(&record)?.encode();
        if logged != Some(crashfleet_core::merkle::leaf_hash(&leaf)) {
            // The row changed after the log took it in: the ledger was altered after settlement.
            tracing::error!(table = %self.table, round, "a settled round's row no longer matches the round log");
            return Err(Error::Internal(format!(
                "round {round}'s stored settlement no longer matches the round log"
            )));
        }
        Ok(Some(Inclusion {
            leaf: hex::encode(leaf),
            leaf_index: index,
            tree_size: size,
            path: path.iter().map(hex::encode).collect(),
            root: root.map(hex::encode).unwrap_or_default(),
        }))
    }

    /// The RFC 9162 consistency proof between the log's first `from` and first `to` leaves.
    pub async fn consistency(&self, ledger: &dyn Ledger, from: u64, to: u64) -> Result<Vec<Hash>> {
        let tree = self.sync(ledger).await?;
        if from == 0 || from > to || to > tree.len() {
            return Err(Error::BadRequest(format!(
                "need 0 < from <= to <= {} (the log's size); got from={from}, to={to}",
                tree.len()
            )));
        }
        tree.consistency_proof(from, to)
            .ok_or_else(|| Error::Internal("no consistency proof".into()))
    }
}

/// A round's place in the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Inclusion {
    /// Hex of the round's log leaf bytes (tag `crashfleet/log-leaf/v1`, round, round hash, end,
    /// crash point, settlement root, bets, wagered, paid).
    pub leaf: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Hex hashes from the leaf up to the root (RFC 9162 inclusion proof).
    pub path: Vec<String>,
    /// Hex root of the log's first `tree_size` leaves.
    pub root: String,
}
