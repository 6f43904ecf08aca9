//! The generator's own HTTP/1.1 client for the money requests (bets and cash-outs): kept-alive
//! TCP connections per node, each request written in one `write` from a preformatted buffer and
//! each answer parsed in place (httparse). A general client (reqwest) cost the generator about as
//! much CPU per request as the node spent answering it (66–100 µs per bet, measured), so a run at
//! ten thousand bets a second measured the generator as much as the node; this path does the
//! least a request needs. Registration, the observer and scraping keep using reqwest.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer accepted (an error or a bet answer is a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;
/// Most header lines an answer may carry.
const MAX_HEADERS: usize = 32;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Transport,
}

/// A node's answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    idle_since: std::time::Instant,
}

/// A kept-alive connection idle longer than this is closed instead of reused: the node cuts a
/// connection that sends no request headers for its header-read timeout (10 s by default), and
/// a request written into a connection the node is closing would fail.
const MAX_IDLE: Duration = Duration::from_secs(4);

/// One node: its address, the `Host` header, the base path, and idle connections.
struct Node {
    addr: String,
    host: String,
    prefix: String,
    idle: Mutex<Vec<Conn>>,
}

/// Kept-alive connections to every target (index = the target's position in `--url`).
pub struct Rest {
    nodes: Vec<Node>,
    timeout: Duration,
}

impl Rest {
    /// `bases` are `http://host:port[/prefix]` URLs (checked by `args::targets`).
    pub fn new(bases: &[String], timeout: Duration) -> Result<Rest, String> {
        let nodes = bases
            .iter()
            .map(|b| {
                let rest = b
                    .strip_prefix("http://")
                    .ok_or_else(|| format!("{b}: not an http:// URL"))?;
                let (authority, prefix) = match rest.find('/') {
                    Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
                    None => (rest, ""),
                };
                let addr = if authority.starts_with("localhost") {
                    authority.replacen("localhost", "127.0.0.1", 1)
                } else {
                    authority.to_string()
                };
                addr.parse::<SocketAddr>()
                    .map_err(|e| format!("{b}: {e} (a loopback address and a port)"))?;
                Ok(Node {
                    addr,
                    host: authority.to_string(),
                    prefix: prefix.to_string(),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Rest { nodes, timeout })
    }

    /// `POST <prefix><path>` with a bearer token, an idempotency key and a JSON body (may be
    /// empty). A connection is reused when the answer allows it.
    pub async fn post(
        &self,
        target: usize,
        path: &str,
        token: &str,
        key: &str,
        body: &[u8],
    ) -> Result<Answer, Failure> {
        let node = &self.nodes[target % self.nodes.len()];
        let mut req = Vec::with_capacity(256 + token.len() + body.len());
        req.extend_from_slice(b"POST ");
        req.extend_from_slice(node.prefix.as_bytes());
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(node.host.as_bytes());
        req.extend_from_slice(b"\r\nAuthorization: Bearer ");
        req.extend_from_slice(token.as_bytes());
        req.extend_from_slice(b"\r\nIdempotency-Key: ");
        req.extend_from_slice(key.as_bytes());
        if !body.is_empty() {
            req.extend_from_slice(b"\r\nContent-Type: application/json");
        }
        req.extend_from_slice(b"\r\nContent-Length: ");
        req.extend_from_slice(body.len().to_string().as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        match tokio::time::timeout(self.timeout, self.exchange(node, &req)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn exchange(&self, node: &Node, req: &[u8]) -> Result<Answer, Failure> {
        let pooled = {
            let mut idle = node.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The most recently used first; any idle too long is dropped (closed).
            idle.retain(|c| c.idle_since.elapsed() < MAX_IDLE);
            idle.pop()
        };
        if let Some(mut conn) = pooled {
            match send(&mut conn, req).await {
                Ok((answer, keep)) => {
                    put_back(node, conn, keep);
                    return Ok(answer);
                }
                // The kept-alive connection ended before a byte of an answer: most often the node
                // had closed it as idle and never read the request. It goes again on a new
                // connection with the same idempotency key, so a request that did reach the game
                // gets its first outcome back, never a second bet or payout.
                Err(Unsent) => {}
                Err(Sent) => return Err(Failure::Transport),
            }
        }
        let mut conn = Conn {
            stream: connect(&node.addr).await?,
            buf: Vec::with_capacity(4096),
            idle_since: std::time::Instant::now(),
        };
        let (answer, keep) = send(&mut conn, req).await.map_err(|_| Failure::Transport)?;
        put_back(node, conn, keep);
        Ok(answer)
    }
}

fn put_back(node: &Node, mut conn: Conn, keep: bool) {
    if keep {
        conn.idle_since = std::time::Instant::now();
        node.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// How a request on a connection failed: before any byte of an answer came back (`Unsent`: the
/// connection was closed under it), or after.
enum Lost {
    Unsent,
    Sent,
}
use Lost::{Sent, Unsent};

async fn send(conn: &mut Conn, req: &[u8]) -> Result<(Answer, bool), Lost> {
    if conn.stream.write_all(req).await.is_err() {
        return Err(Unsent);
    }
    read_answer(conn)
        .await
        .map_err(|_| if conn.buf.is_empty() { Unsent } else { Sent })
}

async fn connect(addr: &str) -> Result<TcpStream, Failure> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Transport)?;
    s.set_nodelay(true).map_err(|_| Failure::Transport)?;
    Ok(s)
}

/// Reads one answer; `true` when the connection may carry the next request.
async fn read_answer(conn: &mut Conn) -> Result<(Answer, bool), Failure> {
    conn.buf.clear();
    loop {
        if conn.buf.len() >= MAX_ANSWER {
            return Err(Failure::Transport);
        }
        read_more(conn).await?;
        match parse(&conn.buf)? {
            Parsed::Partial => continue,
            Parsed::Head {
                status,
                head_len,
                body_len,
                keep,
            } => {
                let total = head_len + body_len;
                if total > MAX_ANSWER {
                    return Err(Failure::Transport);
                }
                while conn.buf.len() < total {
                    read_more(conn).await?;
                }
                // A server never sends before it is asked: bytes past this answer mean the
                // connection is out of step, and it is not reused.
                let keep = keep && conn.buf.len() == total;
                let body = conn.buf[head_len..total].to_vec();
                return Ok((Answer { status, body }, keep));
            }
        }
    }
}

/// Appends what the socket has to the connection's buffer; the end of the stream is a failure
/// (an answer is never cut short by design).
async fn read_more(conn: &mut Conn) -> Result<(), Failure> {
    let mut chunk = [0u8; 4096];
    let n = conn
        .stream
        .read(&mut chunk)
        .await
        .map_err(|_| Failure::Transport)?;
    if n == 0 {
        return Err(Failure::Transport);
    }
    conn.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

enum Parsed {
    Partial,
    Head {
        status: u16,
        head_len: usize,
        body_len: usize,
        keep: bool,
    },
}

/// The status line and headers of an answer: its status, where the body starts, how long it is
/// (`Content-Length`; the node never chunks its JSON answers) and whether the connection stays.
fn parse(buf: &[u8]) -> Result<Parsed, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf).map_err(|_| Failure::Transport)? {
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(n) => n,
    };
    let status = r.code.ok_or(Failure::Transport)?;
    let mut body_len = None;
    let mut keep = r.version == Some(1);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Not produced by the node for these requests; refuse rather than misread.
            return Err(Failure::Transport);
        }
    }
    Ok(Parsed::Head {
        status,
        head_len,
        body_len: body_len.ok_or(Failure::Transport)?,
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_head_and_body() {
        let a = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        match parse(a) {
            Ok(Parsed::Head {
                status,
                head_len,
                body_len,
                keep,
            }) => {
                assert_eq!((status, body_len, keep), (201, 11, true));
                assert_eq!(&a[head_len..], b"{\"ok\":true}");
            }
            _ => panic!("not parsed"),
        }
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(Parsed::Partial)
        ));
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(parse(close), Ok(Parsed::Head { keep: false, .. })));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse(chunked).is_err());
    }

    #[test]
    fn bases_name_address_host_and_prefix() {
        let r = Rest::new(
            &[
                "http://127.0.0.1:8080".into(),
                "http://localhost:9090/crash".into(),
            ],
            Duration::from_secs(1),
        )
        .expect("valid");
        assert_eq!(r.nodes[0].addr, "127.0.0.1:8080");
        assert_eq!(r.nodes[0].prefix, "");
        assert_eq!(r.nodes[1].addr, "127.0.0.1:9090");
        assert_eq!(r.nodes[1].host, "localhost:9090");
        assert_eq!(r.nodes[1].prefix, "/crash");
        assert!(Rest::new(&["https://127.0.0.1:1".into()], Duration::from_secs(1)).is_err());
    }
}
