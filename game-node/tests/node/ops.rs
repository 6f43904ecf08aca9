//! Operations and table endpoints through a real node: health, readiness, Prometheus metrics,
//! security headers, CORS and HSTS, rate limits, and the stats/leaderboard/fleet/lobby reads.

use crate::common;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_headers_and_table_reads() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("opsy").await;
    let r = s.wait_betting(500).await;
    let number = r["number"].as_u64().expect("n");
    assert_eq!(s.bet(&t, "m1", 500, Some(101)).await.0, 201);
    s.wait_finished(number).await;

    let health = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.url))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "crashfleet_rounds_total",
        "crashfleet_bets_total",
        "crashfleet_ws_connections",
        "crashfleet_leader",
        "crashfleet_leader_term",
        "crashfleet_failovers_total",
        "crashfleet_bus_resyncs_total",
        "crashfleet_bus_lag_ms",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // Every step-down reason is exported from the start (at 0), so an alert on its rate works
    // before the first one.
    for reason in game_node::runner::STEP_DOWN_REASONS {
        let series = format!("crashfleet_step_downs_total{{reason=\"{reason}\"}}");
        assert_eq!(
            crashfleet_tests::prom::value(&metrics, &series),
            Some(0.0),
            "{series} missing:\n{metrics}"
        );
    }

    let page = s
        .http
        .get(format!("{}/", s.url))
        .send()
        .await
        .expect("page");
    let h = page.headers().clone();
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'self'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        page.text().await.expect("html").contains("<html"),
        "the game page is served"
    );
    let verify = s
        .http
        .get(format!("{}/verify", s.url))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 200);
    // Same origin only by default: no CORS headers, and no HSTS without --hsts.
    let cors = preflight(&s, "https://example.com").await;
    assert!(
        !cors.contains_key("access-control-allow-origin"),
        "{cors:?}"
    );
    assert!(!h.contains_key("strict-transport-security"));

    let (st, stats) = s.get("/api/v1/stats").await;
    assert_eq!(st, 200);
    assert!(stats["rounds"].as_i64().expect("rounds") >= 1);
    assert_eq!(stats["bets"], 1);
    assert_eq!(stats["wagered"], 500);
    let (_, board) = s.get("/api/v1/leaderboard").await;
    assert_eq!(board[0]["username"], "opsy");
    let (_, fleet) = s.get("/api/v1/fleet").await;
    assert_eq!(fleet["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(fleet["leader"], fleet["nodes"][0]["node_id"]);
    assert!(fleet["term"].as_u64().expect("term") >= 1);
    let (_, lobby) = s.get("/api/v1/lobby").await;
    assert_eq!(lobby["tables"][0]["table"], "main");
    let (_, rounds) = s.get("/api/v1/rounds?limit=1").await;
    assert_eq!(rounds.as_array().map(Vec::len), Some(1));
    for key in [
        "number",
        "hash",
        "crash_x100",
        "opened_at_ms",
        "started_at_ms",
        "crashed_at_ms",
        "status",
    ] {
        assert!(rounds[0].get(key).is_some(), "{key} in /rounds");
    }
    s.assert_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_a_code() {
    let s = TestServer::start(&["--rate-limit-ip", "5", "--rate-limit-player", "2"]).await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (st, v) = s.get("/api/v1/fairness").await;
        codes.push((st, v["code"].as_str().map(str::to_string)));
    }
    assert!(
        codes
            .iter()
            .any(|(st, c)| *st == 429 && c.as_deref() == Some("rate_limited")),
        "{codes:?}"
    );
    assert!(
        codes.iter().take(5).all(|(st, _)| *st == 200),
        "the burst is allowed: {codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_requests_are_rate_limited_per_player() {
    let s = TestServer::start(&["--rate-limit-player", "1", "--bets-per-player", "50"]).await;
    let (t, _) = s.register("hasty").await;
    let (calm, _) = s.register("calm").await;
    s.wait_betting(800).await;
    let mut codes = Vec::new();
    for i in 0..6 {
        let (st, v) = s.bet(&t, &format!("h{i}"), 100, None).await;
        codes.push((st, v["code"].as_str().map(str::to_string)));
    }
    let limited = codes
        .iter()
        .filter(|(st, c)| *st == 429 && c.as_deref() == Some("rate_limited"))
        .count();
    let placed = codes.iter().filter(|(st, _)| *st == 201).count();
    assert!(limited >= 1 && placed >= 1, "{codes:?}");
    // Another player is not affected, and refused bets moved no money.
    assert_eq!(s.bet(&calm, "c1", 100, None).await.0, 201);
    assert_eq!(s.balance(&t).await, 100_000 - 100 * placed as i64);
    s.assert_audit().await;
}

/// `--paused`: the node serves everything but opens no round; bets are refused as closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_table_opens_no_rounds_but_serves() {
    let s = TestServer::start(&["--paused"]).await;
    let (t, _) = s.register("patient").await;
    // Several betting windows of the fast test configuration pass without a round.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (status, round) = s.get("/api/v1/round").await;
    assert_eq!(status, 200);
    assert!(round["round"].is_null(), "a paused table opened {round}");
    let (_, rounds) = s.get("/api/v1/rounds").await;
    assert_eq!(rounds, serde_json::json!([]));
    let (status, v) = s.bet(&t, "p-1", 100, None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("betting_closed")),
        "{v}"
    );
    assert_eq!(s.balance(&t).await, 100_000);
    let (status, _) = s.get("/api/v1/fairness").await;
    assert_eq!(status, 200);
    s.assert_audit().await;
}

/// `--public-url-file`: the lobby's link follows the file while the node runs (the operator's
/// ConfigMap, rewritten by the kubelet), and a URL the flag would refuse is not advertised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lobby_link_follows_the_public_url_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("public-url");
    std::fs::write(&file, "https://eu.example.com/crash\n").expect("write");
    let path = file.to_str().expect("path");
    let s = TestServer::start(&["--paused", "--public-url-file", path]).await;
    let link = || async {
        let (_, lobby) = s.get("/api/v1/lobby").await;
        lobby["tables"][0]["public_url"].clone()
    };
    assert_eq!(link().await, "https://eu.example.com/crash/");
    // Re-read at most once a second: wait for each change to show.
    let follows = |want: serde_json::Value| {
        let link = &link;
        async move {
            for _ in 0..50 {
                if link().await == want {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the lobby never showed {want}; it shows {}", link().await);
        }
    };
    std::fs::write(&file, "http://crash.localtest.me").expect("write");
    follows(serde_json::json!("http://crash.localtest.me/")).await;
    std::fs::write(&file, "crash.localtest.me").expect("write");
    follows(serde_json::Value::Null).await;
    std::fs::write(&file, "").expect("write");
    follows(serde_json::Value::Null).await;
    std::fs::write(&file, "https://us.example.com/").expect("write");
    follows(serde_json::json!("https://us.example.com/")).await;
    std::fs::remove_file(&file).expect("remove");
    follows(serde_json::Value::Null).await;
    drop(s);
}

/// The salt can be announced after the terminating hash: a table started paused (committed, no
/// round) takes the `--salt` given at its next start; once a round is played the salt is final
/// and a different one is refused at start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salt_is_fixed_after_the_commitment_and_before_round_one() {
    let s = TestServer::start(&["--paused"]).await;
    let (_, f) = s.get("/api/v1/fairness").await;
    let terminating = f["terminating_hash"].clone();
    let generated = f["salt"].clone();
    let dir = s.stop().await;
    // The public salt, announced after the terminating hash, before any round.
    let s = TestServer::start_in(dir, &["--salt", "block-800000"]).await;
    let (_, f) = s.get("/api/v1/fairness").await;
    assert_eq!(f["salt"], "block-800000");
    assert_ne!(f["salt"], generated);
    assert_eq!(
        f["terminating_hash"], terminating,
        "the commitment is unchanged"
    );
    let r = s.wait_phase("flying").await;
    s.wait_finished(r["number"].as_u64().expect("number")).await;
    let dir = s.stop().await;
    // Rounds were played with it: another salt is refused.
    let cfg = common::fast_config(dir.path(), &["--salt", "block-800001"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = game_node::node::run(
        listener,
        cfg,
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("a changed salt after rounds");
    assert!(err.to_string().contains("rounds have been played"), "{err}");
}

/// The headers of a CORS preflight for `GET /api/v1/rounds` from `origin`.
async fn preflight(s: &TestServer, origin: &str) -> reqwest::header::HeaderMap {
    s.http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/rounds", s.url))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight")
        .headers()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_configured_origins_and_hsts_is_sent_when_told() {
    let s = TestServer::start(&[
        "--cors-origin",
        "https://crash.example.com,http://localhost:3000",
        "--hsts",
    ])
    .await;
    let ok = preflight(&s, "https://crash.example.com").await;
    assert_eq!(
        ok["access-control-allow-origin"],
        "https://crash.example.com"
    );
    assert!(
        ok["access-control-allow-headers"]
            .to_str()
            .expect("ascii")
            .contains("authorization")
    );
    assert_eq!(
        preflight(&s, "http://localhost:3000").await["access-control-allow-origin"],
        "http://localhost:3000"
    );
    for other in [
        "https://evil.example.com",
        "https://crash.example.com.evil.net",
    ] {
        let h = preflight(&s, other).await;
        assert!(
            !h.contains_key("access-control-allow-origin"),
            "{other}: {h:?}"
        );
    }
    // A real cross-origin read: the allowed origin is echoed and Retry-After is readable.
    let r = s
        .http
        .get(format!("{}/api/v1/fairness", s.url))
        .header("origin", "https://crash.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://crash.example.com"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .expect("ascii")
            .contains("retry-after")
    );
    // HSTS on every answer: pages, API, errors.
    for path in ["/", "/api/v1/fairness", "/api/v1/nope"] {
        let r = s
            .http
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
    s.stop().await;

    let any = TestServer::start(&["--cors-origin", "*"]).await;
    assert_eq!(
        preflight(&any, "https://anywhere.example").await["access-control-allow-origin"],
        "*"
    );
}

#[test]
fn cors_origins_must_be_origins() {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: game_node::config::ServeConfig,
    }
    let check = |v: &str| {
        Args::try_parse_from(["game-node", "--cors-origin", v])
            .expect("parses")
            .serve
            .validate()
    };
    assert!(check("https://crash.example.com").is_ok());
    assert!(check("http://[::1]:8080").is_ok());
    assert!(check("*").is_ok());
    assert!(check("").is_ok(), "an empty value is no origin");
    for bad in [
        "https://crash.example.com/",
        "crash.example.com",
        "https://Crash.example.com",
        "*,https://a.example",
        "https://a.example/path",
    ] {
        assert!(check(bad).is_err(), "{bad:?} must be refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_limits_outside_the_documented_range_are_refused_not_clamped() {
    let s = TestServer::start(&[]).await;
    let (t, _) = s.register("limits").await;
    for path in ["/api/v1/rounds", "/api/v1/leaderboard", "/api/v1/me/bets"] {
        for bad in ["0", "501", "4294967296", "-1", "x"] {
            let (st, v) = s.get_auth(&format!("{path}?limit={bad}"), &t).await;
            assert_eq!(
                (st, v["code"].as_str()),
                (400, Some("bad_request")),
                "{path}?limit={bad}"
            );
        }
        for ok in ["1", "500"] {
            let (st, v) = s.get_auth(&format!("{path}?limit={ok}"), &t).await;
            assert_eq!(st, 200, "{path}?limit={ok}: {v}");
        }
        assert_eq!(s.get_auth(path, &t).await.0, 200, "{path} without a limit");
    }
}
