//! The Redis event bus. Public round events go out on the table's channel with a fleet-wide
//! sequence number (one `INCR` + `PUBLISH` script, whichever node publishes); private events
//! (balances) on one channel for all tables, addressed by player. Every node relays what it
//! receives to its own sockets through local broadcast channels, its own publications included,
//! so all nodes deliver in the same order.
//!
//! A receiver that sees a sequence gap, lags behind its buffer, or reconnects emits
//! [`PublicEvent::resync`]: every socket then takes a fresh snapshot of the round from Redis
//! (the arbiter's state), so no client stays on a stale round.

use std::sync::Arc;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::redis::{self as r, Keys, PRIVATE_CHANNEL, Scripts, int};
use crate::error::{Error, Result};
use crate::ports::{BUS_CAPACITY, Bus, Clock, PrivateEvent, PublicEvent, to_json};
use crate::protocol::ServerMessage;

pub struct RedisBus {
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    public: broadcast::Sender<PublicEvent>,
    private: broadcast::Sender<PrivateEvent>,
}

impl RedisBus {
    /// Subscribes and starts relaying (until `shutdown`).
    pub async fn start(
        client: Client,
        subscriber: SubscriberClient,
        keys: Keys,
        scripts: Arc<Scripts>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Arc<RedisBus>> {
        let bus = Arc::new(RedisBus {
            client,
            keys: keys.clone(),
            scripts,
            public: broadcast::channel(BUS_CAPACITY).0,
            private: broadcast::channel(BUS_CAPACITY).0,
        });
        // Take the receivers before subscribing so nothing published after SUBSCRIBE is missed.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        // Re-subscribes to the tracked channels after every reconnect (fred does not by itself).
        let _resubscriber = subscriber.manage_subscriptions();
        subscriber
            .subscribe(vec![keys.events(), PRIVATE_CHANNEL.to_string()])
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to the table's events: {e}"))?;
        tasks.spawn(relay(
            bus.clone(),
            subscriber,
            messages,
            reconnects,
            clock,
            shutdown,
        ));
        Ok(bus)
    }
}

/// The receiving side: parse, detect gaps, hand to the local channels.
async fn relay(
    bus: Arc<RedisBus>,
    subscriber: SubscriberClient,
    mut messages: broadcast::Receiver<fred::types::Message>,
    mut reconnects: broadcast::Receiver<fred::types::config::Server>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let events = bus.keys.events();
    let mut last_seq: u64 = 0;
    let resync = |why: &'static str, last_seq: &mut u64| {
        tracing::info!(why, "event bus resync");
        metrics::counter!("crashfleet_bus_resyncs_total", "reason" => why).increment(1);
        *last_seq = 0;
        let _ = bus.public.send(PublicEvent::resync());
    };
    loop {
        tokio::select! {
            m = messages.recv() => match m {
                Ok(m) => {
                    let Some(payload) = m.value.as_str().map(|s| s.to_string()) else {
                        continue;
                    };
                    if &*m.channel == PRIVATE_CHANNEL {
                        if let Some((player, json)) = payload.split_once('\n') {
                            let _ = bus.private.send(PrivateEvent {
                                player_id: player.to_string(),
                                json: json.to_string().into(),
                            });
                        }
                    } else if *m.channel == *events {
                        let Some((head, json)) = payload.split_once('\n') else { continue };
                        let mut parts = head.split(' ');
                        let seq = parts.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                        let sent = parts.next().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
                        metrics::gauge!("crashfleet_bus_lag_ms")
                            .set((clock.now_ms() - sent).max(0) as f64);
                        if last_seq != 0 && seq != last_seq + 1 {
                            resync("gap", &mut last_seq);
                        }
                        last_seq = seq;
                        let _ = bus.public.send(PublicEvent { seq, json: json.to_string().into() });
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "this node fell behind the Redis event stream");
                    resync("lag", &mut last_seq);
                }
                Err(RecvError::Closed) => return,
            },
            s = reconnects.recv() => match s {
                // Events published while disconnected are lost to this node: resync.
                Ok(_) | Err(RecvError::Lagged(_)) => resync("reconnect", &mut last_seq),
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => {
                let _ = subscriber.quit().await;
                return;
            }
        }
    }
}

impl RedisBus {
    /// Publishes a public event, fenced by `term` when a leader sends it.
    async fn send(&self, term: Option<u64>, msg: &ServerMessage) -> Result<()> {
        let json = to_json(msg)?;
        let reply = r::run(
            &self.client,
            &self.scripts.publish,
            vec![self.keys.seq(), self.keys.fence()],
            vec![
                self.keys.events(),
                json.to_string(),
                term.map_or_else(String::new, |t| t.to_string()),
            ],
        )
        .await?;
        match int(reply.first()) {
            r::status::OK => {
                metrics::counter!("crashfleet_bus_published_total").increment(1);
                Ok(())
            }
            r::status::FENCED => Err(r::fenced(term.unwrap_or(0), &reply)),
            _ => Err(Error::Internal("publishing an event failed".into())),
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, msg: &ServerMessage) -> Result<()> {
        self.send(None, msg).await
    }

    async fn publish_as_leader(&self, term: u64, msg: &ServerMessage) -> Result<()> {
        self.send(Some(term), msg).await
    }

    async fn publish_private(&self, player_id: &str, msg: &ServerMessage) -> Result<()> {
        let json = to_json(msg)?;
        let _: i64 = self
            .client
            .publish(PRIVATE_CHANNEL, format!("{player_id}\n{json}"))
            .await
            .map_err(r::unavailable)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<PublicEvent> {
        self.public.subscribe()
    }

    fn subscribe_private(&self) -> broadcast::Receiver<PrivateEvent> {
        self.private.subscribe()
    }
}
