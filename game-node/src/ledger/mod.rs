//! The SQL ledger: players, balances, bets, rounds and every money movement, behind the
//! [`Ledger`](crate::ports::Ledger) port, one file per part of it: [`rounds`] (terms, rounds,
//! settlements, the commitment), [`accounts`], [`wagers`], [`history`], [`audit`]; the pieces they
//! share are [`money`] (moving an amount with its journal entry). One implementation serves SQLite
//! (standalone) and PostgreSQL (fleet) through sqlx's `Any` driver; the SQL is kept portable
//! (`$N` placeholders work in both). On SQLite the money path — bets, cash-outs, settlements and
//! the lookups each money request makes — runs on connections of its own instead ([`sqlite`]: a
//! group-committing writer thread and readers used in place), the same statements without sqlx's
//! per-statement thread hand-off.
//!
//! Why it cannot lose or double-move money:
//! - Every movement is one transaction that writes the balance change *and* an `entries` row, so
//!   `balance = SUM(entries)` per player, and the audit can prove conservation.
//! - Balances change by conditional updates (`... SET balance = balance - $1 WHERE id = $2 AND
//!   balance >= $1`): atomic on both databases without read-modify-write races, so concurrent bets
//!   by one player on several replicas can neither overdraw nor lose an update.
//! - State transitions are conditional too (`WHERE status = 'open'`), so a bet is settled once
//!   whoever tries twice; unique indexes make a bet's stake and settlement entries single.
//! - A bet and the round's settlement serialise on the round row: `place_bet` bumps the round's
//!   bet counter only while it is open, `finish_round` closes it first, so no bet can slip into a
//!   round after it was settled.
//! - Leader writes check the table's newest term in the same transaction (fencing).
//! - Row locks are taken in one order, leadership → round → bets → players, so concurrent
//!   replicas on PostgreSQL wait for each other instead of deadlocking (see `lock_open_bets`).
//!
//! SQLite allows one writer at a time; rather than meet `SQLITE_BUSY` on lock upgrades, write
//! transactions on SQLite are serialised in-process by `write_lock` (reads stay concurrent in WAL
//! mode). PostgreSQL needs no such lock.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

pub use sqlite::sqlite_file;

use crate::engine::{CashOut, Outcome, RoundPlan, Settlement};
use crate::error::{DbResult, Error, Result, db};
use crate::ports::settlement_leaf;
use crate::ports::{
    Accounts, Audit, Auditing, BetRecord, Commitment, Commitments, History, LeaderboardRow,
    PlayerRecord, Reveal, RoundBook, RoundRecord, Settled, TableStats, Wagers,
};
use crate::protocol::{BetStatus, RoundStatus};
use crashfleet_core::settlement::SettlementSummary;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a query may wait for a pooled connection before the request fails as `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL statement timeout: a money request must never hang on a stuck lock.
const PG_STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// SQLite waits this long for the file lock (another process, e.g. `game-node migrate`).
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct SqlLedger {
    pool: AnyPool,
    backend: Backend,
    /// Serialises write transactions on SQLite (see the module docs); `None` on PostgreSQL.
    write_lock: Option<Arc<Mutex<()>>>,
    /// SQLite's own money path (`sqlite`): the group-committing writer thread and the reader
    /// connections; `None` on PostgreSQL, whose row locks let replicas write concurrently.
    sqlite: Option<Sqlite>,
}

impl std::fmt::Debug for SqlLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlLedger")
            .field("backend", &self.backend)
            .finish()
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl SqlLedger {
    /// Connects (creating a SQLite file if needed) and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqlLedger> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::BadRequest(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://..."
            )));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str("mode=rwc");
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| Error::BadRequest(format!("invalid database URL: {e}")))?;
        let max = max_connections.max(1);
        let mut pool = AnyPoolOptions::new().max_connections(max);
        if backend == Backend::Sqlite {
            // Every connection opened once, at start, and kept: opening one later needs new
            // descriptors (the database, its WAL and shared memory), and a node whose clients
            // hold all of them would fail its own ledger ("unable to open database file"). A
            // SQLite connection cannot go stale, so it needs neither an idle timeout nor a
            // lifetime.
            pool = pool
                .min_connections(max)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            // SQLite is a file: a pooled connection cannot have died, and the ping before every
            // checkout was one more thread hand-off per request (docs/BENCHMARKS.md). PostgreSQL
            // keeps the check, so connections cut by a server restart are replaced quietly.
            .test_before_acquire(backend == Backend::Postgres)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let setup: &[&'static str] = match backend {
                        // FULL: a committed bet survives power loss, not just a process crash.
                        Backend::Sqlite => &[
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                        ],
                        Backend::Postgres => &[],
                    };
                    for s in setup {
                        sqlx::query(*s).execute(&mut *conn).await?;
                    }
                    match backend {
                        Backend::Sqlite => {
                            sqlx::query(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                            )))
                            .execute(&mut *conn)
                            .await?;
                        }
                        Backend::Postgres => {
                            sqlx::query(sqlx::AssertSqlSafe(format!(
                                "SET statement_timeout = {PG_STATEMENT_TIMEOUT_MS}"
                            )))
                            .execute(&mut *conn)
                            .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot open the ledger database: {e}")))?;
        let write_lock = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let mut ledger = SqlLedger {
            pool,
            backend,
            write_lock,
            sqlite: None,
        };
        ledger.migrate().await?;
        if let Some(lock) = &ledger.write_lock {
            let file = sqlite_file(&url).ok_or_else(|| {
                Error::BadRequest(format!(
                    "{url:?}: the ledger must be a SQLite file (an in-memory database is not \
                     shared between its connections)"
                ))
            })?;
            ledger.sqlite = Some(Sqlite::start(&file, max as usize, lock.clone())?);
        }
        Ok(ledger)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| Error::Internal(format!("migrations failed: {e}")))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A lookup on a free SQLite reader connection in place; `pool` (not started otherwise) when
    /// every reader is busy, and on PostgreSQL.
    async fn lookup<T>(
        &self,
        lite: impl FnOnce(&rusqlite::Connection) -> Result<T>,
        pool: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.sqlite.as_ref().and_then(|l| l.read(lite)) {
            Some(r) => r,
            None => pool.await,
        }
    }

    /// Waits until what a lookup read of `player_id`'s rows is on disk (SQLite's pipelined commit;
    /// PostgreSQL answers a commit only once it is durable, so there is nothing to wait for).
    async fn settled(&self, player_id: &str) -> Result<()> {
        match &self.sqlite {
            Some(lite) => lite.settled(player_id).await,
            None => Ok(()),
        }
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    /// The answer to a retried `adjust`: the player's balance if `key` already moved exactly this
    /// amount for this player, a conflict if it moved something else, `None` if it is unused.
    async fn replay_adjust(&self, player_id: &str, amount: i64, key: &str) -> Result<Option<i64>> {
        let seen = sqlx::query("SELECT player_id, amount FROM entries WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        let Some(r) = seen else {
            return Ok(None);
        };
        let (pid, amt): (String, i64) = (r.try_get(0).db()?, r.try_get(1).db()?);
        if pid != player_id || amt != amount {
            return Err(Error::IdempotencyConflict);
        }
        Ok(Some(self.player(player_id).await?.map_or(0, |p| p.balance)))
    }

    async fn scalar_i64(&self, sql: &'static str, bind: &str) -> Result<i64> {
        let row = sqlx::query(sql)
            .bind(bind)
            .fetch_one(&self.pool)
            .await
            .db()?;
        row.try_get::<i64, _>(0).db()
    }
}

fn player_row(r: &AnyRow) -> Result<PlayerRecord> {
    Ok(PlayerRecord {
        id: r.try_get("id").db()?,
        username: r.try_get("username").db()?,
        password_hash: r.try_get("password_hash").db()?,
        balance: r.try_get("balance").db()?,
        token_version: u(r.try_get("token_version").db()?),
    })
}

/// The columns `player_row` reads (a macro so queries stay `&'static str`: `player` runs on
/// every authenticated request).
macro_rules! player_columns {
    () => {
        "id, username, password_hash, balance, token_version"
    };
}

const BET_COLUMNS: &str = "b.id, b.table_id, b.round_number, b.player_id, p.username, b.stake, \
     b.auto_cashout_x100, b.status, b.cashout_x100, b.payout, b.placed_at_ms, b.idempotency_key, b.cashout_key, b.settled_at_ms";

fn bet_row(r: &AnyRow) -> Result<BetRecord> {
    Ok(BetRecord {
        bet_id: r.try_get("id").db()?,
        table: r.try_get("table_id").db()?,
        round: u(r.try_get("round_number").db()?),
        player_id: r.try_get("player_id").db()?,
        username: r.try_get("username").db()?,
        stake: r.try_get("stake").db()?,
        auto_cashout_x100: r
            .try_get::<Option<i64>, _>("auto_cashout_x100")
            .db()?
            .map(u),
        status: status(r)?,
        cashout_x100: r.try_get::<Option<i64>, _>("cashout_x100").db()?.map(u),
        payout: r.try_get("payout").db()?,
        placed_at_ms: r.try_get("placed_at_ms").db()?,
        idempotency_key: r.try_get("idempotency_key").db()?,
        cashout_key: r.try_get("cashout_key").db()?,
        settled_at_ms: r.try_get("settled_at_ms").db()?,
    })
}

/// A row's `status` column as its enum; a name the code does not know is a bug, not input.
fn status<S: std::str::FromStr<Err = String>>(r: &AnyRow) -> Result<S> {
    let name: String = r.try_get("status").db()?;
    name.parse()
        .map_err(|e| Error::Internal(format!("ledger: {e}")))
}

const ROUND_COLUMNS: &str = "table_id, number, status, hash, crash_x100, opened_at_ms, \
     started_at_ms, crashed_at_ms, term, settlement_root, bets_count, wagered, paid";

fn round_row(r: &AnyRow) -> Result<RoundRecord> {
    Ok(RoundRecord {
        table: r.try_get("table_id").db()?,
        number: u(r.try_get("number").db()?),
        status: status(r)?,
        // Both are NULL while the round is open (never at rest before the crash).
        hash: r
            .try_get::<Option<String>, _>("hash")
            .db()?
            .unwrap_or_default(),
        crash_x100: r.try_get::<Option<i64>, _>("crash_x100").db()?.map_or(0, u),
        opened_at_ms: r.try_get("opened_at_ms").db()?,
        started_at_ms: r.try_get("started_at_ms").db()?,
        crashed_at_ms: r.try_get("crashed_at_ms").db()?,
        term: u(r.try_get("term").db()?),
        settlement: match r.try_get::<Option<String>, _>("settlement_root").db()? {
            Some(root) => Some(Settled {
                settlement_root: root,
                bets_count: u(r.try_get::<Option<i64>, _>("bets_count").db()?.unwrap_or(0)),
                wagered: u(r.try_get::<Option<i64>, _>("wagered").db()?.unwrap_or(0)),
                paid: u(r.try_get::<Option<i64>, _>("paid").db()?.unwrap_or(0)),
            }),
            None => None,
        },
    })
}

/// The columns of a bet its settlement leaf is built from, and where the round's commitment goes.
const LEAF_COLUMNS: &str = "id, player_id, stake, status, cashout_x100, payout";
const SEAL_ROUND: &str = "UPDATE rounds SET settlement_root = $1, bets_count = $2, wagered = $3, \
     paid = $4 WHERE table_id = $5 AND number = $6";

/// Commits to a round's settlement in the transaction that settled it: every bet of the round,
/// as now stored, becomes a leaf; the root and totals go on the round's row.
async fn seal_round(tx: &mut Tx, table: &str, number: u64) -> Result<SettlementSummary> {
    // Constant text only: the columns are this module's constant.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LEAF_COLUMNS} FROM bets WHERE table_id = $1 AND round_number = $2"
    )))
    .bind(table)
    .bind(i(number))
    .fetch_all(&mut **tx)
    .await
    .db()?;
    let mut leaves = rows
        .iter()
        .map(|r| {
            settlement_leaf(
                r.try_get("id").db()?,
                &r.try_get::<String, _>("player_id").db()?,
                r.try_get("stake").db()?,
                status(r)?,
                r.try_get("cashout_x100").db()?,
                r.try_get("payout").db()?,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let summary = crashfleet_core::settlement::settle(&mut leaves);
    sqlx::query(SEAL_ROUND)
        .bind(hex::encode(summary.root))
        .bind(i(summary.bets))
        .bind(i(summary.wagered))
        .bind(i(summary.paid))
        .bind(table)
        .bind(i(number))
        .execute(&mut **tx)
        .await
        .db()?;
    Ok(summary)
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Refuses a leader write whose term is older than the table's newest (fencing). The no-op
/// update also takes the leadership row's lock, serialising with a new leader's `claim_term`.
async fn check_term(conn: &mut AnyConnection, table: &str, term: u64) -> Result<()> {
    let updated =
        sqlx::query("UPDATE leadership SET term = term WHERE table_id = $1 AND term <= $2")
            .bind(table)
            .bind(i(term))
            .execute(&mut *conn)
            .await
            .db()?
            .rows_affected();
    if updated == 1 {
        return Ok(());
    }
    let current: Option<i64> = sqlx::query("SELECT term FROM leadership WHERE table_id = $1")
        .bind(table)
        .fetch_optional(&mut *conn)
        .await
        .db()?
        .map(|r| r.try_get(0))
        .transpose()
        .db()?;
    Err(Error::Fenced {
        stale: term,
        current: current.map(u).unwrap_or(0),
    })
}

// After the helpers above: the parts below use `player_columns!`, which must be defined first.
mod accounts;
mod audit;
mod history;
mod money;
mod rounds;
mod sqlite;
mod wagers;

use money::*;
use sqlite::{GroupOp, Sqlite};
