//! Settlement roots through the node's edges: a settled round's `GET /api/v1/rounds/{n}` and
//! `GET /api/v1/rounds` carry the root, count and totals its settlement committed to, the same
//! values the `settled` event announced, and they match a recomputation from the round's bets
//! done here; rounds settled before roots existed get theirs when a node starts.

use crashfleet_core::protocol::ServerMessage;
use crashfleet_core::settlement::{Outcome, SettlementLeaf, player_hash, settle};
use crashfleet_tests::ws::Socket;
use serde_json::Value;

use crate::common::TestServer;

/// The root of round `detail` (a `GET /api/v1/rounds/{n}` answer) recomputed from its bets;
/// `players` gives the id of each bettor's username.
fn recompute(detail: &Value, players: &[(&str, &str)]) -> (String, u64, u64, u64) {
    let mut leaves: Vec<SettlementLeaf> = detail["bets"]
        .as_array()
        .expect("bets")
        .iter()
        .map(|b| {
            let (outcome, multiplier_x100) = match b["status"].as_str() {
                Some("won") => (Outcome::Won, b["cashout_x100"].as_u64()),
                Some("lost") => (Outcome::Lost, None),
                Some("refunded") => (Outcome::Refunded, None),
                other => panic!("a settled round with a bet {other:?}"),
            };
            let name = b["username"].as_str().expect("username");
            let (_, player_id) = players
                .iter()
                .find(|(n, _)| *n == name)
                .expect("a known bettor");
            SettlementLeaf {
                bet_id: b["bet_id"].as_str().expect("id").to_string(),
                player: player_hash(player_id),
                stake: b["stake"].as_u64().expect("stake"),
                outcome,
                multiplier_x100,
                payout: b["payout"].as_u64().expect("payout"),
            }
        })
        .collect();
    let s = settle(&mut leaves);
    (hex::encode(s.root), s.bets, s.wagered, s.paid)
}

fn stored(v: &Value) -> (String, u64, u64, u64) {
    (
        v["settlement_root"]
            .as_str()
            .expect("settlement_root")
            .to_string(),
        v["bets_count"].as_u64().expect("bets_count"),
        v["wagered"].as_u64().expect("wagered"),
        v["paid"].as_u64().expect("paid"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_round_commits_to_its_bets_and_says_so_everywhere() {
    let s = TestServer::start(&[]).await;
    let (alice, alice_id) = s.register("settler_a").await;
    let (bob, bob_id) = s.register("settler_b").await;
    let players = [
        ("settler_a", alice_id.as_str()),
        ("settler_b", bob_id.as_str()),
    ];
    let mut ws = Socket::connect(&s.ws_url).await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("number");
    for (token, key, stake, auto) in [
        (&alice, "a", 1_000, Some(101)),
        (&bob, "b", 700, None),
        (&alice, "c", 300, Some(150)),
    ] {
        let (st, v) = s.bet(token, key, stake, auto).await;
        assert_eq!(st, 201, "{v}");
    }
    let announced = ws
        .expect(|m| match m {
            ServerMessage::Settled {
                round,
                settlement_root,
                bets_count,
                wagered,
                paid,
            } if round == number => Some((settlement_root, bets_count, wagered, paid)),
            _ => None,
        })
        .await;
    let detail = s.wait_settled(number).await;
    assert_eq!(stored(&detail), announced);
    assert_eq!(stored(&detail), recompute(&detail, &players));
    assert_eq!((announced.1, announced.2), (3, 2_000));
    let (_, list) = s.get("/api/v1/rounds?limit=5").await;
    let entry = list
        .as_array()
        .expect("rounds")
        .iter()
        .find(|r| r["number"].as_u64() == Some(number))
        .expect("the round in the history");
    assert_eq!(stored(entry), announced);
    // An empty round commits too (to the empty tree), so no round is without a root.
    let (_, empty) = s.get(&format!("/api/v1/rounds/{}", number - 1)).await;
    if empty["bets"].as_array().is_some_and(|b| b.is_empty()) {
        assert_eq!(
            stored(&empty),
            (hex::encode(crashfleet_core::merkle::empty_root()), 0, 0, 0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_settled_before_roots_existed_get_theirs_at_start() {
    let s = TestServer::start(&[]).await;
    let (token, id) = s.register("legacy").await;
    let players = [("legacy", id.as_str())];
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("number");
    let (st, _) = s.bet(&token, "k", 500, Some(120)).await;
    assert_eq!(st, 201);
    let before = stored(&s.wait_settled(number).await);
    let dir = s.stop().await;
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query(
            "UPDATE rounds SET settlement_root = NULL, bets_count = NULL, wagered = NULL, \
             paid = NULL",
        )
        .execute(&mut db)
        .await
        .expect("clear");
        db.close().await.expect("close");
    }
    let s = TestServer::start_in(dir, &[]).await;
    let (_, detail) = s.get(&format!("/api/v1/rounds/{number}")).await;
    assert_eq!(stored(&detail), before);
    assert_eq!(stored(&detail), recompute(&detail, &players));
}

/// Runs the independent checker (tests/settlement/check.py: hashlib + PyNaCl) against `url`.
fn python_check(python: &std::path::Path, url: &str, args: &[&str]) -> (bool, String) {
    let script = crashfleet_tests::repo_root().join("tests/settlement/check.py");
    crashfleet_tests::output_of(
        std::process::Command::new(python)
            .arg(script)
            .args(["--url", url])
            .args(args),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_python_checker_recomputes_roots_and_verifies_signatures() {
    const TEST: &str = "an_outside_python_checker_recomputes_roots_and_verifies_signatures";
    let Some(python) = crashfleet_tests::require::python_with_nacl(TEST) else {
        return;
    };
    let s = TestServer::start(&[]).await;
    let (alice, _) = s.register("py_alice").await;
    let (bob, _) = s.register("py_bob").await;
    let round = s.wait_betting(600).await;
    let number = round["number"].as_u64().expect("number");
    let mut receipts = Vec::new();
    for (token, key, stake, auto) in [
        (&alice, "a1", 1_000, Some(101)),
        (&bob, "b1", 250, None),
        (&alice, "a2", 400, Some(300)),
    ] {
        let (st, v) = s.bet(token, key, stake, auto).await;
        assert_eq!(st, 201, "{v}");
        receipts.push(v["receipt"].clone());
    }
    s.wait_settled(number).await;
    let (_, first_head) = s.get("/api/v1/log/head").await;
    s.wait_settled(number + 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("receipts.json");
    std::fs::write(&file, Value::Array(receipts).to_string()).expect("write");
    let size = first_head["size"].as_u64().expect("size").to_string();
    let root = first_head["root"].as_str().expect("root").to_string();
    let (ok, text) = python_check(
        &python,
        &s.url,
        &[
            "--round",
            &number.to_string(),
            "--from-size",
            &size,
            "--from-root",
            &root,
            "--receipts",
            &file.display().to_string(),
        ],
    );
    println!("{text}");
    assert!(ok && text.contains("every check passed"), "{text}");
    assert_eq!(text.matches("ok      receipt").count(), 3, "{text}");

    // A payout changed in the database: the recomputed root no longer matches the committed one.
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", s.dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query(
            "UPDATE bets SET payout = payout + 1 WHERE round_number = $1 AND payout IS NOT NULL",
        )
        .bind(number as i64)
        .execute(&mut db)
        .await
        .expect("tamper");
        db.close().await.expect("close");
    }
    let (ok, text) = python_check(&python, &s.url, &["--round", &number.to_string()]);
    assert!(!ok, "a changed payout passed:\n{text}");
    assert!(text.contains("FAILED  round"), "{text}");
}
