//! Connection hygiene through a real node: slow clients are cut by the header-read and request
//! timeouts, WebSocket caps (per address and in total) hold under concurrent upgrades, silent and
//! non-reading sockets are closed by the idle and write timeouts, a frame flood is closed with
//! 1008, `/metrics` can move to its own address, and a flood of sockets past the process's
//! descriptor limit gets `busy` while rounds, the ledger and a player carry on.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn host(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// The node's open WebSockets, as its lobby reports them (`players_online`). Not the
/// `crashfleet_ws_connections` gauge: the metrics recorder is one per process, shared by every
/// node this test binary runs at once.
async fn ws_gauge(s: &TestServer) -> f64 {
    let (status, v) = s.get("/api/v1/lobby").await;
    assert_eq!(status, 200, "{v}");
    v["tables"][0]["players_online"]
        .as_f64()
        .expect("players_online")
}

/// Waits until the node reports `n` open WebSockets; returns how long that took.
async fn wait_gauge(s: &TestServer, n: f64, within: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if ws_gauge(s).await == n {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the node still reports {} WebSockets after {within:?}, expected {n}",
        ws_gauge(s).await
    );
}

/// How long until the server closes `tcp` (EOF or reset), reading and discarding what it sends;
/// `None` if it is still open after `limit`.
async fn closed_after(tcp: &mut TcpStream, t0: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sockets_are_closed_after_the_header_read_timeout() {
    let s = TestServer::start(&["--header-read-timeout-ms", "500"]).await;
    let addr = host(&s);
    const TRICKLERS: usize = 40;
    const SILENT: usize = 10;
    let mut tasks = Vec::new();
    for i in 0..TRICKLERS + SILENT {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.expect("connect");
            let t0 = Instant::now();
            if i < TRICKLERS {
                // A request line, then one more header byte every 100 ms, never the blank line.
                let (mut rd, mut wr) = tcp.into_split();
                let writer = tokio::spawn(async move {
                    if wr
                        .write_all(b"GET /api/v1/round HTTP/1.1\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if wr.write_all(b"x").await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = [0u8; 1024];
                let held = loop {
                    match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                        Err(_) => break None,
                        Ok(Ok(0)) | Ok(Err(_)) => break Some(t0.elapsed()),
                        Ok(Ok(_)) => {}
                    }
                };
                writer.abort();
                held
            } else {
                closed_after(&mut tcp, t0, Duration::from_secs(10)).await
            }
        }));
    }
    // A normal request is answered while they trickle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = s.get("/api/v1/round").await;
    assert_eq!(status, 200);
    let mut held = Vec::new();
    for t in tasks {
        held.push(
            t.await
                .expect("join")
                .expect("the node closed the slow socket"),
        );
    }
    held.sort();
    let (min, median, max) = (held[0], held[held.len() / 2], held[held.len() - 1]);
    println!(
        "slowloris: {} sockets held min {min:?} median {median:?} max {max:?} (header-read timeout 500 ms)",
        held.len()
    );
    assert!(
        min >= Duration::from_millis(400),
        "closed before the timeout: {min:?}"
    );
    assert!(
        max < Duration::from_secs(5),
        "held far past the timeout: {max:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_by_the_request_timeout() {
    let s = TestServer::start(&["--request-timeout-ms", "800"]).await;
    let mut tcp = TcpStream::connect(host(&s)).await.expect("connect");
    let t0 = Instant::now();
    tcp.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 200\r\n\r\n{",
    )
    .await
    .expect("write");
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("no answer to the trickled request: {other:?}"),
        }
    }
    writer.abort();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&answer);
    println!("trickled body answered after {took:?}: {text}");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"outcome_unknown\""), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Opens `n` WebSockets at once; returns the open ones and the refusals' HTTP statuses.
async fn open_many(s: &TestServer, n: usize) -> (Vec<Socket>, Vec<u16>) {
    let attempts = futures_util::future::join_all(
        (0..n).map(|_| tokio_tungstenite::connect_async(s.ws_url.clone())),
    )
    .await;
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for a in attempts {
        match a {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                refused.push(r.status().as_u16())
            }
            Err(e) => panic!("unexpected WebSocket failure: {e}"),
        }
    }
    (open, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_cap_holds_under_concurrent_upgrades() {
    let s = TestServer::start(&["--max-connections", "20", "--max-ws-per-ip", "0"]).await;
    let (open, refused) = open_many(&s, 150).await;
    println!(
        "global cap 20: {} of 150 concurrent upgrades accepted, {} refused",
        open.len(),
        refused.len()
    );
    assert_eq!(open.len(), 20, "the cap held exactly");
    assert!(refused.iter().all(|&st| st == 503), "{refused:?}");
    // The node counts exactly the sockets it accepted.
    wait_gauge(&s, 20.0, Duration::from_secs(5)).await;
    drop(open);
    wait_gauge(&s, 0.0, Duration::from_secs(5)).await;
    // Slots come back: a new socket is accepted.
    assert!(
        tokio_tungstenite::connect_async(s.ws_url.clone())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_websocket_share() {
    let s = TestServer::start(&["--max-ws-per-ip", "10"]).await;
    let (open, refused) = open_many(&s, 60).await;
    println!(
        "per-address cap 10: {} of 60 concurrent upgrades from 127.0.0.1 accepted",
        open.len()
    );
    assert_eq!(open.len(), 10);
    assert_eq!(refused, vec![503; 50]);
    // The refusal says why, with a Retry-After.
    let r = s
        .http
        .get(format!("{}/ws", s.url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("GET /ws");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "busy");
    drop(open);
    wait_gauge(&s, 0.0, Duration::from_secs(5)).await;
    let (open, _) = open_many(&s, 10).await;
    assert_eq!(open.len(), 10, "closed sockets gave their share back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_answers_no_ping_is_closed() {
    let s = TestServer::start(&[
        "--ws-ping-interval-ms",
        "200",
        "--ws-idle-timeout-ms",
        "700",
    ])
    .await;
    // `live` reads, so its WebSocket library answers every ping; `mute` never reads.
    let (mut live, _) = tokio_tungstenite::connect_async(s.ws_url.clone())
        .await
        .expect("connect");
    let reader = tokio::spawn(async move {
        let mut pings = 0u32;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            match tokio::time::timeout(Duration::from_millis(500), live.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return (pings, false);
                }
                _ => {}
            }
        }
        (pings, true)
    });
    let t0 = Instant::now();
    let (_mute, _) = tokio_tungstenite::connect_async(s.ws_url.clone())
        .await
        .expect("connect");
    wait_gauge(&s, 2.0, Duration::from_secs(2)).await;
    wait_gauge(&s, 1.0, Duration::from_secs(5)).await;
    let held = t0.elapsed();
    let (pings, still_open) = reader.await.expect("join");
    println!(
        "idle timeout 700 ms: a mute socket was held {held:?}; a live one answered {pings} pings and stayed"
    );
    assert!(held >= Duration::from_millis(600), "{held:?}");
    assert!(held < Duration::from_secs(5), "{held:?}");
    assert!(still_open, "the socket that answers pings stays open");
    assert!(pings >= 5, "the server pings every 200 ms: {pings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_by_the_write_timeout() {
    let s = TestServer::start(&[
        "--ws-write-timeout-ms",
        "500",
        "--ws-ping-interval-ms",
        "600000",
        "--ws-idle-timeout-ms",
        "3600000",
        "--tick-rate-hz",
        "100",
        // Long flights: ticks (the bulk of what a watcher receives) flow nearly all the time.
        "--doubling-ms",
        "100000",
    ])
    .await;
    // A small receive buffer so the node's writes back up soon; then never read.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    let tcp = sock
        .connect(host(&s).parse().expect("addr"))
        .await
        .expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url.clone(), tcp)
        .await
        .expect("handshake");
    let t0 = Instant::now();
    wait_gauge(&s, 1.0, Duration::from_secs(2)).await;
    // Keep the node writing: a ping a frame budget allows (pongs come back to a socket that
    // does not read).
    let pinger = tokio::spawn(async move {
        for n in 0u64.. {
            let ping = json!({"type": "ping", "nonce": n}).to_string();
            if ws.send(Message::text(ping)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let cut = wait_gauge(&s, 0.0, Duration::from_secs(60)).await;
    pinger.abort();
    println!(
        "write timeout 500 ms: a socket that never reads was cut {:?} after it connected",
        t0.elapsed()
    );
    assert!(cut < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_frame_flood_is_closed_with_policy_violation() {
    let s = TestServer::start(&[]).await;
    let (token, _) = s.register("flooder").await;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut floods = Vec::new();
    for _ in 0..3 {
        let url = s.ws_url.clone();
        let token = token.clone();
        floods.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            let (mut tx, mut rx) = ws.split();
            let frame = json!({"type": "auth", "token": token}).to_string();
            let sender = tokio::spawn(async move {
                for _ in 0..5_000 {
                    if tx.send(Message::text(frame.clone())).await.is_err() {
                        return;
                    }
                }
            });
            let mut answered = 0u32;
            let mut limited = false;
            let mut close_code = None;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
                match m {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).expect("json");
                        if v["type"] == "authenticated" {
                            answered += 1;
                        }
                        if v["type"] == "error" && v["code"] == "rate_limited" {
                            limited = true;
                        }
                    }
                    Ok(Message::Close(f)) => {
                        close_code = f.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            sender.abort();
            (answered, limited, close_code)
        }));
    }
    let mut answered = Vec::new();
    for f in floods {
        let (n, limited, code) = f.await.expect("join");
        assert!(limited, "an `error` frame rate_limited came first");
        assert_eq!(code, Some(1008), "closed as a policy violation");
        answered.push(n);
    }
    let took = t0.elapsed();
    let cpu = process_cpu() - cpu0;
    println!(
        "auth flood from 3 sockets: {answered:?} frames answered before the close, {took:?}, \
         {cpu:.2} s CPU of the test process (node and clients together)"
    );
    // The burst, plus the refill during the flood.
    let most =
        game_node::ws::FRAME_BURST as f64 + game_node::ws::FRAME_RATE as f64 * took.as_secs_f64();
    assert!(
        answered.iter().all(|&n| f64::from(n) <= most),
        "{answered:?} > {most}"
    );
    // Other players are unaffected.
    let (status, _) = s.get("/api/v1/round").await;
    assert_eq!(status, 200);
}

/// User + system CPU seconds of this process, from /proc/self/stat.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_their_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let s = TestServer::start(&["--metrics-listen", &metrics_addr]).await;
    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "players cannot scrape the main listener");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "not_found");
    let page = s
        .http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("GET metrics");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("crashfleet_rounds_total")
    );
    // Only /metrics lives there.
    let other = s
        .http
        .get(format!("http://{metrics_addr}/api/v1/round"))
        .send()
        .await
        .expect("GET");
    assert_eq!(other.status(), 404);
    // The rest of the main listener is unchanged.
    assert_eq!(s.get("/api/v1/round").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_listen_metrics_stay_on_the_main_listener() {
    let s = TestServer::start(&[]).await;
    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
}

/// A game-node process under `prlimit --nofile`, killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One flood socket's fate within `limit`.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Answered 503 busy, then closed.
    Busy,
    /// Closed without an answer (reset by a close with the request unread).
    Closed,
    /// Still open and unanswered.
    Held,
}

async fn fate(mut tcp: TcpStream, limit: Duration) -> (Fate, TcpStream) {
    // A request, so a refusal has something to answer.
    if tcp
        .write_all(b"GET /api/v1/round HTTP/1.1\r\nhost: x\r\n")
        .await
        .is_err()
    {
        return (Fate::Closed, tcp);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let t0 = Instant::now();
    loop {
        let Some(left) = limit.checked_sub(t0.elapsed()) else {
            return (Fate::Held, tcp);
        };
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return (Fate::Held, tcp),
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => {
                let text = String::from_utf8_lossy(&got);
                let f = if text.starts_with("HTTP/1.1 503") && text.contains("\"busy\"") {
                    Fate::Busy
                } else if got.is_empty() {
                    Fate::Closed
                } else {
                    panic!("a flood socket got an unexpected answer: {text}")
                };
                return (f, tcp);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_flood_past_the_descriptor_limit_gets_busy_and_the_ledger_carries_on() {
    // 512 descriptors: the node keeps 256 for itself and admits at most 256 clients.
    const NOFILE: u64 = 512;
    const FLOOD: usize = 800;
    // This process holds the flood's sockets: lift its own soft limit (the hard one allows).
    let _ = rlimit::increase_nofile_limit(4_096);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("prlimit")
        .arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_game-node"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.path().display().to_string(),
            "--chain-length",
            "5000",
            "--betting-window-ms",
            "1500",
            "--pause-ms",
            "300",
            "--doubling-ms",
            "1000",
            "--max-multiplier-x100",
            "300",
            "--admin-token",
            common::ADMIN,
            "--jwt-secret",
            "test-jwt-secret-0123456789",
            "--rate-limit-ip",
            "0",
            "--rate-limit-player",
            "0",
            // Every socket comes from 127.0.0.1: only the node-wide cap is under test here,
            // and flood sockets are held (not timed out) for the whole test.
            "--max-connections-per-ip",
            "0",
            "--header-read-timeout-ms",
            "120000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn prlimit game-node");
    let node = Proc(child);
    let pid = node.0.id();
    let base = format!("http://127.0.0.1:{port}");
    // The player's client keeps its connections (reqwest pools them): 16 opened before the flood.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(None)
        .build()
        .expect("client");
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the node became ready");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    println!(
        "node limits: {}",
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or("?")
    );
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"username": "steady", "password": "correct-horse"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let warm = futures_util::future::join_all(
        (0..16).map(|_| http.get(format!("{base}/api/v1/rounds?limit=1")).send()),
    )
    .await;
    assert!(
        warm.iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
    );
    let rounds_before = latest_round(&http, &base).await;

    // The flood: more sockets than the node has descriptors.
    let t0 = Instant::now();
    let mut fates = Vec::new();
    for _ in 0..FLOOD / 100 {
        let batch = futures_util::future::join_all((0..100).map(|_| async {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(tcp) => Some(fate(tcp, Duration::from_secs(3)).await),
                Err(_) => None,
            }
        }))
        .await;
        fates.extend(batch);
    }
    let count = |f: Fate| {
        fates
            .iter()
            .filter(|x| x.as_ref().is_some_and(|(g, _)| *g == f))
            .count()
    };
    let (busy, closed, held) = (count(Fate::Busy), count(Fate::Closed), count(Fate::Held));
    let refused_at_connect = fates.iter().filter(|x| x.is_none()).count();
    println!(
        "flood of {FLOOD} sockets against nofile {NOFILE}: {held} held, {busy} answered 503 busy, \
         {closed} closed unanswered, {refused_at_connect} refused at connect ({:?})",
        t0.elapsed()
    );
    assert!(held <= 256, "no more clients than the budget: {held}");
    assert!(
        busy + closed + refused_at_connect >= FLOOD - 256,
        "the rest were turned away at once, not left waiting"
    );
    assert!(busy > 0, "refused clients are told `busy`");

    // During the flood: the player's kept connections still work, with the ledger behind them.
    let mut statuses = Vec::new();
    let mut turned_away = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bet = None;
    while Instant::now() < deadline && bet.is_none() {
        let answers = futures_util::future::join_all((0..16).map(|i| {
            let r = if i == 0 {
                http.post(format!("{base}/api/v1/bets"))
                    .bearer_auth(&token)
                    .header(
                        "idempotency-key",
                        format!("flood-bet-{}", Instant::now().elapsed().as_nanos()),
                    )
                    .json(&json!({"stake": 100, "auto_cashout_x100": 150}))
            } else {
                http.get(format!("{base}/api/v1/me")).bearer_auth(&token)
            };
            r.send()
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            // More requests at once than kept connections: the extra ones need a new
            // connection, which the full node turns away (503 or a closed connection).
            let Ok(a) = a else {
                turned_away += 1;
                continue;
            };
            let status = a.status().as_u16();
            statuses.push(status);
            if i == 0 && (status == 200 || status == 201) {
                bet = Some(a.json::<Value>().await.expect("json"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "player during the flood: {} answers ({} of them 503), {turned_away} requests turned away",
        statuses.len(),
        statuses.iter().filter(|&&s| s == 503).count()
    );
    assert!(
        !statuses.contains(&500),
        "no 500 while flooded: {statuses:?}"
    );
    assert!(
        bet.is_some(),
        "a bet was accepted during the flood: {statuses:?}"
    );
    // Rounds keep being played.
    let mut rounds_during = rounds_before;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rounds_during < rounds_before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rounds_during = latest_round(&http, &base).await;
    }
    println!("rounds during the flood: {rounds_before} -> {rounds_during}");
    assert!(rounds_during >= rounds_before + 2, "rounds stalled");

    // After the flood a new client connects and plays.
    drop(fates);
    let fresh = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = fresh.get(format!("{base}/api/v1/round")).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "new connections are served once the flood is gone");
    let audit: Value = fresh
        .get(format!("{base}/api/v1/admin/audit"))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert_eq!(audit["balanced"], true, "{audit:#}");
    drop(node);
}

async fn latest_round(http: &reqwest::Client, base: &str) -> u64 {
    let v: Value = http
        .get(format!("{base}/api/v1/rounds?limit=1"))
        .send()
        .await
        .expect("rounds")
        .json()
        .await
        .expect("json");
    v.as_array()
        .or_else(|| v["rounds"].as_array())
        .and_then(|a| a.first())
        .and_then(|r| r["number"].as_u64())
        .unwrap_or(0)
}

/// A TCP connection to the node from the loopback address `from` (Linux answers on all of
/// 127.0.0.0/8, so one machine can play many client addresses).
async fn connect_from(from: std::net::Ipv4Addr, to: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket
        .connect(to.parse().expect("the node's address"))
        .await
}

/// What the attackers achieved, so the test can prove the attack really ran.
#[derive(Default)]
struct AttackTally {
    slow_held: std::sync::atomic::AtomicU64,
    slow_refused: std::sync::atomic::AtomicU64,
    ws_opened: std::sync::atomic::AtomicU64,
    ws_refused: std::sync::atomic::AtomicU64,
    ws_closed_1008: std::sync::atomic::AtomicU64,
    logins: std::sync::atomic::AtomicU64,
    login_refused: std::sync::atomic::AtomicU64,
}

impl AttackTally {
    fn add(n: &std::sync::atomic::AtomicU64) {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(n: &std::sync::atomic::AtomicU64) -> u64 {
        n.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Times one step of the honest player and fails the test if it took a second or more.
async fn within_a_second<T>(
    what: &str,
    steps: &mut Vec<(String, Duration)>,
    f: impl Future<Output = T>,
) -> T {
    let t0 = Instant::now();
    let out = f.await;
    let took = t0.elapsed();
    steps.push((what.to_string(), took));
    assert!(
        took < Duration::from_secs(1),
        "{what} took {took:?} under attack"
    );
    out
}

/// The round as the node reports it, polled at 10/s: the honest player's REST budget is the
/// production one (`--rate-limit-ip 50`) and polling must not spend it.
async fn poll_round(s: &TestServer, until: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (status, v) = s.get("/api/v1/round").await;
        if status == 200 && until(&v["round"]) {
            return v["round"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the round never reached the awaited state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_player_plays_through_a_mixed_attack() {
    // Production limits (the test defaults switch the rate limits off).
    let s = TestServer::start(&["--rate-limit-ip", "50", "--rate-limit-player", "20"]).await;
    let _ = rlimit::increase_nofile_limit(4_096);
    let node = host(&s);
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let tally = std::sync::Arc::new(AttackTally::default());
    let stop = CancellationToken::new();
    let mut attack = tokio::task::JoinSet::new();

    // 1. A WebSocket flood from the attacker's address: 100 sockets at once (64 may stay), each
    // sending auth and bet frames as fast as it can and reconnecting when it is closed.
    for _ in 0..100 {
        let (node, tally, stop) = (node.clone(), tally.clone(), stop.clone());
        attack.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(tcp) = connect_from(attacker, &node).await else {
                    AttackTally::add(&tally.ws_refused);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let ws = match tokio_tungstenite::client_async(format!("ws://{node}/ws"), tcp).await
                {
                    Ok((ws, _)) => ws,
                    Err(_) => {
                        AttackTally::add(&tally.ws_refused);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                AttackTally::add(&tally.ws_opened);
                let (mut tx, mut rx) = ws.split();
                let frames = [
                    json!({"type": "auth", "token": "not-a-token"}).to_string(),
                    json!({"type": "bet", "stake": 100}).to_string(),
                ];
                let flood = async {
                    for i in 0usize.. {
                        if tx.send(Message::text(frames[i % 2].clone())).await.is_err() {
                            break;
                        }
                    }
                };
                let closed = async {
                    while let Some(Ok(m)) = rx.next().await {
                        if let Message::Close(Some(f)) = m {
                            return u16::from(f.code) == 1008;
                        }
                    }
                    false
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = flood => {}
                    by_policy = closed => if by_policy { AttackTally::add(&tally.ws_closed_1008) },
                }
            }
        });
    }
    // 2. Slowloris from the same address: 300 sockets that send a request line and trickle one
    // header byte every 200 ms, reconnecting when closed; the per-address cap (256) refuses the
    // rest.
    for _ in 0..300 {
        let (node, tally, stop) = (node.clone(), tally.clone(), stop.clone());
        attack.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut tcp) = connect_from(attacker, &node).await else {
                    AttackTally::add(&tally.slow_refused);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if tcp
                    .write_all(b"GET /api/v1/round HTTP/1.1\r\n")
                    .await
                    .is_err()
                {
                    AttackTally::add(&tally.slow_refused);
                    continue;
                }
                let mut buf = [0u8; 512];
                let mut held = false;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tcp.read(&mut buf) => match r {
                            // A refusal (503 busy) or a close: the socket is gone.
                            Ok(0) | Err(_) | Ok(_) => break,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if tcp.write_all(b"x").await.is_err() { break; }
                            if !held { held = true; AttackTally::add(&tally.slow_held); }
                        }
                    }
                }
                if !held {
                    AttackTally::add(&tally.slow_refused);
                }
            }
        });
    }
    // 3. A login flood: guesses at other accounts with 128-character passwords (the longest the
    // node hashes), 6 loops on each of 8 addresses — the attacker's and 7 more.
    for a in 9..17u8 {
        let http = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, a]))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        for l in 0..6 {
            let (http, url, tally, stop) =
                (http.clone(), s.url.clone(), tally.clone(), stop.clone());
            attack.spawn(async move {
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    i += 1;
                    let body = json!({"username": format!("victim-{a}-{l}-{}", i % 7), "password": "p".repeat(128)});
                    let r = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = http.post(format!("{url}/api/v1/auth/login")).json(&body).send() => r,
                    };
                    AttackTally::add(&tally.logins);
                    match r.map(|r| r.status().as_u16()) {
                        Ok(401) => {}
                        _ => AttackTally::add(&tally.login_refused),
                    }
                }
            });
        }
    }
    // Let the attack reach its full weight.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The honest player, from 127.0.0.1: every answer within a second, waits for the round's
    // phases aside.
    let mut steps = Vec::new();
    let (_first_token, _) = within_a_second("register", &mut steps, s.register("honest")).await;
    let (status, v) = within_a_second(
        "login",
        &mut steps,
        s.post(
            "/api/v1/auth/login",
            None,
            None,
            json!({"username": "honest", "password": "correct-horse"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token2 = v["token"].as_str().expect("token").to_string();
    let (ws, _) = within_a_second(
        "websocket",
        &mut steps,
        tokio_tungstenite::connect_async(s.ws_url.clone()),
    )
    .await
    .expect("the honest player's socket");
    let (mut wtx, mut wrx) = ws.split();
    within_a_second("websocket auth", &mut steps, async {
        wtx.send(Message::text(
            json!({"type": "auth", "token": token2}).to_string(),
        ))
        .await
        .expect("send auth");
        loop {
            let m = wrx.next().await.expect("socket open").expect("frame");
            if let Message::Text(t) = m
                && serde_json::from_str::<Value>(&t).expect("json")["type"] == "authenticated"
            {
                break;
            }
        }
    })
    .await;
    // Bet and cash out; a round that crashes before the cash-out (1.00x happens) is played again.
    let mut cashed = None;
    for attempt in 0..6 {
        poll_round(&s, |r| {
            r["phase"] == "betting"
                && r["betting_closes_at_ms"].as_i64().unwrap_or(0)
                    > std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock")
                        .as_millis() as i64
                        + 700
        })
        .await;
        let (status, bet) = within_a_second(
            "bet",
            &mut steps,
            s.bet(&token2, &format!("honest-bet-{attempt}"), 100, None),
        )
        .await;
        assert_eq!(status, 201, "{bet}");
        let bet_id = bet["bet_id"].as_str().expect("bet id").to_string();
        let number = bet["round"].as_u64().expect("round");
        poll_round(&s, |r| r["phase"] != "betting").await;
        let (status, c) = within_a_second(
            "cash out",
            &mut steps,
            s.cash_out(&token2, &format!("honest-cash-{attempt}"), &bet_id),
        )
        .await;
        if status == 200 {
            cashed = Some((number, c));
            break;
        }
        assert_eq!(c["code"], "too_late", "{c}");
    }
    let (number, c) = cashed.expect("a cash-out was accepted within 6 rounds");
    assert!(c["payout"].as_i64().expect("payout") >= 100, "{c}");
    // Verify the round once it is revealed: its hash chains to the commitment and gives its crash.
    poll_round(&s, |r| r["number"].as_u64().unwrap_or(0) > number).await;
    let (round, fair) = within_a_second("verify", &mut steps, async {
        (
            s.get(&format!("/api/v1/rounds/{number}")).await,
            s.get("/api/v1/fairness").await,
        )
    })
    .await;
    assert_eq!(round.0, 200, "{:?}", round.1);
    let h =
        game_node::fairness::parse_hash(round.1["round"]["hash"].as_str().expect("revealed hash"))
            .expect("hex");
    let t = game_node::fairness::parse_hash(fair.1["terminating_hash"].as_str().expect("t"))
        .expect("hex");
    assert!(game_node::fairness::verify_commitment(&h, &t, number));
    let calc = game_node::fairness::CrashCalculator::new(
        fair.1["salt"].as_str().expect("salt"),
        100,
        2000,
    )
    .expect("calc");
    assert_eq!(
        Some(calc.crash_x100(&h)),
        round.1["round"]["crash_x100"].as_u64()
    );

    // The attack really ran, and was bounded by the limits rather than by the test.
    let t = &tally;
    let figures = format!(
        "slowloris held {} refused {}; ws opened {} refused {} closed 1008 {}; logins {} refused {}",
        AttackTally::get(&t.slow_held),
        AttackTally::get(&t.slow_refused),
        AttackTally::get(&t.ws_opened),
        AttackTally::get(&t.ws_refused),
        AttackTally::get(&t.ws_closed_1008),
        AttackTally::get(&t.logins),
        AttackTally::get(&t.login_refused),
    );
    stop.cancel();
    while attack.join_next().await.is_some() {}
    println!("mixed attack: {figures}");
    println!("honest player's answers: {steps:?}");
    assert!(AttackTally::get(&t.slow_held) >= 100, "{figures}");
    assert!(
        AttackTally::get(&t.slow_refused) > 0,
        "the per-address cap refused some: {figures}"
    );
    assert!(AttackTally::get(&t.ws_closed_1008) > 0, "{figures}");
    assert!(AttackTally::get(&t.ws_refused) > 0, "{figures}");
    assert!(AttackTally::get(&t.login_refused) > 0, "{figures}");
    s.assert_audit().await;
}
