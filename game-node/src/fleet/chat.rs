//! The table chat of a fleet, in Redis: one script checks the poster's mute and rate window,
//! appends the line to the table's history list and publishes it on the table's event channel
//! with the fleet-wide sequence number, all in one step; so every node delivers lines in one
//! order, that order is the history's, and the rate limit and the mutes hold across nodes.
//!
//! What Redis keeps: the latest `chat::HISTORY` lines (the list expires `chat::HISTORY_TTL_MS`
//! after its newest line), one counter per player who posted in the current window (expiring with
//! it), and a hash of mutes (expired entries are dropped whenever an admin sets a mute).

use std::sync::Arc;

use async_trait::async_trait;
use crashfleet_core::chat::{HISTORY, HISTORY_TTL_MS, PER_WINDOW, WINDOW_MS};
use fred::clients::Client;
use fred::interfaces::{HashesInterface, ListInterface};

use super::redis::{self as r, Keys, Scripts, int, status};
use crate::error::{Error, Result};
use crate::ports::{ChatRoom, Clock, Mute, to_json};
use crate::protocol::{ChatLine, ServerMessage};

pub struct RedisChat {
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    clock: Arc<dyn Clock>,
}

impl RedisChat {
    pub fn new(
        client: Client,
        keys: Keys,
        scripts: Arc<Scripts>,
        clock: Arc<dyn Clock>,
    ) -> RedisChat {
        RedisChat {
            client,
            keys,
            scripts,
            clock,
        }
    }
}

#[async_trait]
impl ChatRoom for RedisChat {
    async fn post(&self, line: &ChatLine) -> Result<()> {
        let json = to_json(&crate::chat::event(line))?;
        let reply = r::run(
            &self.client,
            &self.scripts.chat_post,
            vec![
                self.keys.seq(),
                self.keys.chat(),
                self.keys.chat_mutes(),
                self.keys.chat_rate(&line.username),
            ],
            vec![
                self.keys.events(),
                json.to_string(),
                line.username.clone(),
                PER_WINDOW.to_string(),
                WINDOW_MS.to_string(),
                HISTORY.to_string(),
                HISTORY_TTL_MS.to_string(),
            ],
        )
        .await?;
        match int(reply.first()) {
            status::OK => {
                metrics::counter!("crashfleet_bus_published_total").increment(1);
                Ok(())
            }
            status::MUTED => Err(Error::Muted {
                until_ms: int(reply.get(1)),
            }),
            status::LIMIT => Err(Error::ChatThrottled {
                retry_after_secs: (int(reply.get(1)).max(0) as u64).div_ceil(1_000).max(1),
            }),
            _ => Err(Error::Internal("posting a chat line failed".into())),
        }
    }

    async fn recent(&self) -> Result<Vec<ChatLine>> {
        let raw: Vec<String> = self
            .client
            .lrange(self.keys.chat(), 0, -1)
            .await
            .map_err(r::unavailable)?;
        let oldest = self.clock.now_ms() - HISTORY_TTL_MS;
        Ok(raw
            .iter()
            .filter_map(|json| match serde_json::from_str::<ServerMessage>(json) {
                Ok(ServerMessage::Chat {
                    username,
                    text,
                    at_ms,
                }) if at_ms >= oldest => Some(ChatLine {
                    username,
                    text,
                    at_ms,
                }),
                _ => None,
            })
            .collect())
    }

    async fn mute(&self, username: &str, until_ms: i64) -> Result<()> {
        let now = self.clock.now_ms();
        let expired: Vec<String> = self
            .mutes_raw()
            .await?
            .into_iter()
            .filter(|m| m.until_ms <= now)
            .map(|m| m.username)
            .collect();
        if !expired.is_empty() {
            let _: i64 = self
                .client
                .hdel(self.keys.chat_mutes(), expired)
                .await
                .map_err(r::unavailable)?;
        }
        if until_ms > now {
            let _: i64 = self
                .client
                .hset(self.keys.chat_mutes(), (username, until_ms))
                .await
                .map_err(r::unavailable)?;
        } else {
            let _: i64 = self
                .client
                .hdel(self.keys.chat_mutes(), username)
                .await
                .map_err(r::unavailable)?;
        }
        Ok(())
    }

    async fn mutes(&self) -> Result<Vec<Mute>> {
        let now = self.clock.now_ms();
        let mut list: Vec<Mute> = self
            .mutes_raw()
            .await?
            .into_iter()
            .filter(|m| m.until_ms > now)
            .collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(list)
    }
}

impl RedisChat {
    async fn mutes_raw(&self) -> Result<Vec<Mute>> {
        let all: std::collections::HashMap<String, i64> = self
            .client
            .hgetall(self.keys.chat_mutes())
            .await
            .map_err(r::unavailable)?;
        Ok(all
            .into_iter()
            .map(|(username, until_ms)| Mute { username, until_ms })
            .collect())
    }
}
