//! The client address behind a real reverse proxy: nginx (Debian's package, started here on
//! loopback) in front of a node with `--trusted-proxies 127.0.0.1/32`. Clients bind distinct
//! loopback source addresses (127.0.0.2, 127.0.0.3, …) so nginx — and a node they reach directly —
//! sees distinct peers. Two clients behind the proxy get separate rate-limit buckets; a forged
//! `X-Forwarded-For`, sent through the proxy or straight to the node from an untrusted peer,
//! changes nothing; WebSocket upgrades pass through.

use crate::common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// The per-IP limit the node runs with here: a burst of 10, then one request per 200 ms. Small, so
/// a client exhausts its bucket in a few requests; each test sends far fewer than 5/s otherwise.
const RATE: &str = "5";
/// Requests a client fires back to back to exhaust its bucket (twice the burst).
const FLOOD: usize = 20;

fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: nginx is missing and CI=true (tests/install-deps.sh installs it)");
    }
    eprintln!("{test}: skipped, no nginx (apt-get install nginx)");
    None
}

/// nginx on 127.0.0.1:<free port> proxying to `upstream`, configured as ingress-nginx is for the
/// table: `X-Forwarded-For` appended with the peer's address, WebSocket upgrades passed on.
/// Stopped (killed by pid) when dropped.
struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &std::path::Path, upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = std::fs::read_to_string(n._dir.path().join("error.log"));
                panic!("nginx exited at start ({status}): {log:?}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nginx did not listen on port {port}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client whose connections leave from `source` (a loopback address).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// Statuses of `n` back-to-back `GET /api/v1/fairness`, each with `forged` as its
/// `X-Forwarded-For` when given (a function of the request's index, so it can change each time).
async fn burst(
    c: &reqwest::Client,
    base: &str,
    n: usize,
    forged: Option<&dyn Fn(usize) -> String>,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = c.get(format!("{base}/api/v1/fairness"));
        if let Some(f) = forged {
            r = r.header("x-forwarded-for", f(i));
        }
        let resp = r.send().await.expect("GET");
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!(retry >= 1, "Retry-After {retry}");
        }
        out.push(resp.status().as_u16());
    }
    out
}

fn limited(statuses: &[u16]) -> bool {
    statuses.contains(&429)
}

async fn node() -> TestServer {
    TestServer::start(&["--rate-limit-ip", RATE, "--trusted-proxies", "127.0.0.1/32"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_the_proxy_get_their_own_buckets() {
    let Some(bin) = nginx_or_skip("clients_behind_the_proxy_get_their_own_buckets") else {
        return;
    };
    let s = node().await;
    let nginx = Nginx::start(&bin, s.url.trim_start_matches("http://"));
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));

    // A exhausts its bucket through the proxy …
    let first = burst(&a, &nginx.url, FLOOD, None).await;
    assert!(limited(&first), "A is limited: {first:?}");
    assert_eq!(first[0], 200, "{first:?}");
    // … and B, behind the same proxy (same TCP peer for the node), is not limited by it.
    let other = burst(&b, &nginx.url, 5, None).await;
    assert_eq!(other, [200; 5], "B has its own bucket");

    // A client forging X-Forwarded-For through the proxy: nginx appends the real peer, the node
    // takes the rightmost untrusted hop — A's address, whose bucket is still empty.
    let forged = |i: usize| format!("198.51.100.{i}");
    let again = burst(&a, &nginx.url, 5, Some(&forged)).await;
    assert!(
        limited(&again),
        "a forged header does not refill A: {again:?}"
    );
    // B forging A's address changes nothing for B either.
    let as_a = |_: usize| "127.0.0.2".to_string();
    let b_again = burst(&b, &nginx.url, 3, Some(&as_a)).await;
    assert_eq!(b_again, [200; 3], "B is keyed on its own address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_header_from_an_untrusted_peer_changes_nothing() {
    // No proxy needed: clients reach the node directly from untrusted addresses.
    let s = node().await;
    let (attacker, victim) = (client_from("127.0.0.4"), client_from("127.0.0.5"));
    // A fresh forged address on every request would be a fresh bucket if the header were read.
    let rotating = |i: usize| format!("203.0.113.{i}");
    let statuses = burst(&attacker, &s.url, FLOOD, Some(&rotating)).await;
    assert!(
        limited(&statuses),
        "rotating X-Forwarded-For does not escape: {statuses:?}"
    );
    // Forging the victim's address spends the attacker's own bucket, not the victim's.
    let as_victim = |_: usize| "127.0.0.5".to_string();
    let spent = burst(&attacker, &s.url, 3, Some(&as_victim)).await;
    assert!(limited(&spent), "{spent:?}");
    let fine = burst(&victim, &s.url, 5, None).await;
    assert_eq!(fine, [200; 5], "the victim's bucket is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_the_proxy() {
    let Some(bin) = nginx_or_skip("websocket_upgrades_pass_through_the_proxy") else {
        return;
    };
    let s = node().await;
    let nginx = Nginx::start(&bin, s.url.trim_start_matches("http://"));
    let url = format!("{}/ws", nginx.url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade passes nginx");
    let first = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = m {
            break serde_json::from_str::<serde_json::Value>(&t).expect("JSON");
        }
    };
    assert_eq!(first["type"], "snapshot");
    // Live frames keep arriving through the proxy (the table's rounds tick every ~100 ms).
    let more = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a second frame in time");
    assert!(more.is_some_and(|m| m.is_ok()), "the socket stays open");
}

#[test]
fn trusted_proxies_are_parsed_strictly() {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: game_node::config::ServeConfig,
    }
    let parse = |v: &str| Args::try_parse_from(["game-node", "--trusted-proxies", v]);
    let ok = parse("10.0.0.0/8, 172.16.0.0/12,fd00::/8,127.0.0.1").expect("valid list");
    let list: Vec<String> = ok
        .serve
        .trusted_proxies
        .0
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        list,
        ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8", "127.0.0.1/32"]
    );
    for bad in ["10.1.0.0/8", "10.0.0.0/40", "ingress", "10.0.0.0/8,,x"] {
        assert!(parse(bad).is_err(), "{bad:?} must be refused");
    }
    let none = Args::try_parse_from(["game-node"]).expect("defaults");
    assert!(
        none.serve.trusted_proxies.0.is_empty(),
        "no proxy is trusted by default"
    );
    // An empty value (an unset list in a manifest) is no proxy, not an error.
    let empty = parse("").expect("empty list");
    assert!(empty.serve.trusted_proxies.0.is_empty());
}
