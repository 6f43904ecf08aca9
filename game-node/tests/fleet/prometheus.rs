//! The shipped alert rules and Grafana dashboard against a real Prometheus (Debian's
//! `prometheus` and `promtool`) scraping a real fleet: the rule file passes `promtool check rules`
//! and its unit tests (`tests/prometheus/rules.test.yaml`); every panel query of the dashboard
//! returns data; no alert is pending or firing while the fleet is healthy; the audit alert fires
//! when a balance is tampered with and clears when it is put back; and the no-round alert's
//! condition holds once the fleet's Redis is gone (nobody can lead).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crashfleet_tests::fleet::{Fleet, FleetOpts};
use crashfleet_tests::{require, wait};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules_file() -> PathBuf {
    repo().join("charts/crashfleet-operator/files/crashfleet-rules.yaml")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Prometheus server for one test, on a loopback port, stopped when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (host:port) every second and evaluates the rule file every second.
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let port = crashfleet_tests::free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: crashfleet\n    static_configs:\n      - targets: [{}]\n",
            rules_file().display(),
            list.join(", ")
        );
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).expect("prometheus.yml");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.join("prometheus.err")).expect("log"))
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn get(&self, http: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let r = http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await;
        match r {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// An instant query's result vector (empty when the query matched nothing or failed).
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Vec<Value> {
        let v = self.get(http, "/api/v1/query", &[("query", expr)]).await;
        assert_ne!(v["status"], "error", "query {expr} failed: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts pending or firing now: (name, state, table).
    async fn alerts(&self, http: &reqwest::Client) -> Vec<(String, String, String)> {
        let v = self.get(http, "/api/v1/alerts", &[]).await;
        v["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        (
                            a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                            a["state"].as_str().unwrap_or("").to_string(),
                            a["labels"]["table"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The panel queries of the shipped Grafana dashboard: (panel title, PromQL).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo().join("charts/crashfleet-operator/dashboards/game-fleet.json");
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    expr.to_string(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_fleet_with_the_shipped_rules_and_dashboard() {
    let test = "a_real_prometheus_scrapes_the_fleet_with_the_shipped_rules_and_dashboard";
    let Some(pg) = require::fleet(test) else {
        return;
    };
    if !have("prometheus") || !have("promtool") {
        require::skip::<()>(
            test,
            "needs prometheus and promtool (bash tests/install-deps.sh)",
        );
        return;
    }
    // The rule file is valid and its unit tests pass (each alert fires for the table whose
    // condition holds, and only for it).
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .expect("promtool check rules");
    assert!(check.status.success(), "promtool check rules: {check:?}");
    let unit = Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo().join("tests/prometheus/rules.test.yaml"))
        .output()
        .expect("promtool test rules");
    assert!(unit.status.success(), "promtool test rules: {unit:?}");

    // A healthy fleet. A long chain, so that "runs out within a week" holds no matter how fast
    // the test's short rounds go; an audit every second.
    let opts = FleetOpts {
        chain_length: 400_000,
        extra: vec!["--audit-interval-secs".into(), "1".into()],
        ..FleetOpts::default()
    };
    let mut fleet = Fleet::start("prometheus", &pg, opts).await;
    let http = reqwest::Client::new();
    let targets: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| n.url.trim_start_matches("http://").to_string())
        .collect();
    let prom = Prometheus::start(fleet.dir.path(), &targets);
    wait::until(
        "Prometheus scraping all three nodes",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let up = prom.query(&http, "up == 1").await;
            (up.len() == 3).then_some(())
        },
        || prom.log_text(),
    )
    .await;

    // Some play, so the bet, wager and cash-out panels have something to show: bets, and two
    // manual cash-outs, each kind through one node (a rate needs its series to grow between two
    // scrapes, and a series appears with its first observation; a round can crash at 1.00x
    // before the cash-out: try a few rounds).
    let token = fleet.register(0, "watcher").await;
    let mut cashed = 0;
    for round in 0..12 {
        fleet.wait_phase(1, "betting", 400).await;
        let (s, b) = fleet.bet(0, &token, &format!("p{round}"), 100, None).await;
        assert_eq!(s, 201, "{b}");
        fleet.wait_phase(0, "flying", 0).await;
        let id = b["bet_id"].as_str().expect("bet id");
        let (s, _) = fleet.cash_out(1, &token, &format!("c{round}"), id).await;
        if s == 200 {
            cashed += 1;
            if cashed == 2 {
                break;
            }
            // The next one comes after a scrape or two.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    assert_eq!(
        cashed, 2,
        "two cash-outs did not beat the crash in twelve rounds"
    );
    fleet.wait_phase(0, "betting", 0).await;

    // Every panel of the dashboard has data, and the activity panels show the play.
    for (title, expr) in dashboard_queries() {
        let value: f64 = wait::until(
            &format!("panel {title:?} ({expr}) returning a number"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                let r = prom.query(&http, &expr).await;
                r.first()
                    .and_then(|s| s["value"][1].as_str())
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
            },
            || prom.log_text(),
        )
        .await;
        if [
            "Bets per second",
            "Wagered per second (minor units)",
            "Rounds per minute",
        ]
        .contains(&title.as_str())
        {
            assert!(value > 0.0, "panel {title:?} shows no activity: {value}");
        }
    }
    // Every series a rule reads exists (a renamed metric would silence its alert for good).
    for series in [
        "crashfleet_last_round_timestamp_seconds",
        "crashfleet_round_expected_seconds",
        "crashfleet_table_paused",
        "crashfleet_failovers_total",
        "crashfleet_audit_balanced",
        "crashfleet_bet_duration_seconds_bucket",
        "crashfleet_bus_resyncs_total",
        "crashfleet_fanout_lagged_total",
        "crashfleet_chain_rounds_left",
        "crashfleet_rounds_total",
        "crashfleet_crash_points_total",
        "crashfleet_crash_points_reaching_total",
        "crashfleet_house_edge_ratio",
    ] {
        let r = prom
            .query(&http, &format!("count by (table) ({series})"))
            .await;
        assert_eq!(
            r.first().map(|s| s["metric"]["table"].clone()),
            Some(Value::from("main")),
            "{series} is not scraped with its table: {r:?}"
        );
    }

    // Healthy: nothing pending, nothing firing, over a few evaluations.
    let healthy_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < healthy_until {
        let alerts = prom.alerts(&http).await;
        assert!(alerts.is_empty(), "alerts on a healthy fleet: {alerts:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Tamper with the ledger: one credit out of nowhere. The audit alert fires, and clears when
    // the balance is put back.
    let tamper = |delta: i64| {
        let url = fleet.db.url.clone();
        async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query("UPDATE players SET balance = balance + $1 WHERE username = 'watcher'")
                .bind(delta)
                .execute(&mut c)
                .await
                .expect("tamper");
        }
    };
    tamper(1).await;
    wait::until(
        "CrashfleetAuditUnbalanced firing for table main",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let alerts = prom.alerts(&http).await;
            alerts
                .iter()
                .any(|(n, s, t)| n == "CrashfleetAuditUnbalanced" && s == "firing" && t == "main")
                .then_some(())
        },
        || prom.log_text(),
    )
    .await;
    let others: Vec<_> = prom
        .alerts(&http)
        .await
        .into_iter()
        .filter(|(n, _, _)| n != "CrashfleetAuditUnbalanced")
        .collect();
    assert!(others.is_empty(), "only the audit alert: {others:?}");
    tamper(-1).await;
    wait::until(
        "the audit alert clearing once the balance is restored",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async { prom.alerts(&http).await.is_empty().then_some(()) },
        || prom.log_text(),
    )
    .await;

    // Redis gone: the nodes live on (and are scraped) but nobody can lead. Once ten expected
    // round lengths pass with no round, the no-round alert's condition holds (pending, then
    // firing after its minute).
    fleet.redis.kill();
    let expected: f64 = prom
        .query(&http, "max(crashfleet_round_expected_seconds)")
        .await
        .first()
        .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()))
        .expect("the expected round length");
    let within = Duration::from_secs_f64(expected * 10.0 + 40.0);
    wait::until(
        "CrashfleetNoRounds pending or firing once the table stopped playing",
        within,
        Duration::from_millis(500),
        || async {
            let alerts = prom.alerts(&http).await;
            alerts
                .iter()
                .any(|(n, s, t)| {
                    n == "CrashfleetNoRounds" && (s == "pending" || s == "firing") && t == "main"
                })
                .then_some(())
        },
        || prom.log_text(),
    )
    .await;
    drop(prom);
    fleet.db.drop_now().await;
}
