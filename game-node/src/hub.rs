//! Routes per-player events (balance changes, auto-cash-out receipts) from the bus to that
//! player's sockets on this node.
//!
//! Why not let every socket filter the bus's private stream: each private event would wake every
//! socket of the node — at 3,000 bets/s and 20,000 sockets that is 60 million wake-ups a second.
//! One router task looks the player up instead. A balance is latest-value, so each socket holds a
//! `watch` slot for it: a slow socket skips stale balances and never grows a queue. Every other
//! private event (an auto-cash-out's signed receipt) must arrive, so it goes into a short queue
//! per socket ([`NOTICES_PER_SOCKET`]; an empty queue allocates nothing).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ports::{Bus, Frame};

/// Private events other than balances a socket holds until it writes them. A player gets one per
/// auto-cash-out (at most `--bets-per-player` per round), so 32 is rounds' worth; a socket that
/// lets more pile up has stopped reading and is closed by its write timeout. Past the cap the
/// oldest is dropped and counted in `crashfleet_private_notices_dropped_total`.
pub const NOTICES_PER_SOCKET: usize = 32;

/// A socket's queue of private events that must each be delivered.
#[derive(Default)]
pub struct Notices {
    queue: Mutex<VecDeque<Frame>>,
    ready: tokio::sync::Notify,
}

impl Notices {
    fn push(&self, frame: Frame) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= NOTICES_PER_SOCKET {
                q.pop_front();
                metrics::counter!("crashfleet_private_notices_dropped_total").increment(1);
            }
            q.push_back(frame);
        }
        // Stores a permit when the socket is not waiting: no wake-up is lost.
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Frame> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let frame = q.pop_front();
        if q.is_empty() && q.capacity() > 4 {
            // A burst is over: give its memory back.
            *q = VecDeque::new();
        }
        frame
    }
}

/// A private event that only matters as its latest value: a balance (`{"type":"balance",...}`,
/// the shape `ServerMessage::Balance` serialises to; a test pins it).
pub fn is_latest_value(json: &str) -> bool {
    json.starts_with(r#"{"type":"balance","#)
}

struct Slot {
    id: u64,
    latest: watch::Sender<Option<Frame>>,
    notices: Arc<Notices>,
}

#[derive(Default)]
pub struct PlayerRoutes {
    next_id: AtomicU64,
    routes: Mutex<HashMap<String, Vec<Slot>>>,
}

/// A socket's subscription to its player's events; unregisters itself when dropped.
pub struct Registration {
    routes: Arc<PlayerRoutes>,
    player_id: String,
    id: u64,
    /// The latest balance.
    pub rx: watch::Receiver<Option<Frame>>,
    notices: Arc<Notices>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.routes.lock();
        if let Some(slots) = routes.get_mut(&self.player_id) {
            slots.retain(|s| s.id != self.id);
            if slots.is_empty() {
                routes.remove(&self.player_id);
            }
        }
    }
}

impl Registration {
    pub fn player_id(&self) -> &str {
        &self.player_id
    }

    /// The next private event for this socket: a queued notice, else a new balance. Never
    /// resolves once the player's routes are gone.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.notices.pop() {
                return Some(frame);
            }
            tokio::select! {
                () = self.notices.ready.notified() => {}
                changed = self.rx.changed() => match changed {
                    Ok(()) => return self.rx.borrow_and_update().clone(),
                    Err(_) => std::future::pending::<()>().await,
                },
            }
        }
    }
}

impl PlayerRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Slot>>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep serving.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(self: &Arc<Self>, player_id: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (latest, rx) = watch::channel(None);
        let notices = Arc::new(Notices::default());
        self.lock()
            .entry(player_id.to_string())
            .or_default()
            .push(Slot {
                id,
                latest,
                notices: notices.clone(),
            });
        Registration {
            routes: self.clone(),
            player_id: player_id.to_string(),
            id,
            rx,
            notices,
        }
    }

    pub fn deliver(&self, player_id: &str, json: Frame) {
        if let Some(slots) = self.lock().get(player_id) {
            let latest = is_latest_value(&json);
            for slot in slots {
                if latest {
                    slot.latest.send_replace(Some(json.clone()));
                } else {
                    slot.notices.push(json.clone());
                }
            }
        }
    }

    /// Number of players with at least one socket here.
    pub fn players(&self) -> usize {
        self.lock().len()
    }
}

/// Moves private events from the bus to the registered sockets until shutdown.
pub async fn route(bus: Arc<dyn Bus>, routes: Arc<PlayerRoutes>, shutdown: CancellationToken) {
    let mut rx = bus.subscribe_private();
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(e) => routes.deliver(&e.player_id, e.json),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "private event router fell behind");
                    metrics::counter!("crashfleet_private_events_dropped_total").increment(n);
                }
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_only_to_the_players_sockets_and_unregisters_on_drop() {
        let routes = Arc::new(PlayerRoutes::default());
        let a1 = routes.register("a");
        let a2 = routes.register("a");
        let b = routes.register("b");
        let (one, two) = (
            r#"{"type":"balance","balance":1}"#,
            r#"{"type":"balance","balance":2}"#,
        );
        routes.deliver("a", one.into());
        routes.deliver("a", two.into());
        assert_eq!(a1.rx.borrow().as_ref().map(|s| s.as_str()), Some(two));
        assert_eq!(a2.rx.borrow().as_ref().map(|s| s.as_str()), Some(two));
        assert!(b.rx.borrow().is_none());
        drop(a1);
        drop(a2);
        assert_eq!(routes.players(), 1);
        drop(b);
        assert_eq!(routes.players(), 0);
    }

    fn frame(m: &crate::protocol::ServerMessage) -> Frame {
        crate::ports::to_json(m).expect("json")
    }

    #[tokio::test]
    async fn a_balance_never_hides_a_receipt_and_notices_arrive_in_order() {
        use crate::protocol::ServerMessage;
        let balance = |b| frame(&ServerMessage::Balance { balance: b });
        assert!(
            is_latest_value(&balance(5)),
            "the shape balances serialise to"
        );
        let routes = Arc::new(PlayerRoutes::default());
        let mut a = routes.register("a");
        // A balance, two notices, then newer balances: both notices and the newest balance
        // arrive; the stale balances do not.
        routes.deliver("a", balance(1));
        routes.deliver("a", "{\"type\":\"auto_cash_out\",\"n\":1}".into());
        routes.deliver("a", "{\"type\":\"auto_cash_out\",\"n\":2}".into());
        routes.deliver("a", balance(2));
        routes.deliver("a", balance(3));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(a.next().await.expect("a frame").to_string());
        }
        assert!(
            got[0].contains("\"n\":1") && got[1].contains("\"n\":2"),
            "{got:?}"
        );
        assert_eq!(got[2], balance(3).to_string());
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), a.next()).await;
        assert!(nothing.is_err(), "nothing else is pending");
        // A socket that stops reading keeps only the newest notices.
        for n in 0..NOTICES_PER_SOCKET + 5 {
            routes.deliver("a", format!("{{\"type\":\"x\",\"n\":{n}}}").into());
        }
        let first = a.next().await.expect("a frame").to_string();
        assert_eq!(first, "{\"type\":\"x\",\"n\":5}");
    }
}
