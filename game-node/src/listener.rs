//! The HTTP accept loop: admits each TCP connection under a per-client and a node-wide cap
//! (limits.rs), serves it with hyper's HTTP/1 server and a header-read timeout (so a client that
//! trickles its request line cannot hold a descriptor), backs off when accepting fails, and on
//! shutdown stops accepting and drains the connections in flight. `axum::serve` exposes none of
//! these, so the node runs its own loop; the Router it serves is unchanged, and handlers still see
//! `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::error::{ApiError, Error};
use crate::limits::{self, Admission, Gate, Refused};

/// How one listener admits and times its connections.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Longest a client may take to send a request's line and headers (also how long an idle
    /// keep-alive connection waits for its next request).
    pub header_read_timeout: Duration,
    /// Open connections per client address, and in total.
    pub gate: Gate,
    /// Peers exempt from the per-address cap: the trusted reverse proxies (`--trusted-proxies`),
    /// whose one address carries every player behind them. The node-wide cap still applies, and
    /// their WebSocket players are capped per forwarded client address.
    pub proxies: Arc<crate::client_ip::TrustedProxies>,
}

/// Carried in every request's extensions: the connection's admission. A WebSocket handler keeps
/// a clone for as long as the socket lives, so an upgraded connection still counts against its
/// client's cap and the node's total after hyper hands it over.
#[derive(Clone, Debug)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Admission>);

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, asks every
/// connection to finish its request in flight and close, and returns when all have.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let mut backoff = limits::ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = limits::ACCEPT_BACKOFF_MIN;
                a
            }
            // The peer gave up between its SYN and our accept: nothing is wrong with us.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: accepting again at once fails
                // again. Pause, doubling up to the maximum, so closing sockets can free some.
                metrics::counter!("crashfleet_accept_errors_total").increment(1);
                warn!("accept error: {e}; pausing {} ms", backoff.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(limits::ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let per_client = !limits.proxies.trusts(peer.ip().to_canonical());
        let admission = match limits.gate.admit(limits::client_key(peer), per_client) {
            Ok(a) => a,
            Err(why) => {
                refuse(tcp, why);
                continue;
            }
        };
        // TCP_NODELAY: a response or frame written in pieces must not wait for the peer's
        // delayed ACK (Nagle). Without it a bet took ~7 ms on loopback where the work is ~1 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!("TCP_NODELAY: {e}");
        }
        if let Err(e) =
            socket2::SockRef::from(&tcp).set_send_buffer_size(limits::SOCKET_SEND_BUFFER)
        {
            debug!("SO_SNDBUF: {e}");
        }
        connections.spawn(connection(
            tcp,
            peer,
            ConnectionSlot(Arc::new(admission)),
            app.clone(),
            limits.header_read_timeout,
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Over a cap: the connection is accepted and closed at once with a canned `503 busy` (written
/// without waiting; a client that does not read simply sees the close). Accepting costs one
/// descriptor for a moment, which the reserve holds; leaving the connection in the kernel's
/// backlog instead would make the client wait for a timeout and let SYNs pile up, while an
/// immediate answer lets a browser or a load balancer retry elsewhere.
fn refuse(tcp: TcpStream, why: Refused) {
    let (reason, message) = match why {
        Refused::Full => ("full", "this node is full; retry in 1 s or try another"),
        Refused::PerClient => (
            "per_client",
            "too many connections from your address; retry in 1 s",
        ),
    };
    metrics::counter!("crashfleet_connections_refused_total", "reason" => reason).increment(1);
    let body = serde_json::json!({"code": "busy", "message": message}).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Discard what the client already sent: closing a socket with unread data resets it, and a
    // reset can make the client drop our answer unread. (Bounded: at most 8 KiB, no waiting.)
    let mut sink = [0u8; 2048];
    for _ in 0..4 {
        if !matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = tcp.try_write(response.as_bytes());
    // Dropped here: closed.
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(slot.clone());
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req).await.into_response()) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, "connection: {e}");
            }
        }
        _ = shutdown.cancelled() => {
            // Finish the request in flight (bounded by the request timeout), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The request-timeout middleware's setting: how long a REST request (body included) may take.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

/// Answers a request that takes longer than its limit, and drops its work. A read moved nothing,
/// so it gets `busy`; any other request may have been cut after it moved money, so it gets
/// `outcome_unknown` (a retry with the same idempotency key returns the real first outcome).
/// A WebSocket upgrade answers at once and its socket then lives in its own task, so this never
/// cuts a WebSocket.
pub async fn request_timeout(
    State(limit): State<RequestTimeout>,
    req: Request,
    next: Next,
) -> Response {
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match tokio::time::timeout(limit.0, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!("crashfleet_request_timeouts_total").increment(1);
            if reads_only {
                ApiError(Error::Busy {
                    what: "this node",
                    retry_after_secs: 1,
                })
                .into_response()
            } else {
                ApiError(Error::OutcomeUnknown).into_response()
            }
        }
    }
}
