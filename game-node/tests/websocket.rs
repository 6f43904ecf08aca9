//! The WebSocket protocol through a real node: snapshot first, a whole round's events, bets and
//! cash-outs over the socket, bad frames answered with `error`, and proof that the crash point and
//! the round hash never leave the server before the crash.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &TestServer, token: Option<&str>) -> Socket {
    let url = match token {
        Some(t) => format!("{}?token={t}", s.ws_url),
        None => s.ws_url.clone(),
    };
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// Next JSON message (text frames), with a timeout.
async fn next(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).expect("server sends JSON");
        }
    }
}

async fn expect_type(ws: &mut Socket, ty: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_point_and_hash_never_leave_before_the_crash() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("watcher").await;
    let mut ws = connect(&s, Some(&t)).await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["you"]["username"], "watcher");
    assert!(snap["fairness"]["terminating_hash"].is_string());

    // Record every message from the next round's opening to its crash.
    let open = expect_type(&mut ws, "round_open").await;
    let number = open["round"].as_u64().expect("round");
    let mut seen = vec![open.to_string()];
    ws.send(Message::Text(
        json!({"type":"bet","request_id":"w1","stake":100,"auto_cashout_x100":101})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let crashed = loop {
        let v = next(&mut ws).await;
        if v["type"] == "crashed" && v["round"] == number {
            break v;
        }
        seen.push(v.to_string());
    };
    let hash = crashed["hash"].as_str().expect("hash");
    let crash = crashed["crash_x100"].as_u64().expect("crash");
    assert!(seen.len() >= 2, "saw the bet and flight events");
    for m in &seen {
        assert!(
            !m.contains(hash),
            "the round hash leaked before the crash: {m}"
        );
        let v: Value = serde_json::from_str(m).expect("json");
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
    assert!(
        seen.iter().any(|m| m.contains("\"bet_accepted\"")),
        "{seen:?}"
    );
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
    let mut ws = connect(&s, None).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    // Unauthenticated bet is refused.
    ws.send(Message::Text(
        json!({"type":"bet","request_id":"x","stake":100})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let e = expect_type(&mut ws, "error").await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("unauthorized"), Some("x"))
    );
    ws.send(Message::Text(
        json!({"type":"auth","token":t}).to_string().into(),
    ))
    .await
    .expect("send");
    assert_eq!(
        expect_type(&mut ws, "authenticated").await["you"]["balance"],
        100_000
    );

    let r = s.wait_betting(700).await;
    let number = r["number"].as_u64().expect("n");
    ws.send(Message::Text(
        json!({"type":"bet","request_id":"b1","stake":1000})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let accepted = expect_type(&mut ws, "bet_accepted").await;
    let bet_id = accepted["bet"]["bet_id"].as_str().expect("id").to_string();
    assert_eq!(expect_type(&mut ws, "balance").await["balance"], 99_000);
    // The same request id again: the same bet, no second debit.
    ws.send(Message::Text(
        json!({"type":"bet","request_id":"b1","stake":1000})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    assert_eq!(
        expect_type(&mut ws, "bet_accepted").await["bet"]["bet_id"],
        bet_id.as_str()
    );

    expect_type(&mut ws, "flying").await;
    ws.send(Message::Text(
        json!({"type":"cash_out","request_id":"c1","bet_id":bet_id})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let reply = loop {
        let v = next(&mut ws).await;
        if v["type"] == "cash_out_accepted" || (v["type"] == "error" && v["request_id"] == "c1") {
            break v;
        }
    };
    s.wait_finished(number).await;
    let balance = s.balance(&t).await;
    if reply["type"] == "cash_out_accepted" {
        assert_eq!(balance, 99_000 + reply["payout"].as_i64().expect("payout"));
    } else {
        assert_eq!(reply["code"], "too_late", "{reply}");
        assert_eq!(balance, 99_000);
    }
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_errors_and_oversized_frames_close_the_socket() {
    let s = TestServer::start(&[]).await;
    let mut ws = connect(&s, None).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    for bad in [
        "not json",
        "{}",
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"bet","request_id":"r","stake":"lots"}"#,
        r#"{"type":"ping","nonce":-1}"#,
    ] {
        ws.send(Message::Text(bad.into())).await.expect("send");
        let e = expect_type(&mut ws, "error").await;
        assert_eq!(e["code"], "bad_request", "{bad}: {e}");
    }
    ws.send(Message::Binary(vec![0u8, 1, 2].into()))
        .await
        .expect("send");
    assert_eq!(expect_type(&mut ws, "error").await["code"], "bad_request");
    ws.send(Message::Text(
        json!({"type":"ping","nonce":42}).to_string().into(),
    ))
    .await
    .expect("send");
    assert_eq!(expect_type(&mut ws, "pong").await["nonce"], 42);
    // Larger than the 4 KiB frame limit: the node closes the connection instead of buffering it.
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(10_000));
    let _ = ws.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
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
