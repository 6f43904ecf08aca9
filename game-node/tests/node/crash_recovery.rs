//! Kill -9 of a standalone node in the middle of a round: on restart the interrupted round is
//! voided with every open stake refunded, the commitment is unchanged, round numbers continue
//! without reuse, and the audit is exact. And SIGTERM (what a kubelet sends): the drain window
//! keeps players served while `/readyz` already says 503, then WebSockets close with 1001. Uses
//! the real `game-node` binary as a child process.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crashfleet_tests::{free_port, wait};
use serde_json::{Value, json};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> Proc {
    spawn_with(dir, port, &[])
}

fn spawn_with(dir: &std::path::Path, port: u16, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_game-node"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.display().to_string(),
            "--chain-length",
            "5000",
            "--betting-window-ms",
            "1500",
            "--pause-ms",
            "300",
            "--doubling-ms",
            "1000",
            "--max-multiplier-x100",
            "2000",
            "--admin-token",
            common::ADMIN,
            "--jwt-secret",
            "test-jwt-secret-0123456789",
            "--rate-limit-ip",
            "0",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn game-node");
    Proc(child)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    crashfleet_tests::fleet::wait_ready_url(http, base).await;
}

async fn get(http: &reqwest::Client, url: String, token: Option<&str>) -> Value {
    let mut r = http.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("GET").json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_round_refunds_the_open_stakes_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let node = spawn(dir.path(), port);
    wait_ready(&http, &base).await;
    let fair1 = get(&http, format!("{base}/api/v1/fairness"), None).await;
    let reg: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"username": "survivor", "password": "correct-horse"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = reg["token"].as_str().expect("token").to_string();
    // Bet in a betting window with time to spare, then kill the node at once.
    let number = loop {
        let cur = get(&http, format!("{base}/api/v1/round"), None).await;
        if cur["round"]["phase"] == "betting" {
            let left = cur["round"]["betting_closes_at_ms"]
                .as_i64()
                .expect("closes")
                - std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as i64;
            if left > 700 {
                let r = http
                    .post(format!("{base}/api/v1/bets"))
                    .bearer_auth(&token)
                    .header("idempotency-key", "doomed")
                    .json(&json!({"stake": 4_000}))
                    .send()
                    .await
                    .expect("bet");
                assert_eq!(r.status(), 201);
                break cur["round"]["number"].as_u64().expect("n");
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    let me = get(&http, format!("{base}/api/v1/me"), Some(&token)).await;
    assert_eq!(me["balance"], 96_000);
    let mut node = node;
    node.0.kill().expect("SIGKILL");
    node.0.wait().expect("reaped");
    drop(node);

    let node = spawn(dir.path(), port);
    wait_ready(&http, &base).await;
    let fair2 = get(&http, format!("{base}/api/v1/fairness"), None).await;
    assert_eq!(fair1["terminating_hash"], fair2["terminating_hash"]);
    assert_eq!(fair1["salt"], fair2["salt"]);
    // Sessions survive: the signing key is configured. The restarted leader voids the interrupted
    // round right after it starts serving (on a busy machine a moment later): poll for it.
    wait::until(
        "the stake of the interrupted round refunded (balance 100000)",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let me = get(&http, format!("{base}/api/v1/me"), Some(&token)).await;
            (me["balance"] == 100_000).then_some(())
        },
        String::new,
    )
    .await;
    let r = get(&http, format!("{base}/api/v1/rounds/{number}"), None).await;
    assert_eq!(r["bets"][0]["status"], "refunded", "{r}");
    let rounds = get(&http, format!("{base}/api/v1/rounds?limit=1"), None).await;
    assert_eq!(rounds[0]["number"].as_u64(), Some(number));
    assert_eq!(rounds[0]["status"], "voided");
    // The next round takes the next number.
    let next = wait::until(
        "the next round",
        Duration::from_secs(20),
        Duration::from_millis(30),
        || async {
            let cur = get(&http, format!("{base}/api/v1/round"), None).await;
            cur["round"]["number"].as_u64()
        },
        String::new,
    )
    .await;
    assert_eq!(next, number + 1);
    let audit = get(
        &http,
        format!("{base}/api/v1/admin/audit"),
        Some(common::ADMIN),
    )
    .await;
    assert_eq!(audit["balanced"], true, "{audit:#}");
    drop(node);
}

/// A ready node with a drain window of `window`: its data dir, port, base URL, a client, and it.
async fn ready_with_drain(
    window: Duration,
) -> (tempfile::TempDir, u16, String, reqwest::Client, Proc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let millis = window.as_millis().to_string();
    let node = spawn_with(dir.path(), port, &["--drain-delay-ms", &millis]);
    wait_ready(&http, &base).await;
    (dir, port, base, http, node)
}

fn signal(node: &Proc, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &node.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name}");
}

async fn status(http: &reqwest::Client, url: String) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_before_the_node_stops_serving() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    const WINDOW: Duration = Duration::from_millis(3000);
    let (_dir, port, base, http, mut node) = ready_with_drain(WINDOW).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws");
    let first = ws.next().await.expect("snapshot").expect("frame");
    assert!(
        first.to_text().expect("text").contains("snapshot"),
        "{first:?}"
    );

    let term = std::time::Instant::now();
    signal(&node, "TERM");
    // Ready no more, at once: the load balancer is told first.
    let mut turned = None;
    while term.elapsed() < Duration::from_secs(1) {
        if status(&http, format!("{base}/readyz")).await == Some(503) {
            turned = Some(term.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let turned = turned.expect("/readyz still 200 a second after SIGTERM");
    // ... while players are still served, REST and WebSocket, until the window ends.
    let mut served = 0;
    while term.elapsed() < WINDOW - Duration::from_millis(500) {
        assert_eq!(
            status(&http, format!("{base}/api/v1/fairness")).await,
            Some(200),
            "a request {:?} after SIGTERM, inside the drain window",
            term.elapsed()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 10, "{served}");
    let mut ticks = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => break c,
            Ok(Some(Ok(_))) => ticks += 1,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    let closed = term.elapsed();
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert!(
        closed >= WINDOW,
        "the socket was closed {closed:?} after SIGTERM, inside the {WINDOW:?} window"
    );
    assert!(ticks > 0, "the socket got nothing during the window");
    let exit = tokio::task::spawn_blocking(move || node.0.wait())
        .await
        .expect("wait")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");
    println!(
        "drain: /readyz 503 after {turned:?}, {served} requests served in the window, socket \
         closed 1001 after {closed:?} ({ticks} frames meanwhile)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain_window() {
    let (_dir, _port, base, http, mut node) = ready_with_drain(Duration::from_secs(60)).await;
    signal(&node, "TERM");
    wait::until(
        "/readyz 503 after SIGTERM",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (status(&http, format!("{base}/readyz")).await == Some(503)).then_some(()) },
        String::new,
    )
    .await;
    let second = std::time::Instant::now();
    signal(&node, "INT");
    let exited = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Ok(Some(s)) = node.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .expect("wait");
    let exited = exited.expect("still running 10 s after the second signal (window: 60 s)");
    assert!(exited.success(), "{exited:?}");
    println!("second signal: exited {:?} after it", second.elapsed());
}

/// Every task a node starts is tracked, WebSocket connections included, and its stop waits for
/// them: a connected socket counts among the node's tasks, a slow task is waited for, and one
/// that ignores the shutdown signal holds the stop no longer than `TASKS_STOP_WITHIN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_waits_for_every_task_of_the_node_within_a_bound() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::StreamExt;
    use game_node::node::TASKS_STOP_WITHIN;

    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = game_node::node::start(common::fast_config(dir.path(), &[]), shutdown.clone())
        .await
        .expect("node starts");
    let state = started.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = tokio::spawn(game_node::listener::serve(
        listener,
        started.router(),
        game_node::listener::ListenerLimits {
            header_read_timeout: Duration::from_secs(5),
            gate: game_node::limits::Gate::new(0, 64),
            proxies: Arc::new(game_node::client_ip::TrustedProxies::default()),
        },
        shutdown.clone(),
    ));
    let before = state.tasks.len();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    ws.next().await.expect("snapshot").expect("frame");
    assert_eq!(
        state.tasks.len(),
        before + 1,
        "the socket is one of the node's tasks"
    );

    // A task that needs a moment after the signal is waited for...
    let finished_late = Arc::new(AtomicBool::new(false));
    {
        let (done, shutdown) = (finished_late.clone(), shutdown.clone());
        state.tasks.spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.store(true, Ordering::SeqCst);
        });
    }
    // ...and one that never ends holds the stop only for the bound.
    state.tasks.spawn(std::future::pending::<()>());
    shutdown.cancel();
    let _ = serving.await;
    let t = std::time::Instant::now();
    started.finish().await;
    let took = t.elapsed();
    assert!(
        finished_late.load(Ordering::SeqCst),
        "the stop waited for the slow task"
    );
    assert!(
        took >= TASKS_STOP_WITHIN && took < TASKS_STOP_WITHIN + Duration::from_secs(3),
        "the stop waited {took:?} for a task that never ends (bound {TASKS_STOP_WITHIN:?})"
    );
    assert_eq!(
        state.tasks.len(),
        1,
        "only the task that ignores the signal is left"
    );
    // The socket's task ended on the signal: the client got the close.
    let mut closed = false;
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the socket was closed by the stopping node");
}
