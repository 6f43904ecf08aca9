//! Merkle trees as Certificate Transparency defines them (RFC 6962 §2.1, restated in RFC 9162
//! §2.1): a round's settlement root over its bets and the table's append-only log of rounds.
//!
//! Hashing is SHA-256 with domain separation, so a leaf can never be taken for a node:
//! leaf hash = SHA-256(0x00 ‖ leaf bytes), node hash = SHA-256(0x01 ‖ left ‖ right); the root of
//! the empty tree is SHA-256 of nothing. A tree of `n` leaves splits at `k`, the largest power of
//! two below `n`: the left subtree holds the first `k` leaves and is perfect, the right one the
//! rest. Proofs are the RFC's `PATH` (inclusion: the siblings from the leaf up) and `PROOF`
//! (consistency: what shows a tree of `m` leaves is a prefix of one of `n`), and the checks are
//! RFC 9162's verification algorithms (§2.1.3.2, §2.1.4.2), which need only the hashes given.
//!
//! [`Tree`] keeps every perfect subtree's hash (two hashes per leaf in all), so the root of any
//! prefix and any proof take O(log² n) hashes, not O(n): a log of millions of rounds answers a
//! proof for any earlier size without rehashing its leaves.

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf's hash, a node's, a root.
pub type Hash = [u8; 32];

/// The hash of a leaf's bytes: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// The hash of an inner node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`): where a tree of `n` leaves splits.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree over leaf hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// `levels[h][i]` is the root of the perfect subtree over leaves `i·2^h .. (i+1)·2^h`;
    /// `levels[0]` holds the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree over these leaves' bytes, in order.
    pub fn from_leaves<L: AsRef<[u8]>>(leaves: impl IntoIterator<Item = L>) -> Tree {
        let mut t = Tree::new();
        for l in leaves {
            t.push_hash(leaf_hash(l.as_ref()));
        }
        t
    }

    /// Appends a leaf (its bytes).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_hash(leaf_hash(leaf));
    }

    /// Appends a leaf by its leaf hash (as stored), completing every perfect subtree it closes.
    pub fn push_hash(&mut self, leaf_hash: Hash) {
        let mut h = leaf_hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let n = self.levels[level].len();
            if !n.is_multiple_of(2) {
                break;
            }
            h = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            level += 1;
        }
    }

    /// Leaves in the tree.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The root of the tree's first `size` leaves (`None` past its length).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        match size {
            0 => Some(empty_root()),
            s if s > self.len() => None,
            s => Some(self.range(0, s)),
        }
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(empty_root)
    }

    /// MTH of leaves `start .. end` for a range the RFC's recursion produces: `start` is a
    /// multiple of the largest power of two not above `end - start`, so the left part of every
    /// split is a stored perfect subtree.
    fn range(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.range(start, start + k), &self.range(start + k, end))
    }

    /// The inclusion proof (RFC 6962 `PATH`) of leaf `index` in the tree's first `size` leaves:
    /// sibling hashes from the leaf up. `None` unless `index < size ≤ len`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.len() {
            return None;
        }
        let mut path = Vec::new();
        self.path(index, 0, size, &mut path);
        Some(path)
    }

    /// PATH(m, D[start..end]), appended bottom-up.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range(start, start + k));
        }
    }

    /// The consistency proof (RFC 6962 `PROOF`) that the first `old` leaves are a prefix of the
    /// first `new`. `None` unless `0 < old ≤ new ≤ len`; empty when `old == new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old == 0 || old > new || new > self.len() {
            return None;
        }
        let mut proof = Vec::new();
        self.subproof(old, 0, new, true, &mut proof);
        Some(proof)
    }

    /// SUBPROOF(m, D[start..end], b), appended bottom-up.
    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range(start, start + k));
        }
    }
}

/// One step up of RFC 9162's proof walks (§2.1.3.2, §2.1.4.2): `fn_` is the running node's
/// index at its level and `sn` the level's last index. Returns whether the next proof hash is the
/// left sibling; moves both indexes to the level where the combined node sits (past the levels
/// where the node has no right sibling, at the tree's ragged right edge).
fn climb(fn_: &mut u64, sn: &mut u64) -> bool {
    let left = *fn_ & 1 == 1 || *fn_ == *sn;
    if left {
        while *fn_ & 1 == 0 && *fn_ != 0 {
            *fn_ >>= 1;
            *sn >>= 1;
        }
    }
    *fn_ >>= 1;
    *sn >>= 1;
    left
}

/// The root an inclusion proof leads to from a leaf hash (RFC 9162 §2.1.3.2); `None` when the
/// proof cannot belong to leaf `index` of a tree of `size` leaves (wrong length, index out of
/// range).
pub fn root_from_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return None;
        }
        r = if climb(&mut fn_, &mut sn) {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    }
    (sn == 0).then_some(r)
}

/// Whether `path` proves leaf hash `leaf` is leaf `index` of the tree of `size` leaves whose root
/// is `root`.
pub fn verify_inclusion(root: &Hash, size: u64, index: u64, leaf: &Hash, path: &[Hash]) -> bool {
    root_from_inclusion(leaf, index, size, path).is_some_and(|r| r == *root)
}

/// Whether `proof` shows the tree of `old_size` leaves with root `old_root` is a prefix of the
/// tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty
/// proof and equal roots; an empty old tree is a prefix of anything (nothing to prove).
pub fn verify_consistency(
    old_root: &Hash,
    old_size: u64,
    new_root: &Hash,
    new_size: u64,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    // If the old tree is a perfect subtree of the new one, its root starts the chain.
    let mut nodes: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        nodes.push(*old_root);
    }
    nodes.extend_from_slice(proof);
    let Some((first, rest)) = nodes.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if climb(&mut fn_, &mut sn) {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    }
    sn == 0 && fr == *old_root && sr == *new_root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> Tree {
        Tree::from_leaves((0..n).map(|i| i.to_be_bytes()))
    }

    /// The root by the RFC's definition, recomputed from the leaves every time.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn stored_subtrees_give_the_definitions_root_for_every_prefix() {
        let t = tree(70);
        let leaves: Vec<Hash> = (0..70).map(|i| t.leaf(i).expect("leaf")).collect();
        for size in 0..=70 {
            assert_eq!(
                t.root_at(size),
                Some(mth(&leaves[..size as usize])),
                "size {size}"
            );
        }
        assert_eq!(t.root_at(71), None);
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        let t = tree(33);
        for size in 1..=33 {
            let root = t.root_at(size).expect("root");
            for index in 0..size {
                let leaf = t.leaf(index).expect("leaf");
                let path = t.inclusion_proof(index, size).expect("proof");
                assert!(
                    verify_inclusion(&root, size, index, &leaf, &path),
                    "{index}/{size}"
                );
                let other = t.leaf((index + 1) % 33).expect("leaf");
                assert!(!verify_inclusion(&root, size, index, &other, &path));
                if size > 1 {
                    assert!(!verify_inclusion(
                        &root,
                        size,
                        (index + 1) % size,
                        &leaf,
                        &path
                    ));
                    assert!(!verify_inclusion(&root, size, index, &leaf, &path[1..]));
                    let mut bent = path.clone();
                    bent[0][0] ^= 1;
                    assert!(!verify_inclusion(&root, size, index, &leaf, &bent));
                }
            }
        }
        assert_eq!(t.inclusion_proof(5, 5), None);
        assert_eq!(t.inclusion_proof(0, 34), None);
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_history_does_not() {
        let t = tree(33);
        for new in 1..=33 {
            let new_root = t.root_at(new).expect("root");
            for old in 1..=new {
                let old_root = t.root_at(old).expect("root");
                let proof = t.consistency_proof(old, new).expect("proof");
                assert!(
                    verify_consistency(&old_root, old, &new_root, new, &proof),
                    "{old} → {new}"
                );
                // A history rewritten at its first leaf: same sizes, other roots.
                let mut forged = Tree::new();
                forged.push(b"rewritten");
                for i in 1..new {
                    forged.push_hash(t.leaf(i).expect("leaf"));
                }
                let forged_old = forged.root_at(old).expect("root");
                assert!(!verify_consistency(
                    &forged_old,
                    old,
                    &new_root,
                    new,
                    &proof
                ));
                if old < new {
                    assert!(!verify_consistency(
                        &old_root,
                        old + 1,
                        &new_root,
                        new,
                        &proof
                    ));
                    assert!(!verify_consistency(
                        &old_root,
                        old,
                        &new_root,
                        new,
                        &proof[1..]
                    ));
                }
            }
        }
        assert_eq!(t.consistency_proof(0, 3), None);
        assert_eq!(t.consistency_proof(4, 3), None);
    }
}
