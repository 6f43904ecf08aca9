//! `/ws`: one task per connection reads the player's frames and answers them, and writes the
//! snapshot, this player's private events, pings and the close. The table's public events reach
//! the socket without this task: the node's fan-out writers (fanout.rs) hand the same encoded
//! frame to every socket's outbox, which also carries everything this task writes, so frames never
//! interleave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::fanout::{Outbox, SocketIo};

use crate::auth::Session;
use crate::error::{ApiError, Error};
use crate::limits::{FrameBudget, PerClientPermit};
use crate::listener::ConnectionSlot;
use crate::ports::to_json;
use crate::protocol::{BetView, ClientMessage, MAX_CLIENT_FRAME_BYTES, PlayerView, ServerMessage};
use crate::state::AppState;

/// The read buffer, chosen deliberately: tungstenite's default (128 KiB) costs that much per
/// connection, which caps a node at a few thousand players; a client's frames are small (a
/// command is well under 1 KiB; a bigger frame, up to the cap, grows the buffer as it arrives), so
/// 1 KiB suffices. Writes need no buffer of their own: every frame goes
/// straight to the socket's outbox (fanout.rs), whose backlog is capped at
/// [`crate::fanout::MAX_BACKLOG`].
const READ_BUFFER: usize = 1024;
/// Frames a client may send per second on average, and at once, counting every frame type
/// (commands, pings, pongs, binary). The page sends a ping every 15 s, an `auth` after a login and
/// a frame per click (at most a few bets and cash-outs a round); after a reconnect it re-sends its
/// unanswered commands at once. 20/s with a burst of 40 is far above that, and caps a flood of
/// frames that each cost a parse, a token check or a ledger read (an `auth` flood from 3 sockets
/// used 11 s of CPU in 10 s) at 20 frames/s per socket. A client over it gets an `error` frame
/// `rate_limited` and a close with code 1008 (policy violation).
pub const FRAME_RATE: u32 = 20;
pub const FRAME_BURST: u32 = 40;
/// Rounds of history in the connect snapshot.
const SNAPSHOT_HISTORY: u32 = 20;
/// Bets a snapshot carries besides the player's own. Every new connection and every resync gets
/// one: with 30,000 bets in a round they were megabytes each, and sockets reconnecting under load
/// drove a node to ~1 GB (docs/BENCHMARKS.md). Later bets arrive in `bets_placed`.
pub const SNAPSHOT_BETS: usize = 200;

/// The latest `keep` bets (in arrival order) plus every earlier bet of `username`.
fn latest_bets(mut bets: Vec<BetView>, username: Option<&str>, keep: usize) -> Vec<BetView> {
    if bets.len() <= keep {
        return bets;
    }
    let cut = bets.len() - keep;
    let tail = bets.split_off(cut);
    let mut out: Vec<BetView> = match username {
        Some(u) => bets.into_iter().filter(|b| b.username == u).collect(),
        None => Vec::new(),
    };
    out.extend(tail);
    out
}

/// The key a WebSocket's per-client cap counts under: its TCP peer's address today (one
/// function, so a forwarded client address from a trusted proxy can key it instead).
fn ws_client(peer: SocketAddr) -> std::net::IpAddr {
    crate::limits::client_key(peer)
}

/// Everything that counts a WebSocket against a cap, taken before the upgrade and moved into the
/// connection's task, so concurrent upgrades cannot race past a cap and a refused or abandoned
/// upgrade gives its slots back (on drop).
struct WsPermit {
    state: Arc<AppState>,
    /// The client's address (behind a trusted proxy, the forwarded one): what the socket's log
    /// lines name.
    client: Option<std::net::IpAddr>,
    _client: Option<PerClientPermit>,
    /// The TCP connection's own admission (listener.rs): held while the socket lives.
    _tcp: Option<ConnectionSlot>,
}

impl WsPermit {
    fn acquire(
        state: &Arc<AppState>,
        peer: Option<SocketAddr>,
        tcp: Option<ConnectionSlot>,
    ) -> Result<WsPermit, Error> {
        let client = match peer {
            Some(p) => Some(state.ws_limits.per_client.try_acquire(ws_client(p)).ok_or(
                Error::Busy {
                    what: "your address's WebSocket quota",
                    retry_after_secs: 1,
                },
            )?),
            None => None,
        };
        if state.connections.fetch_add(1, Ordering::AcqRel) >= state.max_connections {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Busy {
                what: "this node",
                retry_after_secs: 1,
            });
        }
        Ok(WsPermit {
            state: state.clone(),
            client: peer.map(|p| p.ip()),
            _client: client,
            _tcp: tcp,
        })
    }
}

impl Drop for WsPermit {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// Whether a comma-separated header holds `token` (case-insensitively), as `Connection: keep-alive,
/// Upgrade` does.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The opening handshake's checks (RFC 6455 §4.2.1); the key to answer on success.
fn handshake_key(req: &Request) -> Result<HeaderValue, Error> {
    let h = req.headers();
    if !header_has_token(h, header::CONNECTION, "upgrade")
        || !header_has_token(h, header::UPGRADE, "websocket")
    {
        return Err(Error::BadRequest(
            "this is the WebSocket endpoint: send `Connection: Upgrade` and `Upgrade: websocket`"
                .into(),
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Error::BadRequest(
            "unsupported WebSocket version: send `Sec-WebSocket-Version: 13`".into(),
        ));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Error::BadRequest("missing `Sec-WebSocket-Key`".into()))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|e| Error::Internal(format!("accept key: {e}")))
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    client: Option<Extension<crate::client_ip::ClientIp>>,
    tcp: Option<Extension<ConnectionSlot>>,
    Query(q): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let accept = match handshake_key(&req) {
        Ok(a) => a,
        Err(e) => return ApiError(e).into_response(),
    };
    // Keyed by the client's address: behind a trusted proxy the forwarded one, so players behind
    // one proxy each get their own quota.
    let peer = client.map(|Extension(c)| SocketAddr::new(c.0, 0));
    let permit = match WsPermit::acquire(&state, peer, tcp.map(|t| t.0)) {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };
    // `?token=` is for tools; the page authenticates with its first frame (`auth`), so the token
    // stays out of URLs (proxy logs, browser history).
    let session = match &q.token {
        Some(t) => match state.auth.resolve(state.game.ledger.as_ref(), t).await {
            Ok(p) => Some(Session::of(&p)),
            Err(e) => return ApiError(e).into_response(),
        },
        None => None,
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        // Not a connection hyper can hand over (HTTP/2, or a test's in-memory request).
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, "websocket")],
            "this connection cannot be upgraded to a WebSocket",
        )
            .into_response();
    };
    // Tracked: the node's stop waits for the socket's close (Started::finish).
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("websocket upgrade: {e}"),
        };
        // The node's own accept loop (listener.rs) serves plain TCP connections, so the
        // upgraded connection is one: the fan-out writes to its socket directly.
        let parts = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(p) => p,
            Err(_) => return tracing::error!("websocket upgrade: not a TCP connection"),
        };
        // The bytes the client sent right behind its handshake, copied out: `read_buf` is a view
        // of hyper's whole read buffer (8 KiB or more), which must not live as long as the socket.
        let early = parts.read_buf.to_vec();
        let hyper::upgrade::Parts { io, read_buf, .. } = parts;
        drop(read_buf);
        let (sub, io) = state.fanout.join(io.into_inner());
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(crate::fanout::MAX_BACKLOG)
            .max_message_size(Some(MAX_CLIENT_FRAME_BYTES))
            .max_frame_size(Some(MAX_CLIENT_FRAME_BYTES));
        let socket =
            WebSocketStream::from_partially_read(io, early, Role::Server, Some(config)).await;
        connection(socket, sub, state, session, permit).await;
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

type WebSocket = WebSocketStream<SocketIo>;

async fn snapshot(state: &AppState, session: Option<&Session>) -> Result<Utf8Bytes, Error> {
    let (round, bets) = match state.game.arbiter.current().await {
        Some((r, b)) => (Some(r), b),
        None => (None, Vec::new()),
    };
    let bets_total = bets.len() as u64;
    let bets_wagered = bets.iter().map(|b| b.stake).sum();
    let bets = latest_bets(bets, session.map(|s| s.username.as_str()), SNAPSHOT_BETS);
    let history = state
        .game
        .ledger
        .rounds(&state.game.table.id, SNAPSHOT_HISTORY)
        .await?
        .iter()
        .map(|r| r.view())
        .collect();
    let you = match session {
        Some(s) => state
            .game
            .ledger
            .player(&s.player_id)
            .await?
            .map(|p| PlayerView {
                id: p.id,
                username: p.username,
                balance: p.balance,
            }),
        None => None,
    };
    to_json(&ServerMessage::Snapshot {
        table: state.game.table.id.clone(),
        server_time_ms: state.game.clock.now_ms(),
        round,
        growth_per_ms: state.game.table.curve.growth_per_ms(),
        tick_interval_ms: state.game.table.tick_ms,
        bets,
        bets_total,
        bets_wagered,
        history,
        fairness: state.fairness.clone(),
        you,
        chat: recent_chat(state).await,
    })
}

/// The chat history for a snapshot. The chat is not the game: when its store cannot answer, the
/// snapshot goes out without it rather than not at all.
async fn recent_chat(state: &AppState) -> Vec<crate::protocol::ChatLine> {
    match state.chat.recent().await {
        Ok(lines) => lines,
        Err(e) => {
            tracing::debug!(error = %e, "snapshot without the chat history");
            Vec::new()
        }
    }
}

fn error_frame(request_id: Option<String>, e: &Error) -> Option<Utf8Bytes> {
    to_json(&ServerMessage::Error {
        request_id,
        code: e.code().to_string(),
        message: e.public_message(),
    })
    .ok()
}

/// A write that completes within `limit`; false when it failed or timed out (the client stopped
/// reading: the caller closes the socket, which frees its buffers).
async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

/// How long a closing socket waits for the client's close frame. Dropping a socket while the
/// client's frames are still unread resets the connection, and a reset can make the client
/// discard our last frames (the `error` and the close code) unread.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends a close frame; with `linger`, then reads and discards until the client closes too (at
/// most [`CLOSE_LINGER`]), so a client still sending sees why.
async fn close(
    socket: &mut WebSocket,
    write_timeout: Duration,
    code: CloseCode,
    reason: &'static str,
    linger: bool,
) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if !within(write_timeout, socket.send(frame)).await || !linger {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = socket.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn connection(
    mut socket: WebSocket,
    sub: crate::fanout::Subscription,
    state: Arc<AppState>,
    mut session: Option<Session>,
    permit: WsPermit,
) {
    // One line when a socket opens and one when it closes, at info: sockets live for minutes to
    // hours, so this is a few lines per player per session, and it names the player's own
    // address (the forwarded one behind a trusted proxy), the one the caps and limits key on.
    let client = permit
        .client
        .map_or_else(|| "-".to_string(), |c| c.to_string());
    let opened = std::time::Instant::now();
    tracing::info!(
        client = %client,
        player = session.as_ref().map_or("-", |s| s.username.as_str()),
        "socket opened"
    );
    let why = serve_socket(&mut socket, &sub.outbox, &state, &mut session).await;
    tracing::info!(
        client = %client,
        player = session.as_ref().map_or("-", |s| s.username.as_str()),
        why,
        secs = opened.elapsed().as_secs(),
        "socket closed"
    );
    // Leaves the fan-out; the connection closes when the socket and the outbox are both gone.
    drop(sub);
    drop(permit);
}

/// Writes `frame` and hands it (and any backlog) to the kernel within the write timeout.
async fn send_text(outbox: &Outbox, write_timeout: Duration, frame: Utf8Bytes) -> bool {
    outbox.send_text(frame.as_bytes())
        && matches!(
            tokio::time::timeout(write_timeout, outbox.drain()).await,
            Ok(Ok(()))
        )
}

/// Sends a fresh snapshot to a socket whose outbox is held (a new socket, or a resync), then
/// releases the public events that queued meanwhile behind it.
async fn send_snapshot(
    outbox: &Outbox,
    state: &AppState,
    session: Option<&Session>,
) -> Result<(), &'static str> {
    let write_timeout = state.ws_limits.write_timeout;
    match snapshot(state, session).await {
        Ok(s) => {
            if !send_text(outbox, write_timeout, s).await {
                return Err("write_timeout");
            }
            outbox.release();
            Ok(())
        }
        Err(e) => {
            if let Some(f) = error_frame(None, &e) {
                let _ = send_text(outbox, write_timeout, f).await;
            }
            Err("snapshot_failed")
        }
    }
}

/// Serves one socket until it ends; returns why it ended (the `socket closed` line's `why`).
async fn serve_socket(
    socket: &mut WebSocket,
    outbox: &Outbox,
    state: &Arc<AppState>,
    session: &mut Option<Session>,
) -> &'static str {
    let limits = &state.ws_limits;
    let write_timeout = limits.write_timeout;
    let mut private = session
        .as_ref()
        .map(|s| state.routes.register(&s.player_id));
    // The outbox is held since the socket joined the fan-out: the events from then on follow the
    // snapshot, none is missed.
    if let Err(why) = send_snapshot(outbox, state, session.as_ref()).await {
        return why;
    }
    let mut budget = FrameBudget::new(FRAME_RATE, FRAME_BURST, std::time::Instant::now());
    let mut last_heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out: Option<Utf8Bytes> = tokio::select! {
            incoming = socket.next() => {
                if matches!(incoming, Some(Ok(_))) {
                    last_heard = tokio::time::Instant::now();
                    if !budget.take(std::time::Instant::now()) {
                        metrics::counter!("crashfleet_ws_closed_total", "reason" => "rate_limited")
                            .increment(1);
                        if let Some(f) = error_frame(None, &Error::RateLimited) {
                            let _ = send_text(outbox, write_timeout, f).await;
                        }
                        close(socket, write_timeout, CloseCode::Policy, "too many frames", true)
                            .await;
                        break "rate_limited";
                    }
                }
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let reply = handle(state, session, &text).await;
                        // Authenticated by this frame: start receiving this player's events.
                        if let Some(s) = session.as_ref()
                            && private.as_ref().is_none_or(|r| r.player_id() != s.player_id)
                        {
                            private = Some(state.routes.register(&s.player_id));
                        }
                        // Session ended (logged out elsewhere): stop this player's private events.
                        if session.is_none() {
                            private = None;
                        }
                        reply
                    }
                    Some(Ok(Message::Binary(_))) => error_frame(
                        None,
                        &Error::BadRequest(
                            "binary frames are not supported; send JSON text".into(),
                        ),
                    ),
                    // tungstenite answers pings itself (its pong goes through the outbox).
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => None,
                    Some(Ok(Message::Close(_))) | None => break "client_closed",
                    // Oversized or malformed frames end the connection (tungstenite refuses them),
                    // and so does a write the outbox refused (a failed socket).
                    Some(Err(_)) => {
                        let why = outbox.failure().map_or("bad_frame", |f| f.reason());
                        metrics::counter!("crashfleet_ws_closed_total", "reason" => why)
                            .increment(1);
                        break why;
                    }
                }
            },
            () = outbox.wake.notified() => {
                if let Some(f) = outbox.failure() {
                    metrics::counter!("crashfleet_ws_closed_total", "reason" => f.reason())
                        .increment(1);
                    break f.reason();
                }
                // The bus missed events: a fresh snapshot, with the events since held behind it.
                if outbox.take_resync()
                    && let Err(why) = send_snapshot(outbox, state, session.as_ref()).await
                {
                    break why;
                }
                // A backlog the kernel could not take at once: drain it, or give up on a client
                // that stopped reading.
                if !within(write_timeout, socket.flush()).await {
                    metrics::counter!("crashfleet_ws_closed_total", "reason" => "write_timeout")
                        .increment(1);
                    break "write_timeout";
                }
                continue;
            }
            Some(json) = next_private(&mut private) => Some(json),
            _ = ping.tick() => {
                // Nothing heard (not even a pong) for the idle timeout: the client is gone or
                // stuck; free its socket. Otherwise probe it (browsers answer pings by themselves).
                if last_heard.elapsed() >= limits.idle_timeout {
                    metrics::counter!("crashfleet_ws_closed_total", "reason" => "idle")
                        .increment(1);
                    // A silent client sends nothing to drain: no linger.
                    close(socket, write_timeout, CloseCode::Away, "idle", false).await;
                    break "idle";
                }
                if !within(write_timeout, socket.send(Message::Ping(Default::default()))).await {
                    metrics::counter!("crashfleet_ws_closed_total", "reason" => "write_timeout")
                        .increment(1);
                    break "write_timeout";
                }
                continue;
            }
            _ = state.shutdown.cancelled() => {
                close(socket, write_timeout, CloseCode::Away, "node shutting down", false).await;
                break "node_shutting_down";
            }
        };
        let Some(frame) = out else { continue };
        if !send_text(outbox, write_timeout, frame).await {
            metrics::counter!("crashfleet_ws_closed_total", "reason" => "write_timeout")
                .increment(1);
            break "write_timeout";
        }
    }
}

/// The next private event for this socket's player; never resolves while unauthenticated.
async fn next_private(reg: &mut Option<crate::hub::Registration>) -> Option<Utf8Bytes> {
    match reg {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// The socket's session, re-checked against the ledger before a money command: a logout on any
/// node (or a deleted player) ends it here too, and the socket is unauthenticated from then on.
async fn current_session(
    state: &AppState,
    session: &mut Option<Session>,
) -> Result<Session, Error> {
    let Some(s) = session.as_ref() else {
        return Err(Error::Unauthorized("log in first".into()));
    };
    match s.still_valid(state.game.ledger.as_ref()).await {
        Ok(now) => Ok(now),
        Err(e @ Error::Unauthorized(_)) => {
            *session = None;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Posts a logged-in player's chat line (cleaned: plain text, no control characters, at most
/// `chat::MAX_CHARS` characters).
async fn post_chat(
    state: &AppState,
    session: &mut Option<Session>,
    text: &str,
) -> Result<(), Error> {
    if session.is_none() {
        return Err(Error::Unauthorized("log in to chat".into()));
    }
    let text = crashfleet_core::chat::clean(text)?;
    let s = current_session(state, session).await?;
    let posted = state
        .chat
        .post(&crate::protocol::ChatLine {
            username: s.username,
            text,
            at_ms: state.game.clock.now_ms(),
        })
        .await;
    let outcome = match &posted {
        Ok(()) => "posted",
        Err(e) => e.code(),
    };
    metrics::counter!("crashfleet_chat_messages_total", "outcome" => outcome).increment(1);
    posted
}

/// Handles one client frame; returns the reply, if any.
async fn handle(
    state: &Arc<AppState>,
    session: &mut Option<Session>,
    text: &str,
) -> Option<Utf8Bytes> {
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return error_frame(None, &Error::BadRequest(format!("invalid message: {e}")));
        }
    };
    let reply = match msg {
        ClientMessage::Ping { nonce } => Ok(ServerMessage::Pong {
            nonce,
            server_time_ms: state.game.clock.now_ms(),
        }),
        ClientMessage::Auth { token } => {
            match state.auth.resolve(state.game.ledger.as_ref(), &token).await {
                Ok(p) => {
                    *session = Some(Session::of(&p));
                    Ok(ServerMessage::Authenticated {
                        you: PlayerView {
                            id: p.id,
                            username: p.username,
                            balance: p.balance,
                        },
                    })
                }
                Err(e) => Err((None, e)),
            }
        }
        ClientMessage::Bet {
            request_id,
            stake,
            auto_cashout_x100,
        } => match current_session(state, session).await {
            Err(e) => Err((Some(request_id), e)),
            Ok(s) => {
                match state
                    .game
                    .place_bet(s.player(), &request_id, stake, auto_cashout_x100)
                    .await
                {
                    Ok(placed) => Ok(ServerMessage::BetAccepted {
                        request_id,
                        bet: placed.bet.view(),
                        receipt: placed.receipt,
                    }),
                    Err(e) => Err((Some(request_id), e)),
                }
            }
        },
        // Accepted silently: the line comes back to this socket, like to every other, as the
        // `chat` event, in the table's one order.
        ClientMessage::Chat { text } => match post_chat(state, session, &text).await {
            Ok(()) => return None,
            Err(e) => Err((None, e)),
        },
        ClientMessage::CashOut { request_id, bet_id } => {
            match current_session(state, session).await {
                Err(e) => Err((Some(request_id), e)),
                Ok(s) => match state.game.cash_out(s.player(), &request_id, &bet_id).await {
                    Ok(cashed) => Ok(ServerMessage::CashOutAccepted {
                        request_id,
                        bet_id: cashed.cash_out.bet_id,
                        multiplier_x100: cashed.cash_out.multiplier_x100,
                        payout: cashed.cash_out.payout,
                        receipt: cashed.receipt,
                    }),
                    Err(e) => Err((Some(request_id), e)),
                },
            }
        }
    };
    match reply {
        Ok(m) => to_json(&m).ok(),
        Err((id, e)) => error_frame(id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BetStatus;

    fn bet(n: usize, user: &str) -> BetView {
        BetView {
            bet_id: format!("b{n:05}"),
            round: 1,
            username: user.into(),
            stake: 10,
            auto_cashout_x100: None,
            status: BetStatus::Open,
            cashout_x100: None,
            payout: None,
        }
    }

    #[test]
    fn snapshots_keep_the_latest_bets_and_always_the_players_own() {
        let mut bets: Vec<BetView> = (0..1_000).map(|n| bet(n, "crowd")).collect();
        bets[3] = bet(3, "me");
        bets[998] = bet(998, "me");
        let kept = latest_bets(bets.clone(), Some("me"), 200);
        assert_eq!(kept.len(), 201, "200 latest + my early bet");
        assert_eq!(kept[0].bet_id, "b00003");
        assert_eq!(kept[1].bet_id, "b00800");
        assert_eq!(kept.last().map(|b| b.bet_id.as_str()), Some("b00999"));
        // Anonymous watchers get the latest ones only; small rounds are untouched.
        assert_eq!(latest_bets(bets.clone(), None, 200).len(), 200);
        assert_eq!(latest_bets(bets[..150].to_vec(), None, 200).len(), 150);
    }
}
