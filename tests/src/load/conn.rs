//! One player's WebSocket connection: records tick lag and message counts, sends pings, and (in
//! `--via ws` mode) carries that player's bets and cash-outs, matching answers by `request_id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Kind, Shared, now_us};

/// What the schedulers ask a connection to send.
#[derive(Debug)]
pub enum Command {
    Bet {
        request_id: String,
        player: usize,
        stake: i64,
        auto: Option<u64>,
        /// The manual cash-out target, when the bet has no auto target.
        manual: Option<u64>,
        scheduled: Instant,
    },
    CashOut {
        request_id: String,
        bet_id: String,
        scheduled: Instant,
    },
}

enum Pending {
    Bet {
        player: usize,
        manual: Option<u64>,
        scheduled: Instant,
    },
    CashOut {
        scheduled: Instant,
        bet_id: String,
        /// Resends so far after `outcome_unknown` (bounded by `UNKNOWN_RETRIES`).
        retries: u32,
    },
}

/// A socket just opened: run by this connection's task, or raw for the watcher threads.
enum Opened {
    Task(Box<WsStream>),
    Raw(std::net::TcpStream, Vec<u8>),
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Conn {
    pub index: usize,
    /// Watch-only runs (bets over REST): the socket is read by the watcher threads (watcher.rs).
    pub watcher: Option<Arc<super::watcher::Watcher>>,
    pub urls: Vec<String>,
    pub token: String,
    pub ping_interval: Duration,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
}

/// The generator's socket buffers. tungstenite zero-fills its read buffer before every read:
/// with thousands of sockets each getting a ~100-byte tick, the default 128 KiB made that
/// `memset` 17 % of the generator's core (perf) and the generator, not the node, the cause of the
/// measured fan-out spread; at 4 KiB it was still 4 %. A tick, or a few, fits in 1 KiB; larger
/// frames still arrive over several reads (the buffer is where reads land, not a frame limit).
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

#[derive(Deserialize)]
struct TickMsg {
    server_time_ms: i64,
}

/// The parts of a `snapshot` that say how current it is.
#[derive(Deserialize)]
struct SnapshotMsg {
    server_time_ms: i64,
    round: Option<RoundNumber>,
    #[serde(default)]
    history: Vec<RoundNumber>,
}

#[derive(Deserialize)]
struct RoundNumber {
    number: u64,
}

#[derive(Deserialize)]
struct RoundOpenMsg {
    round: u64,
}

/// One socket's view of the player's continuity: the drop it follows (until its first snapshot)
/// and the newest round heard of.
pub(crate) struct Resume {
    dropped: Option<Dropped>,
    last_round: u64,
}

/// What a connection knew when its node dropped it: the next socket's first snapshot must be at
/// least this current, and the time until it arrives is the gap this player saw.
#[derive(Clone, Copy)]
pub(crate) struct Dropped {
    at: Instant,
    wall_ms: i64,
    last_round: u64,
}

#[derive(Deserialize)]
struct PongMsg {
    nonce: u64,
}

#[derive(Deserialize)]
struct BetAcceptedMsg {
    request_id: String,
    bet: BetIn,
}

#[derive(Deserialize)]
struct BetIn {
    bet_id: String,
    round: u64,
}

#[derive(Deserialize)]
struct CashOutAcceptedMsg {
    bet_id: String,
    multiplier_x100: u64,
    payout: i64,
}

#[derive(Deserialize)]
struct ReplyMsg {
    request_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl Conn {
    /// Opens the connection (a permit of the ramp's semaphore bounds concurrent handshakes),
    /// reports to `ready` once it is open or has failed, then serves it until the run ends. A
    /// connection whose node goes away reconnects to the next URL.
    pub async fn run(
        self,
        mut commands: mpsc::Receiver<Command>,
        ramp: Arc<Semaphore>,
        ready: mpsc::Sender<()>,
    ) {
        let mut attempt = self.index;
        let mut first = true;
        // The newest round this player has heard of, and when its last socket dropped.
        let mut last_round = 0u64;
        let mut dropped: Option<Dropped> = None;
        while !self.cancel.is_cancelled() {
            let url = format!(
                "{}?token={}",
                self.urls[attempt % self.urls.len()],
                self.token
            );
            attempt += 1;
            let raw = self.watcher.is_some() && url.starts_with("ws://");
            let opened = {
                let _permit = ramp.acquire().await;
                let limit = Duration::from_secs(10);
                if raw {
                    tokio::time::timeout(limit, super::watcher::connect(&url))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .map(|(stream, early)| Opened::Raw(stream, early))
                } else {
                    tokio::time::timeout(
                        limit,
                        tokio_tungstenite::connect_async_with_config(
                            url.as_str(),
                            Some(socket_config()),
                            true,
                        ),
                    )
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|(ws, _)| Opened::Task(Box::new(ws)))
                }
            };
            let Some(opened) = opened else {
                self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                if first {
                    first = false;
                    let _ = ready.send(()).await;
                }
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            };
            self.shared.open.fetch_add(1, Ordering::Relaxed);
            if first {
                first = false;
                let _ = ready.send(()).await;
            }
            let mut resume = Resume {
                dropped: dropped.take(),
                last_round,
            };
            let clean = match (opened, &self.watcher) {
                (Opened::Task(ws), _) => self.serve(*ws, &mut commands, &mut resume).await,
                (Opened::Raw(stream, early), Some(watcher)) => {
                    let (done, ended) = tokio::sync::oneshot::channel();
                    let handed = watcher.add(super::watcher::Watched {
                        stream,
                        early,
                        index: self.index,
                        resume,
                        done,
                    });
                    match ended.await {
                        Ok((clean, back)) if handed => {
                            resume = back;
                            clean
                        }
                        // The watcher stopped (the run is over).
                        _ => {
                            self.shared.open.fetch_sub(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                (Opened::Raw(..), None) => unreachable!("raw sockets only with a watcher"),
            };
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            if clean {
                return;
            }
            last_round = resume.last_round;
            // A socket that dropped before its first snapshot keeps the earlier drop's instant:
            // the player has seen nothing since.
            dropped = Some(resume.dropped.unwrap_or(Dropped {
                at: Instant::now(),
                wall_ms: now_us() / 1000,
                last_round,
            }));
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Serves one open socket; true when the run ended it, false when the node dropped it.
    async fn serve(
        &self,
        ws: WsStream,
        commands: &mut mpsc::Receiver<Command>,
        resume: &mut Resume,
    ) -> bool {
        // One stream, not `split()`: the halves share it through a lock taken on every poll, and
        // a select's handler may use the stream its branch future read from.
        let mut ws = ws;
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut seen = Seen::default();
        let mut nonce = 0u64;
        // Spread the pings of thousands of connections over the interval.
        let ping_every = self.ping_interval.max(Duration::from_millis(1));
        let offset = Duration::from_millis(
            (self.index as u64 * 7919) % ping_every.as_millis().max(1) as u64,
        );
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset, ping_every);
        let shard = self.index;
        let clean = loop {
            tokio::select! {
                () = &mut cancelled => {
                    let _ = ws.send(Message::Close(None)).await;
                    break true;
                }
                _ = ping.tick(), if !self.ping_interval.is_zero() => {
                    nonce += 1;
                    seen.pings.insert(nonce, Instant::now());
                    let frame = format!(r#"{{"type":"ping","nonce":{nonce}}}"#);
                    if ws.send(Message::text(frame)).await.is_err() {
                        break false;
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { continue };
                    let (id, frame, p) = match cmd {
                        Command::Bet { request_id, player, stake, auto, manual, scheduled, .. } => {
                            let mut body = serde_json::json!({
                                "type": "bet", "request_id": request_id, "stake": stake,
                            });
                            if let Some(a) = auto {
                                body["auto_cashout_x100"] = a.into();
                            }
                            (request_id, body.to_string(), Pending::Bet { player, manual, scheduled })
                        }
                        Command::CashOut { request_id, bet_id, scheduled } => {
                            let body = serde_json::json!({
                                "type": "cash_out", "request_id": request_id, "bet_id": bet_id,
                            });
                            (request_id, body.to_string(), Pending::CashOut { scheduled, bet_id, retries: 0 })
                        }
                    };
                    self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
                    pending.insert(id, p);
                    if ws.send(Message::text(frame)).await.is_err() {
                        break false;
                    }
                }
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { break false };
                    let Message::Text(text) = msg else { continue };
                    self.shared.messages.fetch_add(1, Ordering::Relaxed);
                    let resend = self.handle(text.as_str(), shard, &mut pending, &mut seen, resume).await;
                    if let Some(frame) = resend
                        && ws.send(Message::text(frame)).await.is_err()
                    {
                        break false;
                    }
                }
            }
        };
        // Requests this socket never answered.
        for (_, p) in pending.drain() {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            match p {
                Pending::Bet { .. } => self.shared.bets.fail("no_answer"),
                Pending::CashOut { .. } => self.shared.cashouts.fail("no_answer"),
            }
        }
        clean
    }

    async fn handle(
        &self,
        text: &str,
        shard: usize,
        pending: &mut HashMap<String, Pending>,
        seen: &mut Seen,
        resume: &mut Resume,
    ) -> Option<String> {
        // Most frames are broadcasts this connection only counts (`bets_placed`, `cashed_out`,
        // round events): skip parsing them, so the generator spends its CPU on the node, not on
        // itself. The node writes the tag first (`{"type":"…`).
        const WANTED: [&str; 8] = [
            "tick",
            "crashed",
            "snapshot",
            "round_open",
            "pong",
            "bet_accepted",
            "cash_out_accepted",
            "error",
        ];
        let kind = text
            .strip_prefix("{\"type\":\"")
            .and_then(|rest| rest.split('"').next());
        match kind {
            Some(k @ ("tick" | "crashed" | "snapshot" | "round_open" | "pong")) => {
                observe(&self.shared, shard, k, text, seen, resume);
                return None;
            }
            Some(k) if WANTED.contains(&k) => {}
            Some(_) => return None,
            None => {}
        }
        let Ok(k) = serde_json::from_str::<Kind>(text) else {
            return None;
        };
        match k.kind {
            "tick" | "crashed" | "snapshot" | "round_open" | "pong" => {
                observe(&self.shared, shard, k.kind, text, seen, resume);
            }
            "bet_accepted" => {
                let Ok(m) = serde_json::from_str::<BetAcceptedMsg>(text) else {
                    return None;
                };
                if let Some(Pending::Bet {
                    player,
                    manual,
                    scheduled,
                    ..
                }) = pending.remove(&m.request_id)
                {
                    self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    self.shared.bets.latency.record(shard, scheduled.elapsed());
                    self.shared.bets.ok.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .bet_accepted(m.bet.round, m.bet.bet_id, player, Some(self.index), manual)
                        .await;
                }
            }
            "cash_out_accepted" | "error" => {
                let Ok(m) = serde_json::from_str::<ReplyMsg>(text) else {
                    return None;
                };
                let id = m.request_id?;
                let p = pending.remove(&id)?;
                let accepted = if k.kind == "error" {
                    None
                } else {
                    serde_json::from_str::<CashOutAcceptedMsg>(text).ok()
                };
                let (outcomes, scheduled, first) = match &p {
                    Pending::Bet { scheduled, .. } => (&self.shared.bets, *scheduled, true),
                    Pending::CashOut {
                        scheduled,
                        bet_id,
                        retries,
                    } => {
                        self.shared.cash_out_answer(super::CashOutAnswer {
                            bet_id: bet_id.clone(),
                            key: id.clone(),
                            answer: match (&accepted, &m.code) {
                                (Some(c), _) => Ok((c.multiplier_x100, c.payout)),
                                (None, code) => {
                                    Err(code.clone().unwrap_or_else(|| "unknown".into()))
                                }
                            },
                        });
                        // The node promises a retry with the same key returns the real outcome.
                        if m.code.as_deref() == Some("outcome_unknown")
                            && *retries < super::UNKNOWN_RETRIES
                        {
                            let frame = serde_json::json!({
                                "type": "cash_out", "request_id": id, "bet_id": bet_id,
                            })
                            .to_string();
                            if *retries == 0 {
                                self.shared
                                    .cashouts
                                    .latency
                                    .record(shard, scheduled.elapsed());
                                self.shared.cashouts.fail("outcome_unknown");
                            }
                            let again = Pending::CashOut {
                                scheduled: *scheduled,
                                bet_id: bet_id.clone(),
                                retries: retries + 1,
                            };
                            pending.insert(id, again);
                            return Some(frame);
                        }
                        (&self.shared.cashouts, *scheduled, *retries == 0)
                    }
                };
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                if first {
                    outcomes.latency.record(shard, scheduled.elapsed());
                }
                match accepted {
                    None if first => outcomes.fail(m.code.as_deref().unwrap_or("unknown")),
                    None => {}
                    Some(c) => {
                        if first {
                            outcomes.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        self.shared.cash_out_accepted(super::AcceptedCashOut {
                            bet_id: c.bet_id,
                            multiplier_x100: c.multiplier_x100,
                            payout: c.payout,
                        });
                    }
                }
            }
            _ => {}
        }
        None
    }
}

/// What a socket keeps of its own pings and snapshots (both socket kinds: the task per socket and
/// the raw watcher).
#[derive(Default)]
pub(crate) struct Seen {
    pub pings: HashMap<u64, Instant>,
    pub snapshots: u64,
}

/// Records a broadcast (`tick`, `crashed`, `snapshot`, `round_open`) or a `pong`: lag and spread,
/// resyncs and reconnect gaps, ping round trips. `kind` is the frame's `type`.
pub(crate) fn observe(
    shared: &Shared,
    shard: usize,
    kind: &str,
    text: &str,
    seen: &mut Seen,
    resume: &mut Resume,
) {
    let pings = &mut seen.pings;
    let snapshots = &mut seen.snapshots;
    match kind {
        // Broadcasts timed by their `server_time_ms`: lag (same clock) and spread.
        kind @ ("tick" | "crashed") => {
            if let Ok(t) = serde_json::from_str::<TickMsg>(text) {
                let (lag, spread) = if kind == "tick" {
                    (&shared.ticks, &shared.tick_spread)
                } else {
                    (&shared.crashes, &shared.crash_spread)
                };
                let now = now_us();
                let lag_us = now - t.server_time_ms * 1000;
                lag.record_micros(shard, u64::try_from(lag_us).unwrap_or(0));
                spread.record(shard, t.server_time_ms, now);
            }
        }
        "snapshot" => {
            *snapshots += 1;
            if *snapshots > 1 {
                shared.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            let snap = serde_json::from_str::<SnapshotMsg>(text).ok();
            let newest = snap
                .as_ref()
                .and_then(|s| s.round.as_ref().or(s.history.first()).map(|r| r.number));
            if let Some(d) = resume.dropped.take() {
                shared.reconnect_gaps.record(shard, d.at.elapsed());
                // Fresh: written after the drop (one machine, one clock) and no older than
                // the newest round the player had already heard of.
                let fresh = snap.as_ref().is_some_and(|s| s.server_time_ms >= d.wall_ms)
                    && newest.unwrap_or(0) >= d.last_round;
                if !fresh {
                    shared.stale_snapshots.fetch_add(1, Ordering::Relaxed);
                }
            }
            resume.last_round = resume.last_round.max(newest.unwrap_or(0));
        }
        "round_open" => {
            if let Ok(m) = serde_json::from_str::<RoundOpenMsg>(text) {
                resume.last_round = resume.last_round.max(m.round);
            }
        }
        "pong" => {
            if let Ok(p) = serde_json::from_str::<PongMsg>(text)
                && let Some(sent) = pings.remove(&p.nonce)
            {
                shared.pings.record(shard, sent.elapsed());
            }
        }
        _ => {}
    }
}
