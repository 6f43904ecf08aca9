//! Routes per-player events (balance changes) from the bus to that player's sockets on this node.
//!
//! Why not let every socket filter the bus's private stream: each private event would wake every
//! socket of the node — at 3,000 bets/s and 20,000 sockets that is 60 million wake-ups a second.
//! One router task looks the player up instead. Private events are latest-value (a balance), so
//! each socket holds a `watch` slot: a slow socket skips stale balances and never grows a queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ports::{Bus, Frame};

type Slot = (u64, watch::Sender<Option<Frame>>);

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
    pub rx: watch::Receiver<Option<Frame>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.routes.lock();
        if let Some(slots) = routes.get_mut(&self.player_id) {
            slots.retain(|(id, _)| *id != self.id);
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
}

impl PlayerRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Slot>>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep serving.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(self: &Arc<Self>, player_id: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.lock()
            .entry(player_id.to_string())
            .or_default()
            .push((id, tx));
        Registration {
            routes: self.clone(),
            player_id: player_id.to_string(),
            id,
            rx,
        }
    }

    pub fn deliver(&self, player_id: &str, json: Frame) {
        if let Some(slots) = self.lock().get(player_id) {
            for (_, tx) in slots {
                tx.send_replace(Some(json.clone()));
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
        routes.deliver("a", "one".into());
        routes.deliver("a", "two".into());
        assert_eq!(a1.rx.borrow().as_ref().map(|s| s.as_str()), Some("two"));
        assert_eq!(a2.rx.borrow().as_ref().map(|s| s.as_str()), Some("two"));
        assert!(b.rx.borrow().is_none());
        drop(a1);
        drop(a2);
        assert_eq!(routes.players(), 1);
        drop(b);
        assert_eq!(routes.players(), 0);
    }
}
