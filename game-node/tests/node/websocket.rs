//! The WebSocket protocol through a real node: snapshot first, a whole round's events, bets and
//! cash-outs over the socket, bad frames answered with `error`, and proof that the crash point and
//! the round hash never leave the server before the crash.

use crate::common;

use std::time::Duration;

use common::TestServer;
use crashfleet_tests::ws::Socket;
use futures_util::{SinkExt, StreamExt};
use game_node::protocol::{ClientMessage, ServerMessage};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn bet(request_id: &str, stake: i64, auto: Option<u64>) -> ClientMessage {
    ClientMessage::Bet {
        request_id: request_id.into(),
        stake,
        auto_cashout_x100: auto,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_point_and_hash_never_leave_before_the_crash() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("watcher").await;
    let mut ws = Socket::connect(&format!("{}?token={t}", s.ws_url)).await;
    let ServerMessage::Snapshot { you, fairness, .. } = ws.next().await else {
        panic!("the first message must be the snapshot");
    };
    assert_eq!(you.map(|y| y.username).as_deref(), Some("watcher"));
    assert_eq!(fairness.terminating_hash.len(), 64);

    // Record every message (as sent) from the next round's opening to its crash.
    let number = ws
        .expect(|m| match m {
            ServerMessage::RoundOpen { round, .. } => Some(round),
            _ => None,
        })
        .await;
    let mut seen: Vec<Value> = Vec::new();
    ws.send(&bet("w1", 100, Some(101))).await;
    let crashed = loop {
        let v = ws.next_value().await;
        if v["type"] == "crashed" && v["round"] == number {
            break v;
        }
        seen.push(v);
    };
    let hash = crashed["hash"].as_str().expect("hash");
    let crash = crashed["crash_x100"].as_u64().expect("crash");
    assert!(seen.len() >= 2, "saw the bet and flight events");
    for v in &seen {
        let m = v.to_string();
        assert!(
            !m.contains(hash),
            "the round hash leaked before the crash: {m}"
        );
        assert!(
            v.get("crash_x100").is_none() && v.get("hash").is_none(),
            "secret field before the crash: {m}"
        );
        if v["type"] == "tick" {
            assert!(
                v["multiplier_x100"].as_u64().expect("m") < crash.max(101),
                "a tick at or past the crash point: {m}"
            );
        }
    }
    assert!(seen.iter().any(|v| v["type"] == "bet_accepted"), "{seen:?}");
    // The revealed hash verifies against the commitment with the verifier.
    let (_, fair) = s.get("/api/v1/fairness").await;
    let h = game_node::fairness::parse_hash(hash).expect("hex");
    let t_hash = game_node::fairness::parse_hash(fair["terminating_hash"].as_str().expect("t"))
        .expect("hex");
    assert!(game_node::fairness::verify_commitment(&h, &t_hash, number));
    let calc =
        game_node::fairness::CrashCalculator::new(fair["salt"].as_str().expect("salt"), 100, 2000)
            .expect("calc");
    assert_eq!(calc.crash_x100(&h), crash);
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bets_and_cash_outs_over_the_socket() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("socketeer").await;
    let mut ws = Socket::connect(&s.ws_url).await;
    assert!(matches!(ws.next().await, ServerMessage::Snapshot { .. }));
    // Unauthenticated bet is refused.
    ws.send(&bet("x", 100, None)).await;
    let refused = ws
        .expect(|m| match m {
            ServerMessage::Error {
                code, request_id, ..
            } => Some((code, request_id)),
            _ => None,
        })
        .await;
    assert_eq!(refused, ("unauthorized".into(), Some("x".into())));
    ws.send(&ClientMessage::Auth { token: t.clone() }).await;
    let you = ws
        .expect(|m| match m {
            ServerMessage::Authenticated { you } => Some(you),
            _ => None,
        })
        .await;
    assert_eq!(you.balance, 100_000);

    let r = s.wait_betting(700).await;
    let number = r["number"].as_u64().expect("n");
    let accepted = |m| match m {
        ServerMessage::BetAccepted { bet, .. } => Some(bet.bet_id),
        _ => None,
    };
    ws.send(&bet("b1", 1000, None)).await;
    let bet_id = ws.expect(accepted).await;
    let balance = ws
        .expect(|m| match m {
            ServerMessage::Balance { balance } => Some(balance),
            _ => None,
        })
        .await;
    assert_eq!(balance, 99_000);
    // The same request id again: the same bet, no second debit.
    ws.send(&bet("b1", 1000, None)).await;
    assert_eq!(ws.expect(accepted).await, bet_id);

    ws.expect(|m| matches!(m, ServerMessage::Flying { .. }).then_some(()))
        .await;
    ws.send(&ClientMessage::CashOut {
        request_id: "c1".into(),
        bet_id: bet_id.clone(),
    })
    .await;
    // Accepted with its payout, or refused with its code: whichever the crash decided.
    let reply: Result<i64, String> = ws
        .expect(|m| match m {
            ServerMessage::CashOutAccepted { payout, .. } => Some(Ok(payout)),
            ServerMessage::Error {
                request_id, code, ..
            } if request_id.as_deref() == Some("c1") => Some(Err(code)),
            _ => None,
        })
        .await;
    s.wait_finished(number).await;
    let balance = s.balance(&t).await;
    match reply {
        Ok(payout) => assert_eq!(balance, 99_000 + payout),
        Err(code) => {
            assert_eq!(code, "too_late");
            assert_eq!(balance, 99_000);
        }
    }
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_errors_and_oversized_frames_close_the_socket() {
    let s = TestServer::start(&[]).await;
    let mut ws = Socket::connect(&s.ws_url).await;
    assert_eq!(ws.next_value().await["type"], "snapshot");
    for bad in [
        "not json",
        "{}",
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"bet","request_id":"r","stake":"lots"}"#,
        r#"{"type":"ping","nonce":-1}"#,
    ] {
        ws.send_text(bad).await;
        let e = ws.expect_type("error").await;
        assert_eq!(e["code"], "bad_request", "{bad}: {e}");
    }
    ws.stream
        .send(Message::Binary(vec![0u8, 1, 2].into()))
        .await
        .expect("send");
    assert_eq!(ws.expect_type("error").await["code"], "bad_request");
    ws.send(&ClientMessage::Ping { nonce: 42 }).await;
    let pong = ws
        .expect(|m| match m {
            ServerMessage::Pong { nonce, .. } => Some(nonce),
            _ => None,
        })
        .await;
    assert_eq!(pong, 42);
    // Larger than the 4 KiB frame limit: the node closes the connection instead of buffering it.
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(10_000));
    let _ = ws.stream.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.stream.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed in time");
    assert!(closed);
    // A forged token is refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(format!("{}?token=forged", s.ws_url)).await;
    assert!(refused.is_err(), "a forged token must not open a socket");
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}
