//! Heartbeats and the views built from them: `GET /api/v1/fleet` (this table's leader, term and
//! live nodes) and `GET /api/v1/lobby` (live tables across regions).
//!
//! Every node writes `{node id, region, connections, version}` under its own key with a TTL of two
//! heartbeat intervals, and scores itself in the table's `nodes` sorted set (and the table in the
//! global `tables` set) by that expiry. Readers take only members whose expiry is in the future,
//! so a dead node disappears within two heartbeat intervals even if nobody prunes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::Expiration;
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;
use fred::interfaces::ClientLike;

use super::redis::{self as r, Keys, TABLES_KEY};
use crate::engine::Curve;
use crate::error::{Error, Result};
use crate::ports::{Clock, FleetView, LeaderInfo, NodeReport};
use crate::protocol::{LobbyTable, NodeInfo, Phase};

pub struct Presence {
    client: Client,
    keys: Keys,
    clock: Arc<dyn Clock>,
    heartbeat: Duration,
    /// This node, as each heartbeat reports it.
    node: NodeReport,
}

impl Presence {
    pub fn new(
        client: Client,
        keys: Keys,
        clock: Arc<dyn Clock>,
        heartbeat: Duration,
        node: NodeReport,
    ) -> Presence {
        Presence {
            client,
            keys,
            clock,
            heartbeat,
            node,
        }
    }

    fn ttl_ms(&self) -> i64 {
        2 * self.heartbeat.as_millis() as i64
    }

    /// One heartbeat.
    pub async fn beat(&self, node: &NodeInfo) -> Result<()> {
        let now = self.clock.now_ms();
        let expiry = now + self.ttl_ms();
        let json = serde_json::to_string(node).map_err(|e| Error::Internal(e.to_string()))?;
        let c = &self.client;
        let _: () = c
            .set(
                self.keys.node(&node.node_id),
                json,
                Some(Expiration::PX(self.ttl_ms())),
                None,
                false,
            )
            .await
            .map_err(r::unavailable)?;
        let _: () = c
            .zadd(
                self.keys.nodes(),
                None,
                None,
                false,
                false,
                (expiry as f64, node.node_id.as_str()),
            )
            .await
            .map_err(r::unavailable)?;
        let _: () = c
            .zadd(
                TABLES_KEY,
                None,
                None,
                false,
                false,
                (expiry as f64, self.keys.table()),
            )
            .await
            .map_err(r::unavailable)?;
        // Keep the sets small: forget members that expired a while ago.
        let _: () = c
            .zremrangebyscore(self.keys.nodes(), f64::NEG_INFINITY, (now - 60_000) as f64)
            .await
            .map_err(r::unavailable)?;
        let _: () = c
            .zremrangebyscore(TABLES_KEY, f64::NEG_INFINITY, (now - 60_000) as f64)
            .await
            .map_err(r::unavailable)?;
        Ok(())
    }

    /// The live nodes of `keys`'s table.
    async fn live_nodes(&self, keys: &Keys) -> Result<Vec<NodeInfo>> {
        let now = self.clock.now_ms();
        let ids: Vec<String> = self
            .client
            .zrangebyscore(keys.nodes(), now as f64, f64::INFINITY, false, None)
            .await
            .map_err(r::unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self
            .client
            .mget(ids.iter().map(|id| keys.node(id)).collect::<Vec<_>>())
            .await
            .map_err(r::unavailable)?;
        let mut nodes: Vec<NodeInfo> = values
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    /// This table's leader (from the lock) and live nodes.
    async fn leader_and_nodes(&self) -> Result<(Option<LeaderInfo>, Vec<NodeInfo>)> {
        // The Redis lock when that backend elects; otherwise the newest claimed leadership.
        let mut lock: Option<String> = self
            .client
            .get(self.keys.leader())
            .await
            .map_err(r::unavailable)?;
        if lock.is_none() {
            lock = self
                .client
                .get(self.keys.leader_info())
                .await
                .map_err(r::unavailable)?;
        }
        let leader = lock.and_then(|v| {
            let (node, term) = v.rsplit_once(' ')?;
            Some(LeaderInfo {
                node_id: node.to_string(),
                term: term.parse().ok()?,
            })
        });
        Ok((leader, self.live_nodes(&self.keys).await?))
    }

    /// Every live table, with its phase and multiplier now and its players online.
    async fn live_tables(&self) -> Result<Vec<LobbyTable>> {
        let now = self.clock.now_ms();
        let tables: Vec<String> = self
            .client
            .zrangebyscore(TABLES_KEY, now as f64, f64::INFINITY, false, None)
            .await
            .map_err(r::unavailable)?;
        let mut out = Vec::new();
        for table in tables {
            let keys = Keys::new(&table);
            let nodes = self.live_nodes(&keys).await?;
            if nodes.is_empty() {
                continue;
            }
            let h: HashMap<String, String> = self
                .client
                .hgetall(keys.round())
                .await
                .map_err(r::unavailable)?;
            let doubling = h.get("doubling_ms").and_then(|d| d.parse::<u64>().ok());
            let (phase, round, multiplier_x100) =
                match (super::arbiter::plan_from_hash(&h), doubling) {
                    (Some((plan, state)), Some(d)) if state != "void" => {
                        let phase = plan.phase(now);
                        let m = (phase == Phase::Flying).then(|| {
                            Curve::from_doubling_ms(d)
                                .multiplier_x100((now - plan.started_at_ms).max(0) as u64)
                        });
                        (phase, Some(plan.number), m)
                    }
                    _ => (Phase::Idle, None, None),
                };
            out.push(LobbyTable {
                table: table.clone(),
                region: nodes[0].region.clone(),
                phase,
                round,
                multiplier_x100,
                players_online: nodes.iter().map(|n| n.connections).sum(),
                nodes: nodes.len(),
                public_url: nodes.iter().find_map(|n| n.public_url.clone()),
            });
        }
        out.sort_by(|a, b| {
            (a.region.as_str(), a.table.as_str()).cmp(&(b.region.as_str(), b.table.as_str()))
        });
        Ok(out)
    }
}

#[async_trait]
impl FleetView for Presence {
    async fn fleet(&self) -> Result<(Option<LeaderInfo>, Vec<NodeInfo>)> {
        self.leader_and_nodes().await
    }

    async fn lobby(&self) -> Result<Vec<LobbyTable>> {
        self.live_tables().await
    }

    async fn ready(&self) -> Result<()> {
        let _: String = self
            .client
            .ping(None)
            .await
            .map_err(|e| Error::Unavailable(format!("redis: {e}")))?;
        Ok(())
    }

    /// Heartbeats every interval (fresh figures each time) until shutdown.
    fn announce(
        self: Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) {
        tasks.spawn(async move {
            let mut every = tokio::time::interval(self.heartbeat);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if let Err(e) = self.beat(&(self.node)()).await {
                            tracing::debug!(error = %e, "heartbeat failed");
                        }
                    }
                    _ = shutdown.cancelled() => {
                        // Leave the fleet view at once rather than after the TTL.
                        let id = (self.node)().node_id;
                        let _: std::result::Result<i64, _> = self.client.del(self.keys.node(&id)).await;
                        let _: std::result::Result<i64, _> = self.client.zrem(self.keys.nodes(), id).await;
                        return;
                    }
                }
            }
        });
    }
}
