//! The way in, end to end: a table with `spec.gateway` on real pods, behind Traefik (a maintained
//! Gateway API controller, tests/k8s/traefik.sh) reading the cluster's Gateway and the operator's
//! HTTPRoute. Players register, bet and cash out over REST and hold WebSockets through Traefik
//! for many whole rounds; each player's address (not Traefik's) is the one the node rate-limits;
//! the route's conditions reach the CrashTable; a rolling update keeps players playing through
//! the controller with at most one reconnect each; without the Gateway API the table says so.
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

/// A REST client whose connections leave from `source`, a loopback address of its own.
fn player_http(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket to `/ws` through Traefik on `port`, leaving from `source`.
async fn ws_from(source: &str, port: u16) -> anyhow::Result<Ws> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source.parse()?, 0))?;
    let stream = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws"), stream).await?;
    Ok(ws)
}

fn condition<'a>(t: &'a CrashTable, type_: &str) -> Option<&'a Condition> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the table's `RouteAccepted` and `RouteResolvedRefs` are True.
async fn route_accepted(p: &Platform, traefik: &Traefik) -> anyhow::Result<Vec<Condition>> {
    let tables = p.ns.api::<CrashTable>();
    let got = poll(
        "the route's conditions in the CrashTable",
        Duration::from_secs(90),
        || {
            let t = tables.clone();
            async move {
                let t = t.get("main").await?;
                let ok = ["RouteAccepted", "RouteResolvedRefs"]
                    .iter()
                    .all(|c| condition(&t, c).is_some_and(|c| c.status == "True"));
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
}

/// Holds a player's socket through Traefik until `stop`, reconnecting (and counting it) if it
/// closes; pings every 15 s as the page does.
async fn hold(source: &'static str, port: u16, stop: tokio_util::sync::CancellationToken) -> Held {
    let mut held = Held::default();
    let mut ws = None;
    let mut last = Instant::now();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    while !stop.is_cancelled() {
        let Some(sock) = ws.as_mut() else {
            match ws_from(source, port).await {
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
                }
            },
        }
    }
    held
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
    apply_traefik_gateway(&p.ns, &p.cluster, &traefik).await?;

    // The chart's example table, behind the Gateway, with short rounds.
    let main = chart_file("examples/crashtable.yaml");
    p.kubectl(&["apply", "-f", main.to_str().expect("path")])?;
    p.kubectl(&[
        "patch",
        "crashtable",
        "main",
        "--type",
        "merge",
        "-p",
        // The example's Ingress makes way for the route: a table has one way in.
        &json!({"spec": {
            "ingress": null,
            "gateway": {"parentRefs": [{"name": "edge", "sectionName": "http"}]},
            "game": {"bettingWindowMs": 2500, "pauseMs": 1000, "doublingMs": 3000},
        }})
        .to_string(),
    ])?;
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

    // The page and the API through Traefik.
    let base = traefik.url();
    let (ann, bob) = (
        Client::with_http(&base, player_http("127.0.0.2")),
        Client::with_http(&base, player_http("127.0.0.3")),
    );
    let page = ann.http.get(format!("{base}/")).send().await?;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await?.contains("app.js"));
    let admin = p.admin_token("main").await?;
    let mut players = Vec::new();
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
    }

    // Both hold a socket through Traefik for many rounds, past Traefik's 60 s read timeout.
    let stop = tokio_util::sync::CancellationToken::new();
    let sockets = [
        tokio::spawn(hold("127.0.0.2", traefik.port, stop.clone())),
        tokio::spawn(hold("127.0.0.3", traefik.port, stop.clone())),
    ];
    let held_from = Instant::now();
    // Rounds of REST play meanwhile: ann bets with an auto cash-out, bob cashes out by hand.
    let (mut bets, mut cashouts, mut k) = (0, 0, 0);
    while held_from.elapsed() < Duration::from_secs(75) {
        k += 1;
        let r = ann.wait_phase("betting", 800).await;
        let n = r["number"].as_u64().expect("number");
        let (s, v) = ann.bet(&players[0], &format!("a{n}"), 100, Some(150)).await;
        assert_eq!(s, 201, "a bet through Traefik: {v}");
        let (s, b) = bob.bet(&players[1], &format!("b{n}"), 100, None).await;
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
        bob.wait_finished(n).await;
    }
    stop.cancel();
    let mut held = Vec::new();
    for s in sockets {
        held.push(s.await?);
    }
    let held_for = held_from.elapsed();
    println!(
        "EDGE {bets} bets and {cashouts} manual cash-outs through Traefik; sockets held {:.0} s: {held:?}",
        held_for.as_secs_f64()
    );
    for h in &held {
        assert_eq!(h.reconnects, 0, "a socket through Traefik closed: {h:?}");
        assert!(h.crashes >= 5, "too few whole rounds seen: {h:?}");
    }

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

    // A rolling update of the table (every pod replaced) with players on: their sockets move to
    // the new pods through Traefik, their bets keep being taken.
    let stop = tokio_util::sync::CancellationToken::new();
    let sockets = [
        tokio::spawn(hold("127.0.0.2", traefik.port, stop.clone())),
        tokio::spawn(hold("127.0.0.3", traefik.port, stop.clone())),
    ];
    let rolled = Instant::now();
    p.kubectl(&[
        "patch",
        "crashtable",
        "main",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"pod":{"annotations":{"crashfleet.test/rollout":"1"}}}}"#,
    ])?;
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
        for (i, (c, token)) in [(&ann, &players[0]), (&bob, &players[1])]
            .into_iter()
            .enumerate()
        {
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
    crate::real_pods::settled(&p, "main", 3).await?;
    stop.cancel();
    let mut held = Vec::new();
    for s in sockets {
        held.push(s.await?);
    }
    println!(
        "EDGE rolling update through Traefik: done after {:.1} s; bets taken {taken}, refused {refused}; sockets: {held:?}",
        done_at.unwrap_or_default().as_secs_f64()
    );
    for h in &held {
        assert!(
            h.reconnects >= 1,
            "a socket never moved to a new pod: {h:?}"
        );
        assert!(
            h.reconnects <= 3,
            "a socket reconnected more often than there are pods: {h:?}"
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

    // The money, from inside.
    let (s, audit) = ann.get_auth("/api/v1/admin/audit", &admin).await;
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
