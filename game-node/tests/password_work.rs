//! Password work under attack, black-box through a real node: a login flood from several source
//! addresses leaves a real player logging in within a second, refusals are `busy` with
//! `Retry-After`, an abandoned login costs no argon2 work, one username's failures back off
//! exponentially, and an over-long password is refused before any work.
//!
//! Clients bind to distinct loopback addresses (127.0.0.2, 127.0.0.3, … — Linux routes the whole
//! 127/8 to lo), so the node sees distinct peers. The job counts come from the node's
//! `crashfleet_password_jobs_total{outcome}` on /metrics; the metrics recorder is per process, so
//! the tests here run one at a time.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

/// One test at a time: they read process-wide counters and time logins.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client")
}

/// `crashfleet_password_jobs_total{outcome="…"}` from /metrics (0 before the first).
/// The run-jobs count once it has stopped moving: the counter is process-wide, and password
/// threads of an earlier test's node may still finish jobs that were queued before it stopped.
async fn quiet_jobs(s: &TestServer) -> u64 {
    let mut last = jobs(s, "run").await;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = jobs(s, "run").await;
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn jobs(s: &TestServer, outcome: &str) -> u64 {
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    crashfleet_tests::prom::value(
        &text,
        &format!("crashfleet_password_jobs_total{{outcome=\"{outcome}\"}}"),
    )
    .map_or(0, |v| v as u64)
}

/// POST /auth/login from `client`: (status, code, Retry-After).
async fn login(
    s: &TestServer,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> (u16, String, Option<u64>) {
    let r = client
        .post(format!("{}/api/v1/auth/login", s.url))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("POST login");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let code = body["code"].as_str().unwrap_or("").to_string();
    (status, code, retry)
}

/// The flood of the report this test comes from: 8 source addresses, each sending logins at the
/// default per-address rate limit (50/s) — 400 logins/s offered against ~120/s of argon2 at two
/// threads. Without a bound the queue grows by ~280 jobs a second and a real player waits
/// seconds (11.4 s was measured).
const FLOOD_ADDRESSES: u8 = 8;
const PER_ADDRESS_EVERY: Duration = Duration::from_millis(20);
/// Requests one address may have in flight (more are not sent: the attacker's own limit).
const IN_FLIGHT_PER_ADDRESS: usize = 32;
const FLOOD_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_eight_addresses_leaves_a_real_player_logging_in_within_a_second() {
    let _serial = SERIAL.lock().await;
    let s = Arc::new(TestServer::start(&[]).await);
    s.register("realplayer").await;
    let base_run = jobs(&s, "run").await;
    let base_refused = jobs(&s, "refused").await;

    let stop = Instant::now() + FLOOD_FOR;
    let (sent, wrong, busy) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flood = Vec::new();
    for a in 0..FLOOD_ADDRESSES {
        let client = client_from(loopback(2 + a));
        let (s, sent, wrong, busy) = (s.clone(), sent.clone(), wrong.clone(), busy.clone());
        flood.push(tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_ADDRESS));
            let mut tick = tokio::time::interval(PER_ADDRESS_EVERY);
            let mut requests = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                tick.tick().await;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                n += 1;
                // A new username every time: the per-username backoff never helps the node.
                let user = format!("flood{a}n{n}");
                let (s, client) = (s.clone(), client.clone());
                let (sent, wrong, busy) = (sent.clone(), wrong.clone(), busy.clone());
                requests.spawn(async move {
                    let (status, code, retry) = login(&s, &client, &user, "guess-guess").await;
                    drop(slot);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match status {
                        401 => wrong.fetch_add(1, Ordering::Relaxed),
                        503 => {
                            assert_eq!(code, "busy");
                            assert!(retry.is_some_and(|r| r >= 1), "503 without Retry-After");
                            busy.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("flood login answered {other} {code}"),
                    };
                });
            }
            while let Some(r) = requests.join_next().await {
                r.expect("flood request");
            }
        }));
    }

    // The real player, from an address of its own, logs in five times during the flood.
    let player = client_from(loopback(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (status, code, _) = login(&s, &player, "realplayer", "correct-horse").await;
        took.push(t.elapsed());
        assert_eq!(
            status, 200,
            "the real player's login answered {status} {code}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for f in flood {
        f.await.expect("flood worker");
    }
    let run = jobs(&s, "run").await - base_run;
    let refused = jobs(&s, "refused").await - base_refused;
    let max = took.iter().max().copied().unwrap_or_default();
    println!(
        "login flood: {} addresses × one login per {:?} for {:?}: {} logins sent, {} answered \
         invalid_credentials, {} busy; argon2 jobs run {run}, refused {refused}; the real \
         player's 5 logins took {:?} (max {max:?})",
        FLOOD_ADDRESSES,
        PER_ADDRESS_EVERY,
        FLOOD_FOR,
        sent.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        took,
    );
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the flood was never refused: the queue is not bounded"
    );
    assert!(
        max < Duration::from_secs(1),
        "a real player's login took {max:?} under the flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_login_costs_no_argon2_work() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start(&[]).await;
    s.register("slowpoke").await;
    s.register("bystander").await;
    // Make one account's check slow (t = 100 instead of 2: ~50× the work), so the password
    // threads are certainly busy while the abandoned request waits in the queue.
    {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}", s.dir.path().join("ledger.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("db");
        sqlx::query(
            "UPDATE players SET password_hash = replace(password_hash, ',t=2,', ',t=100,') \
             WHERE username = 'slowpoke'",
        )
        .execute(&mut db)
        .await
        .expect("slow hash");
    }
    let run0 = jobs(&s, "run").await;
    let skipped0 = jobs(&s, "skipped").await;
    // Four slow checks (up to four password threads), each from its own address.
    let mut slow = Vec::new();
    for a in 0..4u8 {
        let client = client_from(loopback(30 + a));
        let url = s.url.clone();
        slow.push(tokio::spawn(async move {
            client
                .post(format!("{url}/api/v1/auth/login"))
                .json(&json!({"username": "slowpoke", "password": "correct-horse"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A client that gives up after 200 ms: its job is still queued behind the slow ones.
    let impatient = reqwest::Client::builder()
        .local_address(loopback(40))
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let gave_up = impatient
        .post(format!("{}/api/v1/auth/login", s.url))
        .json(&json!({"username": "bystander", "password": "correct-horse"}))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(|e| e.is_timeout()),
        "the impatient login answered before it gave up: {gave_up:?}"
    );
    drop(impatient);
    for h in slow {
        // Wrong by design: the stored hash no longer matches (its cost changed).
        assert_eq!(h.await.expect("join").expect("slow login"), 401);
    }
    // A patient login afterwards is served as usual.
    let (status, _, _) = login(&s, &client_from(loopback(41)), "bystander", "correct-horse").await;
    assert_eq!(status, 200);
    let run = jobs(&s, "run").await - run0;
    let skipped = jobs(&s, "skipped").await - skipped0;
    println!("abandoned login: jobs run {run} (4 slow + 1 patient), skipped {skipped}");
    assert_eq!(skipped, 1, "the abandoned login was not skipped");
    assert_eq!(
        run, 5,
        "argon2 ran for something else than the 5 answered logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_for_one_username_back_off_exponentially_and_a_success_resets() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start(&[]).await;
    s.register("target").await;
    s.register("neighbour").await;
    // Guesses from many addresses: the throttle is per username, not per address.
    let clients: Vec<reqwest::Client> = (0..6).map(|i| client_from(loopback(50 + i))).collect();
    let before = quiet_jobs(&s).await;
    for (i, c) in clients.iter().take(5).enumerate() {
        let (status, code, _) = login(&s, c, "target", &format!("wrong-guess-{i}")).await;
        assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    }
    // The sixth attempt — even with the right password, even in another case — is refused
    // without argon2 work, with the remaining delay (1 s) as Retry-After.
    let run = jobs(&s, "run").await;
    assert_eq!(run, before + 5, "each of the 5 failures ran argon2 once");
    let (status, code, retry) = login(&s, &clients[5], "TARGET", "correct-horse").await;
    assert_eq!(
        (status, code.as_str(), retry),
        (429, "rate_limited", Some(1))
    );
    assert_eq!(jobs(&s, "run").await, run, "a throttled login ran argon2");
    // Other usernames are not affected.
    let (status, _, _) = login(&s, &clients[5], "neighbour", "correct-horse").await;
    assert_eq!(status, 200);

    // After the delay one more failure doubles it (2 s) …
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _, _) = login(&s, &clients[0], "target", "wrong-again").await;
    assert_eq!(status, 401);
    let (status, code, retry) = login(&s, &clients[1], "target", "correct-horse").await;
    assert_eq!(
        (status, code.as_str(), retry),
        (429, "rate_limited", Some(2))
    );
    // … and once it has passed the right password works and resets the count.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, _, _) = login(&s, &clients[2], "target", "correct-horse").await;
    assert_eq!(status, 200);
    let (status, code, _) = login(&s, &clients[3], "target", "wrong-after-reset").await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_passwords_outside_8_to_128_characters_before_any_work() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start(&[]).await;
    s.register("capped").await;
    let client = client_from(loopback(60));
    let run = quiet_jobs(&s).await;
    for len in [7, 129, 10_000] {
        let t = Instant::now();
        let (status, code, _) = login(&s, &client, "capped", &"p".repeat(len)).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_credentials"),
            "{len} characters"
        );
        println!(
            "login with a {len}-character password: refused in {:?}",
            t.elapsed()
        );
    }
    assert_eq!(
        jobs(&s, "run").await,
        run,
        "an out-of-bounds password was hashed"
    );
    // Within the bounds the work is done as usual.
    let (status, _, _) = login(&s, &client, "capped", "correct-horse").await;
    assert_eq!(status, 200);
    assert_eq!(jobs(&s, "run").await, run + 1);
}
