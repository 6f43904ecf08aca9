//! A TCP fault proxy on loopback, between a node and its Redis or PostgreSQL: a test cuts the
//! link, slows it, or lets a request through and loses its reply.

use std::time::Duration;

/// A TCP fault proxy on loopback: a test can cut a node's link (every connection dropped, new ones
/// refused) or slow it (each chunk forwarded after a delay, both ways), then restore it.
pub struct Proxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<LinkMode>,
    /// Set when a lose-replies pattern has struck: it strikes once per `lose_reply_after`.
    struck: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct LinkMode {
    cut: bool,
    delay_ms: u64,
    /// Once a request on a connection contains these bytes, that connection's replies are lost
    /// (the request itself is delivered), and the connection is closed a moment later.
    lose_replies_after: Option<Vec<u8>>,
}

/// How long a connection whose replies are being lost stays open: past the node's Redis command
/// timeout (1.5 s), so the node sees a request that was sent and never answered.
const LOST_REPLY_CLOSE: Duration = Duration::from_millis(2_500);

/// Forwards one direction, honouring the current delay; ends when either side closes. `upstream`
/// pumps watch for the lose-replies pattern and raise `losing`; downstream pumps then discard.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: tokio::sync::watch::Receiver<LinkMode>,
    upstream: bool,
    losing: std::sync::Arc<tokio::sync::Notify>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    struck: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (delay, pattern) = {
            let m = mode.borrow();
            (m.delay_ms, m.lose_replies_after.clone())
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if upstream
            && let Some(p) = pattern
            && !p.is_empty()
            && buf[..n].windows(p.len()).any(|w| w == p.as_slice())
            && struck
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            lost.store(true, Ordering::SeqCst);
            losing.notify_one();
        }
        if !upstream && lost.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, rx) = tokio::sync::watch::channel(LinkMode::default());
        let struck = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let struck_all = struck.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if rx.borrow().cut {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                let struck = struck_all.clone();
                tokio::spawn(async move {
                    let Ok(outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    let losing = std::sync::Arc::new(tokio::sync::Notify::new());
                    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let closing = {
                        let losing = losing.clone();
                        async move {
                            losing.notified().await;
                            tokio::time::sleep(LOST_REPLY_CLOSE).await;
                        }
                    };
                    tokio::select! {
                        () = pump(ir, ow, rx.clone(), true, losing.clone(), lost.clone(), struck.clone()) => {}
                        () = pump(or, iw, rx.clone(), false, losing.clone(), lost.clone(), struck) => {}
                        () = closing => {}
                        _ = rx.wait_for(|m| m.cut) => {}
                    }
                });
            }
        });
        Proxy { port, mode, struck }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_modify(|m| m.cut = true);
    }

    /// Delays every chunk by `ms` in both directions (0: full speed).
    pub fn slow(&self, ms: u64) {
        self.mode.send_modify(|m| m.delay_ms = ms);
    }

    /// The next request (on any connection) that contains `pattern` is delivered, but its reply
    /// and everything after it on that connection are lost, and the connection is closed after
    /// `LOST_REPLY_CLOSE`: what a node sees when Redis decided and the answer never came back.
    /// Other and new connections are unaffected.
    pub fn lose_reply_after(&self, pattern: &str) {
        self.struck
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.mode
            .send_modify(|m| m.lose_replies_after = Some(pattern.as_bytes().to_vec()));
    }

    /// Back to a clean link.
    pub fn restore(&self) {
        self.mode.send_replace(LinkMode::default());
    }
}
