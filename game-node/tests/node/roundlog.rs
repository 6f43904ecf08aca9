//! The round log and players' proofs through the node's edge, checked here with the core's RFC
//! 9162 verifiers and the table's public key: signed heads, inclusion of a round, consistency
//! between two heads, a bet's settlement leaf against its receipt and the round's root — and a
//! payout changed in the database afterwards is caught.

use crashfleet_core::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use crashfleet_core::protocol::SignedReceipt;
use crashfleet_core::settlement::{
    LogLeaf, Outcome, ReceiptKind, SettlementLeaf, TreeHead, player_hash, signing,
};
use serde_json::Value;

use crate::common::{ADMIN, TestServer};

fn h(v: &Value) -> Hash {
    hex::decode(v.as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn path(v: &Value) -> Vec<Hash> {
    v.as_array().expect("path").iter().map(h).collect()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex")).expect("hex")
}

/// A head from `GET /api/v1/log/head`, its signature checked: (size, root).
fn checked_head(head: &Value, key: &[u8; 32], table: &str) -> (u64, Hash) {
    let message = bytes(&head["message"]);
    let signature: [u8; 64] = bytes(&head["signature"]).try_into().expect("64 bytes");
    assert!(
        signing::verify(key, &message, &signature),
        "a head that does not verify"
    );
    let signed = TreeHead::decode(&message).expect("a tree head");
    let size = head["size"].as_u64().expect("size");
    assert_eq!(
        (signed.table.as_str(), signed.size, signed.root),
        (table, size, h(&head["root"]))
    );
    (size, signed.root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_proofs_and_a_players_bet_check_out_and_a_changed_payout_does_not() {
    let s = TestServer::start(&[]).await;
    let (_, fairness) = s.get("/api/v1/fairness").await;
    let key: [u8; 32] = bytes(&fairness["signing_key"]).try_into().expect("key");
    let (token, id) = s.register("prover").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("number");
    let (st, placed) = s.bet(&token, "k", 1_000, Some(101)).await;
    assert_eq!(st, 201, "{placed}");
    let bet_id = placed["bet_id"].as_str().expect("id").to_string();
    s.wait_settled(number).await;

    // A head that covers the round, and the round's inclusion in it.
    let (_, head1) = s.get("/api/v1/log/head").await;
    let (size1, root1) = checked_head(&head1, &key, "main");
    assert!(
        size1 >= number,
        "the log covers every settled round: {head1}"
    );
    let (st, inc) = s
        .get(&format!("/api/v1/log/proof?round={number}&size={size1}"))
        .await;
    assert_eq!(st, 200, "{inc}");
    let leaf = bytes(&inc["leaf"]);
    assert!(verify_inclusion(
        &root1,
        size1,
        number - 1,
        &leaf_hash(&leaf),
        &path(&inc["path"])
    ));
    let logged = LogLeaf::decode(&leaf).expect("a log leaf");
    let (_, detail) = s.get(&format!("/api/v1/rounds/{number}")).await;
    assert_eq!(logged.round, number);
    assert_eq!(
        hex::encode(logged.round_hash),
        detail["round"]["hash"].as_str().expect("hex")
    );
    assert_eq!(
        Some(logged.crash_x100),
        detail["round"]["crash_x100"].as_u64()
    );
    assert_eq!(
        hex::encode(logged.settlement_root),
        detail["settlement_root"].as_str().expect("hex")
    );

    // A later head is consistent with the first.
    s.wait_settled(number + 1).await;
    let (_, head2) = s.get("/api/v1/log/head").await;
    let (size2, root2) = checked_head(&head2, &key, "main");
    assert!(size2 > size1);
    let (_, cons) = s
        .get(&format!("/api/v1/log/consistency?from={size1}&to={size2}"))
        .await;
    assert!(verify_consistency(
        &root1,
        size1,
        &root2,
        size2,
        &path(&cons["path"])
    ));
    // Wrong sizes are a clear 400; a round not in the log a 404.
    let (st, _) = s
        .get(&format!("/api/v1/log/consistency?from=0&to={size2}"))
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .get(&format!("/api/v1/log/proof?round={}", size2 + 100))
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .get(&format!("/api/v1/log/proof?round=1&size={}", size2 + 100))
        .await;
    assert_eq!(st, 400);

    // The player's proof: the settled leaf, checked against the signed receipt and the root.
    let (st, proof) = s
        .get_auth(&format!("/api/v1/bets/{bet_id}/proof"), &token)
        .await;
    assert_eq!(st, 200, "{proof}");
    let receipt: SignedReceipt =
        serde_json::from_value(placed["receipt"].clone()).expect("receipt");
    let signed = receipt.verify(&key).expect("the receipt verifies");
    assert_eq!(signed.kind, ReceiptKind::Bet);
    let settled = SettlementLeaf::decode(&bytes(&proof["leaf"])).expect("a settlement leaf");
    assert_eq!(settled.bet_id, signed.bet_id);
    assert_eq!(
        (settled.player, settled.stake),
        (player_hash(&id), signed.stake)
    );
    match settled.outcome {
        Outcome::Won => assert_eq!(
            (settled.multiplier_x100, settled.payout),
            (Some(101), 1_010)
        ),
        Outcome::Lost => assert_eq!(settled.payout, 0),
        Outcome::Refunded => panic!("the round was not voided"),
    }
    let root = h(&proof["settlement_root"]);
    let index = proof["leaf_index"].as_u64().expect("a number");
    let tree_size = proof["tree_size"].as_u64().expect("a number");
    assert!(verify_inclusion(
        &root,
        tree_size,
        index,
        &leaf_hash(&bytes(&proof["leaf"])),
        &path(&proof["path"])
    ));
    let in_log = LogLeaf::decode(&bytes(&proof["log"]["leaf"])).expect("log leaf");
    assert_eq!(
        in_log.settlement_root, root,
        "the round's root is the one in the log"
    );
    assert!(verify_inclusion(
        &h(&proof["log"]["root"]),
        proof["log"]["tree_size"].as_u64().expect("a number"),
        number - 1,
        &leaf_hash(&bytes(&proof["log"]["leaf"])),
        &path(&proof["log"]["path"])
    ));

    // Only the owner (or the admin) gets it; anyone else cannot tell the bet exists.
    let (other, _) = s.register("stranger").await;
    let (st, v) = s
        .get_auth(&format!("/api/v1/bets/{bet_id}/proof"), &other)
        .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("unknown_bet")));
    let (st, _) = s
        .get_auth(&format!("/api/v1/bets/{bet_id}/proof"), ADMIN)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.get(&format!("/api/v1/bets/{bet_id}/proof")).await;
    assert_eq!(st, 401);

    // Someone changes the payout in the database: the leaf now served no longer leads to the
    // root the round committed to (and published in the log).
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", s.dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("UPDATE bets SET payout = payout + 5000, status = 'won', cashout_x100 = 600 WHERE id = $1")
            .bind(&bet_id)
            .execute(&mut db)
            .await
            .expect("tamper");
        db.close().await.expect("close");
    }
    let (st, tampered) = s
        .get_auth(&format!("/api/v1/bets/{bet_id}/proof"), &token)
        .await;
    assert_eq!(st, 200, "{tampered}");
    let leaf = bytes(&tampered["leaf"]);
    assert_ne!(leaf, bytes(&proof["leaf"]));
    assert!(
        !verify_inclusion(
            &h(&tampered["settlement_root"]),
            tampered["tree_size"].as_u64().expect("a number"),
            tampered["leaf_index"].as_u64().expect("a number"),
            &leaf_hash(&leaf),
            &path(&tampered["path"])
        ),
        "a changed payout must not verify against the committed root"
    );
}
