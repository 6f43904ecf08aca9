//! Sessions, black-box through a real node: logout revokes every token of the player on REST and
//! WebSocket (a socket already open included), a token whose player no longer exists is
//! `unauthorized` everywhere, and the username always comes from the ledger (a forged `name` claim
//! is ignored). That the page authenticates its socket with its first frame is checked in pages.rs.

use crate::common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `--jwt-secret` of common::fast_config.
const JWT_SECRET: &str = "test-jwt-secret-0123456789";

async fn connect(s: &TestServer, token: Option<&str>) -> Result<Socket, u16> {
    let url = match token {
        Some(t) => format!("{}?token={t}", s.ws_url),
        None => s.ws_url.clone(),
    };
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

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

/// The next message of one of `types`.
async fn expect_one_of(ws: &mut Socket, types: &[&str]) -> Value {
    loop {
        let v = next(ws).await;
        if types.iter().any(|t| v["type"] == *t) {
            return v;
        }
    }
}

async fn send(ws: &mut Socket, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Authenticates a socket with the first-frame form; returns the answer.
async fn auth_frame(ws: &mut Socket, token: &str) -> Value {
    send(ws, json!({"type": "auth", "token": token})).await;
    expect_one_of(ws, &["authenticated", "error"]).await
}

async fn login(s: &TestServer, name: &str) -> String {
    let (st, v) = s
        .post(
            "/api/v1/auth/login",
            None,
            None,
            json!({"username": name, "password": "correct-horse"}),
        )
        .await;
    assert_eq!(st, 200, "login {name}: {v}");
    v["token"].as_str().expect("token").to_string()
}

/// Opens the node's SQLite ledger directly (the test plays a database operator).
async fn ledger_db(s: &TestServer) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", s.dir.path().join("ledger.db").display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the ledger database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_every_token_of_the_player_on_rest_and_websocket() {
    let s = TestServer::start(&[]).await;
    let (t1, _) = s.register("leaver").await;
    let t2 = login(&s, "leaver").await;
    let (other, _) = s.register("stayer").await;
    // A socket authenticated before the logout, by the query form (tools) …
    let mut open_q = connect(&s, Some(&t1)).await.expect("upgrade");
    let snap = expect_one_of(&mut open_q, &["snapshot"]).await;
    assert_eq!(snap["you"]["username"], "leaver");
    // … and one by the first frame (the page).
    let mut open_f = connect(&s, None).await.expect("upgrade");
    assert_eq!(auth_frame(&mut open_f, &t1).await["type"], "authenticated");

    let r = s
        .http
        .post(format!("{}/api/v1/auth/logout", s.url))
        .bearer_auth(&t2)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 204);

    // Every token of the player is refused on REST …
    for t in [&t1, &t2] {
        let (st, v) = s.get_auth("/api/v1/me", t).await;
        assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
        let (st, v) = s.bet(t, "after-logout", 100, None).await;
        assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    }
    // … logging out twice is refused too …
    let r = s
        .http
        .post(format!("{}/api/v1/auth/logout", s.url))
        .bearer_auth(&t1)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 401);
    // … on new sockets, both forms …
    assert_eq!(connect(&s, Some(&t1)).await.err(), Some(401));
    let mut fresh = connect(&s, None).await.expect("upgrade");
    let v = auth_frame(&mut fresh, &t2).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("unauthorized")),
        "{v}"
    );
    // … and on the sockets that were open: their next money command is refused.
    for ws in [&mut open_q, &mut open_f] {
        send(
            ws,
            json!({"type": "bet", "request_id": "ws-after-logout", "stake": 100}),
        )
        .await;
        let v = expect_one_of(ws, &["bet_accepted", "error"]).await;
        assert_eq!(v["code"], "unauthorized", "{v}");
        assert_eq!(v["request_id"], "ws-after-logout");
    }
    // Other players are untouched, and logging in again starts a working session.
    assert_eq!(s.get_auth("/api/v1/me", &other).await.0, 200);
    let t3 = login(&s, "leaver").await;
    assert_eq!(s.get_auth("/api/v1/me", &t3).await.0, 200);
    assert_eq!(auth_frame(&mut fresh, &t3).await["type"], "authenticated");
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_player_who_no_longer_exists_is_unauthorized_everywhere() {
    // No sign-up credit: the player has no ledger entries, so its row can be deleted.
    let s = TestServer::start(&["--demo-credit", "0"]).await;
    let (token, id) = s.register("ghost").await;
    let mut db = ledger_db(&s).await;
    let gone = sqlx::query("DELETE FROM players WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .expect("delete the player");
    assert_eq!(gone.rows_affected(), 1);

    let (st, v) = s.get_auth("/api/v1/me", &token).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (st, v) = s.get_auth("/api/v1/me/bets", &token).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (st, v) = s.bet(&token, "ghost-bet", 100, None).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (st, v) = s.cash_out(&token, "ghost-cash", "no-such-bet").await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");

    assert_eq!(connect(&s, Some(&token)).await.err(), Some(401));
    let mut ws = connect(&s, None).await.expect("upgrade");
    let v = auth_frame(&mut ws, &token).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("unauthorized")),
        "{v}"
    );
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_name_claim_is_ignored_for_the_ledgers_name() {
    let s = TestServer::start(&[]).await;
    let (_, id) = s.register("honest").await;
    s.register("victim").await;
    // A token signed with the node's key (someone who holds it, or an old token) whose `name`
    // says another player.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": id, "name": "victim", "iss": "crashfleet", "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign");
    let (st, me) = s.get_auth("/api/v1/me", &forged).await;
    assert_eq!((st, me["username"].as_str()), (200, Some("honest")), "{me}");

    // REST bet …
    let mut placed = None;
    for attempt in 0..4 {
        s.wait_betting(400).await;
        let (st, v) = s
            .bet(&forged, &format!("forged-{attempt}"), 100, None)
            .await;
        if st == 201 {
            placed = Some(v);
            break;
        }
        assert_eq!(v["code"], "betting_closed", "{v}");
    }
    let bet = placed.expect("a bet within 4 betting windows");
    assert_eq!(bet["username"], "honest", "{bet}");
    // … and the round's public record agree: the bet is the ledger's player's.
    let round = bet["round"].as_u64().expect("round");
    let finished = s.wait_finished(round).await;
    let ours: Vec<&Value> = finished["bets"]
        .as_array()
        .expect("bets")
        .iter()
        .filter(|b| b["bet_id"] == bet["bet_id"])
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["username"], "honest");

    // The socket, too: `authenticated` and bets carry the ledger's name.
    let mut ws = connect(&s, None).await.expect("upgrade");
    let v = auth_frame(&mut ws, &forged).await;
    assert_eq!(v["you"]["username"], "honest", "{v}");
    let mut accepted = None;
    for attempt in 0..4 {
        s.wait_betting(400).await;
        let rid = format!("ws-forged-{attempt}");
        send(
            &mut ws,
            json!({"type": "bet", "request_id": rid, "stake": 100}),
        )
        .await;
        let v = expect_one_of(&mut ws, &["bet_accepted", "error"]).await;
        if v["type"] == "bet_accepted" {
            accepted = Some(v);
            break;
        }
        assert_eq!(v["code"], "betting_closed", "{v}");
    }
    let v = accepted.expect("a socket bet within 4 betting windows");
    assert_eq!(v["bet"]["username"], "honest", "{v}");
    s.assert_audit().await;
}
