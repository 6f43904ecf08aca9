//! The cluster's edge for tests: the Gateway API's CRDs and Traefik, a maintained controller that
//! implements them, in front of the real node's pods.
//!
//! - The Gateway API (standard channel, `GATEWAY_API_VERSION` in tests/k8s/versions.env) is
//!   installed by the harness, never by our chart: a platform team's cluster has its own. The
//!   CRDs come from the module's `config/crd/standard` through the Go module proxy.
//! - Traefik (`TRAEFIK_VERSION`, built by tests/k8s/traefik.sh) runs on this machine, outside the
//!   cluster, with the test cluster's kubeconfig, the way its Kubernetes providers run off-cluster:
//!   it reads Gateways and HTTPRoutes (and Ingresses) from the API, writes their status, and sends
//!   players to the pods' addresses from the EndpointSlices. It listens on loopback only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::Cluster;
use super::error::Error;
use super::namespace::TestNamespace;
use super::tools::{tool, version};

/// The controller name Traefik's Gateway provider answers for.
pub const TRAEFIK_CONTROLLER: &str = "traefik.io/gateway-controller";

/// The standard-channel CRDs of the pinned Gateway API release, from the Go module proxy (the
/// module cache keeps them after the first download).
pub fn gateway_api_crds() -> Result<PathBuf, Error> {
    let v = version("GATEWAY_API_VERSION")
        .ok_or_else(|| Error::Setup("no GATEWAY_API_VERSION in tests/k8s/versions.env".into()))?;
    let out = Command::new("go")
        .args([
            "mod",
            "download",
            "-json",
            &format!("sigs.k8s.io/gateway-api@{v}"),
        ])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|e| Error::Setup(format!("go mod download (is Go installed?): {e}")))?;
    let info: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Setup(format!(
            "go mod download sigs.k8s.io/gateway-api@{v}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    let dir = info["Dir"]
        .as_str()
        .map(|d| Path::new(d).join("config/crd/standard"))
        .filter(|d| d.is_dir())
        .ok_or_else(|| Error::Setup(format!("sigs.k8s.io/gateway-api@{v}: {info}")))?;
    Ok(dir)
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig_source())
        .output()
        .map_err(|e| Error::Setup(format!("kubectl: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs (or updates, server-side) the Gateway API's standard CRDs and waits until the API
/// server serves them.
pub fn install_gateway_api(cluster: &Cluster) -> Result<(), Error> {
    let dir = gateway_api_crds()?;
    let dir = dir.to_string_lossy();
    kubectl(
        cluster,
        &["apply", "--server-side", "--force-conflicts", "-f", &dir],
    )?;
    kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
        ],
    )?;
    Ok(())
}

/// Removes the Gateway API's CRDs (and so every Gateway and route): a cluster without it.
pub fn remove_gateway_api(cluster: &Cluster) -> Result<(), Error> {
    let dir = gateway_api_crds()?;
    let dir = dir.to_string_lossy();
    kubectl(
        cluster,
        &["delete", "--ignore-not-found", "--wait=true", "-f", &dir],
    )?;
    Ok(())
}

/// A GatewayClass for Traefik and the Gateway `edge`: the chart's example
/// (`charts/crashfleet-operator/examples/gateway.yaml`, the one the README's walkthrough applies),
/// with the test's class and its listener on `port` (the port of Traefik's entry point: Traefik
/// binds a listener to the entry point of its port).
pub fn traefik_gateway(class: &str, port: u16) -> Result<(Value, Value), Error> {
    let class_obj = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": class},
        "spec": {"controllerName": TRAEFIK_CONTROLLER},
    });
    let file = crate::repo_root().join("charts/crashfleet-operator/examples/gateway.yaml");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::Setup(format!("{}: {e}", file.display())))?;
    let mut gateway: Value = serde_yaml::from_str(&text)
        .map_err(|e| Error::Setup(format!("{}: {e}", file.display())))?;
    gateway["spec"]["gatewayClassName"] = json!(class);
    let listeners = gateway["spec"]["listeners"]
        .as_array_mut()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::Setup(format!("{}: no listeners", file.display())))?;
    for l in listeners {
        l["port"] = json!(port);
    }
    Ok((class_obj, gateway))
}

/// A Traefik process on loopback, reading the cluster's Gateway API (and Ingress) objects.
pub struct Traefik {
    child: Child,
    /// The players' entry point (`web`), on 127.0.0.1.
    pub port: u16,
    /// Traefik's own entry point (`/ping`).
    pub ping_port: u16,
    pub log: PathBuf,
}

/// The Traefik binary: built once by tests/k8s/traefik.sh into the cache.
pub fn traefik_binary() -> Result<PathBuf, Error> {
    let script = crate::repo_root().join("tests/k8s/traefik.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Setup(format!("{}: {e}", script.display())))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .filter(|p| out.status.success() && p.exists())
        .ok_or_else(|| Error::Setup("tests/k8s/traefik.sh built no Traefik".into()))?;
    Ok(path)
}

impl Traefik {
    /// Starts Traefik watching `namespaces` of `cluster`, with its log in `dir`; returns once
    /// `/ping` answers. `extra`: more static configuration flags (timeouts, providers).
    pub fn start(
        cluster: &Cluster,
        namespaces: &[&str],
        dir: &Path,
        extra: &[String],
    ) -> Result<Traefik, Error> {
        let bin = traefik_binary()?;
        let (port, ping_port) = (crate::free_port(), crate::free_port());
        let log = dir.join("traefik.log");
        let file = std::fs::File::create(&log).map_err(|e| Error::Setup(e.to_string()))?;
        let err = file.try_clone().map_err(|e| Error::Setup(e.to_string()))?;
        let ns = namespaces.join(",");
        let child = Command::new(bin)
            .args([
                "--global.checknewversion=false",
                "--global.sendanonymoususage=false",
                &format!("--entryPoints.web.address=127.0.0.1:{port}"),
                &format!("--entryPoints.traefik.address=127.0.0.1:{ping_port}"),
                "--ping=true",
                "--ping.entryPoint=traefik",
                "--providers.kubernetesgateway=true",
                &format!("--providers.kubernetesgateway.namespaces={ns}"),
                "--providers.kubernetesgateway.statusaddress.ip=127.0.0.1",
                "--providers.kubernetesingress=true",
                &format!("--providers.kubernetesingress.namespaces={ns}"),
                "--log.level=INFO",
                "--log.nocolor=true",
                "--accesslog=true",
            ])
            .args(extra)
            .env("KUBECONFIG", cluster.kubeconfig_source())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Setup(format!("starting Traefik: {e}")))?;
        let mut t = Traefik {
            child,
            port,
            ping_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = t.child.try_wait() {
                return Err(Error::Setup(format!(
                    "Traefik exited ({status}):\n{}",
                    t.log_text()
                )));
            }
            let ping = std::net::TcpStream::connect(("127.0.0.1", ping_port)).and_then(|mut s| {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /ping HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut b = String::new();
                s.read_to_string(&mut b)?;
                Ok(b)
            });
            if ping.is_ok_and(|b| b.starts_with("HTTP/1.0 200")) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "Traefik's /ping did not answer within 30 s:\n{}",
                    t.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies the GatewayClass (cluster-scoped, named after the namespace so tests never share one)
/// and the Gateway `edge` for `traefik` in `ns`.
pub async fn apply_traefik_gateway(
    ns: &TestNamespace,
    cluster: &Cluster,
    traefik: &Traefik,
) -> Result<String, Error> {
    let class = format!("traefik-{}", ns.name());
    let (class_obj, gateway) = traefik_gateway(&class, traefik.port)?;
    let pp = kube::api::PatchParams::apply("crashfleet-tests").force();
    let ar = |kind: &str, plural: &str| kube::core::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let classes: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(cluster.client(), &ar("GatewayClass", "gatewayclasses"));
    classes
        .patch(&class, &pp, &kube::api::Patch::Apply(&class_obj))
        .await?;
    let gateways: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(cluster.client(), ns.name(), &ar("Gateway", "gateways"));
    gateways
        .patch("edge", &pp, &kube::api::Patch::Apply(&gateway))
        .await?;
    Ok(class)
}
