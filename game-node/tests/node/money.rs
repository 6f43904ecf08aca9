//! Money scenarios through the real node (REST, SQLite ledger): each ends with the conservation
//! audit holding exactly, and checks the money invariants one by one.

use crate::common;

use common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bets_cash_outs_and_auto_cash_outs_settle_exactly() {
    let s = TestServer::start(&[]).await;
    let (alice, _) = s.register("alice").await;
    let (bob, _) = s.register("bob").await;
    let (carol, _) = s.register("carol").await;
    assert_eq!(s.balance(&alice).await, 100_000);

    let mut rounds_checked = 0;
    while rounds_checked < 3 {
        let round = s.wait_betting(500).await;
        let number = round["number"].as_u64().expect("number");
        let (st, a) = s.bet(&alice, &format!("a{number}"), 1_000, None).await;
        assert_eq!(st, 201, "{a}");
        let (st, b) = s.bet(&bob, &format!("b{number}"), 333, Some(101)).await;
        assert_eq!(st, 201, "{b}");
        let (st, c) = s.bet(&carol, &format!("c{number}"), 777, Some(150)).await;
        assert_eq!(st, 201, "{c}");
        assert_eq!(
            s.balance(&alice).await,
            100_000 - 1_000 * (rounds_checked + 1) + alice_won(&s, &alice).await
        );

        s.wait_phase("flying").await;
        let (st, co) = s
            .cash_out(
                &alice,
                &format!("co{number}"),
                a["bet_id"].as_str().expect("id"),
            )
            .await;
        let finished = s.wait_finished(number).await;
        let crash = finished["round"]["crash_x100"].as_u64().expect("crash");
        if st == 200 {
            let m = co["multiplier_x100"].as_u64().expect("m");
            assert!(
                m < crash,
                "manual cash-out {m} must be below the crash point {crash}"
            );
            assert_eq!(co["payout"].as_i64(), Some(1_000 * m as i64 / 100));
        } else {
            assert_eq!(co["code"], "too_late", "{co}");
        }
        for bet in finished["bets"].as_array().expect("bets") {
            let auto = bet["auto_cashout_x100"].as_u64();
            match bet["status"].as_str().expect("status") {
                "won" => {
                    let m = bet["cashout_x100"].as_u64().expect("m");
                    assert!(m <= crash);
                    if let Some(a) = auto {
                        assert_eq!(m, a, "auto-cash-out pays exactly its target");
                    }
                    let stake = bet["stake"].as_i64().expect("stake");
                    assert_eq!(bet["payout"].as_i64(), Some(stake * m as i64 / 100));
                }
                "lost" => {
                    if let Some(a) = auto {
                        assert!(a > crash, "an auto target <= crash point must win");
                    }
                }
                other => panic!("unexpected status {other}"),
            }
        }
        s.assert_audit().await;
        rounds_checked += 1;
    }
}

/// Alice's winnings so far (for the running balance check).
async fn alice_won(s: &TestServer, token: &str) -> i64 {
    let (_, bets) = s.get_auth("/api/v1/me/bets?limit=100", token).await;
    bets.as_array()
        .expect("bets")
        .iter()
        .filter_map(|b| b["payout"].as_i64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_bet_moves_money_once() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("retry").await;
    s.wait_betting(600).await;
    let (st1, b1) = s.bet(&t, "same-key", 500, None).await;
    let (st2, b2) = s.bet(&t, "same-key", 500, None).await;
    assert_eq!((st1, st2), (201, 201));
    assert_eq!(
        b1["bet_id"], b2["bet_id"],
        "the retry returns the first bet"
    );
    assert_eq!(s.balance(&t).await, 100_000 - 500);
    let (st3, b3) = s.bet(&t, "same-key", 600, None).await;
    assert_eq!(
        (st3, b3["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );

    // Concurrent retries race: every one of them waits for and gets the first bet (not
    // `bet_limit`: the player has one bet left this round), and there is one debit.
    let futs: Vec<_> = (0..8).map(|_| s.bet(&t, "raced", 100, None)).collect();
    let results = futures_util::future::join_all(futs).await;
    assert!(results.iter().all(|(st, _)| *st == 201), "{results:?}");
    let ids: std::collections::HashSet<_> = results
        .iter()
        .map(|(_, v)| v["bet_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(s.balance(&t).await, 100_000 - 500 - 100);

    // The key of a bet whose round is over is refused in a later round, with the bet it placed:
    // it never returns the old bet as if it had been placed now.
    let number = b1["round"].as_u64().expect("round");
    s.wait_finished(number).await;
    let next = s.wait_betting(600).await;
    assert!(next["number"].as_u64().expect("n") > number);
    let before = s.balance(&t).await;
    let (st4, b4) = s.bet(&t, "same-key", 500, None).await;
    assert_eq!(
        (st4, b4["code"].as_str()),
        (409, Some("idempotency_key_used")),
        "{b4}"
    );
    let message = b4["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(b1["bet_id"].as_str().expect("id")),
        "{message}"
    );
    assert_eq!(s.balance(&t).await, before, "a refused key moves nothing");
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bets_outside_the_window_limits_and_funds_are_refused_without_moving_money() {
    let s = TestServer::start(&["--demo-credit", "1000", "--bets-per-player", "2"]).await;
    let (t, _) = s.register("limits").await;
    let (other, _) = s.register("other").await;
    s.wait_betting(600).await;
    assert_eq!(s.bet(&t, "k1", 400, None).await.0, 201);
    assert_eq!(s.bet(&t, "k2", 400, None).await.0, 201);
    let (st, v) = s.bet(&t, "k3", 100, None).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("bet_limit")));
    let (st, v) = s.bet(&other, "big", 1_001, None).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("insufficient_funds")));
    assert_eq!(s.balance(&other).await, 1_000);
    assert_eq!(s.balance(&t).await, 200);

    s.wait_phase("flying").await;
    let (st, v) = s.bet(&other, "late", 100, None).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("betting_closed")));
    assert_eq!(s.balance(&other).await, 1_000);
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_out_rules_owner_phase_and_once() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("owner").await;
    let (thief, _) = s.register("thief").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("n");
    let (_, b) = s.bet(&t, "x", 1_000, None).await;
    let id = b["bet_id"].as_str().expect("id").to_string();
    let (st, v) = s.cash_out(&t, "early", &id).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("not_flying")));
    s.wait_phase("flying").await;
    let (st, v) = s.cash_out(&thief, "steal", &id).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")));
    let (st, first) = s.cash_out(&t, "mine", &id).await;
    if st == 200 {
        let (st_retry, retry) = s.cash_out(&t, "mine", &id).await;
        assert_eq!(
            st_retry, 200,
            "a retry with the same key gets the first outcome: {retry}"
        );
        assert_eq!(retry["payout"], first["payout"]);
        assert_eq!(retry["multiplier_x100"], first["multiplier_x100"]);
        let (st2, v2) = s.cash_out(&t, "again", &id).await;
        assert_eq!((st2, v2["code"].as_str()), (409, Some("already_settled")));
        let payout = first["payout"].as_i64().expect("payout");
        assert_eq!(s.balance(&t).await, 100_000 - 1_000 + payout);
    }
    let finished = s.wait_finished(number).await;
    let (st, v) = s.cash_out(&t, "after", &id).await;
    assert_eq!(st, 409, "{v}");
    assert!(finished["bets"][0]["status"] == "won" || finished["bets"][0]["status"] == "lost");
    assert_eq!(s.balance(&thief).await, 100_000);
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bet_is_looked_up_by_its_owner_or_the_admin_and_by_nobody_else() {
    let s = TestServer::start(&[]).await;
    let (owner, _) = s.register("looker").await;
    let (other, _) = s.register("snooper").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("n");
    let (st, placed) = s.bet(&owner, "lookup", 1_000, None).await;
    assert_eq!(st, 201, "{placed}");
    let id = placed["bet_id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/bets/{id}");
    let (st, open) = s.get_auth(&path, &owner).await;
    assert_eq!(st, 200, "{open}");
    assert_eq!(open["bet_id"], placed["bet_id"]);
    assert_eq!(
        (open["stake"].as_i64(), open["round"].as_u64()),
        (Some(1_000), Some(number))
    );
    assert_eq!(open["status"], "open");
    // Another player, no token, a bad token: it might as well not exist.
    let (st, v) = s.get_auth(&path, &other).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("unknown_bet")), "{v}");
    let (st, v) = s.get(&path).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (st, v) = s.get_auth("/api/v1/bets/no-such-bet", &owner).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("unknown_bet")), "{v}");
    let (st, v) = s
        .get_auth(&format!("/api/v1/bets/{}", "x".repeat(65)), &owner)
        .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("unknown_bet")), "{v}");
    // After the round: the ledger's outcome, the same for the owner and the admin.
    s.wait_finished(number).await;
    let (st, settled) = s.get_auth(&path, &owner).await;
    assert_eq!(st, 200, "{settled}");
    assert_eq!(
        settled["status"], "lost",
        "a bet never cashed out loses: {settled}"
    );
    let (st, by_admin) = s.get_auth(&path, common::ADMIN).await;
    assert_eq!(st, 200, "{by_admin}");
    assert_eq!(by_admin, settled);
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_credit_and_debit_are_idempotent_and_guarded() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("wallet").await;
    let path = "/api/v1/admin/players/wallet/credit";
    let (st, v) = s
        .post(
            path,
            Some(common::ADMIN),
            Some("c1"),
            json!({"amount": 5_000}),
        )
        .await;
    assert_eq!((st, v["balance"].as_i64()), (200, Some(105_000)));
    let (st, v) = s
        .post(
            path,
            Some(common::ADMIN),
            Some("c1"),
            json!({"amount": 5_000}),
        )
        .await;
    assert_eq!(
        (st, v["balance"].as_i64()),
        (200, Some(105_000)),
        "retry moves nothing"
    );
    let (st, v) = s
        .post(path, Some(common::ADMIN), Some("c1"), json!({"amount": 7}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let (st, _) = s
        .post(path, Some(&t), Some("c2"), json!({"amount": 5}))
        .await;
    assert_eq!(st, 403, "a player token is not an admin token");
    let (st, _) = s.post(path, None, Some("c3"), json!({"amount": 5})).await;
    assert_eq!(st, 401);
    let debit = "/api/v1/admin/players/wallet/debit";
    let (st, v) = s
        .post(
            debit,
            Some(common::ADMIN),
            Some("d1"),
            json!({"amount": 200_000}),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("insufficient_funds")));
    let (st, v) = s
        .post(
            debit,
            Some(common::ADMIN),
            Some("d2"),
            json!({"amount": 4_000}),
        )
        .await;
    assert_eq!((st, v["balance"].as_i64()), (200, Some(101_000)));
    let audit = s.assert_audit().await;
    assert_eq!(audit["credits"], 105_000);
    assert_eq!(audit["withdrawals"], 4_000);
    assert_eq!(s.balance(&t).await, 101_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_voids_the_interrupted_round_refunds_it_and_keeps_the_commitment() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("restart").await;
    let (_, fair1) = s.get("/api/v1/fairness").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("n");
    let (st, _) = s.bet(&t, "before-restart", 2_500, None).await;
    assert_eq!(st, 201);
    assert_eq!(s.balance(&t).await, 97_500);
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, &[]).await;
    let (_, fair2) = s.get("/api/v1/fairness").await;
    assert_eq!(fair1["terminating_hash"], fair2["terminating_hash"]);
    assert_eq!(fair1["salt"], fair2["salt"]);
    let (st, r) = s.get(&format!("/api/v1/rounds/{number}")).await;
    assert_eq!(st, 200);
    assert_eq!(r["bets"][0]["status"], "refunded", "{r}");
    assert_eq!(s.balance(&t).await, 100_000, "the stake came back");
    // The next round gets the next number: none reused, none skipped.
    let next = s.wait_phase("betting").await;
    assert_eq!(next["number"].as_u64(), Some(number + 1));
    s.assert_audit().await;
}
