//! A REST request, as a player or an operator could send it, through the node's real router: a
//! standalone node (SQLite ledger in a temporary directory, rounds running in the background on
//! short timings) is started once, one player is registered, and every input becomes a request.
//!
//! Input layout: byte 0 picks the route, byte 1 the method and the headers (no/valid/bad bearer
//! token, admin token, an `Idempotency-Key`, a JSON content type); the rest is split at the first
//! newline into a path part (a route parameter or a query string, e.g. a bet id, a username, a
//! round number, `limit=…`) and the body.
//!
//! Properties: no input panics the node or gets a 5xx (a bad input is the client's error); every
//! error answer is our JSON error with a code, except the router's own 405; and the conservation
//! audit stays exact (checked every 512 inputs, and on the first). A logout with a valid token
//! uses a fresh session of a third player (logout revokes every session of its player, and the
//! fuzzer's own token must stay valid for the other routes), and that token is refused afterwards.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use clap::Parser;
use game_node::config::ServeConfig;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ADMIN: &str = "fuzz-admin-token-0123456789";

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    cfg: ServeConfig,
}

struct Node {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    other_token: String,
    _dir: tempfile::TempDir,
}

/// (method it is served under, path with `{}` where the input's path part goes)
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/me/bets?{}"),
    ("POST", "/api/v1/bets"),
    ("POST", "/api/v1/bets/{}/cashout"),
    ("GET", "/api/v1/round"),
    ("GET", "/api/v1/rounds?{}"),
    ("GET", "/api/v1/rounds/{}"),
    ("GET", "/api/v1/fairness"),
    ("GET", "/api/v1/leaderboard?{}"),
    ("GET", "/api/v1/stats"),
    ("POST", "/api/v1/admin/players/{}/credit"),
    ("POST", "/api/v1/admin/players/{}/debit"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/{}"),
    ("POST", "/api/v1/auth/logout"),
];

const LOGOUT: &str = "/api/v1/auth/logout";

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = res.status();
    let body = res.into_body().collect().await.expect("a body").to_bytes();
    (status, body.to_vec())
}

fn json(method: &str, uri: &str, auth: Option<&str>, body: String) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = auth {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("a request")
}

async fn register(app: &axum::Router, name: &str) -> String {
    session(app, "register", name, StatusCode::CREATED).await
}

/// A session token from `/auth/{how}` (register or login) for `name`.
async fn session(app: &axum::Router, how: &str, name: &str, want: StatusCode) -> String {
    let body = format!(r#"{{"username":"{name}","password":"fuzz-password-1"}}"#);
    let uri = format!("/api/v1/auth/{how}");
    let (status, body) = call(app, json("POST", &uri, None, body)).await;
    assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("session JSON");
    v["token"].as_str().expect("a token").to_string()
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().display().to_string();
        let cfg = Serve::parse_from([
            "serve",
            "--data-dir",
            &data,
            "--admin-token",
            ADMIN,
            "--jwt-secret",
            "fuzz-jwt-secret-0123456789",
            "--rate-limit-ip",
            "0",
            "--rate-limit-player",
            "0",
            // Short rounds: inputs meet betting, flight and the pause.
            "--betting-window-ms",
            "300",
            "--pause-ms",
            "100",
            "--doubling-ms",
            "300",
        ])
        .cfg;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (app, token, other_token) = rt.block_on(async {
            let started = game_node::node::start(cfg, tokio_util::sync::CancellationToken::new())
                .await
                .expect("a standalone node starts");
            let app = started.router();
            // The node runs for the whole process: its tasks are never joined.
            std::mem::forget(started);
            let token = register(&app, "fuzzer").await;
            let other = register(&app, "bystander").await;
            register(&app, "leaver").await;
            (app, token, other)
        });
        Node {
            rt,
            app,
            token,
            other_token,
            _dir: dir,
        }
    })
}

fn audit_is_exact(node: &Node) {
    let req = Request::builder()
        .uri("/api/v1/admin/audit")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .expect("a request");
    let (status, body) = node.rt.block_on(call(&node.app, req));
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("audit JSON");
    assert_eq!(v["balanced"], true, "the audit is not exact: {v}");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let node = node();
    let (route, flags, rest) = (data[0], data[1], &data[2..]);
    let (part, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(part) = std::str::from_utf8(part) else {
        return;
    };
    let (served, path) = ROUTES[route as usize % ROUTES.len()];
    let method = match flags & 0b11 {
        0 => served,
        1 => "GET",
        2 => "POST",
        _ => "DELETE",
    };
    let uri = path.replace("{}", part);
    // A URI hyper would refuse never reaches the router.
    let Ok(uri) = uri.parse::<axum::http::Uri>() else {
        return;
    };
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(uri);
    // A logout revokes the sessions of the token's player: it gets a fresh session of its own.
    let leaver = (path == LOGOUT && (flags >> 2) & 0b11 == 1).then(|| {
        node.rt
            .block_on(session(&node.app, "login", "leaver", StatusCode::OK))
    });
    req = match (flags >> 2) & 0b11 {
        0 => req,
        1 => req.header(
            header::AUTHORIZATION,
            format!("Bearer {}", leaver.as_deref().unwrap_or(&node.token)),
        ),
        2 => req.header(header::AUTHORIZATION, format!("Bearer {ADMIN}")),
        _ => req.header(
            header::AUTHORIZATION,
            format!("Bearer {}x", node.other_token),
        ),
    };
    if flags & 0b1_0000 != 0 {
        // The path part doubles as the idempotency key (a bet's retry key).
        let Ok(key) = axum::http::HeaderValue::from_str(part) else {
            return;
        };
        req = req.header("idempotency-key", key);
    }
    if flags & 0b10_0000 == 0 {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Body::from(body.to_vec())).expect("a request");
    let (status, answer) = node.rt.block_on(call(&node.app, req));
    assert!(
        !status.is_server_error(),
        "{method} {path} {part:?} {:?} -> {status}: {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&answer)
    );
    if !status.is_success() && status != StatusCode::METHOD_NOT_ALLOWED {
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "{status} without a JSON error ({e}): {:?}",
                String::from_utf8_lossy(&answer)
            )
        });
        assert!(
            v["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{status} without an error code: {v}"
        );
    }
    if let Some(t) = leaver
        && status.is_success()
    {
        let me = Request::builder()
            .uri("/api/v1/me")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .expect("a request");
        let (after, _) = node.rt.block_on(call(&node.app, me));
        assert_eq!(
            after,
            StatusCode::UNAUTHORIZED,
            "a logged-out token still works"
        );
    }
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if CALLS.fetch_add(1, Ordering::Relaxed).is_multiple_of(512) {
        audit_is_exact(node);
    }
});
