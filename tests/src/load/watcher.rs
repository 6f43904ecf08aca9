//! Watch-only sockets read by one thread per generator core over raw WebSocket frames, instead of
//! a tokio task running tungstenite per socket.
//!
//! Why: once the node sent each tick for ~5 µs, the generator spent more than that receiving it
//! (6–8 µs per message at 5,000–10,000 sockets: a task wake-up per socket per message, the select
//! over the socket's other duties, tungstenite's buffers), so the measured fan-out spread was the
//! generator's own queue. A socket that only watches (bets go over REST) needs none of that: the
//! thread waits on epoll for every socket at once, reads what is ready into one scratch buffer and
//! parses the server's frames in place (a server's frames are unmasked). It writes only the
//! player's `ping`s, the pongs the node's pings ask for and the close; client frames are masked as
//! RFC 6455 requires.
//!
//! What it does not do: TLS (`wss://` targets use the task per socket) and fragmented messages (the
//! node never fragments; one is treated as a broken socket).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::conn::{Resume, Seen, observe};

/// A socket handed to the watcher after its handshake.
pub(crate) struct Watched {
    pub stream: std::net::TcpStream,
    /// Bytes read behind the handshake's answer: the start of the first frames.
    pub early: Vec<u8>,
    pub index: usize,
    pub resume: Resume,
    /// When the socket ends: true when the run ended it, false when the node dropped it; and
    /// the player's continuity for the next socket.
    pub done: oneshot::Sender<(bool, Resume)>,
}

/// The watcher threads (one per generator core) and how to reach them.
pub(crate) struct Watcher {
    lanes: Vec<(std_mpsc::Sender<Watched>, Arc<Waker>)>,
    /// Set when the watcher is dropped (a run that ended early): the threads end too.
    stop: Arc<AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, waker) in &self.lanes {
            let _ = waker.wake();
        }
    }
}

impl Watcher {
    pub fn start(
        shared: Arc<Shared>,
        ping_interval: Duration,
        cancel: CancellationToken,
    ) -> Watcher {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let lanes = (0..threads)
            .map(|n| {
                let poll = Poll::new().expect("epoll instance");
                let waker = Arc::new(Waker::new(poll.registry(), WAKE).expect("epoll waker"));
                let (tx, rx) = std_mpsc::channel();
                let (shared, cancel, stop) = (shared.clone(), cancel.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("watch-{n}"))
                    .spawn(move || run(poll, rx, shared, ping_interval, cancel, stop))
                    .expect("watcher thread");
                (tx, waker)
            })
            .collect();
        Watcher { lanes, stop }
    }

    /// Hands a socket over; false when the watcher has stopped.
    pub fn add(&self, w: Watched) -> bool {
        let (tx, waker) = &self.lanes[w.index % self.lanes.len()];
        tx.send(w).is_ok() && waker.wake().is_ok()
    }
}

const WAKE: Token = Token(usize::MAX);
/// Bytes read per `read` call; one buffer for the whole thread.
const SCRATCH: usize = 64 * 1024;
/// A frame larger than this (a snapshot is a few KiB) means the stream is broken.
const MAX_FRAME: usize = 4 * 1024 * 1024;

struct Sock {
    stream: TcpStream,
    /// An incomplete frame left over from the last read.
    partial: Vec<u8>,
    index: usize,
    seen: Seen,
    resume: Resume,
    done: oneshot::Sender<(bool, Resume)>,
    next_ping: Instant,
    nonce: u64,
}

fn run(
    mut poll: Poll,
    rx: std_mpsc::Receiver<Watched>,
    shared: Arc<Shared>,
    ping_interval: Duration,
    cancel: CancellationToken,
    stop: Arc<AtomicBool>,
) {
    let mut events = Events::with_capacity(1024);
    let mut socks: HashMap<usize, Sock> = HashMap::new();
    let mut next_token = 0usize;
    let mut scratch = vec![0u8; SCRATCH];
    let pinging = !ping_interval.is_zero();
    let mut last_ping_sweep = Instant::now();
    loop {
        if cancel.is_cancelled() || stop.load(Ordering::Relaxed) {
            for (_, mut s) in socks.drain() {
                let _ = s.stream.write_all(&client_frame(0x8, &[0x03, 0xE8]));
                let _ = s.done.send((true, s.resume));
            }
            return;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            eprintln!("crashfleet-load: watcher poll: {e}");
            return;
        }
        for event in &events {
            let token = event.token();
            if token == WAKE {
                continue;
            }
            let Some(s) = socks.get_mut(&token.0) else {
                continue;
            };
            if !read_ready(s, &shared, &mut scratch) {
                let mut s = socks.remove(&token.0).expect("present");
                let _ = poll.registry().deregister(&mut s.stream);
                let _ = s.done.send((false, s.resume));
            }
        }
        while let Ok(w) = rx.try_recv() {
            if w.stream.set_nonblocking(true).is_err() {
                let _ = w.done.send((false, w.resume));
                continue;
            }
            let token = next_token;
            next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
            // Spread the pings of thousands of sockets over the interval.
            let offset = Duration::from_millis(
                (w.index as u64 * 7919) % ping_interval.as_millis().max(1) as u64,
            );
            let mut s = Sock {
                stream: TcpStream::from_std(w.stream),
                partial: w.early,
                index: w.index,
                seen: Seen::default(),
                resume: w.resume,
                done: w.done,
                next_ping: Instant::now() + offset,
                nonce: 0,
            };
            if poll
                .registry()
                .register(&mut s.stream, Token(token), Interest::READABLE)
                .is_err()
            {
                let _ = s.done.send((false, s.resume));
                continue;
            }
            // Frames that arrived with the handshake's answer.
            let early = std::mem::take(&mut s.partial);
            if !consume(&mut s, &shared, &early) {
                let _ = poll.registry().deregister(&mut s.stream);
                let _ = s.done.send((false, s.resume));
                continue;
            }
            socks.insert(token, s);
        }
        if pinging && last_ping_sweep.elapsed() >= Duration::from_millis(50) {
            let now = Instant::now();
            last_ping_sweep = now;
            for s in socks.values_mut() {
                if now >= s.next_ping {
                    s.next_ping = now + ping_interval;
                    s.nonce += 1;
                    let text = format!(r#"{{"type":"ping","nonce":{}}}"#, s.nonce);
                    s.seen.pings.insert(s.nonce, now);
                    // Best effort: a ping the kernel cannot take now is not sent.
                    let _ = s.stream.write(&client_frame(0x1, text.as_bytes()));
                }
            }
        }
    }
}

/// Reads everything ready on the socket; false when it ended (closed, reset or broken).
fn read_ready(s: &mut Sock, shared: &Shared, scratch: &mut [u8]) -> bool {
    loop {
        match s.stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => {
                let ok = if s.partial.is_empty() {
                    consume(s, shared, &scratch[..n])
                } else {
                    let mut joined = std::mem::take(&mut s.partial);
                    joined.extend_from_slice(&scratch[..n]);
                    consume(s, shared, &joined)
                };
                if !ok {
                    return false;
                }
                // A read that did not fill the buffer took all the kernel had: the next byte to
                // arrive raises a new edge, so no second `read` just to hear `WouldBlock` (one
                // syscall per message instead of two).
                if n < scratch.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Parses the whole frames in `buf` and keeps an incomplete tail in `s.partial`; false when the
/// stream is broken or the node closed it.
fn consume(s: &mut Sock, shared: &Shared, mut buf: &[u8]) -> bool {
    loop {
        match parse_frame(buf) {
            Parsed::Incomplete => {
                s.partial.extend_from_slice(buf);
                return true;
            }
            Parsed::Broken => return false,
            Parsed::Frame {
                fin,
                opcode,
                payload,
                rest,
            } => {
                if !fin {
                    return false;
                }
                match opcode {
                    0x1 => {
                        shared.messages.fetch_add(1, Ordering::Relaxed);
                        let Ok(text) = std::str::from_utf8(payload) else {
                            return false;
                        };
                        let kind = text
                            .strip_prefix("{\"type\":\"")
                            .and_then(|rest| rest.split('"').next());
                        if let Some(k) = kind {
                            observe(shared, s.index, k, text, &mut s.seen, &mut s.resume);
                        }
                    }
                    0x8 => return false,
                    // The node's ping: answer it (a pong echoes the ping's payload).
                    0x9 => {
                        let _ = s.stream.write(&client_frame(0xA, payload));
                    }
                    _ => {}
                }
                buf = rest;
            }
        }
    }
}

enum Parsed<'a> {
    Incomplete,
    Broken,
    Frame {
        fin: bool,
        opcode: u8,
        payload: &'a [u8],
        rest: &'a [u8],
    },
}

/// One server frame at the start of `buf` (RFC 6455 §5.2; a server's frames are never masked).
fn parse_frame(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < 2 {
        return Parsed::Incomplete;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
    if buf[1] & 0x80 != 0 {
        return Parsed::Broken;
    }
    let (len, header) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            match usize::try_from(u64::from_be_bytes(b)) {
                Ok(n) => (n, 10),
                Err(_) => return Parsed::Broken,
            }
        }
        126 | 127 => return Parsed::Incomplete,
        n => (n as usize, 2),
    };
    if len > MAX_FRAME {
        return Parsed::Broken;
    }
    if buf.len() < header + len {
        return Parsed::Incomplete;
    }
    Parsed::Frame {
        fin,
        opcode,
        payload: &buf[header..header + len],
        rest: &buf[header + len..],
    }
}

/// A masked client frame (FIN set). The mask only has to be present; a fixed key is enough for a
/// load generator talking to its own node.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&KEY);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    f
}

/// Opens a watch-only socket: TCP, the opening handshake by hand (so the bytes that follow the
/// answer are kept), then the raw stream for the watcher.
pub(crate) async fn connect(url: &str) -> anyhow::Result<(std::net::TcpStream, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("the watcher speaks ws:// only: {url}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        path = path.trim_start_matches('/'),
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut got = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the node closed the connection during the handshake");
        got.extend_from_slice(&chunk[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(got.len() < 16 * 1024, "handshake answer too long");
    };
    let head = std::str::from_utf8(&got[..end]).unwrap_or("");
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 101"),
        "handshake refused: {}",
        head.lines().next().unwrap_or("")
    );
    // The accept key for the fixed request key (RFC 6455 §1.3's own example).
    anyhow::ensure!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "handshake answer without the right Sec-WebSocket-Accept"
    );
    let early = got[end..].to_vec();
    Ok((tcp.into_std()?, early))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_whole_split_and_broken() {
        let mut two = vec![0x81, 2, b'h', b'i'];
        two.extend_from_slice(&[0x81, 126, 0, 3, b'a', b'b', b'c']);
        let Parsed::Frame {
            fin,
            opcode,
            payload,
            rest,
        } = parse_frame(&two)
        else {
            panic!("a whole frame")
        };
        assert!(fin);
        assert_eq!((opcode, payload), (1, &b"hi"[..]));
        let Parsed::Frame { payload, rest, .. } = parse_frame(rest) else {
            panic!("the 16-bit length form")
        };
        assert_eq!(payload, b"abc");
        assert!(rest.is_empty());
        assert!(matches!(parse_frame(&two[..3]), Parsed::Incomplete));
        assert!(matches!(parse_frame(&[0x81, 126, 0]), Parsed::Incomplete));
        assert!(matches!(parse_frame(&[0x81, 0x82, 0, 0]), Parsed::Broken));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        let f = client_frame(0x1, b"ping!");
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 5);
        let key = &f[2..6];
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, b"ping!");
    }
}
