//! The public bet feed: bets accepted on this node are announced to every player in batches — one
//! `bets_placed` message per round per interval (100 ms) instead of one `bet_placed` per bet.
//!
//! Why: every public event is a frame to every player. At 1,000 bets/s and 300 watching players,
//! one message per bet was 300,000 frames a second; the node spent its CPU in writes, the players'
//! sockets fell behind and were cut, and bet latency rose to seconds (docs/BENCHMARKS.md,
//! "before"). Batched, the same load is 10 frames per player per second, like the ticks. In a
//! fleet each replica batches the bets it accepted, which also cuts Redis pub/sub traffic.
//!
//! The feed is display only: no money depends on it (a bet's owner gets `bet_accepted` or the REST
//! answer at once, and balances travel privately), so under overload it drops announcements rather
//! than queue without bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ports::Bus;
use crate::protocol::{BetView, ServerMessage};

/// How long bets gather before one announcement (the default tick interval).
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Most bets in one message (a frame stays well under 100 KiB).
pub const MAX_BATCH: usize = 500;
/// Bets waiting for announcement beyond which new ones are not announced.
const QUEUE: usize = 65_536;

#[derive(Clone)]
pub struct BetFeed {
    tx: mpsc::Sender<BetView>,
}

impl BetFeed {
    /// The feed and the task that announces its batches until `shutdown` (then flushes once).
    pub fn start(
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> (BetFeed, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (BetFeed { tx }, tasks.spawn(run(rx, bus, shutdown)))
    }

    /// Queues a bet for the next announcement.
    pub fn announce(&self, bet: BetView) {
        if self.tx.try_send(bet).is_err() {
            metrics::counter!("crashfleet_bet_feed_dropped_total").increment(1);
        }
    }
}

async fn run(mut rx: mpsc::Receiver<BetView>, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        // Wait for a first bet, then let the interval's others join it.
        let first = tokio::select! {
            b = rx.recv() => b,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else {
            // Shutdown (or every sender gone): announce what is left, once.
            while let Ok(b) = rx.try_recv() {
                batch.push(b);
            }
            publish(&*bus, &mut batch).await;
            return;
        };
        batch.push(first);
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.cancelled() => {}
        }
        while batch.len() < QUEUE {
            match rx.try_recv() {
                Ok(b) => batch.push(b),
                Err(_) => break,
            }
        }
        publish(&*bus, &mut batch).await;
    }
}

/// One message per round (bets of two rounds can meet at a round's boundary) and per
/// `MAX_BATCH` bets.
async fn publish(bus: &dyn Bus, batch: &mut Vec<BetView>) {
    let mut by_round: BTreeMap<u64, Vec<BetView>> = BTreeMap::new();
    for b in batch.drain(..) {
        by_round.entry(b.round).or_default().push(b);
    }
    for (round, bets) in by_round {
        for chunk in bets.chunks(MAX_BATCH) {
            let _ = bus
                .publish(&ServerMessage::BetsPlaced {
                    round,
                    bets: chunk.to_vec(),
                })
                .await;
        }
    }
}
