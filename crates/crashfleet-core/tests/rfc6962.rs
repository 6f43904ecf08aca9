//! crashfleet's Merkle trees against answers computed outside the Rust code
//! (`tests/data/rfc6962.json`, written by `tests/data/rfc6962.py` with hashlib after it reproduced
//! the Certificate Transparency test vectors), and every proof we make checked by a second
//! implementation, the `ct-merkle` crate.

use crashfleet_core::merkle::{Hash, Tree, verify_consistency, verify_inclusion};
use serde_json::Value;

fn data() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("rfc6962.json")).expect("json")
}

fn h(v: &Value) -> Hash {
    let bytes = hex::decode(v.as_str().expect("hex string")).expect("hex");
    bytes.try_into().expect("32 bytes")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().expect("array").iter().map(h).collect()
}

fn n(v: &Value) -> u64 {
    v.as_u64().expect("number")
}

/// Roots, inclusion paths and consistency proofs of `tree` against one section of the file.
fn check(tree: &Tree, roots: &[(u64, Hash)], inclusion: &Value, consistency: &Value) {
    for (size, root) in roots {
        assert_eq!(tree.root_at(*size).as_ref(), Some(root), "root of {size}");
    }
    for case in inclusion.as_array().expect("inclusion") {
        let (index, size, want) = (n(&case["index"]), n(&case["size"]), hashes(&case["path"]));
        assert_eq!(
            tree.inclusion_proof(index, size),
            Some(want.clone()),
            "{index}/{size}"
        );
        let root = tree.root_at(size).expect("root");
        let leaf = tree.leaf(index).expect("leaf");
        assert!(
            verify_inclusion(&root, size, index, &leaf, &want),
            "{index}/{size}"
        );
    }
    for case in consistency.as_array().expect("consistency") {
        let (old, new, want) = (n(&case["old"]), n(&case["new"]), hashes(&case["proof"]));
        assert_eq!(
            tree.consistency_proof(old, new),
            Some(want.clone()),
            "{old} → {new}"
        );
        let (a, b) = (
            tree.root_at(old).expect("old"),
            tree.root_at(new).expect("new"),
        );
        assert!(verify_consistency(&a, old, &b, new, &want), "{old} → {new}");
    }
}

#[test]
fn the_certificate_transparency_answers() {
    let d = data();
    let leaves: Vec<Vec<u8>> = d["leaves"]
        .as_array()
        .expect("leaves")
        .iter()
        .map(|l| hex::decode(l.as_str().expect("hex")).expect("hex"))
        .collect();
    let tree = Tree::from_leaves(&leaves);
    let roots: Vec<(u64, Hash)> = hashes(&d["roots"])
        .into_iter()
        .enumerate()
        .map(|(size, r)| (size as u64, r))
        .collect();
    assert_eq!(roots.len(), leaves.len() + 1);
    check(&tree, &roots, &d["inclusion"], &d["consistency"]);
}

#[test]
fn a_thousand_leaves() {
    let d = &data()["big"];
    let tree = Tree::from_leaves((0..1000u64).map(u64::to_be_bytes));
    let roots: Vec<(u64, Hash)> = d["roots"]
        .as_object()
        .expect("roots")
        .iter()
        .map(|(size, r)| (size.parse().expect("size"), h(r)))
        .collect();
    check(&tree, &roots, &d["inclusion"], &d["consistency"]);
}

/// The script that wrote the answers still writes exactly them (so the file is what the
/// independent implementation computes, not an edited copy).
#[test]
fn the_answers_are_what_the_script_writes() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962.py");
    let out = std::process::Command::new("python3")
        .args([script, "--print"])
        .output()
        .expect("python3 runs the known-answer script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962.json");
    let file = std::fs::read(path).expect("rfc6962.json");
    assert!(
        out.stdout == file,
        "rfc6962.json differs from what rfc6962.py writes"
    );
}

/// Every proof of a 300-leaf tree, checked by the `ct-merkle` crate's verifier.
#[test]
fn a_second_implementation_accepts_every_proof() {
    use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
    type Sha = sha2_011::Sha256;
    let leaves: Vec<[u8; 8]> = (0..300u64).map(u64::to_be_bytes).collect();
    let tree = Tree::from_leaves(&leaves);
    let root = |size: u64| RootHash::<Sha>::new(tree.root_at(size).expect("root").into(), size);
    for size in [1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300] {
        for index in (0..size).step_by(7).chain([size - 1]) {
            let path = tree.inclusion_proof(index, size).expect("path");
            let digests: Vec<_> = path.iter().map(|p| (*p).into()).collect();
            let proof = InclusionProof::<Sha>::from_digests(&digests);
            root(size)
                .verify_inclusion(&leaves[index as usize], index, &proof)
                .unwrap_or_else(|e| panic!("{index}/{size}: {e:?}"));
        }
        for old in (1..=size).step_by(13).chain([size]) {
            let path = tree.consistency_proof(old, size).expect("proof");
            let digests: Vec<_> = path.iter().map(|p| (*p).into()).collect();
            let proof = ConsistencyProof::<Sha>::from_digests(&digests);
            root(size)
                .verify_consistency(&root(old), &proof)
                .unwrap_or_else(|e| panic!("{old} → {size}: {e:?}"));
        }
    }
}
