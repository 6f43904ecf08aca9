//! Every bad input gets a clear 4xx JSON error with a stable code, moves no money, and never
//! panics the node. One case each, all on one node, with the player's
//! balance and the audit checked at the end.

use crate::common;

use common::TestServer;
use serde_json::{Value, json};

async fn raw(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = s
        .http
        .request(method.parse().expect("method"), format!("{}{path}", s.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

fn expect(case: &str, got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{case}: {}", got.1);
    assert_eq!(got.1["code"], code, "{case}: {}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: a message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_cleanly_and_moves_no_money() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("victim").await;
    let (other, _) = s.register("other").await;
    s.wait_betting(900).await;
    let (st, mine) = s.bet(&other, "others-bet", 100, None).await;
    assert_eq!(st, 201, "{mine}");
    let other_id = mine["bet_id"].as_str().expect("id").to_string();
    let bet = |body: &'static str, key: &'static str| {
        raw(&s, "POST", "/api/v1/bets", Some(&t), Some(key), body)
    };

    expect(
        "malformed JSON",
        bet("{not json", "m1").await,
        400,
        "bad_request",
    );
    expect(
        "wrong type",
        bet(r#"{"stake":"100"}"#, "m2").await,
        400,
        "bad_request",
    );
    expect(
        "unknown field",
        bet(r#"{"stake":100,"evil":1}"#, "m3").await,
        400,
        "bad_request",
    );
    expect(
        "missing stake",
        bet(r#"{}"#, "m4").await,
        400,
        "bad_request",
    );
    expect(
        "zero stake",
        bet(r#"{"stake":0}"#, "m5").await,
        400,
        "invalid_amount",
    );
    expect(
        "negative stake",
        bet(r#"{"stake":-100}"#, "m6").await,
        400,
        "invalid_amount",
    );
    expect(
        "overflowing stake",
        bet(r#"{"stake":99999999999999999999999}"#, "m7").await,
        400,
        "bad_request",
    );
    expect(
        "fractional stake",
        bet(r#"{"stake":10.5}"#, "m8").await,
        400,
        "bad_request",
    );
    expect(
        "below min",
        bet(r#"{"stake":1}"#, "m9").await,
        400,
        "invalid_amount",
    );
    expect(
        "above max",
        bet(r#"{"stake":1000001}"#, "m10").await,
        400,
        "invalid_amount",
    );
    expect(
        "auto below 1.01",
        bet(r#"{"stake":100,"auto_cashout_x100":100}"#, "m11").await,
        400,
        "invalid_multiplier",
    );
    expect(
        "auto above cap",
        bet(r#"{"stake":100,"auto_cashout_x100":2001}"#, "m12").await,
        400,
        "invalid_multiplier",
    );
    expect(
        "negative auto",
        bet(r#"{"stake":100,"auto_cashout_x100":-5}"#, "m13").await,
        400,
        "bad_request",
    );
    let big = format!(r#"{{"stake":100,"pad":"{}"}}"#, "x".repeat(20_000));
    expect(
        "oversized body",
        raw(&s, "POST", "/api/v1/bets", Some(&t), Some("m14"), &big).await,
        413,
        "payload_too_large",
    );
    expect(
        "no idempotency key",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            Some(&t),
            None,
            r#"{"stake":100}"#,
        )
        .await,
        400,
        "missing_idempotency_key",
    );
    let long_key = "k".repeat(65);
    expect(
        "long idempotency key",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            Some(&t),
            Some(&long_key),
            r#"{"stake":100}"#,
        )
        .await,
        400,
        "invalid_idempotency_key",
    );
    expect(
        "no token",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            None,
            Some("m15"),
            r#"{"stake":100}"#,
        )
        .await,
        401,
        "unauthorized",
    );
    expect(
        "forged token",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
            Some("m16"),
            r#"{"stake":100}"#,
        )
        .await,
        401,
        "unauthorized",
    );
    let foreign = game_node::auth::Auth::new(b"some-other-signing-key", 60)
        .issue(&game_node::ports::PlayerRecord {
            id: "x".into(),
            username: "victim".into(),
            password_hash: String::new(),
            balance: 0,
            token_version: 0,
        })
        .expect("token");
    expect(
        "token signed by another key",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            Some(&foreign),
            Some("m17"),
            r#"{"stake":100}"#,
        )
        .await,
        401,
        "unauthorized",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "x", "name": "victim", "iss": "crashfleet", "iat": now - 7200, "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"test-jwt-secret-0123456789"),
    )
    .expect("token");
    expect(
        "expired token",
        raw(
            &s,
            "POST",
            "/api/v1/bets",
            Some(&expired),
            Some("m18"),
            r#"{"stake":100}"#,
        )
        .await,
        401,
        "unauthorized",
    );

    // Cash-out abuse.
    expect(
        "unknown bet",
        raw(
            &s,
            "POST",
            "/api/v1/bets/nope/cashout",
            Some(&t),
            Some("c1"),
            "{}",
        )
        .await,
        404,
        "unknown_bet",
    );
    expect(
        "someone else's bet",
        raw(
            &s,
            "POST",
            &format!("/api/v1/bets/{other_id}/cashout"),
            Some(&t),
            Some("c2"),
            "{}",
        )
        .await,
        403,
        "forbidden",
    );

    // Registration and login.
    let reg = |body: &'static str| raw(&s, "POST", "/api/v1/auth/register", None, None, body);
    expect(
        "short username",
        reg(r#"{"username":"ab","password":"longenough"}"#).await,
        400,
        "invalid_username",
    );
    expect(
        "bad characters",
        reg(r#"{"username":"a b c","password":"longenough"}"#).await,
        400,
        "invalid_username",
    );
    expect(
        "short password",
        reg(r#"{"username":"newbie","password":"short"}"#).await,
        400,
        "invalid_password",
    );
    expect(
        "taken",
        reg(r#"{"username":"VICTIM","password":"longenough"}"#).await,
        409,
        "username_taken",
    );
    expect(
        "wrong password",
        raw(
            &s,
            "POST",
            "/api/v1/auth/login",
            None,
            None,
            r#"{"username":"victim","password":"wrong-one"}"#,
        )
        .await,
        401,
        "invalid_credentials",
    );
    expect(
        "unknown user",
        raw(
            &s,
            "POST",
            "/api/v1/auth/login",
            None,
            None,
            r#"{"username":"ghost","password":"whatever1"}"#,
        )
        .await,
        401,
        "invalid_credentials",
    );

    // Reads.
    expect(
        "unknown round",
        s.get("/api/v1/rounds/999999").await,
        404,
        "unknown_round",
    );
    expect(
        "round not a number",
        s.get("/api/v1/rounds/abc").await,
        400,
        "bad_request",
    );
    expect(
        "negative limit",
        s.get("/api/v1/rounds?limit=-1").await,
        400,
        "bad_request",
    );
    expect(
        "unknown endpoint",
        s.get("/api/v1/nope").await,
        404,
        "not_found",
    );
    expect(
        "audit without admin",
        s.get("/api/v1/admin/audit").await,
        401,
        "unauthorized",
    );
    expect(
        "audit with a player token",
        s.get_auth("/api/v1/admin/audit", &t).await,
        403,
        "forbidden",
    );
    expect(
        "credit zero",
        raw(
            &s,
            "POST",
            "/api/v1/admin/players/victim/credit",
            Some(common::ADMIN),
            Some("z"),
            r#"{"amount":0}"#,
        )
        .await,
        400,
        "invalid_amount",
    );
    expect(
        "credit unknown player",
        raw(
            &s,
            "POST",
            "/api/v1/admin/players/ghost/credit",
            Some(common::ADMIN),
            Some("g"),
            r#"{"amount":5}"#,
        )
        .await,
        404,
        "not_found",
    );

    assert_eq!(s.balance(&t).await, 100_000, "no bad request moved money");
    s.assert_audit().await;
    // The node is still healthy after all of it.
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
