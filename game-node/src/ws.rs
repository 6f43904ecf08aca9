//! `/ws`: one task per connection that owns the socket — the only writer, so frames are never
//! interleaved (seed 000 wrote to sockets from several goroutines). It sends a snapshot, then relays
//! the table's events and this player's private events, and answers the player's commands.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::auth::Session;
use crate::error::Error;
use crate::node::AppState;
use crate::protocol::{BetView, ClientMessage, MAX_CLIENT_FRAME_BYTES, PlayerView, ServerMessage};
use crate::service;
use crate::standalone::to_json;

/// Socket buffers, chosen deliberately: tungstenite's defaults (128 KiB read buffer, 128 KiB write
/// buffer) cost ~100 KB+ per connection, which caps a node at a few thousand players. Our frames
/// are small (a tick is ~100 bytes, a snapshot a few KiB), so 4 KiB buffers suffice; the write
/// buffer may grow to `MAX_WRITE_BUFFER` for a burst, and a client that cannot drain that is cut.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 4 * 1024;
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Most queued events written behind one frame before the socket is flushed.
const COALESCE_MAX: usize = 64;
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

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if state.connections.load(Ordering::Relaxed) >= state.max_connections {
        return Error::Unavailable("this node is full; try another".into()).into_response();
    }
    // `?token=` is for tools; the page authenticates with its first frame (`auth`), so the token
    // stays out of URLs (proxy logs, browser history).
    let session = match &q.token {
        Some(t) => match state.auth.resolve(state.ledger.as_ref(), t).await {
            Ok(p) => Some(Session::of(&p)),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| connection(socket, state, session))
}

/// Decrements the connection gauge however the task ends.
struct ConnectionGuard(Arc<AppState>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn snapshot(state: &AppState, session: Option<&Session>) -> Result<Utf8Bytes, Error> {
    let (round, bets) = match state.arbiter.current().await {
        Some((r, b)) => (Some(r), b),
        None => (None, Vec::new()),
    };
    let bets_total = bets.len() as u64;
    let bets_wagered = bets.iter().map(|b| b.stake).sum();
    let bets = latest_bets(bets, session.map(|s| s.username.as_str()), SNAPSHOT_BETS);
    let history = state
        .ledger
        .rounds(&state.table.id, SNAPSHOT_HISTORY)
        .await?
        .iter()
        .map(|r| r.view())
        .collect();
    let you = match session {
        Some(s) => state
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
        table: state.table.id.clone(),
        server_time_ms: state.clock.now_ms(),
        round,
        growth_per_ms: state.table.curve.growth_per_ms(),
        tick_interval_ms: state.table.tick_ms,
        bets,
        bets_total,
        bets_wagered,
        history,
        fairness: state.fairness.clone(),
        you,
    })
}

fn error_frame(request_id: Option<String>, e: &Error) -> Option<Utf8Bytes> {
    to_json(&ServerMessage::Error {
        request_id,
        code: e.code().to_string(),
        message: e.public_message(),
    })
    .ok()
}

async fn connection(mut socket: WebSocket, state: Arc<AppState>, mut session: Option<Session>) {
    state.connections.fetch_add(1, Ordering::Relaxed);
    let _guard = ConnectionGuard(state.clone());
    // Subscribe before the snapshot so no event between the two is missed.
    let mut public = state.bus.subscribe();
    let mut private = session
        .as_ref()
        .map(|s| state.routes.register(&s.player_id));
    match snapshot(&state, session.as_ref()).await {
        Ok(s) => {
            if socket.send(Message::Text(s)).await.is_err() {
                return;
            }
        }
        Err(e) => {
            if let Some(f) = error_frame(None, &e) {
                let _ = socket.send(Message::Text(f)).await;
            }
            return;
        }
    }
    loop {
        let out: Option<Utf8Bytes> = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle(&state, &mut session, &text).await;
                    // Authenticated by this frame: start receiving this player's events.
                    if let Some(s) = &session
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
                    &Error::BadRequest("binary frames are not supported; send JSON text".into()),
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Close(_))) | None => break,
                // Oversized or malformed frames end the connection (tungstenite refuses them).
                Some(Err(_)) => break,
            },
            event = public.recv() => match event {
                // The bus missed events (Redis gap, lag or reconnect): resync like a lag.
                Ok(e) if e.seq == crate::ports::PublicEvent::RESYNC => {
                    snapshot(&state, session.as_ref()).await.ok()
                }
                Ok(e) => Some(e.json),
                // This socket fell behind: skip what it missed and resync from a fresh snapshot.
                Err(RecvError::Lagged(_)) => snapshot(&state, session.as_ref()).await.ok(),
                Err(RecvError::Closed) => break,
            },
            Some(json) = next_private(&mut private) => Some(json),
            _ = state.shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: axum::extract::ws::close_code::AWAY,
                        reason: "node shutting down".into(),
                    })))
                    .await;
                break;
            }
        };
        let Some(frame) = out else { continue };
        if socket.feed(Message::Text(frame)).await.is_err() {
            break;
        }
        // Whatever else already waits goes out in the same write (one syscall and one wake-up for
        // a burst of events instead of one each). Bounded, so commands still get their turn.
        let mut open = true;
        for _ in 0..COALESCE_MAX {
            let frame = match public.try_recv() {
                Ok(e) if e.seq == crate::ports::PublicEvent::RESYNC => {
                    snapshot(&state, session.as_ref()).await.ok()
                }
                Ok(e) => Some(e.json),
                Err(TryRecvError::Lagged(_)) => snapshot(&state, session.as_ref()).await.ok(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            };
            if let Some(f) = frame
                && socket.feed(Message::Text(f)).await.is_err()
            {
                open = false;
                break;
            }
        }
        if !open || socket.flush().await.is_err() {
            break;
        }
    }
}

/// The next private event for this socket's player; never resolves while unauthenticated.
async fn next_private(reg: &mut Option<crate::hub::Registration>) -> Option<Utf8Bytes> {
    match reg {
        Some(r) => match r.rx.changed().await {
            Ok(()) => r.rx.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
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
    match s.still_valid(state.ledger.as_ref()).await {
        Ok(now) => Ok(now),
        Err(e @ Error::Unauthorized(_)) => {
            *session = None;
            Err(e)
        }
        Err(e) => Err(e),
    }
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
            server_time_ms: state.clock.now_ms(),
        }),
        ClientMessage::Auth { token } => {
            match state.auth.resolve(state.ledger.as_ref(), &token).await {
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
                match service::place_bet(state, &s, &request_id, stake, auto_cashout_x100).await {
                    Ok((bet, _)) => Ok(ServerMessage::BetAccepted {
                        request_id,
                        bet: bet.view(),
                    }),
                    Err(e) => Err((Some(request_id), e)),
                }
            }
        },
        ClientMessage::CashOut { request_id, bet_id } => {
            match current_session(state, session).await {
                Err(e) => Err((Some(request_id), e)),
                Ok(s) => match service::cash_out(state, &s, &request_id, &bet_id).await {
                    Ok(c) => Ok(ServerMessage::CashOutAccepted {
                        request_id,
                        bet_id: c.bet_id,
                        multiplier_x100: c.multiplier_x100,
                        payout: c.payout,
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

    fn bet(n: usize, user: &str) -> BetView {
        BetView {
            bet_id: format!("b{n:05}"),
            round: 1,
            username: user.into(),
            stake: 10,
            auto_cashout_x100: None,
            status: "open".into(),
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
