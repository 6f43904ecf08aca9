//! The way in, end to end: a table with `spec.gateway` on real pods, behind Traefik (a maintained
//! Gateway API controller, tests/k8s/traefik.sh) reading the cluster's Gateway and the operator's
//! HTTPRoute. The table and the Gateway are the chart's examples, the ones the README's kind
//! walkthrough applies. Players register, bet and cash out over REST and hold WebSockets through
//! Traefik for many whole rounds; the node logs and rate-limits each player's own address (not
//! Traefik's); connect and bet latency through Traefik are measured against the pods directly;
//! the route's conditions reach the CrashTable; a rolling update keeps players playing through
//! the controller with one reconnect each; the table is served under a path prefix; and the
//! legacy Ingress is served by Traefik's Ingress provider. Without the Gateway API the table
//! says so.
//!
//! Players leave from distinct loopback addresses (127.0.0.2, 127.0.0.3, …), so Traefik sees
//! distinct peers and names each in `X-Forwarded-For`; the node trusts Traefik's address (the
//! host end of the real node's link, inside the default private ranges) for that header.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::api::Client;
use crashfleet_tests::k8s::{
    Traefik, apply_traefik_gateway, cluster_or_skip, install_gateway_api, poll, remove_gateway_api,
};
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::real_pods::{Platform, chart_file};

/// A REST client whose connections leave from `source`, a loopback address of its own; with
/// `host`, that name resolves to Traefik on `port` (an Ingress or route that matches on it).
fn player_http(source: &str, host: Option<(&str, u16)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(10));
    if let Some((name, port)) = host {
        b = b.resolve(name, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    b.build().expect("http client")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// How a player reaches the table through Traefik: its port, the host name a request carries
/// and the path prefix the table is served under ("" for none).
#[derive(Clone, Copy, Debug)]
struct Way {
    port: u16,
    host: &'static str,
    prefix: &'static str,
}

impl Way {
    fn at(port: u16) -> Way {
        Way {
            port,
            host: "127.0.0.1",
            prefix: "",
        }
    }

    fn base(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// A WebSocket to the table's `/ws` along `way`, leaving from `source`.
async fn ws_from(source: &str, way: Way) -> anyhow::Result<Ws> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source.parse()?, 0))?;
    let stream = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], way.port)))
        .await?;
    let url = format!("ws://{}:{}{}/ws", way.host, way.port, way.prefix);
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// A WebSocket straight to a pod (no controller in between).
async fn ws_direct(pod: SocketAddr) -> anyhow::Result<Ws> {
    let stream = tokio::net::TcpStream::connect(pod).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{pod}/ws"), stream).await?;
    Ok(ws)
}

/// The first message of a fresh socket: the snapshot every socket starts with.
async fn first_message(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed before its first message"))??;
        if let Message::Text(t) = msg {
            return Ok(serde_json::from_str(&t)?);
        }
    }
}

/// Median and 90th percentile of `samples`, in milliseconds.
fn p50_p90(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.9))
}

fn condition<'a>(t: &'a CrashTable, type_: &str) -> Option<&'a Condition> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the table's `RouteAccepted` and `RouteResolvedRefs` are True for its current
/// generation.
async fn route_accepted(p: &Platform, traefik: &Traefik) -> anyhow::Result<Vec<Condition>> {
    let tables = p.ns.api::<CrashTable>();
    let got = poll(
        "the route's conditions in the CrashTable",
        Duration::from_secs(90),
        || {
            let t = tables.clone();
            async move {
                let t = t.get("main").await?;
                let generation = t.metadata.generation;
                let ok = ["RouteAccepted", "RouteResolvedRefs"].iter().all(|c| {
                    condition(&t, c)
                        .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
                });
                Ok(ok.then(|| {
                    t.status
                        .map(|s| s.conditions)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c.type_.starts_with("Route"))
                        .collect()
                }))
            }
        },
    )
    .await;
    match got {
        Ok(c) => Ok(c),
        Err(e) => {
            let status = tables.get("main").await.ok().and_then(|t| t.status);
            let route = p
                .kubectl(&["get", "httproute", "main", "-o", "yaml"])
                .unwrap_or_default();
            anyhow::bail!(
                "{e}\nstatus: {status:?}\nroute:\n{route}\nTraefik:\n{}",
                traefik.log_text()
            )
        }
    }
}

/// What one socket saw while held: crashes, snapshots (a resync or a reconnect's first message),
/// reconnects, and how it ended.
#[derive(Debug, Default)]
struct Held {
    crashes: u32,
    reconnects: u32,
    ticks: u64,
    longest_gap: Duration,
    /// When the socket was closed under it, each time.
    closed_at: Vec<Instant>,
}

/// Holds a player's socket along `way` until `stop`, reconnecting (and counting it) if it
/// closes; pings every 15 s as the page does.
async fn hold(source: &'static str, way: Way, stop: tokio_util::sync::CancellationToken) -> Held {
    let mut held = Held::default();
    let mut ws = None;
    let mut last = Instant::now();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    while !stop.is_cancelled() {
        let Some(sock) = ws.as_mut() else {
            match ws_from(source, way).await {
                Ok(s) => ws = Some(s),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
            continue;
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ping.tick() => {
                let _ = sock.send(Message::text(r#"{"type":"ping","nonce":1}"#)).await;
            }
            msg = sock.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    held.longest_gap = held.longest_gap.max(last.elapsed());
                    last = Instant::now();
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("crashed") => held.crashes += 1,
                        Some("tick") => held.ticks += 1,
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                // Closed (a pod drained, Traefik's timeout): count it and come back.
                Some(Err(_)) | None => {
                    ws = None;
                    held.reconnects += 1;
                    held.closed_at.push(Instant::now());
                }
            },
        }
    }
    held
}

/// The `fields` of the table's pods' JSON log lines whose message is `message`.
fn node_log_lines(p: &Platform, message: &str) -> anyhow::Result<Vec<Value>> {
    let text = p.kubectl(&[
        "logs",
        "-l",
        "crashfleet.dev/table=main",
        "--tail=-1",
        "--max-log-requests=10",
    ])?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"] == message)
        .collect())
}

/// The names of the table's three settled pods.
async fn pod_names(p: &Platform) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let pods = crate::real_pods::settled(p, "main", 3).await?;
    Ok(pods.iter().map(kube::ResourceExt::name_any).collect())
}

/// A ready game pod's own address (its IP and the node's port): the way in without a controller.
async fn a_pod(p: &Platform) -> anyhow::Result<SocketAddr> {
    let pods = crate::real_pods::settled(p, "main", 3).await?;
    let ip = pods
        .iter()
        .find_map(|q| q.status.as_ref()?.pod_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("no pod IP"))?;
    Ok(SocketAddr::new(
        ip.parse()?,
        crashfleet_operator::builders::HTTP_PORT as u16,
    ))
}

/// Connect latency (a WebSocket's handshake to its first message, the snapshot) and request
/// latency (an authenticated `GET /api/v1/me`) through Traefik against straight to a pod; prints
/// the figures. Sequential, one at a time, so each is one round trip through each hop.
async fn edge_latency(way: Way, pod: SocketAddr, token: &str) -> anyhow::Result<()> {
    const N: usize = 30;
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..N {
        let t = Instant::now();
        let mut ws = ws_from("127.0.0.2", way).await?;
        first_message(&mut ws).await?;
        via.push(t.elapsed());
        let _ = ws.close(None).await;
        let t = Instant::now();
        let mut ws = ws_direct(pod).await?;
        first_message(&mut ws).await?;
        direct.push(t.elapsed());
        let _ = ws.close(None).await;
    }
    let (c_via, c_direct) = (p50_p90(&mut via), p50_p90(&mut direct));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let edge = player_http("127.0.0.2", None);
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..N {
        for (c, url, out) in [
            (&edge, format!("{}/api/v1/me", way.base()), &mut via),
            (&http, format!("http://{pod}/api/v1/me"), &mut direct),
        ] {
            let t = Instant::now();
            let r = c.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(r.status().is_success(), "GET /api/v1/me: {}", r.status());
            r.bytes().await?;
            out.push(t.elapsed());
        }
    }
    let (r_via, r_direct) = (p50_p90(&mut via), p50_p90(&mut direct));
    println!(
        "EDGE latency p50/p90 ms, {N} each: WebSocket connect to snapshot through Traefik \
         {:.2}/{:.2}, direct {:.2}/{:.2}; GET /api/v1/me through Traefik {:.2}/{:.2}, direct \
         {:.2}/{:.2}",
        c_via.0, c_via.1, c_direct.0, c_direct.1, r_via.0, r_via.1, r_direct.0, r_direct.1
    );
    Ok(())
}

/// When each of the table's pods was first seen, first seen Ready and first seen terminating, in seconds
/// from `origin`, polled every 250 ms until `stop`: the rollout's timeline, to read reconnects
/// against.
async fn pod_timeline(
    pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
    origin: Instant,
    stop: tokio_util::sync::CancellationToken,
) -> std::collections::BTreeMap<String, (f64, Option<f64>, Option<f64>)> {
    let mut seen = std::collections::BTreeMap::<String, (f64, Option<f64>, Option<f64>)>::new();
    let lp = kube::api::ListParams::default().labels("crashfleet.dev/table=main");
    while !stop.is_cancelled() {
        if let Ok(list) = pods.list(&lp).await {
            let now = origin.elapsed().as_secs_f64();
            for q in list {
                let name = q.metadata.name.clone().unwrap_or_default();
                let ready = crate::real_pods::pod_ready(&q);
                let e = seen.entry(name).or_insert((now, None, None));
                if ready && e.1.is_none() {
                    e.1 = Some(now);
                }
                if q.metadata.deletion_timestamp.is_some() && e.2.is_none() {
                    e.2 = Some(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

/// Runs a rolling update of the table (every pod replaced) while `ann` and `bob` bet each round
/// and hold sockets along `way`; returns (rollout seconds, bets taken, refused, the sockets).
async fn rolling_update(
    p: &Platform,
    traefik: &Traefik,
    way: Way,
    players: [(&Client, &str); 2],
) -> anyhow::Result<(f64, u32, u32, Vec<Held>)> {
    let stop = tokio_util::sync::CancellationToken::new();
    let sockets = [
        tokio::spawn(hold("127.0.0.2", way, stop.clone())),
        tokio::spawn(hold("127.0.0.3", way, stop.clone())),
    ];
    let rolled = Instant::now();
    let timeline = tokio::spawn(pod_timeline(p.ns.api(), rolled, stop.clone()));
    p.patch_table(
        "main",
        r#"{"spec":{"pod":{"annotations":{"crashfleet.test/rollout":"1"}}}}"#,
    )?;
    let rollout = {
        let p_ns = p.ns.name().to_string();
        let kubeconfig = p.cluster.kubeconfig_source().to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crashfleet_tests::k8s::tool("kubectl"))
                .args([
                    "-n",
                    &p_ns,
                    "rollout",
                    "status",
                    "deployment/main",
                    "--timeout",
                    "300s",
                ])
                .env("KUBECONFIG", kubeconfig)
                .output()
        })
    };
    let (mut taken, mut refused) = (0u32, 0u32);
    let mut done_at = None;
    let mut rounds_after = 0;
    let ann = players[0].0;
    loop {
        let Some(r) = ann
            .try_wait_phase("betting", 800, Duration::from_secs(60))
            .await
            .ok()
        else {
            anyhow::bail!(
                "no betting round through Traefik during the rollout\n{}",
                traefik.log_text()
            );
        };
        let n = r["number"].as_u64().expect("number");
        for (i, (c, token)) in players.into_iter().enumerate() {
            let (s, _) = c.bet(token, &format!("r{n}-{i}"), 100, Some(120)).await;
            if s == 201 { taken += 1 } else { refused += 1 }
        }
        if done_at.is_none() && rollout.is_finished() {
            done_at = Some(rolled.elapsed());
        }
        if done_at.is_some() {
            rounds_after += 1;
            if rounds_after >= 3 {
                break;
            }
        }
        anyhow::ensure!(
            rolled.elapsed() < Duration::from_secs(360),
            "the rollout did not finish"
        );
        let _ = ann
            .try_wait_round(n, |_| true, Duration::from_secs(60))
            .await;
    }
    let status = rollout.await??;
    anyhow::ensure!(status.status.success(), "rollout: {status:?}");
    crate::real_pods::settled(p, "main", 3).await?;
    stop.cancel();
    let mut held = Vec::new();
    for s in sockets {
        held.push(s.await?);
    }
    // Pods first seen Ready at +s (the new ones: old ones were Ready from the start) and first
    // seen terminating at +s (the old ones), against when each socket was closed under it.
    let timeline = timeline.await?;
    let closes: Vec<Vec<String>> = held
        .iter()
        .map(|h| {
            h.closed_at
                .iter()
                .map(|t| format!("{:.1}", t.duration_since(rolled).as_secs_f64()))
                .collect()
        })
        .collect();
    println!(
        "EDGE rollout timeline (s): pods (seen, ready, terminating) {timeline:?}; sockets closed at {closes:?}"
    );
    Ok((
        done_at.unwrap_or_default().as_secs_f64(),
        taken,
        refused,
        held,
    ))
}

/// Waits until round `n` is settled. A round may fly for up to a minute with these settings
/// (the curve doubles every 3 s, up to 1,000,000×), longer than the client's usual wait.
async fn next_round(c: &Client, n: u64) -> anyhow::Result<()> {
    c.try_wait_round(n, |_| true, Duration::from_secs(90))
        .await
        .map(|_| ())
        .map_err(|last| anyhow::anyhow!("round {n} never settled: {last}"))
}

fn patch_table(p: &Platform, patch: &Value) -> anyhow::Result<()> {
    p.patch_table("main", &patch.to_string())
}

/// Waits until `client` (through Traefik) answers `GET /api/v1/fairness` with 200: the
/// controller has picked up a change of route or Ingress.
async fn served(client: &Client, traefik: &Traefik, what: &str) -> anyhow::Result<()> {
    let got = poll(what, Duration::from_secs(60), || async {
        Ok((client.get("/api/v1/fairness").await.0 == 200).then_some(()))
    })
    .await;
    got.map_err(|e| anyhow::anyhow!("{e}\nTraefik:\n{}", traefik.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_play_through_traefik_on_the_tables_gateway_route() -> anyhow::Result<()> {
    let test = "players_play_through_traefik_on_the_tables_gateway_route";
    let _serial = crate::HEAVY.lock().await;
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    // The cluster's Gateway API, installed before the operator starts so that it watches routes.
    tokio::task::block_in_place(|| install_gateway_api(&cluster))?;
    drop(cluster);
    let Some(p) = Platform::install(test).await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let traefik = tokio::task::block_in_place(|| {
        Traefik::start(&p.cluster, &[p.ns.name()], dir.path(), &[])
    })?;
    // The chart's example Gateway (with this test's class and Traefik's port) and table.
    apply_traefik_gateway(&p.ns, &p.cluster, &traefik).await?;
    let main = chart_file("examples/crashtable.yaml");
    p.kubectl(&["apply", "-f", main.to_str().expect("path")])?;
    // Short rounds, so the run sees many.
    patch_table(
        &p,
        &json!({"spec": {"game": {"bettingWindowMs": 2500, "pauseMs": 1000, "doublingMs": 3000}}}),
    )?;
    p.ready_with_leader("main", None).await?;
    // The patch may have come after the first Deployment: let that rollout finish first.
    p.kubectl(&["rollout", "status", "deployment/main", "--timeout", "240s"])?;
    crate::real_pods::settled(&p, "main", 3).await?;
    let conditions = route_accepted(&p, &traefik).await?;
    for c in &conditions {
        println!(
            "EDGE condition {} {} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    // `kubectl get ct` shows the route's state in its own column.
    let listed = p.kubectl(&["get", "ct", "main"])?;
    println!("EDGE kubectl get ct:\n{listed}");
    let header = listed.lines().next().unwrap_or_default();
    let row = listed.lines().nth(1).unwrap_or_default();
    assert!(header.contains("ROUTE"), "{listed}");
    assert!(row.split_whitespace().any(|w| w == "Accepted"), "{listed}");
    let way = Way::at(traefik.port);

    // The page and the API through Traefik.
    let base = traefik.url();
    let (ann, bob) = (
        Client::with_http(&base, player_http("127.0.0.2", None)),
        Client::with_http(&base, player_http("127.0.0.3", None)),
    );
    let page = ann.http.get(format!("{base}/")).send().await?;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await?.contains("app.js"));
    let admin = p.admin_token("main").await?;
    let mut players = Vec::new();
    let mut names = Vec::new();
    for (c, name) in [(&ann, "ann"), (&bob, "bob")] {
        let r = c
            .register(&format!(
                "{name}_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ))
            .await;
        let me = c.get_auth("/api/v1/me", &r.token).await.1;
        let username = me["username"].as_str().expect("username").to_string();
        let (s, v) = c
            .post(
                &format!("/api/v1/admin/players/{username}/credit"),
                Some(&admin),
                Some(&format!("credit-{username}")),
                json!({"amount": 100_000}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        players.push(r.token);
        names.push(username);
    }

    // Connect and request latency through Traefik against straight to a pod.
    edge_latency(way, a_pod(&p).await?, &players[0]).await?;

    // Both hold a socket through Traefik for many rounds, past Traefik's 60 s read timeout.
    let stop = tokio_util::sync::CancellationToken::new();
    let sockets = [
        tokio::spawn(hold("127.0.0.2", way, stop.clone())),
        tokio::spawn(hold("127.0.0.3", way, stop.clone())),
    ];
    let held_from = Instant::now();
    // Rounds of REST play meanwhile: ann bets with an auto cash-out, bob cashes out by hand;
    // each bet's answer is timed through Traefik.
    let (mut bets, mut cashouts, mut k) = (0, 0, 0);
    let mut bet_latency = Vec::new();
    while held_from.elapsed() < Duration::from_secs(75) {
        k += 1;
        let r = ann.wait_phase("betting", 800).await;
        let n = r["number"].as_u64().expect("number");
        let t = Instant::now();
        let (s, v) = ann.bet(&players[0], &format!("a{n}"), 100, Some(150)).await;
        bet_latency.push(t.elapsed());
        assert_eq!(s, 201, "a bet through Traefik: {v}");
        let t = Instant::now();
        let (s, b) = bob.bet(&players[1], &format!("b{n}"), 100, None).await;
        bet_latency.push(t.elapsed());
        assert_eq!(s, 201, "a bet through Traefik: {b}");
        bets += 2;
        if k % 2 == 0 {
            bob.wait_phase("flying", 0).await;
            let (s, v) = bob
                .cash_out(
                    &players[1],
                    &format!("c{n}"),
                    b["bet_id"].as_str().expect("id"),
                )
                .await;
            assert!(s == 200 || (s == 409 && v["code"] == "too_late"), "{s} {v}");
            cashouts += u32::from(s == 200);
        }
        next_round(&bob, n).await?;
    }
    stop.cancel();
    let mut held = Vec::new();
    for s in sockets {
        held.push(s.await?);
    }
    let held_for = held_from.elapsed();
    let (b50, b90) = p50_p90(&mut bet_latency);
    println!(
        "EDGE {bets} bets (answer p50/p90 {b50:.2}/{b90:.2} ms through Traefik) and {cashouts} \
         manual cash-outs through Traefik; sockets held {:.0} s: {held:?}",
        held_for.as_secs_f64()
    );
    for h in &held {
        assert_eq!(h.reconnects, 0, "a socket through Traefik closed: {h:?}");
        assert!(h.crashes >= 5, "too few whole rounds seen: {h:?}");
    }
    // A direct bet for comparison, in the next betting window: same player, same path in the
    // node, no controller in between.
    let pod = a_pod(&p).await?;
    let direct = Client::new(format!("http://{pod}"));
    let mut direct_latency = Vec::new();
    for i in 0..4 {
        let r = direct.wait_phase("betting", 800).await;
        let n = r["number"].as_u64().expect("number");
        let t = Instant::now();
        let (s, v) = direct
            .bet(&players[0], &format!("d{n}-{i}"), 100, Some(150))
            .await;
        direct_latency.push(t.elapsed());
        assert_eq!(s, 201, "a bet straight to a pod: {v}");
        next_round(&direct, n).await?;
    }
    let (d50, d90) = p50_p90(&mut direct_latency);
    println!("EDGE bet answer straight to a pod p50/p90 {d50:.2}/{d90:.2} ms (4 bets)");

    // The node logs the players' own addresses, not Traefik's.
    for (name, source) in names.iter().zip(["127.0.0.2", "127.0.0.3"]) {
        let lines = node_log_lines(&p, "player registered")?;
        let line = lines
            .iter()
            .find(|f| f["player"] == name.as_str())
            .unwrap_or_else(|| panic!("no `player registered` line for {name}: {lines:?}"));
        assert_eq!(line["client"], source, "{line}");
    }
    let opened = node_log_lines(&p, "socket opened")?;
    let clients: std::collections::BTreeSet<&str> =
        opened.iter().filter_map(|f| f["client"].as_str()).collect();
    println!("EDGE the nodes logged sockets opened by {clients:?}");
    assert!(
        clients.contains("127.0.0.2") && clients.contains("127.0.0.3"),
        "{clients:?}"
    );

    // Each player is their own client: ann floods until the node refuses her; bob is untouched.
    // Traefik spreads requests over the three pods, each with its own buckets (a burst of 100 per
    // address at the operator's default of 50/s): 900 at once exhaust ann's on every pod.
    let flood: Vec<_> = (0..900)
        .map(|_| {
            let c = ann.http.clone();
            let url = format!("{base}/api/v1/fairness");
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for f in flood {
        *statuses.entry(f.await?.unwrap_or(0)).or_default() += 1;
    }
    // Bob's requests, half of them naming ann in a forged X-Forwarded-For: Traefik does not pass
    // a client's own header on as trusted (it appends the real peer), so bob stays bob.
    let mut bob_statuses = Vec::new();
    for i in 0..6 {
        let mut r = bob.http.get(format!("{base}/api/v1/fairness"));
        if i % 2 == 1 {
            r = r.header("X-Forwarded-For", "127.0.0.2");
        }
        bob_statuses.push(r.send().await.map(|r| r.status().as_u16()).unwrap_or(0));
    }
    println!("EDGE rate limit: ann's flood of 900 got {statuses:?}; bob then got {bob_statuses:?}");
    assert!(
        statuses.get(&429).is_some_and(|n| *n > 0),
        "ann was never limited: {statuses:?}"
    );
    assert!(
        bob_statuses.iter().all(|s| *s == 200),
        "bob shares ann's bucket (the node keyed on Traefik, not the players): {bob_statuses:?}"
    );
    // Let ann's buckets refill before she plays on.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A rolling update of the table (every pod replaced) with players on: their sockets move to
    // the new pods through Traefik, once each, and their bets keep being taken.
    let (secs, taken, refused, held) = rolling_update(
        &p,
        &traefik,
        way,
        [(&ann, players[0].as_str()), (&bob, players[1].as_str())],
    )
    .await?;
    println!(
        "EDGE rolling update through Traefik: done after {secs:.1} s; bets taken {taken}, refused {refused}; sockets: {held:?}"
    );
    for h in &held {
        assert_eq!(
            h.reconnects, 1,
            "a socket should move to the new pods exactly once: {h:?}"
        );
        assert!(
            h.longest_gap < Duration::from_secs(15),
            "a socket went quiet: {h:?}"
        );
    }
    assert!(
        taken > refused,
        "bets through Traefik were mostly refused during the rollout"
    );

    // (The rollout's last round may still be open with one bet of ann's in it: the bet below may
    // join it, a player has two per round.)
    // Under a path prefix: the route redirects the bare prefix, strips it on the way in, and the
    // page, the API and the socket all work below it.
    patch_table(&p, &json!({"spec": {"gateway": {"pathPrefix": "/crash"}}}))?;
    route_accepted(&p, &traefik).await?;
    let prefixed = Way {
        prefix: "/crash",
        ..way
    };
    let ann_prefixed = Client::with_http(prefixed.base(), player_http("127.0.0.2", None));
    served(&ann_prefixed, &traefik, "the table under /crash").await?;
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{base}/crash"))
        .send()
        .await?;
    assert_eq!(bare.status().as_u16(), 301);
    let location = bare
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(location.ends_with("/crash/"), "{location}");
    let page = ann_prefixed
        .http
        .get(format!("{base}/crash/"))
        .send()
        .await?;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await?.contains("app.js"));
    let mut ws = ws_from("127.0.0.2", prefixed).await?;
    let snapshot = first_message(&mut ws).await?;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let r = ann_prefixed.wait_phase("betting", 800).await;
    let n = r["number"].as_u64().expect("number");
    let (s, v) = ann_prefixed
        .bet(&players[0], &format!("p{n}"), 100, Some(150))
        .await;
    assert_eq!(s, 201, "a bet under /crash: {v}");
    let _ = ws.close(None).await;
    // The next bets are in later rounds (a player has at most two bets in a round).
    next_round(&ann_prefixed, n).await?;
    println!("EDGE under /crash: 301 to {location}, the page, a snapshot and a bet");

    // The legacy way in: the route makes way for an Ingress, which Traefik's Ingress provider
    // serves by host name (IngressClass `traefik-<ns>`, Traefik's Ingress controller name).
    // The same pods serve throughout: the way in is not in their template.
    let pods_before = pod_names(&p).await?;
    let class = format!("traefik-{}", p.ns.name());
    let ingress_class = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": class},
        "spec": {"controller": "traefik.io/ingress-controller"},
    });
    let classes: kube::Api<k8s_openapi::api::networking::v1::IngressClass> =
        kube::Api::all(p.ns.client());
    classes
        .patch(
            &class,
            &kube::api::PatchParams::apply("crashfleet-tests").force(),
            &kube::api::Patch::Apply(&ingress_class),
        )
        .await?;
    patch_table(
        &p,
        &json!({"spec": {"gateway": null,
                         "ingress": {"host": "crash.localtest.me", "className": class}}}),
    )?;
    let by_host = Way {
        host: "crash.localtest.me",
        ..way
    };
    let ann_host = Client::with_http(
        by_host.base(),
        player_http("127.0.0.2", Some(("crash.localtest.me", traefik.port))),
    );
    served(&ann_host, &traefik, "the table through its Ingress").await?;
    let routes: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        p.ns.client(),
        p.ns.name(),
        &crashfleet_operator::builders::http_route_resource(),
    );
    poll("the route removed", Duration::from_secs(60), || {
        let r = routes.clone();
        async move { Ok(r.get_opt("main").await?.is_none().then_some(())) }
    })
    .await?;
    // Another host name is not this table's (once Traefik has dropped the route too).
    let other = Client::with_http(&base, player_http("127.0.0.2", None));
    poll(
        "404 for a host the Ingress does not name",
        Duration::from_secs(60),
        || async { Ok((other.get("/api/v1/fairness").await.0 == 404).then_some(())) },
    )
    .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let socket = tokio::spawn(hold("127.0.0.2", by_host, stop.clone()));
    let mut ingress_bets = 0;
    for _ in 0..3 {
        let r = ann_host.wait_phase("betting", 800).await;
        let n = r["number"].as_u64().expect("number");
        let (s, v) = ann_host
            .bet(&players[0], &format!("i{n}"), 100, Some(150))
            .await;
        assert_eq!(s, 201, "a bet through the Ingress: {v}");
        ingress_bets += 1;
        next_round(&ann_host, n).await?;
    }
    stop.cancel();
    let held = socket.await?;
    println!("EDGE through the Ingress: {ingress_bets} bets; socket: {held:?}");
    assert_eq!(held.reconnects, 0, "{held:?}");
    assert!(held.crashes >= 2, "{held:?}");
    assert_eq!(
        pod_names(&p).await?,
        pods_before,
        "moving the table from its route to an Ingress restarted pods"
    );
    // ... while the lobby's link follows the Ingress host (ConfigMap `main-edge`, rewritten in
    // the pods by the kubelet).
    let moved = Instant::now();
    poll(
        "the lobby links to the Ingress host",
        Duration::from_secs(180),
        || async {
            let (_, lobby) = ann_host.get("/api/v1/lobby").await;
            let url = lobby["tables"][0]["public_url"].clone();
            Ok((url == "http://crash.localtest.me/").then_some(()))
        },
    )
    .await?;
    println!(
        "EDGE the lobby's link followed the Ingress {:.1} s after the bets (same pods: {pods_before:?})",
        moved.elapsed().as_secs_f64()
    );
    // The operator (in its pod, with the chart's role) says so on the table too.
    let table = p.ns.api::<CrashTable>().get("main").await?;
    assert_eq!(
        table.status.and_then(|s| s.public_url).as_deref(),
        Some("http://crash.localtest.me/")
    );
    let _ = classes.delete(&class, &Default::default()).await;

    // The money, from inside (through the Ingress: the only way in now).
    let (s, audit) = ann_host.get_auth("/api/v1/admin/audit", &admin).await;
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["balanced"], true, "{audit}");
    p.uninstall().await?;
    Ok(())
}

/// Without the Gateway API, a table asking for a route is reconciled all the same and says why
/// it has no route (`RouteAccepted` False, `GatewayAPIMissing`, the table `Degraded`); once the
/// API is installed the operator applies the route on its next refresh, owned by the table, and
/// reports it pending until a controller answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_api_the_table_says_so_and_routes_once_it_is_installed()
-> anyhow::Result<()> {
    let test = "without_the_gateway_api_the_table_says_so_and_routes_once_it_is_installed";
    let _serial = crate::HEAVY.lock().await;
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    let Some((pg_admin, _)) = crate::fleet_e2e::needs(test) else {
        return Ok(());
    };
    tokio::task::block_in_place(|| remove_gateway_api(&cluster))?;
    let stage = crate::fleet_e2e::Stage::up(&cluster, test, "nogw", &pg_admin).await?;
    let tables: kube::Api<CrashTable> =
        kube::Api::namespaced(stage.client.clone(), stage.ns.name());
    let table: CrashTable = serde_json::from_value(json!({
        "apiVersion": "crashfleet.dev/v1alpha1", "kind": "CrashTable",
        "metadata": {"name": "main"},
        "spec": {
            "replicas": 1,
            "image": "registry.example/game-node:0.1.0",
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "database": {"urlSecretRef": {"name": "postgres", "key": "url"}},
            "fairness": {"chainLength": 1000},
            "gateway": {"parentRefs": [{"name": "edge"}], "hostnames": ["crash.example.com"]},
        },
    }))?;
    tables.create(&stage.pp, &table).await?;
    let t = poll(
        "RouteAccepted: GatewayAPIMissing",
        Duration::from_secs(60),
        || {
            let t = tables.clone();
            async move {
                let t = t.get("main").await?;
                Ok(condition(&t, "RouteAccepted")
                    .is_some_and(|c| c.status == "False" && c.reason == "GatewayAPIMissing")
                    .then_some(t))
            }
        },
    )
    .await?;
    let degraded = condition(&t, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "GatewayAPIMissing")
    );
    assert_eq!(
        t.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Degraded")
    );
    // The rest of the fleet was built all the same.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(stage.client.clone(), stage.ns.name());
    assert!(deployments.get_opt("main").await?.is_some());

    // The API arrives: the next refresh applies the route, owned by the table, pending an answer.
    tokio::task::block_in_place(|| install_gateway_api(&cluster))?;
    let t = poll(
        "the route applied and pending",
        Duration::from_secs(60),
        || {
            let t = tables.clone();
            async move {
                let t = t.get("main").await?;
                Ok(condition(&t, "RouteAccepted")
                    .is_some_and(|c| c.reason == "Pending")
                    .then_some(t))
            }
        },
    )
    .await?;
    assert_ne!(
        condition(&t, "Degraded").map(|c| c.status.as_str()),
        Some("True")
    );
    let routes: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        stage.client.clone(),
        stage.ns.name(),
        &crashfleet_operator::builders::http_route_resource(),
    );
    let route = routes.get("main").await?;
    assert_eq!(
        route.data["spec"]["hostnames"],
        json!(["crash.example.com"])
    );
    let owner = &route.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CrashTable", "main")
    );

    // And spec.gateway removed: the route goes with it.
    tables
        .patch(
            "main",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"gateway": null}})),
        )
        .await?;
    poll("the route removed", Duration::from_secs(60), || {
        let r = routes.clone();
        async move { Ok(r.get_opt("main").await?.is_none().then_some(())) }
    })
    .await?;
    stage.ns.cleanup().await?;
    stage.db.drop_now().await;
    Ok(())
}
