//! The platform team's path on real pods, the way the README's kind walkthrough runs it: the
//! operator is installed by `helm install` with `ci/kind-values.yaml` and runs as pods with its
//! chart's ServiceAccount (in-cluster config); Secrets name the databases; the chart's example
//! tables (one per election backend) are applied with `kubectl apply`; their game-node pods run in
//! containerd on the real node `real-0`, answer the kubelet's probes, elect their leader with
//! their mounted token and serve players through the table's Service (kube-proxy ClusterIP).
//!
//! The one difference from a kind cluster: PostgreSQL and Redis run on this machine (Debian's
//! binaries, already here for the rest of the suite) at the host end of the real node's link,
//! behind selectorless Services named like the Bitnami charts' (`postgres-postgresql`,
//! `redis-master`). The test cluster has no cluster DNS, so the Secrets hold the Services'
//! ClusterIPs where a kind user writes their names.
//!
//! The lifecycle test then plays a 3-replica table under load through its Service and takes it
//! through what a cluster does to pods: the leader's pod deleted (the kubelet's SIGTERM), a
//! rolling update, evictions against the PodDisruptionBudget and kill -9 of the leader's
//! container; it measures each and checks the money afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::k8s::{
    Cluster, GAME_NODE_IMAGE, HostPostgres, HostRedis, LoopbackRelay, OPERATOR_IMAGE, REAL_NODE,
    TestNamespace, cluster_or_skip, expose_host_port, host_link_address, poll, real_node_or_skip,
};
use crashfleet_tests::load;
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{EvictParams, ListParams};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crashfleet_tests::k8s::{chart, tool as k8s_tool};

/// Pods of a fresh table pass their readiness probes (database migrations, leader election) and a
/// first round is played within this.
const TABLE_READY: Duration = Duration::from_secs(180);

pub(crate) fn chart_file(rel: &str) -> PathBuf {
    chart().join(rel)
}

/// Runs kubectl (or helm) against the test cluster; its stdout, or an error with its stderr.
fn run(tool: &str, cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(k8s_tool(tool))
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a platform team has before it applies a table: the operator running from its chart, the
/// databases reachable from pods, the Secrets naming them.
pub(crate) struct Platform {
    pub(crate) cluster: Cluster,
    pub(crate) ns: TestNamespace,
    release: String,
    _pg: HostPostgres,
    _redis: HostRedis,
    _dir: tempfile::TempDir,
}

impl Platform {
    pub(crate) async fn install(test: &str) -> anyhow::Result<Option<Platform>> {
        let Some(cluster) = cluster_or_skip(test).await? else {
            return Ok(None);
        };
        if real_node_or_skip(&cluster, test, &[GAME_NODE_IMAGE, OPERATOR_IMAGE])
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let ns = cluster.namespace("pods").await?;
        let link = host_link_address(&cluster).await?;
        let dir = tempfile::tempdir()?;
        let (pg_dir, redis_dir) = (dir.path().join("pg"), dir.path().join("redis"));
        std::fs::create_dir_all(&redis_dir)?;
        let (pg, redis) = tokio::task::block_in_place(|| {
            Ok::<_, crashfleet_tests::k8s::Error>((
                HostPostgres::start(&pg_dir, link)?,
                HostRedis::start(&redis_dir, link)?,
            ))
        })?;
        let pg_ip = expose_host_port(&ns, "postgres-postgresql", 5432, link, pg.port).await?;
        let redis_ip = expose_host_port(&ns, "redis-master", 6379, link, redis.port).await?;
        let name = ns.name().to_string();
        // The walkthrough's steps from here on, in its order.
        for (secret, url) in [
            ("redis", redis.url_via(&redis_ip, 6379)),
            ("postgres", pg.url_via(&pg_ip, 5432)),
        ] {
            let literal = format!("--from-literal=url={url}");
            let args = ["create", "secret", "generic", secret, "-n", &name, &literal];
            run("kubectl", &cluster, &args)?;
        }
        let release = format!("cf-{}", &name[name.len().saturating_sub(8)..]);
        let installed = Instant::now();
        let chart = chart();
        let values = chart_file("ci/kind-values.yaml");
        run(
            "helm",
            &cluster,
            &[
                "install",
                &release,
                chart.to_str().expect("a UTF-8 path"),
                "-n",
                &name,
                "-f",
                values.to_str().expect("a UTF-8 path"),
                "--set",
                &format!("watchNamespace={name}"),
                "--wait",
                "--timeout",
                "180s",
            ],
        )?;
        println!(
            "REAL PODS helm install --wait (operator pods Ready): {:.1} s",
            installed.elapsed().as_secs_f64()
        );
        let platform = Platform {
            cluster,
            ns,
            release,
            _pg: pg,
            _redis: redis,
            _dir: dir,
        };
        // The operator runs as pods on the real node, with its chart's ServiceAccount and no
        // kubeconfig: the in-cluster config from its mounted token.
        let pods = platform
            .pods("app.kubernetes.io/name=crashfleet-operator")
            .await?;
        anyhow::ensure!(!pods.is_empty(), "no operator pods");
        for p in &pods {
            let spec = p.spec.as_ref().expect("spec");
            assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE));
            assert_eq!(
                spec.service_account_name.as_deref(),
                Some("crashfleet-operator")
            );
        }
        Ok(Some(platform))
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.ns.name()];
        all.extend_from_slice(args);
        run("kubectl", &self.cluster, &all)
    }

    /// A merge patch of the CrashTable `table`, as a user would `kubectl patch` it.
    pub(crate) fn patch_table(&self, table: &str, patch: &str) -> anyhow::Result<()> {
        self.kubectl(&["patch", "crashtable", table, "--type", "merge", "-p", patch])?;
        Ok(())
    }

    pub(crate) async fn pods(&self, selector: &str) -> Result<Vec<Pod>, kube::Error> {
        Ok(self
            .ns
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    /// The table's pods that are Ready and not terminating.
    pub(crate) async fn ready_pods(&self, table: &str) -> Result<Vec<Pod>, kube::Error> {
        let pods = self.pods(&format!("crashfleet.dev/table={table}")).await?;
        Ok(pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .collect())
    }

    /// Waits until status shows the table Ready with a leader other than `not` and at least one
    /// round played; returns the leader.
    pub(crate) async fn ready_with_leader(
        &self,
        name: &str,
        not: Option<&str>,
    ) -> anyhow::Result<String> {
        let tables = self.ns.api::<CrashTable>();
        let st = poll("the table Ready with its leader", TABLE_READY, || {
            let t = tables.clone();
            async move {
                Ok(t.get(name).await?.status.filter(|s| {
                    s.leader.is_some()
                        && s.leader.as_deref() != not
                        && s.fairness
                            .as_ref()
                            .and_then(|f| f.rounds_played)
                            .is_some_and(|n| n >= 1)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                }))
            }
        })
        .await;
        match st {
            Ok(st) => Ok(st.leader.expect("a leader")),
            Err(e) => {
                let status = tables.get(name).await.ok().and_then(|t| t.status);
                let pods = self
                    .kubectl(&["get", "pods", "-o", "wide"])
                    .unwrap_or_default();
                let logs = self
                    .kubectl(&[
                        "logs",
                        "-l",
                        &format!("crashfleet.dev/table={name}"),
                        "--tail",
                        "30",
                    ])
                    .unwrap_or_default();
                anyhow::bail!("{e}\nstatus: {status:?}\n{pods}\n{logs}")
            }
        }
    }

    /// The table's Service address (ClusterIP, port 80).
    async fn service(&self, table: &str) -> anyhow::Result<SocketAddr> {
        let svc = self.ns.api::<Service>().get(table).await?;
        let ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or_else(|| anyhow::anyhow!("Service {table} has no ClusterIP"))?;
        Ok(SocketAddr::new(ip.parse()?, 80))
    }

    pub(crate) async fn admin_token(&self, table: &str) -> anyhow::Result<String> {
        let s = self
            .ns
            .api::<Secret>()
            .get(&crashfleet_operator::builders::auth_secret(table))
            .await?;
        let v = s
            .data
            .unwrap_or_default()
            .remove(crashfleet_operator::builders::ADMIN_KEY)
            .ok_or_else(|| anyhow::anyhow!("no admin token"))?;
        Ok(String::from_utf8(v.0)?)
    }

    pub(crate) async fn uninstall(self) -> anyhow::Result<()> {
        // Tables first, so the operator is still there to see them go.
        let _ = self.kubectl(&[
            "delete",
            "crashtables",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ]);
        let _ = run(
            "helm",
            &self.cluster,
            &["uninstall", &self.release, "-n", self.ns.name(), "--wait"],
        );
        self.ns.cleanup().await?;
        Ok(())
    }
}

/// Waits until the table has exactly `n` pods, all Ready and none terminating (a rollout's old
/// pods gone); returns them.
pub(crate) async fn settled(p: &Platform, table: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    Ok(
        poll("the pods settled", Duration::from_secs(180), || async {
            let all = p.pods(&format!("crashfleet.dev/table={table}")).await?;
            let ok = all.len() == n
                && all
                    .iter()
                    .all(|q| q.metadata.deletion_timestamp.is_none() && pod_ready(q));
            Ok(ok.then_some(all))
        })
        .await?,
    )
}

pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A player's whole visit through `base` (a Service): register, get credit, open the WebSocket
/// and authenticate with the first frame, bet over REST during a betting window, cash out while
/// the round flies (a round that crashes first is played again), see the crash on the socket,
/// then verify the revealed round against the commitment and the crash formula.
async fn play_a_round(base: &str, admin: &str, name: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"username": name, "password": "correct-horse"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "register: {}", r.status());
    let token = r.json::<Value>().await?["token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = http
        .post(format!("{base}/api/v1/admin/players/{name}/credit"))
        .bearer_auth(admin)
        .header("Idempotency-Key", format!("credit-{name}"))
        .json(&json!({"amount": 10_000}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "credit: {}", r.status());
    let ws_url = format!("ws{}/ws", &base["http".len()..]);
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await?;
    let mut next = async || -> anyhow::Result<Value> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(120), rx.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
            if let Message::Text(t) = m {
                return Ok(serde_json::from_str(&t)?);
            }
        }
    };
    loop {
        if next().await?["type"] == "authenticated" {
            break;
        }
    }
    for attempt in 0..6 {
        // A betting window with time left for the bet to arrive.
        let round = loop {
            let m = next().await?;
            if m["type"] == "round_open"
                && m["betting_closes_at_ms"].as_i64() > Some(now_ms() + 700)
            {
                break m["round"].as_u64().expect("round");
            }
        };
        let r = http
            .post(format!("{base}/api/v1/bets"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("{name}-bet-{attempt}"))
            .json(&json!({"stake": 100}))
            .send()
            .await?;
        let status = r.status();
        let bet: Value = r.json().await?;
        anyhow::ensure!(status == 201, "bet: {status} {bet}");
        assert_eq!(bet["round"].as_u64(), Some(round), "{bet}");
        let bet_id = bet["bet_id"].as_str().expect("bet id").to_string();
        // Cash out once the multiplier has passed 1.10x (the round may crash before that).
        let flying = loop {
            let m = next().await?;
            anyhow::ensure!(m["type"] != "round_voided", "round {round} voided: {m}");
            if m["round"].as_u64() != Some(round) {
                continue;
            }
            if m["type"] == "tick" && m["multiplier_x100"].as_u64() >= Some(110) {
                break true;
            }
            if m["type"] == "crashed" {
                break false;
            }
        };
        if !flying {
            continue;
        }
        let r = http
            .post(format!("{base}/api/v1/bets/{bet_id}/cashout"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("{name}-cash-{attempt}"))
            .json(&json!({}))
            .send()
            .await?;
        let status = r.status();
        let cash: Value = r.json().await?;
        let crash = loop {
            let m = next().await?;
            if m["type"] == "crashed" && m["round"].as_u64() == Some(round) {
                break m;
            }
        };
        if status != 200 {
            assert_eq!(cash["code"], "too_late", "{cash}");
            continue;
        }
        assert!(cash["payout"].as_i64() >= Some(110), "{cash}");
        let paid_at = cash["multiplier_x100"].as_u64().expect("multiplier");
        assert!(paid_at < crash["crash_x100"].as_u64().expect("crash"));
        // Verify: the revealed hash chains to the commitment and gives the crash point.
        let detail: Value = http
            .get(format!("{base}/api/v1/rounds/{round}"))
            .send()
            .await?
            .json()
            .await?;
        let fairness: Value = http
            .get(format!("{base}/api/v1/fairness"))
            .send()
            .await?
            .json()
            .await?;
        let h =
            crashfleet_core::fairness::parse_hash(detail["round"]["hash"].as_str().expect("hash"))?;
        assert_eq!(detail["round"]["hash"], crash["hash"]);
        let t = crashfleet_core::fairness::parse_hash(
            fairness["terminating_hash"].as_str().expect("commitment"),
        )?;
        assert!(
            crashfleet_core::fairness::verify_commitment(&h, &t, round),
            "round {round} does not chain to the commitment"
        );
        let calc = crashfleet_core::fairness::CrashCalculator::new(
            fairness["salt"].as_str().expect("salt"),
            fairness["house_edge_bp"].as_u64().expect("edge") as u32,
            fairness["max_x100"].as_u64().expect("max"),
        )?;
        assert_eq!(Some(calc.crash_x100(&h)), crash["crash_x100"].as_u64());
        let mine = detail["bets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["bet_id"] == bet_id.as_str())
            .cloned()
            .expect("the bet in the round's detail");
        assert_eq!(mine["status"], "won", "{mine}");
        assert_eq!(mine["payout"], cash["payout"], "{mine}");
        return Ok(format!(
            "round {round}: bet 100, cashed out at {paid_at} for {}, crash {}; verified",
            cash["payout"], crash["crash_x100"]
        ));
    }
    anyhow::bail!("every round crashed before the cash-out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_tables_run_as_real_pods_with_both_election_backends() -> anyhow::Result<()> {
    let test = "the_example_tables_run_as_real_pods_with_both_election_backends";
    let _serial = crate::HEAVY.lock().await;
    let Some(p) = Platform::install(test).await? else {
        return Ok(());
    };
    let main = chart_file("examples/crashtable.yaml");
    let side = chart_file("examples/crashtable-redis.yaml");
    let applied = Instant::now();
    p.kubectl(&[
        "apply",
        "-f",
        main.to_str().expect("path"),
        "-f",
        side.to_str().expect("path"),
    ])?;
    // Pods Ready through the kubelet's real probes, on the real node.
    let deployments = p.ns.api::<Deployment>();
    for (table, replicas) in [("main", 3), ("side", 2)] {
        let d = deployments.clone();
        poll("the pods Ready", TABLE_READY, || {
            let d = d.clone();
            async move {
                Ok(d.get_opt(table).await?.and_then(|d| d.status).filter(|s| {
                    s.ready_replicas == Some(replicas) && s.updated_replicas == Some(replicas)
                }))
            }
        })
        .await?;
        println!(
            "REAL PODS {table}: {replicas} pods Ready {:.1} s after kubectl apply",
            applied.elapsed().as_secs_f64()
        );
        for pod in p.ready_pods(table).await? {
            assert_eq!(
                pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                Some(REAL_NODE)
            );
        }
    }
    let leader = p.ready_with_leader("main", None).await?;
    println!(
        "REAL PODS apply -> first round played (main, status roundsPlayed >= 1): {:.1} s",
        applied.elapsed().as_secs_f64()
    );
    let side_leader = p.ready_with_leader("side", None).await?;
    let listed = p.kubectl(&["get", "ct"])?;
    println!("REAL PODS kubectl get ct:\n{listed}");
    assert!(
        listed.contains(&leader) && listed.contains(&side_leader),
        "{listed}"
    );
    // Lease backend: a game-node pod wrote the Lease with its mounted token. Redis backend: no
    // Lease at all, and the leader in status comes from the Redis lock.
    let leases = p.ns.api::<Lease>();
    let holder = leases
        .get("main-leader")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(leader.as_str()));
    assert!(leases.get_opt("side-leader").await?.is_none());
    for (table, leader) in [("main", &leader), ("side", &side_leader)] {
        let names: Vec<String> = p
            .ready_pods(table)
            .await?
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert!(
            names.contains(leader),
            "{leader} is not a pod of {table}: {names:?}"
        );
    }
    // A pod logs JSON lines without being told to.
    let logs = p.kubectl(&["logs", &leader, "--tail", "20"])?;
    let line = logs.lines().next().expect("the leader logged");
    let parsed: Value = serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("a pod's log line is not JSON ({e}): {line}"))?;
    assert!(parsed["level"].is_string(), "{parsed}");
    // Players through each table's Service, both at once.
    let (main_base, side_base) = (
        format!("http://{}", p.service("main").await?),
        format!("http://{}", p.service("side").await?),
    );
    let (main_admin, side_admin) = (p.admin_token("main").await?, p.admin_token("side").await?);
    let (a, b) = tokio::join!(
        play_a_round(&main_base, &main_admin, "alice"),
        play_a_round(&side_base, &side_admin, "bob"),
    );
    println!(
        "REAL PODS a player through Service main (Lease backend): {}",
        a?
    );
    println!(
        "REAL PODS a player through Service side (Redis backend): {}",
        b?
    );
    for (base, admin) in [(&main_base, &main_admin), (&side_base, &side_admin)] {
        let audit: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/admin/audit"))
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(audit["balanced"], true, "{audit}");
    }
    // `paused` reaches the leader without a roll (Redis backend: the operator, in its pod, sets
    // the table's pause key): the round in progress ends, no new one opens, the same pods keep
    // serving; on resume the same leader plays on.
    let pr = &p;
    let pods_of = |table: &'static str| async move {
        let mut v: Vec<(String, i32)> = pr
            .ready_pods(table)
            .await?
            .into_iter()
            .map(|q| {
                let restarts = q
                    .status
                    .and_then(|s| s.container_statuses)
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (q.metadata.name.unwrap_or_default(), restarts)
            })
            .collect();
        v.sort();
        anyhow::Ok(v)
    };
    let side_pods = pods_of("side").await?;
    let http = reqwest::Client::new();
    let last_round = |http: reqwest::Client, base: String| async move {
        let r: Value = http
            .get(format!("{base}/api/v1/rounds?limit=1"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(r[0]["number"].as_u64().unwrap_or(0))
    };
    let pause = |on: bool| p.patch_table("side", &format!(r#"{{"spec":{{"paused":{on}}}}}"#));
    let paused_at = Instant::now();
    pause(true)?;
    let tables = p.ns.api::<CrashTable>();
    poll("phase Paused", Duration::from_secs(60), || {
        let t = tables.clone();
        async move {
            Ok(t.get("side")
                .await?
                .status
                .filter(|s| s.phase.as_deref() == Some("Paused")))
        }
    })
    .await?;
    // The round in progress may finish (a betting window and a flight). Then no round opens:
    // unpaused, the next one would be taking bets within the pause between rounds (1 s).
    let current = |http: reqwest::Client, base: String| async move {
        let v: Value = http
            .get(format!("{base}/api/v1/round"))
            .send()
            .await?
            .json()
            .await?;
        let live = v["round"]["phase"] == "betting" || v["round"]["phase"] == "flying";
        anyhow::Ok((live, v["round"]["number"].as_u64().unwrap_or(0)))
    };
    let ended = poll(
        "the round in progress to end",
        Duration::from_secs(60),
        || {
            let (http, base) = (http.clone(), side_base.clone());
            async move {
                Ok(current(http, base)
                    .await
                    .ok()
                    .filter(|(live, _)| !live)
                    .map(|(_, number)| number))
            }
        },
    )
    .await?;
    // `/round` derives the phase from the round's plan and the clock, so it reads `crashed` a
    // moment before the leader's settlement commits to the ledger the history reads: wait for
    // the history to hold the ended round.
    let still = poll(
        "the ended round in the history",
        Duration::from_secs(30),
        || {
            let (http, base) = (http.clone(), side_base.clone());
            async move { Ok(last_round(http, base).await.ok().filter(|n| *n >= ended)) }
        },
    )
    .await?;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        assert!(
            !current(http.clone(), side_base.clone()).await?.0,
            "a paused table opened a round"
        );
        assert_eq!(last_round(http.clone(), side_base.clone()).await?, still);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stood = paused_at.elapsed();
    assert_eq!(
        pods_of("side").await?,
        side_pods,
        "pausing restarted or replaced pods"
    );
    let resumed = Instant::now();
    pause(false)?;
    poll("rounds to resume", Duration::from_secs(60), || {
        let (http, base) = (http.clone(), side_base.clone());
        async move {
            Ok(last_round(http, base)
                .await
                .ok()
                .filter(|n| *n > still)
                .map(|_| ()))
        }
    })
    .await?;
    println!(
        "REAL PODS pause (Redis backend): history still at round {still} {:.1} s after kubectl \
         patch paused=true; resumed {:.1} s after paused=false; pods unchanged",
        stood.as_secs_f64(),
        resumed.elapsed().as_secs_f64()
    );
    assert_eq!(
        pods_of("side").await?,
        side_pods,
        "resuming restarted or replaced pods"
    );
    p.uninstall().await
}

/// The rounds the fleet played, oldest first, each with its detail; panics unless the numbers
/// are contiguous from 1, and every crashed round verifies against the commitment.
async fn rounds_with_detail(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<Vec<(Value, Value)>> {
    let fairness: Value = http
        .get(format!("{base}/api/v1/fairness"))
        .send()
        .await?
        .json()
        .await?;
    let terminating = crashfleet_core::fairness::parse_hash(
        fairness["terminating_hash"].as_str().expect("commitment"),
    )?;
    let list: Value = http
        .get(format!("{base}/api/v1/rounds?limit=500"))
        .send()
        .await?
        .json()
        .await?;
    let mut rounds: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    rounds.sort_by_key(|r| r["number"].as_u64());
    let mut out = Vec::new();
    for (k, r) in rounds.into_iter().enumerate() {
        let n = r["number"].as_u64().expect("number");
        assert_eq!(n, k as u64 + 1, "round numbers must be contiguous from 1");
        if r["status"] == "crashed" {
            let h = crashfleet_core::fairness::parse_hash(r["hash"].as_str().expect("hash"))?;
            assert!(crashfleet_core::fairness::verify_commitment(
                &h,
                &terminating,
                n
            ));
        }
        let detail: Value = http
            .get(format!("{base}/api/v1/rounds/{n}"))
            .send()
            .await?
            .json()
            .await?;
        out.push((r, detail));
    }
    Ok(out)
}

fn voided(rounds: &[(Value, Value)]) -> Vec<u64> {
    rounds
        .iter()
        .filter(|(r, _)| r["status"] == "voided")
        .filter_map(|(r, _)| r["number"].as_u64())
        .collect()
}

/// Once the table has its 3 pods settled: the leader the fleet reports (one of them) and its
/// term (a new leader has a higher one).
async fn live_leader(
    p: &Platform,
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<(String, Option<u64>)> {
    let names: Vec<String> = settled(p, "main", 3)
        .await?
        .into_iter()
        .filter_map(|q| q.metadata.name)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/api/v1/fleet")).send().await
            && let Ok(v) = r.json::<Value>().await
            && let Some(l) = v["leader"].as_str()
            && names.iter().any(|n| n == l)
        {
            return Ok((l.to_string(), v["term"].as_u64()));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader among {names:?} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (polling every 100 ms through the Service) until the fleet has a leader with a newer
/// term than `term`; returns its name.
async fn next_leader(
    http: &reqwest::Client,
    base: &str,
    term: Option<u64>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/api/v1/fleet")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["term"].as_u64() > term
            && let Some(l) = v["leader"].as_str()
        {
            return Ok(l.to_string());
        }
        anyhow::ensure!(Instant::now() < deadline, "no new leader within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a deleted pod did between the kubelet's SIGTERM and its last answer, in time since the
/// deletion: when its `/readyz` turned 503, when the table's EndpointSlice stopped offering it
/// as ready, and the last time (and the first time it failed) it answered a player's request on
/// its pod IP.
#[derive(Debug, Default)]
struct Drain {
    unready: Option<Duration>,
    left_endpoints: Option<Duration>,
    last_served: Option<Duration>,
    stopped: Option<Duration>,
}

/// Watches pod `name` (at `ip`) of table `table` every 50 ms from `since` until it stops
/// answering (or 60 s).
fn watch_drain(
    p: &Platform,
    table: &str,
    name: &str,
    ip: &str,
    since: Instant,
) -> tokio::task::JoinHandle<Drain> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices = p.ns.api::<EndpointSlice>();
    let selector = format!("kubernetes.io/service-name={table}");
    let (name, base) = (
        name.to_string(),
        format!("http://{ip}:{}", crashfleet_operator::builders::HTTP_PORT),
    );
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("client");
        let mut d = Drain::default();
        while since.elapsed() < Duration::from_secs(60) && d.stopped.is_none() {
            let ready = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if d.unready.is_none() && ready.as_ref().is_ok_and(|c| *c == 503) {
                d.unready = Some(since.elapsed());
            }
            let served = http
                .get(format!("{base}/api/v1/fairness"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            match served {
                true => d.last_served = Some(since.elapsed()),
                false => d.stopped = Some(since.elapsed()),
            }
            if d.left_endpoints.is_none()
                && let Ok(list) = slices.list(&ListParams::default().labels(&selector)).await
            {
                let offered = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter().flatten())
                    .any(|e| {
                        e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(name.as_str())
                            && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                    });
                if !offered {
                    d.left_endpoints = Some(since.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_fleet_survives_pod_deletion_rollout_eviction_and_kill_without_losing_money()
-> anyhow::Result<()> {
    let test = "a_real_fleet_survives_pod_deletion_rollout_eviction_and_kill_without_losing_money";
    let _serial = crate::HEAVY.lock().await;
    let Some(p) = Platform::install(test).await? else {
        return Ok(());
    };
    let main = chart_file("examples/crashtable.yaml");
    p.kubectl(&["apply", "-f", main.to_str().expect("path")])?;
    p.ready_with_leader("main", None).await?;
    let svc = p.service("main").await?;
    let svc_base = format!("http://{svc}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // Shorter rounds than the example's so the run sees many (a change of game settings: the
    // first rolling update, before the players arrive).
    p.patch_table(
        "main",
        r#"{"spec":{"game":{"bettingWindowMs":2500,"pauseMs":1000,"doublingMs":3000}}}"#,
    )?;
    p.kubectl(&["rollout", "status", "deployment/main", "--timeout", "240s"])?;

    // Players through the Service (a loopback relay: crashfleet-load only targets this machine),
    // betting over REST with idempotency keys, watching over WebSockets that reconnect.
    // kube-proxy follows the rollout's endpoint changes within its sync period: until then a
    // connection may still go to a pod that is gone.
    poll("the Service answering", Duration::from_secs(60), || {
        let (http, url) = (http.clone(), format!("{svc_base}/api/v1/fairness"));
        async move {
            Ok::<_, kube::Error>(
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()),
            )
        }
    })
    .await?;
    let relay = LoopbackRelay::start(svc).await?;
    let base = format!("http://127.0.0.1:{}", relay.port);
    let admin = p.admin_token("main").await?;
    let args = <load::LoadArgs as clap::Parser>::try_parse_from([
        "crashfleet-load",
        "--url",
        &base,
        "--connections",
        "24",
        "--players",
        "24",
        "--bet-rate",
        "12",
        "--duration",
        "20m",
        "--credit",
        "1000000",
        "--admin-token",
        &admin,
        "--ping-interval",
        "2s",
        "--quiet",
    ])?;
    let prepared = load::prepare(args).await?;
    let stop = CancellationToken::new();
    let players = tokio::spawn(load::execute_until(prepared, false, stop.clone()));
    // Let the players settle into a few rounds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut figures: BTreeMap<&str, String> = BTreeMap::new();
    let mut figure = |k: &'static str, v: String| {
        println!("REAL PODS {k}: {v}");
        figures.insert(k, v);
    };

    // 1. `kubectl delete pod` of the leader: the kubelet's SIGTERM; the round is handed over.
    let (leader, term) = live_leader(&p, &http, &svc_base).await?;
    let ip =
        p.ns.api::<Pod>()
            .get(&leader)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .expect("the leader's pod IP");
    let deleted = Instant::now();
    let drain = watch_drain(&p, "main", &leader, &ip, deleted);
    p.kubectl(&["delete", "pod", &leader, "--wait=false"])?;
    let next = next_leader(&http, &svc_base, term).await?;
    let to_leader = deleted.elapsed();
    let drain = drain.await?;
    let gone = poll("the deleted pod gone", Duration::from_secs(90), || {
        let api = p.ns.api::<Pod>();
        let name = leader.clone();
        async move {
            Ok(api
                .get_opt(&name)
                .await?
                .is_none()
                .then_some(deleted.elapsed()))
        }
    })
    .await?;
    figure(
        "leader pod deleted",
        format!(
            "new leader {next} {:.2} s after kubectl delete pod {leader}; the pod was gone after {:.1} s",
            to_leader.as_secs_f64(),
            gone.as_secs_f64()
        ),
    );
    assert_ne!(next, leader);
    figure(
        "drain window",
        format!("{drain:?} (since kubectl delete pod)"),
    );
    // The pod was taken out of the Service, and said it was not ready, while it still answered
    // players; it stopped answering only after its drain window.
    let (unready, left, last, stopped) = (
        drain
            .unready
            .expect("/readyz never answered 503 while the pod drained"),
        drain
            .left_endpoints
            .expect("the pod never left the Service's endpoints"),
        drain
            .last_served
            .expect("the pod never answered after SIGTERM"),
        drain
            .stopped
            .expect("the pod still answered 60 s after kubectl delete pod"),
    );
    assert!(unready < last && left < last, "{drain:?}");
    let window = Duration::from_millis(crashfleet_operator::builders::DRAIN_DELAY_MS);
    assert!(last + Duration::from_millis(500) >= window, "{drain:?}");
    assert!(stopped < window + Duration::from_secs(20), "{drain:?}");
    p.kubectl(&["rollout", "status", "deployment/main", "--timeout", "120s"])?;

    // 2. A rolling update of the 3 replicas (a changed game setting) with the players on.
    let before =
        p.ns.api::<Deployment>()
            .get("main")
            .await?
            .metadata
            .generation;
    let rolled = Instant::now();
    p.patch_table("main", r#"{"spec":{"game":{"bettingWindowMs":3000}}}"#)?;
    // The Deployment takes the new template (a new generation), then the rollout runs to its end.
    let deployments = p.ns.api::<Deployment>();
    poll("the new template", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move {
            let d = d.get("main").await?;
            Ok((d.metadata.generation > before).then_some(()))
        }
    })
    .await?;
    p.kubectl(&["rollout", "status", "deployment/main", "--timeout", "300s"])?;
    let (next, _) = live_leader(&p, &http, &svc_base).await?;
    figure(
        "rolling update",
        format!(
            "3 replicas replaced in {:.1} s, leader now {next}",
            rolled.elapsed().as_secs_f64()
        ),
    );
    // Voided rounds so far: none, whatever the pods went through.
    let so_far = rounds_with_detail(&http, &svc_base).await?;
    let voided_graceful = voided(&so_far);

    // 3. Evictions honour the PodDisruptionBudget (at most one pod unavailable).
    let pods = settled(&p, "main", 3).await?;
    // The disruption controller has counted the settled pods: 3 healthy, 1 disruption allowed.
    let pdbs = p.ns.api::<PodDisruptionBudget>();
    poll(
        "the PodDisruptionBudget's count",
        Duration::from_secs(60),
        || {
            let pdbs = pdbs.clone();
            async move {
                Ok(pdbs.get("main").await?.status.filter(|s| {
                    s.current_healthy == Some(3)
                        && s.disruptions_allowed == Some(1)
                        && s.disrupted_pods.as_ref().is_none_or(|d| d.is_empty())
                }))
            }
        },
    )
    .await?;
    let api = p.ns.api::<Pod>();
    let first = pods[0].metadata.name.clone().expect("name");
    let second = pods[1].metadata.name.clone().expect("name");
    let evicting = Instant::now();
    api.evict(&first, &EvictParams::default()).await?;
    let first_took = evicting.elapsed();
    let refused = api.evict(&second, &EvictParams::default()).await;
    let second_at = evicting.elapsed();
    // What the budget promises: whatever the API answered, at least 2 of the 3 pods stay Ready
    // and not terminating (a second eviction is allowed only once a replacement is Ready).
    let serving: Vec<String> = p
        .pods("crashfleet.dev/table=main")
        .await?
        .iter()
        .filter(|q| q.metadata.deletion_timestamp.is_none() && pod_ready(q))
        .filter_map(|q| q.metadata.name.clone())
        .collect();
    let answer = match &refused {
        Err(kube::Error::Api(e)) if e.code == 429 => "refused with 429".to_string(),
        Ok(s) => format!("allowed ({})", s.code),
        Err(e) => format!("failed: {e}"),
    };
    figure(
        "eviction",
        format!(
            "{first} evicted (the call took {:.2} s); {second} {answer} {:.2} s after the first; \
             pods serving then: {serving:?}",
            first_took.as_secs_f64(),
            second_at.as_secs_f64()
        ),
    );
    assert!(
        serving.len() >= 2,
        "evictions left {} pods serving (budget: 1 unavailable): {serving:?}, second eviction {answer}",
        serving.len()
    );
    if let Err(e) = refused
        && !matches!(&e, kube::Error::Api(s) if s.code == 429)
    {
        return Err(e.into());
    }
    p.kubectl(&["rollout", "status", "deployment/main", "--timeout", "120s"])?;
    let (leader, term) = live_leader(&p, &http, &svc_base).await?;

    // 4. kill -9 of the leader's container: no goodbye, the Lease runs out.
    let pod = api.get(&leader).await?;
    let container = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("the leader's container id");
    let id = container
        .strip_prefix("containerd://")
        .expect("a containerd container");
    let sock = PathBuf::from(p.cluster.kubeconfig_source())
        .with_file_name(REAL_NODE)
        .join("containerd/containerd.sock");
    let killed = Instant::now();
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&sock)
        .args(["-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id])
        .output()?;
    assert!(out.status.success(), "ctr kill: {out:?}");
    let next = next_leader(&http, &svc_base, term).await?;
    figure(
        "leader container kill -9",
        format!(
            "new leader {next} {:.2} s after the kill of {leader}'s container",
            killed.elapsed().as_secs_f64()
        ),
    );
    settled(&p, "main", 3).await?;

    // The players stop; the last rounds finish; then the money is checked.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let report = players.await??;
    // `GET /api/v1/rounds` lists finished rounds only: wait until the round that took the last
    // bets has crashed (a flight can outlast any fixed wait: 10x takes 10 s at this doubling
    // time). A round opened after the players stopped holds no bets.
    poll(
        "the players' last round to finish",
        Duration::from_secs(120),
        || {
            let (http, url) = (http.clone(), format!("{svc_base}/api/v1/round"));
            async move {
                let Ok(r) = http.get(url).send().await else {
                    return Ok(None);
                };
                let Ok(v) = r.json::<Value>().await else {
                    return Ok(None);
                };
                let phase = &v["round"]["phase"];
                let empty = v["bets"].as_array().is_none_or(|b| b.is_empty());
                let done = v["round"].is_null()
                    || phase == "crashed"
                    || phase == "idle"
                    || (phase == "betting" && empty);
                Ok(done.then_some(()))
            }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rounds = rounds_with_detail(&http, &svc_base).await?;
    let audit: Value = http
        .get(format!("{svc_base}/api/v1/admin/audit"))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let violations = load::money::check_bets(&rounds, std::slice::from_ref(&report), |stake, m| {
        crashfleet_core::engine::payout(stake, m, i64::MAX)
    });
    println!("{}", report.table());
    for (k, v) in &figures {
        println!("REAL PODS {k}: {v}");
    }
    let ws = &report.ws;
    println!(
        "REAL PODS players: {} rounds, {} bets accepted, {} cash-outs confirmed; voided during \
         delete + rollout: {voided_graceful:?}, in all: {:?}; {} WebSocket reconnects, longest \
         gap {:.0} ms (p50 {:.0} ms), {} stale snapshots; audit balanced {}",
        rounds.len(),
        report.accepted_bet_ids.len(),
        report.accepted_cashouts.len(),
        voided(&rounds),
        ws.reconnects,
        ws.reconnect_gap_max_ms,
        ws.reconnect_gap_p50_ms,
        ws.stale_snapshots,
        audit["balanced"]
    );
    assert_eq!(audit["balanced"], true, "{audit}");
    assert_eq!(audit["violations"], json!([]), "{audit}");
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(
        voided_graceful,
        Vec::<u64>::new(),
        "rounds voided by a graceful handover"
    );
    assert!(
        report.accepted_bet_ids.len() >= 20,
        "the players hardly bet"
    );
    // Every socket a node closed came back on a live node with a fresh snapshot.
    assert!(
        ws.reconnects >= 1,
        "no socket was moved: the test did not test it"
    );
    assert_eq!(ws.stale_snapshots, 0);
    drop(relay);
    p.uninstall().await
}
