//! The Redis key layout of a fleet, shared by the game nodes (which read and write the keys) and
//! the operator (which writes a table's pause flag and reads its leader).
//!
//! Every key of a table carries the table in a hash tag, `crashfleet:{<table>}:…`, so one table's
//! keys (and so every script's keys) live in one slot of a Redis Cluster.

/// The names of one table's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    table: String,
}

impl Keys {
    pub fn new(table: &str) -> Keys {
        Keys {
            table: table.to_string(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(&self, name: &str) -> String {
        format!("crashfleet:{{{}}}:{name}", self.table)
    }

    /// The leader lock: `"<node id> <term>"`, with the lease as its expiry.
    pub fn leader(&self) -> String {
        self.key("leader")
    }
    /// `"1"` while the table's operator has it paused (redis election backend; the Lease's
    /// annotation for the other): read by the leader with every renewal of its lock.
    pub fn paused(&self) -> String {
        self.key("paused")
    }
    /// The term counter (`INCR` on every acquisition).
    pub fn term(&self) -> String {
        self.key("term")
    }
    /// The newest term that acquired leadership: leader scripts run only for exactly this term.
    pub fn fence(&self) -> String {
        self.key("fence")
    }
    /// The round being played: a hash of its plan and state (`open`, `crashed`, `void`).
    pub fn round(&self) -> String {
        self.key("round")
    }
    pub fn bets(&self, round: u64) -> String {
        self.key(&format!("bets:{round}"))
    }
    pub fn owners(&self, round: u64) -> String {
        self.key(&format!("owner:{round}"))
    }
    pub fn counts(&self, round: u64) -> String {
        self.key(&format!("count:{round}"))
    }
    pub fn autos(&self, round: u64) -> String {
        self.key(&format!("auto:{round}"))
    }
    pub fn cashes(&self, round: u64) -> String {
        self.key(&format!("cash:{round}"))
    }
    /// `"<node id> <term>"` of the newest leader that claimed the table (any election backend).
    pub fn leader_info(&self) -> String {
        self.key("leader-info")
    }
    /// The public event sequence counter.
    pub fn seq(&self) -> String {
        self.key("seq")
    }
    /// The table's public event channel.
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// Live nodes of the table: a sorted set of node id → heartbeat expiry (ms).
    pub fn nodes(&self) -> String {
        self.key("nodes")
    }
    pub fn node(&self, node_id: &str) -> String {
        self.key(&format!("node:{node_id}"))
    }
    /// The table chat's latest lines: a list of `chat` event JSON, oldest first, trimmed to the
    /// history length and expiring a day after its newest line.
    pub fn chat(&self) -> String {
        self.key("chat")
    }
    /// One player's chat messages in the current rate window (expires with the window).
    pub fn chat_rate(&self, username: &str) -> String {
        self.key(&format!("chat-rate:{username}"))
    }
    /// Chat mutes: a hash of username → muted until (Unix ms).
    pub fn chat_mutes(&self) -> String {
        self.key("chat-mutes")
    }
}

/// Player-private events (balances) of every table: one wallet per player across tables.
pub const PRIVATE_CHANNEL: &str = "crashfleet:private";
/// Live tables across regions: a sorted set of table id → heartbeat expiry (ms).
pub const TABLES_KEY: &str = "crashfleet:tables";
