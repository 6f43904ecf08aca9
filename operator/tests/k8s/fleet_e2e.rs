//! The whole path, operator to rounds: a CrashTable is applied on the real control plane, the
//! operator builds its fleet, and `game-node` processes are started *as the Deployment's pods
//! would be* — their arguments and environment taken from the pod template the operator wrote
//! (Secrets resolved, the fairness Secret "mounted" as a file, the downward API filled in), their
//! Kubernetes access from the table's own ServiceAccount token (so its Role is proven enough).
//! They elect a leader through the real Lease, play rounds on Redis and PostgreSQL, and the
//! table's status shows the leader; the commitment in status is the one the nodes serve.
//!
//! kwok runs no containers, so the processes run here; everything else is real.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crashfleet_operator::crd::CrashTable;
use crashfleet_tests::db::TestDb;
use crashfleet_tests::free_port;
use crashfleet_tests::k8s::{chart, tool};
use crashfleet_tests::k8s::{cluster_or_skip, poll};
use crashfleet_tests::redis::TestRedis;
use crashfleet_tests::require;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What both tests need beyond the cluster: PostgreSQL, `redis-server` and the game-node binary
/// that `cargo test --workspace` builds next to the operator's.
pub(crate) fn needs(test: &str) -> Option<(String, std::path::PathBuf)> {
    let pg = require::fleet(test)?;
    Some((pg, require::game_node(test)?))
}

/// What both tests stand on: Redis and a database of the test's own, their URLs in the Secrets
/// `redis` and `postgres` of a fresh namespace, the CRD, the chart installed (release `release`:
/// the operator's ServiceAccount and ClusterRole, nothing more), and the operator running with
/// exactly that ServiceAccount's token.
pub(crate) struct Stage {
    pub(crate) _operator: Proc,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) _redis: TestRedis,
    pub(crate) db: TestDb,
    pub(crate) ns: crashfleet_tests::k8s::TestNamespace,
    pub(crate) client: kube::Client,
    pub(crate) secrets: Api<Secret>,
    pub(crate) release: String,
    pub(crate) pp: PostParams,
}

impl Stage {
    pub(crate) async fn up(
        cluster: &crashfleet_tests::k8s::Cluster,
        test: &str,
        ns: &str,
        pg_admin: &str,
    ) -> anyhow::Result<Stage> {
        let dir = tempfile::tempdir()?;
        let redis = TestRedis::start(dir.path());
        let db = TestDb::create(pg_admin, test).await;
        let ns = cluster.namespace(ns).await?;
        let client = cluster.client();
        let pp = PostParams::default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
        for (name, url) in [("redis", redis.url()), ("postgres", db.url.clone())] {
            let s: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "stringData": {"url": url},
            }))?;
            secrets.create(&pp, &s).await?;
        }
        crd(&client).await?;
        let release = format!("cf-{}", &ns.name()[ns.name().len().saturating_sub(8)..]);
        let install = Command::new(tool("helm"))
            .args(["install", &release])
            .arg(chart())
            .args([
                "-n",
                ns.name(),
                "--set",
                &format!("watchNamespace={}", ns.name()),
            ])
            .env("KUBECONFIG", cluster.kubeconfig_source())
            .output()?;
        assert!(install.status.success(), "helm install: {install:?}");
        let operator_access = ns.service_account_access("crashfleet-operator").await?;
        let operator = Proc(
            Command::new(env!("CARGO_BIN_EXE_crashfleet-operator"))
                .args(["run", "--listen", "127.0.0.1:0", "--namespace", ns.name()])
                .env("KUBECONFIG", operator_access.kubeconfig_path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        Ok(Stage {
            _operator: operator,
            dir,
            _redis: redis,
            db,
            ns,
            client,
            secrets,
            release,
            pp,
        })
    }
}

/// Starts one `game-node` per replica of `deployment`, as its pods would run: the template's
/// args and env (Secrets resolved, downward API filled), the fairness Secret written where the
/// template mounts it with the volume's mode, and the table's ServiceAccount kubeconfig.
/// `generation` keeps pod names of successive rollouts apart. Returns the processes and URLs.
async fn start_pods(
    deployment: &Deployment,
    game_node: &Path,
    dir: &Path,
    ns: &str,
    secrets: &Api<Secret>,
    kubeconfig: &Path,
    generation: u32,
) -> anyhow::Result<(Vec<Proc>, Vec<String>)> {
    let pod = deployment.spec.template.spec.clone().expect("a pod spec");
    let container = &pod.containers[0];
    // Each Secret volume (the chain seed, the signing key): where it is mounted, its file mode
    // as the kubelet would apply it, and its data.
    let mut secret_volumes = Vec::new();
    for volume in ["fairness", "signing"] {
        let mount_path = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("the {volume} mount"))
            .mount_path
            .clone();
        let source = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .unwrap_or_else(|| panic!("the {volume} Secret volume"));
        let mode = source
            .default_mode
            .unwrap_or_else(|| panic!("the {volume} volume's defaultMode"))
            as u32;
        let name = source.secret_name.clone().expect("a Secret name");
        secret_volumes.push((mount_path, mode, secrets.get(&name).await?));
    }
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for i in 0..deployment.spec.replicas.unwrap_or(1) {
        let pod_name = format!("play-5f7c9{generation}-{i}");
        let root = dir.join(&pod_name);
        // "Mount" the Secrets where the template mounts them, under this pod's root.
        for (mount_path, mode, secret) in &secret_volumes {
            let mount = root.join(mount_path.trim_start_matches('/'));
            std::fs::create_dir_all(&mount)?;
            for (k, v) in secret.data.clone().unwrap_or_default() {
                let file = mount.join(k);
                std::fs::write(&file, v.0)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
            }
        }
        let mut env = BTreeMap::new();
        for e in container.env.iter().flatten() {
            env.insert(e.name.clone(), resolve(e, &pod_name, ns, secrets).await?);
        }
        let port = free_port();
        env.insert("CRASHFLEET_LISTEN".into(), format!("127.0.0.1:{port}"));
        // Pods each have their own 0.0.0.0:9090; processes on one host need a port each.
        env.insert(
            "CRASHFLEET_METRICS_LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert(
            "CRASHFLEET_DATA_DIR".into(),
            root.join("data").display().to_string(),
        );
        for var in ["CRASHFLEET_CHAIN_SEED_FILE", "CRASHFLEET_SIGNING_KEY_FILE"] {
            let path = env[var].trim_start_matches('/').to_string();
            env.insert(var.into(), root.join(path).display().to_string());
        }
        let log = std::fs::File::create(root.join("node.log"))?;
        nodes.push(Proc(
            Command::new(game_node)
                .args(container.args.iter().flatten())
                .env_clear()
                .envs(&env)
                .env("KUBECONFIG", kubeconfig)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    Ok((nodes, urls))
}

/// The value an env var of the pod template resolves to for pod `pod` (downward API and Secrets).
async fn resolve(
    e: &k8s_openapi::api::core::v1::EnvVar,
    pod: &str,
    ns: &str,
    secrets: &Api<Secret>,
) -> anyhow::Result<String> {
    if let Some(v) = &e.value {
        return Ok(v.clone());
    }
    let from = e.value_from.as_ref().expect("value or valueFrom");
    if let Some(f) = &from.field_ref {
        return Ok(match f.field_path.as_str() {
            "metadata.name" => pod.to_string(),
            "metadata.namespace" => ns.to_string(),
            other => anyhow::bail!("unexpected fieldRef {other}"),
        });
    }
    let r = from.secret_key_ref.as_ref().expect("a secretKeyRef");
    let s = secrets.get(&r.name).await?;
    let data = s.data.unwrap_or_default();
    let v = data
        .get(&r.key)
        .ok_or_else(|| anyhow::anyhow!("Secret {} has no key {}", r.name, r.key))?;
    Ok(String::from_utf8(v.0.clone())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_table_plays_verifiable_rounds_with_nodes_from_its_pod_template()
-> anyhow::Result<()> {
    let test = "a_crash_table_plays_verifiable_rounds_with_nodes_from_its_pod_template";
    let _serial = crate::HEAVY.lock().await;
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    let Some((pg_admin, game_node)) = needs(test) else {
        return Ok(());
    };
    let Stage {
        _operator,
        dir,
        _redis,
        db,
        ns,
        client,
        secrets,
        release,
        pp,
    } = Stage::up(&cluster, test, "play", &pg_admin).await?;
    let table: CrashTable = serde_json::from_value(json!({
        "apiVersion": "crashfleet.dev/v1alpha1", "kind": "CrashTable",
        "metadata": {"name": "play"},
        "spec": {
            "replicas": 3,
            "image": "registry.example/game-node:0.1.0",
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "database": {"urlSecretRef": {"name": "postgres", "key": "url"}},
            "game": {"bettingWindowMs": 1000, "pauseMs": 300, "doublingMs": 1500,
                     "maxMultiplierX100": 3000, "demoCredit": 10000},
            "fairness": {"chainLength": 5000},
        },
    }))?;
    let tables: Api<CrashTable> = Api::namespaced(client.clone(), ns.name());
    let applied = Instant::now();
    tables.create(&pp, &table).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deployment = poll("the Deployment", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move { d.get_opt("play").await }
    })
    .await?;
    let deployment_at = applied.elapsed();

    // Start the pods' processes from the template.
    let access = ns.service_account_access("play").await?;
    let (nodes, urls) = start_pods(
        &deployment,
        &game_node,
        dir.path(),
        ns.name(),
        &secrets,
        access.kubeconfig_path(),
        0,
    )
    .await?;
    let http = reqwest::Client::new();
    // A round is played (and settled) by the elected leader.
    let first = poll("a finished round", Duration::from_secs(90), || {
        let http = http.clone();
        let url = urls[1].clone();
        async move {
            let rounds: Value = match http
                .get(format!("{url}/api/v1/rounds?limit=5"))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            Ok(rounds
                .as_array()
                .filter(|r| !r.is_empty())
                .map(|r| r[0].clone()))
        }
    })
    .await;
    let first = match first {
        Ok(f) => f,
        Err(e) => {
            let logs: Vec<String> = (0..nodes.len())
                .map(|i| {
                    std::fs::read_to_string(dir.path().join(format!("play-5f7c90-{i}/node.log")))
                        .unwrap_or_default()
                })
                .collect();
            panic!("{e}\n{}", logs.join("\n-----\n"));
        }
    };
    println!(
        "OPERATOR apply -> Deployment: {} ms; apply -> first round played: {} ms",
        deployment_at.as_millis(),
        applied.elapsed().as_millis()
    );
    // The round verifies against the commitment the operator published in status.
    let status = poll("the leader in status", Duration::from_secs(60), || {
        let t = tables.clone();
        async move { Ok(t.get("play").await?.status.filter(|s| s.leader.is_some())) }
    })
    .await?;
    let leader = status.leader.clone().expect("leader");
    // kwok reports the Deployment's pods ready; with a leader the table is Ready and Running.
    let st = poll("Ready and Running", Duration::from_secs(60), || {
        let t = tables.clone();
        async move {
            Ok(t.get("play").await?.status.filter(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            }))
        }
    })
    .await?;
    assert_eq!(st.leader.as_deref(), Some(leader.as_str()));
    let get = Command::new(tool("kubectl"))
        .args(["get", "ct", "play", "-n", ns.name()])
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output()?;
    let text = String::from_utf8_lossy(&get.stdout);
    assert!(text.contains("Running") && text.contains(&leader), "{text}");
    println!("OPERATOR kubectl get ct:\n{text}");
    // The leader publishes its progress; status shows the rounds played.
    poll("roundsPlayed in status", Duration::from_secs(60), || {
        let t = tables.clone();
        async move {
            Ok(t.get("play").await?.status.filter(|s| {
                s.fairness
                    .as_ref()
                    .and_then(|f| f.rounds_played)
                    .is_some_and(|n| n >= 1)
            }))
        }
    })
    .await?;
    assert!(leader.starts_with("play-5f7c90-"), "{leader}");
    let fairness_view: Value = http
        .get(format!("{}/api/v1/fairness", urls[0]))
        .send()
        .await?
        .json()
        .await?;
    let published_fairness = status.fairness.expect("fairness");
    let published = published_fairness.terminating_hash;
    assert_eq!(fairness_view["terminating_hash"], published.as_str());
    // One signing key for the whole fleet: the one the operator generated and publishes.
    assert_eq!(published_fairness.signing_key.len(), 64);
    for url in &urls {
        let view: Value = http
            .get(format!("{url}/api/v1/fairness"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            view["signing_key"],
            published_fairness.signing_key.as_str(),
            "{url}"
        );
    }
    let terminating = crashfleet_core::fairness::parse_hash(&published)?;
    let hash = crashfleet_core::fairness::parse_hash(first["hash"].as_str().expect("hash"))?;
    assert!(crashfleet_core::fairness::verify_commitment(
        &hash,
        &terminating,
        first["number"].as_u64().expect("number")
    ));
    // The fleet view agrees with the Lease.
    let fleet: Value = http
        .get(format!("{}/api/v1/fleet", urls[2]))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(fleet["leader"], leader.as_str(), "{fleet}");

    // Pause: the operator sets the Lease's pause annotation; the leader reads it with its next
    // renewal, finishes at most the round in progress and opens no more. No pod is rolled: the
    // Deployment's template stays as it was, and the same processes keep serving.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns.name());
    let template_before = deployments.get("play").await?.spec.template;
    let pp_merge = kube::api::PatchParams::default();
    tables
        .patch(
            "play",
            &pp_merge,
            &kube::api::Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    let annotation = |want: &'static str| {
        let leases = leases.clone();
        move || {
            let leases = leases.clone();
            async move {
                let l = leases.get("play-leader").await?;
                let v = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crashfleet_lease::PAUSED_ANNOTATION))
                    .cloned();
                Ok((v.as_deref() == Some(want)).then_some(()))
            }
        }
    };
    poll(
        "the pause annotation",
        Duration::from_secs(60),
        annotation("true"),
    )
    .await?;
    let last_round = |url: String, http: reqwest::Client| async move {
        let r: Value = http
            .get(format!("{url}/api/v1/rounds?limit=1"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        r[0]["number"].as_u64()
    };
    let st = poll("phase Paused", Duration::from_secs(60), || {
        let t = tables.clone();
        async move {
            Ok(t.get("play")
                .await?
                .status
                .filter(|s| s.phase.as_deref() == Some("Paused")))
        }
    })
    .await?;
    assert!(st.phase.is_some());
    // The leader reads the flag with its next renewal, so a round may still open between the
    // annotation and that read, and the round in progress then still finishes: a high crash
    // point can keep it flying for many seconds. Wait until no round is in progress (none open,
    // or the last one crashed); from then on the history must stand still.
    let first = last_round(urls[0].clone(), http.clone()).await;
    assert!(
        first.is_some(),
        "the paused fleet does not serve the history"
    );
    let current_round = |url: String, http: reqwest::Client| async move {
        let v: Value = http
            .get(format!("{url}/api/v1/round"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(v)
    };
    let settled = |v: &Value| v["round"].is_null() || v["round"]["phase"] == "crashed";
    // The gap between two rounds also looks settled, and a leader that has not yet read the flag
    // (it reads it with a renewal, which a loaded machine delays) may still open one more round
    // there. So: no round in progress and the history unchanged over 4 s — that must happen, and
    // soon; a table that kept playing never gets there.
    let url = urls[2].clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (before, after) = loop {
        poll(
            "the round in progress to end",
            Duration::from_secs(120),
            || {
                let (url, http) = (url.clone(), http.clone());
                async move {
                    Ok(current_round(url, http)
                        .await
                        .filter(|v| settled(v))
                        .map(|_| ()))
                }
            },
        )
        .await?;
        let before = last_round(urls[1].clone(), http.clone()).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = last_round(urls[0].clone(), http.clone()).await;
        let idle = current_round(urls[2].clone(), http.clone())
            .await
            .is_some_and(|v| settled(&v));
        if (before == after && idle) || Instant::now() > deadline {
            break (before, after);
        }
    };
    assert_eq!(before, after, "a paused table kept playing rounds");
    assert!(
        after.unwrap_or(0) <= first.unwrap_or(0) + 2,
        "a paused table played more than the round in progress: {first:?} -> {after:?}"
    );
    let current = current_round(urls[2].clone(), http.clone())
        .await
        .unwrap_or(Value::Null);
    assert!(
        settled(&current),
        "a paused table opened a round: {current}"
    );
    // Same leader, same term: nothing was restarted or handed over.
    let paused_fleet: Value = http
        .get(format!("{}/api/v1/fleet", urls[0]))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(paused_fleet["leader"], fleet["leader"], "{paused_fleet}");
    assert_eq!(paused_fleet["term"], fleet["term"], "{paused_fleet}");
    let template_after = deployments.get("play").await?.spec.template;
    assert_eq!(
        template_before, template_after,
        "pausing changed the pod template (a roll)"
    );

    // Resume: the annotation turns "false"; the same leader opens the next round.
    tables
        .patch(
            "play",
            &pp_merge,
            &kube::api::Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await?;
    poll(
        "the resume annotation",
        Duration::from_secs(60),
        annotation("false"),
    )
    .await?;
    let url = urls[1].clone();
    poll("rounds to resume", Duration::from_secs(60), || {
        let (url, http) = (url.clone(), http.clone());
        async move {
            let n = last_round(url, http).await;
            Ok((n > after).then_some(()))
        }
    })
    .await?;
    let template_after = deployments.get("play").await?.spec.template;
    assert_eq!(
        template_before, template_after,
        "resuming changed the pod template (a roll)"
    );
    drop(nodes);
    let _ = Command::new(tool("helm"))
        .args(["uninstall", &release, "-n", ns.name()])
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output();
    ns.cleanup().await?;
    db.drop_now().await;
    Ok(())
}

/// `leaderElection.backend: redis`: the nodes elect through the Redis lock and never write the
/// Lease; the operator reads the lock, so `kubectl get ct` shows the table Ready with its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_backend_table_is_ready_with_its_leader() -> anyhow::Result<()> {
    let test = "a_redis_backend_table_is_ready_with_its_leader";
    let _serial = crate::HEAVY.lock().await;
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    let Some((pg_admin, game_node)) = needs(test) else {
        return Ok(());
    };
    let Stage {
        _operator,
        dir,
        _redis,
        db,
        ns,
        client,
        secrets,
        release,
        pp,
    } = Stage::up(&cluster, test, "redis-ct", &pg_admin).await?;
    let table: CrashTable = serde_json::from_value(json!({
        "apiVersion": "crashfleet.dev/v1alpha1", "kind": "CrashTable",
        "metadata": {"name": "play"},
        "spec": {
            "replicas": 2,
            "image": "registry.example/game-node:0.1.0",
            "leaderElection": {"backend": "redis", "leaseDurationSeconds": 2},
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "database": {"urlSecretRef": {"name": "postgres", "key": "url"}},
            "game": {"bettingWindowMs": 500, "pauseMs": 200, "doublingMs": 1000,
                     "maxMultiplierX100": 300},
            "fairness": {"chainLength": 2000},
        },
    }))?;
    let tables: Api<CrashTable> = Api::namespaced(client.clone(), ns.name());
    tables.create(&pp, &table).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deployment = poll("the Deployment", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move { d.get_opt("play").await }
    })
    .await?;
    let access = ns.service_account_access("play").await?;
    let (nodes, urls) = start_pods(
        &deployment,
        &game_node,
        dir.path(),
        ns.name(),
        &secrets,
        access.kubeconfig_path(),
        0,
    )
    .await?;
    let ready = poll(
        "Ready with a leader and rounds played",
        Duration::from_secs(90),
        || {
            let t = tables.clone();
            async move {
                Ok(t.get("play").await?.status.filter(|s| {
                    s.leader.is_some()
                        && s.fairness
                            .as_ref()
                            .and_then(|f| f.rounds_played)
                            .is_some_and(|n| n >= 1)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                }))
            }
        },
    )
    .await;
    let st = match ready {
        Ok(st) => st,
        Err(e) => {
            let logs: Vec<String> = (0..nodes.len())
                .map(|i| {
                    std::fs::read_to_string(dir.path().join(format!("play-5f7c90-{i}/node.log")))
                        .unwrap_or_default()
                })
                .collect();
            let st = tables.get("play").await.ok().and_then(|t| t.status);
            panic!("{e}\nstatus: {st:?}\n{}", logs.join("\n-----\n"));
        }
    };
    let leader = st.leader.clone().expect("leader");
    assert!(leader.starts_with("play-5f7c90-"), "{leader}");
    // The status agrees with the fleet's own view, and no Lease was involved.
    let fleet: Value = reqwest::get(format!("{}/api/v1/fleet", urls[0]))
        .await?
        .json()
        .await?;
    assert_eq!(fleet["leader"], leader.as_str(), "{fleet}");
    assert_eq!(fleet["term"].as_i64(), st.term, "{fleet}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns.name());
    assert!(
        leases.get_opt("play-leader").await?.is_none(),
        "the redis backend wrote a Lease"
    );
    let get = Command::new(tool("kubectl"))
        .args(["get", "ct", "play", "-n", ns.name()])
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output()?;
    let text = String::from_utf8_lossy(&get.stdout);
    assert!(text.contains("Running") && text.contains(&leader), "{text}");
    println!("OPERATOR kubectl get ct (redis backend):\n{text}");
    drop(nodes);
    let _ = Command::new(tool("helm"))
        .args(["uninstall", &release, "-n", ns.name()])
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output();
    ns.cleanup().await?;
    db.drop_now().await;
    Ok(())
}

async fn crd(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Patch, PatchParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "crashtables.crashfleet.dev",
        &PatchParams::apply("crashfleet-tests").force(),
        &Patch::Apply(CrashTable::crd()),
    )
    .await?;
    poll("the CRD to be established", Duration::from_secs(60), || {
        let crds = crds.clone();
        async move {
            let c = crds.get("crashtables.crashfleet.dev").await?;
            Ok(c.status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}
