//! The Redis connection, the key layout, the fleet clock and the Lua scripts every fleet adapter
//! shares.
//!
//! ## Connection policy
//! fred does not reconnect by default. Both clients (commands, and the pub/sub subscriber)
//! reconnect forever with exponential back-off from 100 ms to 2 s, so a Redis restart heals by
//! itself within about two seconds of Redis coming back. Commands time out after
//! [`COMMAND_TIMEOUT`] and are never re-sent after a broken connection (`max_command_attempts`
//! = 1): a money request is answered `unavailable` promptly instead of hanging, and a script that
//! may already have run is never run twice.
//!
//! ## Keys
//! Every key of a table carries the table in a hash tag, `crashfleet:{<table>}:…`, so one table's
//! keys (and so every script's keys) live in one slot of a Redis Cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::prelude::{Builder, Config, ReconnectPolicy};
use fred::types::Value;
use fred::types::scripts::Script;

use crate::error::{Error, Result};
use crate::ports::{Clock, TokioClock};

/// How long any Redis command may take before the request that needed it fails `unavailable`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_500);

/// How long a round's bet keys outlive their last write (inspection, late retries, adoption).
/// Rounds last seconds and a successor adopts one within its lease; ten minutes covers any retry
/// while keeping Redis at a few dozen rounds' keys, so its memory stays flat (the soak run checks).
pub const ROUND_KEYS_TTL_MS: i64 = 600_000;

/// Messages the subscriber client buffers before its receivers count as lagging. A busy second is
/// ten ticks plus ten `bets_placed` batches from each replica (crate::feed) and a few round
/// events; 16 Ki messages is minutes of that, so only a stalled receiver lags, and it resyncs from
/// a snapshot rather than blocking.
pub const SUBSCRIBER_BUFFER: usize = 16_384;

pub use crashfleet_core::keys::{Keys, PRIVATE_CHANNEL, TABLES_KEY};

/// The two connections of a node: commands (scripts, heartbeats, reads) and the subscriber.
#[derive(Clone)]
pub struct RedisConn {
    pub client: Client,
    pub subscriber: SubscriberClient,
}

/// Connects both clients; fails at start (one clear line) if Redis cannot be reached at all.
pub async fn connect(url: &str) -> anyhow::Result<RedisConn> {
    // `rediss://` builds a rustls client: name its crypto provider (ring) once per process rather
    // than leave rustls to guess from crate features. An error only means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_url(url).map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = SUBSCRIBER_BUFFER;
        });
    let client = builder.build()?;
    let subscriber = builder.build_subscriber_client()?;
    client
        .init()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to Redis: {e}"))?;
    subscriber
        .init()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to Redis (subscriber): {e}"))?;
    Ok(RedisConn { client, subscriber })
}

/// Any Redis failure, as players and operators see it.
pub fn unavailable(e: fred::error::Error) -> Error {
    Error::Unavailable(format!("redis unavailable: {e}"))
}

/// Runs a script by hash, loading it on `NOSCRIPT` (after a Redis restart the cache is empty).
pub async fn run(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<Vec<Value>> {
    let v: Value = script
        .evalsha_with_reload(client, keys, args)
        .await
        .map_err(unavailable)?;
    match v {
        Value::Array(a) => Ok(a),
        other => Err(Error::Internal(format!(
            "a Redis script answered {other:?}"
        ))),
    }
}

/// Reads an integer from a script reply.
pub fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Integer(i)) => *i,
        Some(Value::String(s)) => s.parse::<f64>().map_or(0, |f| f as i64),
        Some(Value::Bytes(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |f| f as i64),
        Some(Value::Double(d)) => *d as i64,
        _ => 0,
    }
}

/// Reads a string from a script reply.
pub fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.to_string()),
        Some(Value::Bytes(b)) => std::str::from_utf8(b).ok().map(str::to_string),
        Some(Value::Integer(i)) => Some(i.to_string()),
        _ => None,
    }
}

/// The fleet's clock: this node's clock corrected by its measured offset from Redis `TIME`.
///
/// Bets and cash-outs are decided inside Redis against `TIME` itself; the leader uses this clock
/// to plan rounds and to wake at the right instants, so a node whose own clock is off by seconds
/// still plans in Redis's time. The offset is measured as the midpoint of a `TIME` round trip
/// (error at most half the round trip, well under a millisecond on a LAN).
pub struct RedisClock {
    local: TokioClock,
    offset_ms: AtomicI64,
}

impl RedisClock {
    pub fn new() -> RedisClock {
        RedisClock {
            local: TokioClock::new(),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Measures the offset once.
    pub async fn calibrate(&self, client: &Client) -> Result<()> {
        let before = self.local.now_ms();
        let v: Vec<Value> = client
            .custom(
                fred::types::CustomCommand::new_static("TIME", None, false),
                Vec::<String>::new(),
            )
            .await
            .map_err(unavailable)?;
        let after = self.local.now_ms();
        let secs = int(v.first());
        let micros = int(v.get(1));
        let redis_ms = secs * 1_000 + micros / 1_000;
        self.offset_ms
            .store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Re-measures every few seconds (clocks drift; Redis may be replaced by a failover).
    pub fn spawn_calibration(
        self: &Arc<Self>,
        client: Client,
        shutdown: tokio_util::sync::CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        let clock = self.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if let Err(e) = clock.calibrate(&client).await {
                            tracing::debug!(error = %e, "clock calibration against Redis failed");
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

impl Default for RedisClock {
    fn default() -> Self {
        RedisClock::new()
    }
}

impl Clock for RedisClock {
    fn now_ms(&self) -> i64 {
        self.local.now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }
}

/// Lua shared by the scripts: Redis's own clock in ms, and the fencing check.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fence_ok(key, term)
  return tonumber(redis.call('GET', key) or '0') == tonumber(term)
end
local function fence_of(key)
  return tonumber(redis.call('GET', key) or '0')
end
"#;

fn script(body: &str) -> Script {
    Script::from_lua(format!("{PRELUDE}\n{body}"))
}

/// The scripts, compiled once per process.
pub struct Scripts {
    pub acquire: Script,
    pub claim: Script,
    pub renew: Script,
    pub release: Script,
    pub publish: Script,
    pub open_round: Script,
    pub adopt: Script,
    pub place_bet: Script,
    pub cancel_bet: Script,
    pub cash_out: Script,
    pub due_autos: Script,
    pub close_round: Script,
    pub chat_post: Script,
}

/// Status codes the scripts answer with (first element of every reply).
pub mod status {
    pub const OK: i64 = 1;
    pub const FENCED: i64 = -100;
    pub const CLOSED: i64 = -1;
    pub const LIMIT: i64 = -2;
    pub const DUPLICATE: i64 = -3;
    pub const UNKNOWN: i64 = -4;
    pub const FORBIDDEN: i64 = -5;
    pub const SETTLED: i64 = -6;
    pub const TOO_LATE: i64 = -7;
    pub const NOT_FLYING: i64 = -8;
    pub const MUTED: i64 = -9;
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            // KEYS: leader, term, fence, paused. ARGV: node id, lease ms, term floor.
            // The term comes from INCR, raised to the floor (the ledger's newest term + 1) so a
            // Redis that lost its data never hands out a term PostgreSQL has already seen.
            // Answers {1, term, paused}.
            acquire: script(
                r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('GET', KEYS[1])} end
local t = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if t < floor then redis.call('SET', KEYS[2], floor); t = floor end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2])
redis.call('SET', KEYS[3], t)
return {1, t, redis.call('GET', KEYS[4]) == '1' and 1 or 0}
"#,
            ),
            // KEYS: fence, leader-info. ARGV: term, node id. A new leader (whatever elected it)
            // raises the fence to its term before its first write; an older term is refused.
            claim: script(
                r#"
local f = fence_of(KEYS[1])
if f > tonumber(ARGV[1]) then return {-100, f} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[1])
return {1}
"#,
            ),
            // KEYS: leader, paused. ARGV: "<node> <term>", lease ms. Renews only the holder's
            // own lock; answers {1, paused}.
            renew: script(
                r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('GET', KEYS[2]) == '1' and 1 or 0}
end
return {0, redis.call('GET', KEYS[1]) or ''}
"#,
            ),
            // KEYS: leader. ARGV: "<node> <term>".
            release: script(
                r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); return {1} end
return {0}
"#,
            ),
            // KEYS: seq, fence. ARGV: channel, payload, term ('' for a replica's event).
            // One fleet-wide sequence for the table's events, whichever node publishes, so every
            // receiver can see a gap; a leader's event goes out only while its term is the newest.
            publish: script(
                r#"
if ARGV[3] ~= '' and not fence_ok(KEYS[2], ARGV[3]) then return {-100, fence_of(KEYS[2])} end
local s = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], s .. ' ' .. now_ms() .. '\n' .. ARGV[2])
return {1, s}
"#,
            ),
            // KEYS: fence, round. ARGV: term, number, opened, started, crash_at, next_at,
            // crash_x100, hash, doubling_ms.
            open_round: script(
                r#"
if not fence_ok(KEYS[1], ARGV[1]) then return {-100, fence_of(KEYS[1])} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'number', ARGV[2], 'term', ARGV[1], 'opened', ARGV[3],
  'started', ARGV[4], 'crash_at', ARGV[5], 'next_at', ARGV[6], 'crash_x100', ARGV[7],
  'hash', ARGV[8], 'doubling_ms', ARGV[9], 'state', 'open')
return {1}
"#,
            ),
            // KEYS: fence, round. ARGV: term, number. The new term takes the round over.
            adopt: script(
                r#"
if not fence_ok(KEYS[1], ARGV[1]) then return {-100, fence_of(KEYS[1])} end
local r = redis.call('HMGET', KEYS[2], 'number', 'state')
if r[1] ~= ARGV[2] or r[2] ~= 'open' then return {0} end
redis.call('HSET', KEYS[2], 'term', ARGV[1])
local f = redis.call('HMGET', KEYS[2], 'opened', 'started', 'crash_at', 'next_at', 'crash_x100', 'hash')
return {1, f[1], f[2], f[3], f[4], f[5], f[6]}
"#,
            ),
            // KEYS: round, bets, owners, counts, autos. ARGV: number, bet id, bet json,
            // player id, per-player limit, auto instant (-1: none), ttl ms.
            // Accepted iff Redis TIME is inside this round's betting window.
            place_bet: script(
                r#"
local now = now_ms()
local r = redis.call('HMGET', KEYS[1], 'number', 'state', 'opened', 'started')
if r[1] ~= ARGV[1] or r[2] ~= 'open' or now < tonumber(r[3]) or now >= tonumber(r[4]) then
  return {-1, now}
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {-3, now} end
local n = tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '0')
if n >= tonumber(ARGV[5]) then return {-2, now} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
if tonumber(ARGV[6]) >= 0 then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2]) end
for i = 2, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
return {1, now}
"#,
            ),
            // KEYS: round, bets, owners, counts, autos. ARGV: number, bet id.
            // Withdraws a bet the ledger refused; only while betting is open (it never flew).
            cancel_bet: script(
                r#"
local r = redis.call('HMGET', KEYS[1], 'number', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'open' then return {0} end
local owner = redis.call('HGET', KEYS[3], ARGV[2])
if not owner then return {0} end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[4], owner, -1)
redis.call('ZREM', KEYS[5], ARGV[2])
return {1}
"#,
            ),
            // KEYS: round, bets, owners, autos, cashes. ARGV: number, bet id, player id, ttl ms,
            // idempotency key.
            // The one decision point for a manual cash-out, fleet-wide: accepted iff Redis TIME
            // is at or after lift-off and strictly before the crash instant, the bet is this
            // player's, and neither a cash-out nor a reached auto-cash-out settled it first.
            // The key is recorded with the decision ("<instant> 0 <key>"): a retry with it gets
            // the same decision back, even after the crash instant, since its first answer may
            // have been lost on the way.
            cash_out: script(
                r#"
local now = now_ms()
local r = redis.call('HMGET', KEYS[1], 'number', 'state', 'started', 'crash_at', 'crash_x100')
if r[1] ~= ARGV[1] then return {-8, now} end
local owner = redis.call('HGET', KEYS[3], ARGV[2])
if not owner then return {-4, now} end
if owner ~= ARGV[3] then return {-5, now} end
local prev = redis.call('HGET', KEYS[5], ARGV[2])
if prev then
  local at, kind, key = string.match(prev, '^(%S+) (%S+) ?(%S*)$')
  if kind == '0' and key == ARGV[5] then
    return {1, tonumber(at), r[3], r[5], redis.call('HGET', KEYS[2], ARGV[2])}
  end
end
if r[2] == 'void' then return {-8, now} end
if now < tonumber(r[3]) then return {-8, now} end
if r[2] ~= 'open' or now >= tonumber(r[4]) then return {-7, now} end
if redis.call('HEXISTS', KEYS[5], ARGV[2]) == 1 then return {-6, now} end
local auto = redis.call('ZSCORE', KEYS[4], ARGV[2])
if auto and tonumber(auto) <= now then return {-6, now} end
redis.call('HSET', KEYS[5], ARGV[2], now .. ' 0 ' .. ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
return {1, now, r[3], r[5], redis.call('HGET', KEYS[2], ARGV[2])}
"#,
            ),
            // KEYS: fence, round, bets, autos, cashes. ARGV: term, number, ttl ms.
            // Leader only: marks every auto-cash-out whose instant has come (never past the crash
            // instant) as cashed at exactly that instant. Replies {1, next instant or -1,
            // bet json, instant, bet json, instant, ...}.
            due_autos: script(
                r#"
if not fence_ok(KEYS[1], ARGV[1]) then return {-100, fence_of(KEYS[1])} end
local now = now_ms()
local r = redis.call('HMGET', KEYS[2], 'number', 'state', 'crash_at')
if r[1] ~= ARGV[2] or r[2] ~= 'open' then return {1, -1} end
local upto = math.min(now, tonumber(r[3]))
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', upto, 'WITHSCORES')
local out = {1, -1}
for i = 1, #due, 2 do
  if redis.call('HSETNX', KEYS[5], due[i], due[i + 1] .. ' 1') == 1 then
    table.insert(out, redis.call('HGET', KEYS[3], due[i]))
    table.insert(out, due[i + 1])
  end
  redis.call('ZREM', KEYS[4], due[i])
end
redis.call('PEXPIRE', KEYS[5], ARGV[3])
local nxt = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = nxt[2] end
return out
"#,
            ),
            // KEYS: fence, round, bets, cashes. ARGV: term, number, new state (crashed | void).
            // Leader only: ends the round; from here every bet and cash-out on it is refused.
            // Replies {1, now, bet json, cash entry or '', ...} for every bet.
            close_round: script(
                r#"
if not fence_ok(KEYS[1], ARGV[1]) then return {-100, fence_of(KEYS[1])} end
local now = now_ms()
local r = redis.call('HMGET', KEYS[2], 'number', 'state')
if r[1] ~= ARGV[2] then return {0, now} end
if r[2] == 'open' then redis.call('HSET', KEYS[2], 'state', ARGV[3], 'closed_at', now) end
local out = {1, now}
local bets = redis.call('HGETALL', KEYS[3])
for i = 1, #bets, 2 do
  table.insert(out, bets[i + 1])
  table.insert(out, redis.call('HGET', KEYS[4], bets[i]) or '')
end
return out
"#,
            ),
            // KEYS: seq, chat, mutes, the poster's rate window. ARGV: events channel, the chat
            // event's JSON, username, messages per window, window ms, history length, history
            // ttl ms. Mute, rate window, history and the sequenced PUBLISH in one step, so the
            // history's order is the order every node delivers. Answers {1, seq},
            // {-9, muted until} or {-2, ms left in the window}.
            chat_post: script(
                r#"
local now = now_ms()
local muted = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if muted > now then return {-9, muted} end
local n = redis.call('INCR', KEYS[4])
if n == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
if n > tonumber(ARGV[4]) then
  local left = redis.call('PTTL', KEYS[4])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[4], ARGV[5])
    left = tonumber(ARGV[5])
  end
  return {-2, left}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[7])
local s = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], s .. ' ' .. now .. '\n' .. ARGV[2])
return {1, s}
"#,
            ),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// Turns a `FENCED` reply into the ledger's fencing error.
pub fn fenced(stale: u64, reply: &[Value]) -> Error {
    Error::Fenced {
        stale,
        current: int(reply.get(1)).max(0) as u64,
    }
}
