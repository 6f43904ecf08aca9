//! Leader, term and rounds played of a table whose replicas elect through Redis
//! (`leaderElection.backend: redis`), read where that fleet already publishes them (and its
//! pause key `crashfleet:{<table>}:paused`, written from `spec.paused`): the lock
//! `crashfleet:{<table>}:leader` (`"<node id> <term>"`, expiring with the lease, so a dead
//! leader disappears by itself) and the round hash `crashfleet:{<table>}:round`.
//!
//! Why read Redis rather than have the leader mirror itself onto the Lease: the lock *is* the
//! election record, so what status shows cannot drift from who leads; the nodes need no
//! Kubernetes access for this backend; and the operator needs no RBAC beyond the Secret `get` it
//! already holds (it reads the URL the table's nodes use). The cost is that the operator must
//! reach each redis-backend table's Redis over the network; when it cannot, status shows no
//! leader (`Ready` False, reason `NoLeader`, and the error in the message) and play is unaffected.

use std::collections::HashMap;
use std::time::Duration;

use crashfleet_core::keys::Keys;
use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use fred::prelude::{Builder, Config};
use tokio::sync::Mutex;

/// A status read must not hold a reconcile up for long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the fleet published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub leader: Option<String>,
    pub term: Option<i64>,
    pub rounds_played: Option<i64>,
}

/// The lock's value: `"<node id> <term>"` (a node id may contain spaces; the term is last).
pub fn parse_lock(value: &str) -> Option<(String, i64)> {
    let (node, term) = value.trim().rsplit_once(' ')?;
    let term = term.parse().ok()?;
    (!node.is_empty()).then(|| (node.to_string(), term))
}

/// Rounds finished, from the round hash's `number` and `state`: a round still `open` is not
/// played yet; a `crashed` or `void` one is done.
pub fn rounds_played(number: Option<i64>, state: Option<&str>) -> Option<i64> {
    let n = number?;
    Some(if state == Some("open") { n - 1 } else { n }).filter(|n| *n > 0)
}

/// One Redis client per URL, kept across reconciles.
#[derive(Default)]
pub struct RedisStatus {
    clients: Mutex<HashMap<String, Client>>,
}

impl RedisStatus {
    async fn client(&self, url: &str) -> Result<Client, String> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        // `rediss://` builds a rustls client; an error only means a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Config::from_url(url).map_err(|e| format!("the Redis URL: {e}"))?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = TIMEOUT;
                c.internal_command_timeout = TIMEOUT;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = TIMEOUT)
            .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
                0, 100, 2_000, 2,
            ));
        let client = builder.build().map_err(|e| e.to_string())?;
        tokio::time::timeout(TIMEOUT, client.init())
            .await
            .map_err(|_| "connecting to Redis timed out".to_string())?
            .map_err(|e| format!("connecting to Redis: {e}"))?;
        clients.insert(url.to_string(), client.clone());
        Ok(client)
    }

    /// Sets (or clears) table `table`'s pause key in the Redis at `url`; `Ok(true)` when it
    /// changed.
    pub async fn write_paused(&self, url: &str, table: &str, paused: bool) -> Result<bool, String> {
        let client = self.client(url).await?;
        let key = Keys::new(table).paused();
        let now: Option<String> = client.get(&key).await.map_err(|e| e.to_string())?;
        if (now.as_deref() == Some("1")) == paused {
            return Ok(false);
        }
        if paused {
            let () = client
                .set(&key, "1", None, None, false)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let _: i64 = client.del(&key).await.map_err(|e| e.to_string())?;
        }
        Ok(true)
    }

    /// Reads table `table`'s leader, term and rounds played from the Redis at `url`.
    pub async fn read(&self, url: &str, table: &str) -> Result<Published, String> {
        let client = self.client(url).await?;
        let keys = Keys::new(table);
        let lock: Option<String> = client.get(keys.leader()).await.map_err(|e| e.to_string())?;
        let round: HashMap<String, String> = client
            .hgetall(keys.round())
            .await
            .map_err(|e| e.to_string())?;
        let (leader, term) = lock
            .as_deref()
            .and_then(parse_lock)
            .map_or((None, None), |(l, t)| (Some(l), Some(t)));
        Ok(Published {
            leader,
            term,
            rounds_played: rounds_played(
                round.get("number").and_then(|n| n.parse().ok()),
                round.get("state").map(String::as_str),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_names_the_node_and_its_term() {
        assert_eq!(parse_lock("play-0 7"), Some(("play-0".into(), 7)));
        assert_eq!(parse_lock("a node 12\n"), Some(("a node".into(), 12)));
        assert_eq!(parse_lock("play-0"), None);
        assert_eq!(parse_lock(" 3"), None);
        assert_eq!(parse_lock("play-0 x"), None);
    }

    #[test]
    fn an_open_round_is_not_played_yet() {
        assert_eq!(rounds_played(Some(5), Some("open")), Some(4));
        assert_eq!(rounds_played(Some(5), Some("crashed")), Some(5));
        assert_eq!(rounds_played(Some(5), Some("void")), Some(5));
        assert_eq!(rounds_played(Some(1), Some("open")), None);
        assert_eq!(rounds_played(None, None), None);
    }
}
