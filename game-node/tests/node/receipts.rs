//! Signed receipts through the node's edges: every accepted bet and cash-out (REST, WebSocket, and
//! the auto-cash-out notice) carries a receipt that verifies against the table's published key
//! and states exactly what was accepted; a retry gets the first receipt; a node holding another
//! key than the table's refuses to start; a table committed before receipts existed adopts the
//! first key once.

use crashfleet_core::protocol::{ClientMessage, ReceiptKindView, ServerMessage, SignedReceipt};
use crashfleet_core::settlement::{Receipt, ReceiptKind, player_hash};
use crashfleet_tests::ws::Socket;
use serde_json::Value;

use crate::common::{TestServer, fast_config};

async fn table_key(s: &TestServer) -> [u8; 32] {
    let (st, f) = s.get("/api/v1/fairness").await;
    assert_eq!(st, 200);
    let key = f["signing_key"].as_str().expect("signing_key");
    hex::decode(key).expect("hex").try_into().expect("32 bytes")
}

/// The answer's `receipt`, verified against the table's key and decoded from its signed bytes;
/// the decoded fields beside the message must say the same.
fn verified(answer: &Value, key: &[u8; 32]) -> (SignedReceipt, Receipt) {
    let signed: SignedReceipt =
        serde_json::from_value(answer["receipt"].clone()).expect("a receipt in the answer");
    let r = signed.verify(key).expect("the receipt verifies");
    assert_eq!(
        (signed.round, &signed.bet_id, signed.stake, signed.at_ms),
        (r.round, &r.bet_id, r.stake, r.at_ms)
    );
    assert_eq!(signed.player_hash, hex::encode(r.player));
    (signed, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_bet_and_cash_out_comes_with_a_receipt_that_verifies() {
    let s = TestServer::start(&[]).await;
    let key = table_key(&s).await;
    let (token, id) = s.register("receipts").await;
    let mut ws = Socket::connect_as(&format!("{}?token={token}", s.ws_url), &token).await;
    let (mut manual, mut auto) = (None, None);
    for attempt in 0..12 {
        let round = s.wait_betting(600).await;
        let number = round["number"].as_u64().expect("number");
        // A REST bet, and its retry: the same receipt, byte for byte.
        let rest_key = format!("rest-{attempt}");
        let (st, bet) = s.bet(&token, &rest_key, 1_000, None).await;
        assert_eq!(st, 201, "{bet}");
        let (signed, r) = verified(&bet, &key);
        assert_eq!(signed.kind, ReceiptKindView::Bet);
        assert_eq!(r.kind, ReceiptKind::Bet);
        assert_eq!(r.table, "main");
        assert_eq!(
            (r.round, r.bet_id.as_str()),
            (number, bet["bet_id"].as_str().expect("id"))
        );
        assert_eq!(
            (r.stake, r.auto_cashout_x100, r.payout),
            (1_000, None, None)
        );
        assert_eq!(r.player, player_hash(&id));
        let (_, again) = s.bet(&token, &rest_key, 1_000, None).await;
        assert_eq!(again["receipt"], bet["receipt"]);
        // A WebSocket bet with an auto target of 1.01x.
        ws.send(&ClientMessage::Bet {
            request_id: format!("ws-{attempt}"),
            stake: 500,
            auto_cashout_x100: Some(101),
        })
        .await;
        let (ws_bet, receipt) = ws
            .expect(|m| match m {
                ServerMessage::BetAccepted { bet, receipt, .. } => Some((bet, receipt)),
                _ => None,
            })
            .await;
        let r = receipt
            .verify(&key)
            .expect("the WebSocket receipt verifies");
        assert_eq!(
            (r.kind, r.bet_id.as_str(), r.stake, r.auto_cashout_x100),
            (ReceiptKind::Bet, ws_bet.bet_id.as_str(), 500, Some(101))
        );
        // In the flight: a manual cash-out of the REST bet (the crash may come first).
        s.wait_phase("flying").await;
        let bet_id = bet["bet_id"].as_str().expect("id");
        let (st, out) = s.cash_out(&token, &format!("out-{attempt}"), bet_id).await;
        if st == 200 && manual.is_none() {
            let (_, r) = verified(&out, &key);
            assert_eq!(r.kind, ReceiptKind::CashOut);
            assert_eq!(r.multiplier_x100, out["multiplier_x100"].as_u64());
            assert_eq!(r.payout, out["payout"].as_u64());
            assert_eq!((r.stake, r.bet_id.as_str()), (1_000, bet_id));
            let (_, retry) = s.cash_out(&token, &format!("out-{attempt}"), bet_id).await;
            assert_eq!(
                retry["receipt"], out["receipt"],
                "a retry gets the first receipt"
            );
            manual = Some(r);
        }
        // The auto-cash-out notice reaches its owner with its receipt (when the round reached
        // 1.01x; this round's crash event ends the wait otherwise).
        let notice = ws
            .expect(|m| match m {
                ServerMessage::AutoCashOut {
                    bet_id,
                    multiplier_x100,
                    payout,
                    receipt,
                    ..
                } => Some(Some((bet_id, multiplier_x100, payout, receipt))),
                ServerMessage::Crashed { round, .. } if round == number => Some(None),
                _ => None,
            })
            .await;
        if let Some((bet_id, multiplier_x100, payout, receipt)) = notice {
            let r = receipt.verify(&key).expect("the auto receipt verifies");
            assert_eq!(r.kind, ReceiptKind::AutoCashOut);
            assert_eq!(
                (r.bet_id.as_str(), r.multiplier_x100, r.payout),
                (bet_id.as_str(), Some(multiplier_x100), Some(payout as u64))
            );
            assert_eq!((multiplier_x100, r.auto_cashout_x100), (101, Some(101)));
            auto = Some(r);
        }
        if manual.is_some() && auto.is_some() {
            break;
        }
    }
    assert!(
        manual.is_some(),
        "no manual cash-out was accepted in 12 rounds"
    );
    assert!(auto.is_some(), "no auto-cash-out at 1.01x in 12 rounds");
    s.assert_audit().await;
}

/// Starts a node on `dir`, which must refuse; returns why.
async fn refused_start(dir: &std::path::Path) -> String {
    let err = game_node::node::start(
        fast_config(dir, &[]),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    format!("{err:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_signing_key_refuses_to_start() {
    let s = TestServer::start(&[]).await;
    let published = hex::encode(table_key(&s).await);
    let dir = s.stop().await;
    let file = dir.path().join("signing.key");
    std::fs::remove_file(&file).expect("remove the key");
    // A different, well-kept key: the table's commitment names the old one.
    game_node::secret_file::create_once(&file, &[5; 32]).expect("write another key");
    let message = refused_start(dir.path()).await;
    assert!(
        message.contains(&published) && message.contains("--signing-key-file"),
        "{message}"
    );

    // A key file others can read is refused before anything else.
    std::fs::remove_file(&file).expect("remove");
    std::fs::write(&file, format!("{}\n", "11".repeat(32))).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let message = refused_start(dir.path()).await;
    assert!(
        message.contains("signing key file") && message.contains("chmod 600"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_committed_before_receipts_adopts_the_first_key_once() {
    let s = TestServer::start(&[]).await;
    let (_, before) = s.get("/api/v1/fairness").await;
    let dir = s.stop().await;
    // As a ledger written before receipts existed: no key stored, none on disk.
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("UPDATE commitments SET signing_key = NULL")
            .execute(&mut db)
            .await
            .expect("clear");
        db.close().await.expect("close");
    }
    std::fs::remove_file(dir.path().join("signing.key")).expect("remove the key");
    let s = TestServer::start_in(dir, &[]).await;
    let (_, after) = s.get("/api/v1/fairness").await;
    assert_eq!(after["terminating_hash"], before["terminating_hash"]);
    assert_ne!(after["signing_key"], before["signing_key"], "a new key");
    let seed = game_node::secret_file::read(
        &s.dir.path().join("signing.key"),
        &game_node::secret_file::SIGNING_KEY,
    )
    .expect("the new key file");
    let public = crashfleet_core::settlement::signing::SigningKey::from_seed(&seed).public_key();
    assert_eq!(after["signing_key"], hex::encode(public));
    // Adopted for good: the stored key is now the one a restart must bring.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &[]).await;
    let (_, again) = s.get("/api/v1/fairness").await;
    assert_eq!(again["signing_key"], after["signing_key"]);
}

/// `game-node verify receipt`, the binary a player runs.
fn verify_receipt(args: &[&str]) -> (bool, String) {
    crashfleet_tests::output_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_game-node"))
            .args(["verify", "receipt"])
            .args(args),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_receipt_proves_a_settled_bet_online_and_offline_and_catches_a_changed_payout() {
    let s = TestServer::start(&[]).await;
    let (token, _) = s.register("verifier").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("number");
    let (st, bet) = s.bet(&token, "v1", 2_000, Some(150)).await;
    assert_eq!(st, 201, "{bet}");
    s.wait_settled(number).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("receipts.json");
    std::fs::write(
        &file,
        serde_json::to_string(&vec![bet["receipt"].clone()]).expect("json"),
    )
    .expect("write");
    let evidence = dir.path().join("evidence.json");
    let (f, e) = (file.display().to_string(), evidence.display().to_string());
    let (ok, text) = verify_receipt(&[
        "--receipt",
        &f,
        "--url",
        &s.url,
        "--token",
        &token,
        "--save-proofs",
        &e,
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("every check passed") && !text.contains("FAILED"),
        "{text}"
    );
    // What a player reads (shown with --nocapture).
    println!("{text}");
    // Offline, from the saved evidence alone.
    let (ok, text) = verify_receipt(&["--receipt", &f, "--proofs", &e]);
    assert!(ok, "{text}");

    // A receipt whose signed bytes were edited no longer verifies.
    let mut forged = bet["receipt"].clone();
    let message = forged["message"].as_str().expect("message").to_string();
    let last = if message.ends_with('0') { "1" } else { "0" };
    forged["message"] = Value::String(format!("{}{last}", &message[..message.len() - 1]));
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).expect("write");
    let (ok, text) = verify_receipt(&[
        "--receipt",
        &forged_file.display().to_string(),
        "--proofs",
        &e,
    ]);
    assert!(!ok && text.contains("FAILED"), "{text}");

    // The house changes the bet's outcome in its database: the checks fail.
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", s.dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query(
            "UPDATE bets SET status = 'lost', payout = 0, cashout_x100 = NULL WHERE id = $1 \
             AND status = 'won'",
        )
        .bind(bet["bet_id"].as_str().expect("id"))
        .execute(&mut db)
        .await
        .expect("tamper");
        sqlx::query("UPDATE bets SET payout = 1 WHERE id = $1 AND status = 'lost'")
            .bind(bet["bet_id"].as_str().expect("id"))
            .execute(&mut db)
            .await
            .expect("tamper");
        db.close().await.expect("close");
    }
    let (ok, text) = verify_receipt(&["--receipt", &f, "--url", &s.url, "--token", &token]);
    assert!(!ok, "a changed settlement passed:\n{text}");
    assert!(
        text.contains("FAILED  the settled leaf is in the round's settlement root"),
        "{text}"
    );
}
