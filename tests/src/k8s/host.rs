//! PostgreSQL and Redis on this machine, reached by the real node's pods the way pods reach a
//! managed database outside their cluster: through a Service without a selector whose
//! EndpointSlice names the server's address.
//!
//! Why on the host and not as pods: the servers are Debian's own binaries, already here for the
//! rest of the suite; pods of them would need images of their own and volumes, and would test
//! nothing of ours. The pods of the real node route only to the Service range (no default route,
//! so nothing leaves the node), and kube-proxy sends a Service's traffic to its endpoints. The one
//! host address the node reaches is the host end of its link, where the API server listens too:
//! the address the `kubernetes` Service's EndpointSlice names. The servers here listen on
//! loopback and on that address only.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::cluster::Cluster;
use super::error::Error;
use super::namespace::TestNamespace;

/// How long a freshly started server may take to accept connections.
const SERVER_START: Duration = Duration::from_secs(30);

/// The host end of the real node's link: the API server's advertised address, as the `kubernetes`
/// Service's EndpointSlice in `default` holds it.
pub async fn host_link_address(cluster: &Cluster) -> Result<Ipv4Addr, Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await?;
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| e.addresses.iter())
        .find_map(|a| a.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| Error::Setup("the kubernetes Service has no IPv4 endpoint".into()))
}

/// Creates Service `name` without a selector, listening on `service_port`, and an EndpointSlice
/// sending it to `address:port`; returns the Service's ClusterIP. What a platform team writes for
/// a database outside the cluster.
pub async fn expose_host_port(
    ns: &TestNamespace,
    name: &str,
    service_port: u16,
    address: Ipv4Addr,
    port: u16,
) -> Result<String, Error> {
    let svc: Service = object(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "tcp", "port": service_port, "targetPort": port, "protocol": "TCP"}]},
    }))?;
    let svc = ns
        .api::<Service>()
        .create(&PostParams::default(), &svc)
        .await?;
    let slice: EndpointSlice = object(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-host"),
            // Ties the slice to the Service for kube-proxy; the managed-by label keeps the
            // EndpointSlice mirroring controller's hands off it.
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "crashfleet-tests",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
    }))?;
    ns.api::<EndpointSlice>()
        .create(&PostParams::default(), &slice)
        .await?;
    svc.spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| Error::Setup(format!("Service {name} got no ClusterIP")))
}

/// A private PostgreSQL (tests/pg/pg.sh with a directory of its own) listening on loopback and on
/// `address`; stopped and removed on drop.
pub struct HostPostgres {
    /// `postgres://USER:PASS@127.0.0.1:PORT/DB` (rewrite the host for pods).
    pub url: String,
    pub port: u16,
    dir: PathBuf,
}

fn pg_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pg/pg.sh")
}

impl HostPostgres {
    pub fn start(dir: &Path, address: Ipv4Addr) -> Result<Self, Error> {
        let out = Command::new("bash")
            .arg(pg_script())
            .arg("start")
            .env("CRASHFLEET_PG_DIR", dir)
            .env("CRASHFLEET_PG_EXTRA_LISTEN", address.to_string())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::Setup(format!("cannot run {}: {e}", pg_script().display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let url = text
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("CRASHFLEET_TEST_DATABASE_URL="))
            .filter(|_| out.status.success())
            .ok_or_else(|| Error::Setup(format!("pg.sh start failed: {}", out.status)))?
            .to_owned();
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::Setup(format!("no port in {url}")))?;
        Ok(Self {
            url,
            port,
            dir: dir.to_path_buf(),
        })
    }

    /// The URL with `host:port` in place of loopback (a pod's view: the Service's ClusterIP).
    pub fn url_via(&self, host: &str, port: u16) -> String {
        self.url.replace(
            &format!("@127.0.0.1:{}/", self.port),
            &format!("@{host}:{port}/"),
        )
    }
}

impl Drop for HostPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(pg_script())
            .arg("stop")
            .env("CRASHFLEET_PG_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private `redis-server` on loopback and `address` (no persistence), with a password as a
/// managed Redis has (Redis refuses clients from other addresses without one); killed on drop.
pub struct HostRedis {
    pub port: u16,
    pub password: String,
    child: Child,
}

impl HostRedis {
    pub fn start(dir: &Path, address: Ipv4Addr) -> Result<Self, Error> {
        let port = free_port()?;
        let password = format!("{:032x}", rand::random::<u128>());
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg(address.to_string())
            .args(["--requirepass", &password])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot start redis-server: {e}")))?;
        let redis = Self {
            port,
            password,
            child,
        };
        let deadline = Instant::now() + SERVER_START;
        while std::net::TcpStream::connect((address, port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "redis-server did not listen on {address}:{port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl HostRedis {
    /// `redis://:PASSWORD@host:port`.
    pub fn url_via(&self, host: &str, port: u16) -> String {
        format!("redis://:{}@{host}:{port}", self.password)
    }
}

impl Drop for HostRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(v)
        .map_err(|e| Error::Setup(format!("a test object does not parse: {e}")))
}

fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Setup(format!("no free port on 127.0.0.1: {e}")))
}

/// A loopback TCP port whose every connection is forwarded to `target` (a Service's ClusterIP):
/// each connection is a new one to the Service, so kube-proxy picks an endpoint for each, as it
/// would for players. For tools that only target loopback (crashfleet-load); stopped on drop.
pub struct LoopbackRelay {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackRelay {
    pub async fn start(target: std::net::SocketAddr) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Setup(format!("relay: cannot listen on loopback: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Setup(format!("relay: {e}")))?
            .port();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(Ok(mut outbound)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::net::TcpStream::connect(target),
                    )
                    .await
                    else {
                        return; // dropping `inbound` tells the client the connection failed
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for LoopbackRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
