//! The table chat through a real node: lines reach every socket in one order, markup stays text,
//! the rate limit and an admin's mute refuse with their codes and post nothing, and a new socket's
//! snapshot carries the history.

use crate::common;

use common::TestServer;
use crashfleet_tests::ws::Socket;
use game_node::protocol::{ClientMessage, ServerMessage};
use serde_json::{Value, json};

fn chat(text: &str) -> ClientMessage {
    ClientMessage::Chat { text: text.into() }
}

/// The next `chat` event or `error` frame, skipping round events.
async fn next_chat_or_error(ws: &mut Socket) -> Value {
    loop {
        let v = ws.next_value().await;
        if v["type"] == "chat" || v["type"] == "error" {
            return v;
        }
    }
}

async fn logged_in(s: &TestServer, name: &str) -> (Socket, String) {
    let (t, _) = s.register(name).await;
    let mut ws = Socket::connect_as(&s.ws_url, &t).await;
    ws.expect_type("snapshot").await;
    ws.expect_type("authenticated").await;
    (ws, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_lines_reach_every_socket_in_order_and_abuse_is_refused() {
    let s = TestServer::start(&[]).await;
    let (mut ann, _) = logged_in(&s, "ann").await;
    let (mut bob, bob_token) = logged_in(&s, "bob").await;
    let mut watcher = Socket::connect(&s.ws_url).await;
    watcher.expect_type("snapshot").await;

    // An anonymous socket may read but not post.
    watcher.send(&chat("hello")).await;
    let refused = next_chat_or_error(&mut watcher).await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");

    // Lines from two players, markup and control characters included, in one order everywhere.
    ann.send(&chat("  hi\u{0} <b>bob</b>\n\u{202E}!  ")).await;
    bob.send(&chat("hey ann")).await;
    let mut orders = Vec::new();
    for ws in [&mut ann, &mut bob, &mut watcher] {
        let mut lines = Vec::new();
        for _ in 0..2 {
            let v = next_chat_or_error(ws).await;
            assert_eq!(v["type"], "chat", "{v}");
            assert!(v["at_ms"].as_i64().is_some_and(|t| t > 0), "{v}");
            lines.push(format!(
                "{}: {}",
                v["username"].as_str().unwrap_or(""),
                v["text"].as_str().unwrap_or("")
            ));
        }
        orders.push(lines);
    }
    assert!(
        orders.iter().all(|o| o == &orders[0]),
        "every socket sees one order: {orders:?}"
    );
    assert!(
        orders[0].contains(&"ann: hi <b>bob</b> !".to_string()),
        "cleaned, markup kept as text: {orders:?}"
    );

    // Empty and overlong lines are refused.
    bob.send(&chat(" \u{7} ")).await;
    assert_eq!(next_chat_or_error(&mut bob).await["code"], "bad_request");
    bob.send(&chat(&"x".repeat(201))).await;
    assert_eq!(next_chat_or_error(&mut bob).await["code"], "bad_request");

    // A flood: bob has used one line of his window; four more pass, the next is refused with its
    // code, and nobody sees it.
    for n in 0..4 {
        bob.send(&chat(&format!("flood {n}"))).await;
    }
    bob.send(&chat("one too many")).await;
    // The refusal is the socket's own reply and the lines come through the table's fan-out, so
    // the two may arrive in either order.
    let mut seen = Vec::new();
    let mut refusal = None;
    while seen.len() < 4 || refusal.is_none() {
        let v = next_chat_or_error(&mut bob).await;
        if v["type"] == "error" {
            assert!(refusal.is_none(), "one refusal only: {v}");
            refusal = Some(v);
        } else {
            seen.push(v["text"].as_str().unwrap_or("").to_string());
        }
    }
    let refusal = refusal.unwrap_or_default();
    assert_eq!(seen, ["flood 0", "flood 1", "flood 2", "flood 3"]);
    assert_eq!(refusal["code"], "chat_rate_limited", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("wait")),
        "{refusal}"
    );
    assert_eq!(
        s.metric("crashfleet_chat_messages_total{outcome=\"chat_rate_limited\"}")
            .await,
        Some(1.0)
    );

    // An admin mutes ann: her next line is refused `muted` and nobody sees it.
    let (st, v) = s
        .post(
            "/api/v1/admin/mute",
            Some(&bob_token),
            None,
            json!({"username": "ann", "minutes": 5}),
        )
        .await;
    assert_eq!(st, 403, "a player is not an admin: {v}");
    let (st, v) = s
        .post(
            "/api/v1/admin/mute",
            Some(common::ADMIN),
            None,
            json!({"username": "nobody", "minutes": 5}),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));
    let (st, v) = s
        .post(
            "/api/v1/admin/mute",
            Some(common::ADMIN),
            None,
            json!({"username": "ann", "minutes": 43_201}),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (400, Some("bad_request")));
    let (st, v) = s
        .post(
            "/api/v1/admin/mute",
            Some(common::ADMIN),
            None,
            json!({"username": "ann", "minutes": 5}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["mutes"][0]["username"], "ann", "{v}");
    ann.send(&chat("can you hear me")).await;
    let muted = ann.expect_type("error").await;
    assert_eq!(muted["code"], "muted", "{muted}");
    // Lifting the mute lets her speak again.
    let (st, v) = s
        .post(
            "/api/v1/admin/mute",
            Some(common::ADMIN),
            None,
            json!({"username": "ann", "minutes": 0}),
        )
        .await;
    assert_eq!(
        (st, v["mutes"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    ann.send(&chat("back")).await;
    let back = next_chat_or_error(&mut watcher).await;
    // The watcher saw bob's four flood lines first, then ann's "back", and nothing refused.
    let mut watched = vec![back];
    while watched.last().is_some_and(|v| v["text"] != "back") {
        watched.push(next_chat_or_error(&mut watcher).await);
    }
    let texts: Vec<&str> = watched.iter().filter_map(|v| v["text"].as_str()).collect();
    assert_eq!(texts, ["flood 0", "flood 1", "flood 2", "flood 3", "back"]);

    // A new socket's snapshot carries the history, oldest first.
    let mut late = Socket::connect(&s.ws_url).await;
    let ServerMessage::Snapshot { chat: history, .. } = late.next().await else {
        panic!("the first message must be the snapshot");
    };
    let texts: Vec<&str> = history.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts.len(), 7, "{texts:?}");
    assert_eq!(texts.last(), Some(&"back"));
    assert_eq!(
        history[0].username,
        if orders[0][0].starts_with("ann") {
            "ann"
        } else {
            "bob"
        }
    );
}
