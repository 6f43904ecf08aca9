//! The table's public events to every socket of this node: one writer task per runtime worker
//! walks its share of the sockets and hands each the same encoded bytes — no task wake-up per
//! socket per event.
//!
//! Why: a tick goes to every player ten times a second. With a task per socket, a delivered tick
//! cost the node ~10 µs of CPU on loopback, and a profile of 5,000 sockets on one core put 43 % of
//! it in user space, nearly all wake-up machinery: the broadcast waking each receiver, the
//! scheduler's queue, the socket task's select re-polling its five sources, tungstenite framing
//! the event into the socket's buffer. Frames from a server are not masked (RFC 6455 §5.1), so an
//! encoded frame — header and payload — is byte for byte the same for every socket: a writer
//! frames each event once and gives each socket one `send` of it.
//!
//! Every socket has an [`Outbox`]: its TCP write half and, when the kernel's send buffer is full,
//! the bytes it could not take yet (its backlog). Everything written to a socket passes through
//! its outbox under one lock — the writer's events and the socket task's own frames (snapshot,
//! replies, private events, pings, close), which tungstenite frames and hands over whole — so two
//! frames never interleave. The writer never waits for a socket: what the kernel refuses goes to
//! the backlog and the socket's own task drains it, bounded by the write timeout; a backlog past
//! [`MAX_BACKLOG`] fails the socket at once (a reader that stopped reading).
//!
//! A new socket's outbox starts *held*: events queue behind it until its snapshot is written, so
//! the snapshot comes first and no event between the two is lost (a few may repeat, which the
//! page's sequence numbers absorb). A resync (the bus missed events) holds it again while the
//! fresh snapshot is built.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::ports::{Bus, PublicEvent};

/// Bytes a socket may have accepted but not yet handed to the kernel. A tick is ~100 bytes, so
/// this is minutes of ticks; a socket this far behind has stopped reading, and holding more only
/// spends the node's memory on it.
pub const MAX_BACKLOG: usize = 256 * 1024;
/// Most events a writer takes from the bus before it walks its sockets: a burst (a crash, its
/// settlement and the next round's opening) goes out in one `send` per socket.
const BATCH_MAX: usize = 64;

/// Why a socket's outbox gave up (the `socket closed` line's `why`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The backlog passed [`MAX_BACKLOG`].
    TooSlow,
    /// The kernel refused a write (the peer reset the connection).
    WriteFailed,
    /// The bus closed: the node is stopping.
    BusClosed,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            // Counted with the write timeouts: both are a client that stopped reading.
            Failure::TooSlow => "write_timeout",
            Failure::WriteFailed => "write_failed",
            Failure::BusClosed => "bus_closed",
        }
    }
}

#[derive(Default)]
struct OutState {
    /// Accepted bytes the kernel has not taken yet, in order.
    backlog: BytesMut,
    /// `Some` while the socket's snapshot is being written: public events wait here.
    held: Option<BytesMut>,
    /// The socket missed events (the bus had a gap): its task sends a fresh snapshot.
    resync: bool,
    failed: Option<Failure>,
}

/// One socket's write side, shared by its task and its shard's writer.
pub struct Outbox {
    tcp: OwnedWriteHalf,
    /// Its socket left (its subscription was dropped): the writer forgets it.
    left: AtomicBool,
    state: Mutex<OutState>,
    /// Wakes the socket's task: a backlog to drain, a resync to send, or a failure. A permit is
    /// stored when the task is busy, so no wake-up is lost.
    pub wake: Notify,
}

impl Outbox {
    fn new(tcp: OwnedWriteHalf) -> Outbox {
        Outbox {
            tcp,
            left: AtomicBool::new(false),
            state: Mutex::new(OutState {
                held: Some(BytesMut::new()),
                ..OutState::default()
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        // Every update leaves the state whole: keep serving after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, st: &mut OutState, why: Failure) {
        if st.failed.is_none() {
            st.failed = Some(why);
            st.backlog = BytesMut::new();
            st.held = None;
            self.wake.notify_one();
        }
    }

    /// Writes `buf` now as far as the kernel takes it; the rest joins the backlog. The caller
    /// holds the lock, so nothing else is written in between.
    fn write_locked(&self, st: &mut OutState, mut buf: &[u8]) {
        if st.failed.is_some() || buf.is_empty() {
            return;
        }
        if st.backlog.is_empty() {
            while !buf.is_empty() {
                match self.tcp.try_write(buf) {
                    Ok(n) => buf = &buf[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.fail(st, Failure::WriteFailed),
                }
            }
            if buf.is_empty() {
                return;
            }
            // The kernel's buffer is full: the socket's task drains the rest when it can.
            self.wake.notify_one();
        }
        if st.backlog.len() + buf.len() > MAX_BACKLOG {
            return self.fail(st, Failure::TooSlow);
        }
        st.backlog.extend_from_slice(buf);
    }

    /// A shard writer's events: written now, or queued behind a snapshot being written.
    fn publish(&self, frames: &[u8]) {
        let mut st = self.lock();
        if st.failed.is_some() || st.resync {
            // A resync's snapshot is coming and covers these.
            return;
        }
        if let Some(held) = st.held.as_mut() {
            if held.len() + frames.len() > MAX_BACKLOG {
                // The snapshot is taking long: start over with a fresh one after it.
                st.held = None;
                st.resync = true;
                self.wake.notify_one();
            } else {
                held.extend_from_slice(frames);
            }
            return;
        }
        self.write_locked(&mut st, frames);
    }

    fn request_resync(&self) {
        let mut st = self.lock();
        if st.failed.is_none() && !st.resync {
            st.resync = true;
            self.wake.notify_one();
        }
    }

    /// The socket's task: true when a resync is due. Holds the outbox (public events queue) until
    /// [`Outbox::release`], so the fresh snapshot goes out before them.
    pub fn take_resync(&self) -> bool {
        let mut st = self.lock();
        if !st.resync || st.failed.is_some() {
            return false;
        }
        st.resync = false;
        st.held = Some(BytesMut::new());
        true
    }

    /// The snapshot is written: the public events that queued meanwhile follow it.
    pub fn release(&self) {
        let mut st = self.lock();
        if let Some(held) = st.held.take() {
            self.write_locked(&mut st, &held);
        }
    }

    /// The socket task's own text frame (a snapshot, a reply, a private event), framed here rather
    /// than by tungstenite: its write buffer would keep the largest frame's capacity (a snapshot's
    /// kilobytes) for the socket's lifetime. False when the socket has failed.
    pub fn send_text(&self, payload: &[u8]) -> bool {
        let mut frame = BytesMut::with_capacity(payload.len() + 10);
        encode_text(&mut frame, payload);
        let mut st = self.lock();
        self.write_locked(&mut st, &frame);
        st.failed.is_none()
    }

    /// Resolves when the backlog is in the kernel (or the socket failed).
    pub async fn drain(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    pub fn failure(&self) -> Option<Failure> {
        self.lock().failed
    }

    /// Bytes waiting in the backlog (tests and the socket's drain).
    pub fn backlog(&self) -> usize {
        self.lock().backlog.len()
    }

    /// Hands the backlog to the kernel; ready when it is empty.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.lock();
                if st.failed.is_some() {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                if st.backlog.is_empty() {
                    if st.backlog.capacity() > 16 * 1024 {
                        // A burst is over: give its memory back.
                        st.backlog = BytesMut::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                match self.tcp.try_write(&st.backlog) {
                    Ok(n) => {
                        st.backlog.advance(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(&mut st, Failure::WriteFailed);
                        return Poll::Ready(Err(e));
                    }
                }
            }
            // Registers for the socket's next writability; a readiness that raced the failed
            // write above is not lost (the readiness tick tells them apart).
            match self.tcp.as_ref().poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The byte stream tungstenite runs the socket's protocol over: reads from the TCP read half,
/// writes whole frames into the outbox (a write is always taken whole, so tungstenite's frames
/// stay whole between the writer's), and a flush drains the backlog.
pub struct SocketIo {
    read: OwnedReadHalf,
    outbox: Arc<Outbox>,
}

impl AsyncRead for SocketIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.outbox.lock();
        if st.failed.is_some() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.outbox.write_locked(&mut st, buf);
        match st.failed {
            Some(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The write half shuts down when the last holder drops it (the socket's subscription).
        self.outbox.poll_drain(cx)
    }
}

struct Shard {
    /// Sockets that joined since the writer last looked; it moves them into its own list, which
    /// nothing else touches, so it walks its sockets without a lock and a join never waits for a
    /// walk.
    arrivals: Mutex<Vec<Arc<Outbox>>>,
    /// A socket left: the writer drops its outbox (and with it the connection's descriptor)
    /// without waiting for the next event.
    departed: Notify,
}

/// The node's sockets, split into one shard per runtime worker, each walked by its own writer.
pub struct Fanout {
    shards: Vec<Shard>,
    next: AtomicUsize,
    sockets: AtomicUsize,
}

/// A socket's place in the fan-out; leaves it when dropped.
pub struct Subscription {
    fanout: Arc<Fanout>,
    shard: usize,
    pub outbox: Arc<Outbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.outbox.left.store(true, Ordering::Release);
        self.fanout.sockets.fetch_sub(1, Ordering::Relaxed);
        self.fanout.shards[self.shard].departed.notify_one();
    }
}

impl Fanout {
    /// `shards`: the runtime's worker count (at least one), so the writers spread over the workers.
    pub fn new(shards: usize) -> Arc<Fanout> {
        Arc::new(Fanout {
            shards: (0..shards.max(1))
                .map(|_| Shard {
                    arrivals: Mutex::new(Vec::new()),
                    departed: Notify::new(),
                })
                .collect(),
            next: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
        })
    }

    /// Joins a socket to the fan-out, held (see the module's note): its task writes the snapshot
    /// through the returned stream, then calls [`Outbox::release`].
    pub fn join(self: &Arc<Self>, tcp: tokio::net::TcpStream) -> (Subscription, SocketIo) {
        let (read, write) = tcp.into_split();
        let outbox = Arc::new(Outbox::new(write));
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[shard]
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(outbox.clone());
        self.sockets.fetch_add(1, Ordering::Relaxed);
        let io = SocketIo {
            read,
            outbox: outbox.clone(),
        };
        let sub = Subscription {
            fanout: self.clone(),
            shard,
            outbox,
        };
        (sub, io)
    }

    /// Sockets on this node.
    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    /// Starts one writer per shard; each subscribes to the bus now (before any socket joins), so
    /// a socket's held queue starts with the events after its snapshot began.
    pub fn spawn_writers(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) {
        for shard in 0..self.shards.len() {
            let rx = bus.subscribe();
            tasks.spawn(write_shard(self.clone(), shard, rx, shutdown.clone()));
        }
    }
}

/// Appends one WebSocket text frame (FIN, unmasked: RFC 6455 §5.2) carrying `payload`.
pub fn encode_text(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.extend_from_slice(&[0x81]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= 0xFFFF => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// What one take from the bus asks of the sockets.
#[derive(Default)]
struct Batch {
    frames: BytesMut,
    resync: bool,
    closed: bool,
}

impl Batch {
    fn add(&mut self, event: Result<PublicEvent, RecvError>) {
        match event {
            Ok(e) if e.seq == PublicEvent::RESYNC => self.resync = true,
            Ok(e) => encode_text(&mut self.frames, e.json.as_bytes()),
            Err(RecvError::Lagged(n)) => {
                // This writer fell behind the bus: its sockets missed events.
                tracing::warn!(
                    skipped = n,
                    "fan-out writer fell behind; resyncing its sockets"
                );
                metrics::counter!("crashfleet_fanout_lagged_total").increment(1);
                self.resync = true;
            }
            Err(RecvError::Closed) => self.closed = true,
        }
    }
}

/// The writer's own list of its shard's sockets: the arrivals taken in, the departed dropped.
/// Every event the writer takes from the bus was published after the sockets that joined before
/// it, and the writer refreshes after taking a batch, so a socket misses nothing published after
/// it joined.
fn refresh(shard: &Shard, sockets: &mut Vec<Arc<Outbox>>) {
    sockets.append(&mut shard.arrivals.lock().unwrap_or_else(|e| e.into_inner()));
    sockets.retain(|o| !o.left.load(Ordering::Acquire));
}

async fn write_shard(
    fanout: Arc<Fanout>,
    shard: usize,
    mut rx: tokio::sync::broadcast::Receiver<PublicEvent>,
    shutdown: CancellationToken,
) {
    let shard = &fanout.shards[shard];
    let mut sockets: Vec<Arc<Outbox>> = Vec::new();
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            () = shard.departed.notified() => {
                refresh(shard, &mut sockets);
                continue;
            }
            _ = shutdown.cancelled() => return,
        };
        let mut batch = Batch::default();
        batch.add(first);
        for _ in 1..BATCH_MAX {
            if batch.closed {
                break;
            }
            match rx.try_recv() {
                Ok(e) => batch.add(Ok(e)),
                Err(TryRecvError::Lagged(n)) => batch.add(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => batch.add(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => break,
            }
        }
        refresh(shard, &mut sockets);
        for outbox in &sockets {
            if batch.closed {
                let mut st = outbox.lock();
                outbox.fail(&mut st, Failure::BusClosed);
            } else if batch.resync {
                // The snapshot it triggers covers the batch's events too.
                outbox.request_resync();
            } else {
                outbox.publish(&batch.frames);
            }
        }
        if batch.closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn frames_have_the_three_length_forms() {
        let mut b = BytesMut::new();
        encode_text(&mut b, b"hi");
        assert_eq!(&b[..], b"\x81\x02hi");
        let mut b = BytesMut::new();
        encode_text(&mut b, &[b'x'; 126]);
        assert_eq!(&b[..4], &[0x81, 126, 0, 126]);
        assert_eq!(b.len(), 130);
        let mut b = BytesMut::new();
        encode_text(&mut b, &vec![b'y'; 70_000]);
        assert_eq!(&b[..2], &[0x81, 127]);
        assert_eq!(&b[2..10], &70_000u64.to_be_bytes());
        assert_eq!(b.len(), 70_010);
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let c = tokio::net::TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        (s, c)
    }

    #[tokio::test]
    async fn a_held_socket_gets_its_snapshot_before_the_events_that_queued() {
        let fanout = Fanout::new(1);
        let (server, mut client) = pair().await;
        let (sub, mut io) = fanout.join(server);
        assert_eq!(fanout.sockets(), 1);
        sub.outbox.publish(b"event1;");
        tokio::io::AsyncWriteExt::write_all(&mut io, b"snapshot;")
            .await
            .expect("write");
        sub.outbox.publish(b"event2;");
        sub.outbox.release();
        sub.outbox.publish(b"event3;");
        let mut got = vec![0u8; 30];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], b"snapshot;event1;event2;event3;");
        drop(sub);
        assert_eq!(fanout.sockets(), 0);
    }

    #[tokio::test]
    async fn a_reader_that_stops_fills_the_backlog_then_fails() {
        let fanout = Fanout::new(1);
        let (server, _client) = pair().await;
        let (sub, _io) = fanout.join(server);
        sub.outbox.release();
        let frame = vec![b'z'; 4096];
        let mut sent = 0usize;
        while sub.outbox.failure().is_none() {
            sub.outbox.publish(&frame);
            sent += frame.len();
            assert!(sent < 64 * 1024 * 1024, "never failed");
        }
        assert_eq!(sub.outbox.failure(), Some(Failure::TooSlow));
        assert_eq!(sub.outbox.backlog(), 0, "a failed socket frees its backlog");
    }

    #[tokio::test]
    async fn a_backlog_drains_in_order_once_the_reader_reads() {
        let fanout = Fanout::new(1);
        let (server, mut client) = pair().await;
        let (sub, mut io) = fanout.join(server);
        sub.outbox.release();
        // Fill the kernel's buffers, so the rest goes to the backlog.
        let mut n: u32 = 0;
        while sub.outbox.backlog() == 0 {
            sub.outbox.publish(&n.to_be_bytes());
            n += 1;
        }
        for _ in 0..1000 {
            sub.outbox.publish(&n.to_be_bytes());
            n += 1;
        }
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; n as usize * 4];
            client.read_exact(&mut buf).await.expect("read");
            buf
        });
        tokio::io::AsyncWriteExt::flush(&mut io)
            .await
            .expect("drain");
        let buf = reader.await.expect("join");
        for (i, c) in buf.chunks(4).enumerate() {
            assert_eq!(c, (i as u32).to_be_bytes(), "byte order kept at {i}");
        }
    }
}
