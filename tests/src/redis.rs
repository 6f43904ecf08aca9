//! Redis servers of a test's own, on free loopback ports, killed on drop: a plain one that a
//! fault test may kill and restart (no persistence, so a restart loses every key, as a Redis
//! failure does), and one that speaks only TLS and wants a password, as a table's Redis in
//! production should.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A private Redis on a free loopback port, killed on drop.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// A Redis that speaks only TLS and wants a password, as a table's Redis should be run: a CA and
/// a server certificate for `localhost` made with openssl in `dir`, the server on loopback.
pub struct TlsRedis {
    pub port: u16,
    /// The CA's certificate (PEM): clients trust it through `SSL_CERT_FILE`.
    pub ca: PathBuf,
    child: Child,
}

impl TlsRedis {
    pub const PASSWORD: &'static str = "tls-test-password-0123";

    pub fn start(dir: &Path) -> TlsRedis {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=crashfleet test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("san");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let port = free_port();
        let path = |f: &str| dir.join(f).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                Self::PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (TLS)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis {
            port,
            ca: dir.join("ca.pem"),
            child,
        }
    }

    /// `rediss://` with the password, as the operator's URL Secret would hold it.
    pub fn url(&self) -> String {
        format!("rediss://:{}@localhost:{}", Self::PASSWORD, self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRedis {
    pub fn start(dir: &Path) -> TestRedis {
        TestRedis::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> TestRedis {
        let mut r = TestRedis {
            port,
            child: None,
            dir: dir.to_path_buf(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill -9 and start again on the same port: every key is gone (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
