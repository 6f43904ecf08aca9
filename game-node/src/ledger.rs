//! The SQL ledger: players, balances, bets, rounds and every money movement, behind the
//! [`Ledger`] port. One implementation serves SQLite (standalone) and PostgreSQL (fleet) through
//! sqlx's `Any` driver; the SQL is kept portable (`$N` placeholders work in both).
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

use crate::engine::{CashOut, Outcome, RoundPlan, Settlement};
use crate::error::{DbResult, Error, Result, db};
use crate::ports::{
    Audit, BetRecord, Commitment, LeaderboardRow, Ledger, PlayerRecord, Reveal, RoundRecord,
    TableStats,
};
use crate::protocol::{BetStatus, RoundStatus};

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
    /// SQLite's group commit for bets and cash-outs (`group_writer`); `None` on PostgreSQL, whose
    /// row locks let replicas write concurrently.
    group: Option<mpsc::Sender<GroupOp>>,
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
        let group = write_lock.as_ref().map(|lock| {
            let (tx, rx) = mpsc::channel(4 * GROUP_MAX);
            tokio::spawn(group_writer(pool.clone(), lock.clone(), rx));
            tx
        });
        let ledger = SqlLedger {
            pool,
            backend,
            write_lock,
            group,
        };
        ledger.migrate().await?;
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
     b.auto_cashout_x100, b.status, b.cashout_x100, b.payout, b.placed_at_ms, b.idempotency_key, b.cashout_key";

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
    })
}

/// A row's `status` column as its enum; a name the code does not know is a bug, not input.
fn status<S: std::str::FromStr<Err = String>>(r: &AnyRow) -> Result<S> {
    let name: String = r.try_get("status").db()?;
    name.parse()
        .map_err(|e| Error::Internal(format!("ledger: {e}")))
}

const ROUND_COLUMNS: &str = "table_id, number, status, hash, crash_x100, opened_at_ms, \
     started_at_ms, crashed_at_ms, term";

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
    })
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

/// Credits `amount` (may be negative for a debit that is known to be covered) and records it.
async fn move_money(
    conn: &mut AnyConnection,
    player_id: &str,
    kind: &str,
    amount: i64,
    bet_id: Option<&str>,
    key: Option<&str>,
    now_ms: i64,
) -> Result<i64> {
    // One statement moves the money and reads the new balance (RETURNING: SQLite ≥ 3.35 and
    // PostgreSQL); a debit only where the balance covers it, so a refused debit changes nothing.
    let balance: Option<i64> = if amount >= 0 {
        sqlx::query("UPDATE players SET balance = balance + $1 WHERE id = $2 RETURNING balance")
            .bind(amount)
            .bind(player_id)
            .fetch_optional(&mut *conn)
            .await
            .db()?
    } else {
        sqlx::query(
            "UPDATE players SET balance = balance + $1 WHERE id = $2 AND balance >= -$1 \
             RETURNING balance",
        )
        .bind(amount)
        .bind(player_id)
        .fetch_optional(&mut *conn)
        .await
        .db()?
    }
    .map(|row| row.try_get(0))
    .transpose()
    .db()?;
    let Some(balance) = balance else {
        return Err(Error::InsufficientFunds);
    };
    sqlx::query(
        "INSERT INTO entries (player_id, kind, amount, bet_id, idempotency_key, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(player_id)
    .bind(kind)
    .bind(amount)
    .bind(bet_id)
    .bind(key)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(balance)
}

/// Marks an open bet won and pays it; `None` if it was not open (already settled).
async fn pay_win(
    conn: &mut AnyConnection,
    bet_id: &str,
    player_id: &str,
    multiplier_x100: u64,
    payout: i64,
    key: Option<&str>,
    now_ms: i64,
) -> Result<Option<i64>> {
    let updated = sqlx::query(
        "UPDATE bets SET status = 'won', cashout_x100 = $1, payout = $2, settled_at_ms = $3, \
         cashout_key = $5 WHERE id = $4 AND status = 'open'",
    )
    .bind(i(multiplier_x100))
    .bind(payout)
    .bind(now_ms)
    .bind(bet_id)
    .bind(key)
    .execute(&mut *conn)
    .await
    .db()?
    .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    let balance = move_money(
        conn,
        player_id,
        "payout",
        payout,
        Some(bet_id),
        None,
        now_ms,
    )
    .await?;
    Ok(Some(balance))
}

/// Writes a bet and takes its stake: `Some(balance)`, or `None` when the player's idempotency key
/// is already taken (a concurrent retry won; nothing was written). Refuses a closed round.
async fn insert_bet(conn: &mut AnyConnection, bet: &BetRecord) -> Result<Option<i64>> {
    let open = sqlx::query(
        "UPDATE rounds SET bets = bets + 1 WHERE table_id = $1 AND number = $2 AND status = 'open'",
    )
    .bind(&bet.table)
    .bind(i(bet.round))
    .execute(&mut *conn)
    .await
    .db()?
    .rows_affected();
    if open == 0 {
        return Err(Error::BettingClosed);
    }
    let inserted = sqlx::query(
        "INSERT INTO bets (id, table_id, round_number, player_id, stake, auto_cashout_x100, \
         status, placed_at_ms, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)",
    )
    .bind(&bet.bet_id)
    .bind(&bet.table)
    .bind(i(bet.round))
    .bind(&bet.player_id)
    .bind(bet.stake)
    .bind(bet.auto_cashout_x100.map(i))
    .bind(bet.placed_at_ms)
    .bind(&bet.idempotency_key)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Ok(None),
        Err(e) => return Err(db(e)),
    }
    let balance = move_money(
        conn,
        &bet.player_id,
        "stake",
        -bet.stake,
        Some(&bet.bet_id),
        None,
        bet.placed_at_ms,
    )
    .await?;
    Ok(Some(balance))
}

/// Most bets and cash-outs one SQLite commit carries.
const GROUP_MAX: usize = 256;

/// A bet or cash-out waiting for the SQLite group commit, with where its answer goes.
enum GroupOp {
    Bet(BetRecord, oneshot::Sender<Result<Option<i64>>>),
    CashOut {
        cash_out: CashOut,
        key: Option<String>,
        now_ms: i64,
        /// (table, term) for a leader's payout: fenced like every leader write.
        fence: Option<(String, u64)>,
        reply: oneshot::Sender<Result<Option<i64>>>,
    },
}

impl GroupOp {
    async fn apply(&self, conn: &mut AnyConnection) -> Result<Option<i64>> {
        match self {
            GroupOp::Bet(bet, _) => insert_bet(conn, bet).await,
            GroupOp::CashOut {
                cash_out: c,
                key,
                now_ms,
                fence,
                ..
            } => {
                if let Some((table, term)) = fence {
                    check_term(conn, table, *term).await?;
                }
                pay_win(
                    conn,
                    &c.bet_id,
                    &c.player_id,
                    c.multiplier_x100,
                    c.payout,
                    key.as_deref(),
                    *now_ms,
                )
                .await
            }
        }
    }

    fn answer(self, r: Result<Option<i64>>) {
        // The asker may have gone (its client hung up): what committed stands, as with any retry.
        let _ = match self {
            GroupOp::Bet(_, reply) | GroupOp::CashOut { reply, .. } => reply.send(r),
        };
    }
}

/// Hands one operation to the group writer and waits for its answer (after the commit).
async fn grouped(
    group: &mpsc::Sender<GroupOp>,
    op: impl FnOnce(oneshot::Sender<Result<Option<i64>>>) -> GroupOp,
) -> Result<Option<i64>> {
    let gone = || Error::Unavailable("the ledger is closing".into());
    let (reply, answer) = oneshot::channel();
    group.send(op(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// SQLite group commit. With `synchronous = FULL` every commit waits for an fsync, and SQLite has
/// one writer: committing each bet on its own capped a node at ~2,200 bets/s with queueing delay
/// before that (docs/BENCHMARKS.md). Here the bets and cash-outs that arrive while a commit is on
/// disk are written together in the next transaction, each inside its own savepoint — so one that
/// is refused (round closed, insufficient funds, key taken) is rolled back alone, and each sees
/// the ones before it exactly as if they had committed one by one. Nobody is answered before the
/// commit is durable; if it fails, every member is told the ledger is unavailable and nothing of
/// the group was written.
async fn group_writer(pool: AnyPool, lock: Arc<Mutex<()>>, mut ops: mpsc::Receiver<GroupOp>) {
    let mut batch: Vec<GroupOp> = Vec::with_capacity(GROUP_MAX);
    while let Some(first) = ops.recv().await {
        batch.push(first);
        let _w = lock.lock().await;
        // Whatever queued behind the first, or while another writer held the lock, goes too.
        while batch.len() < GROUP_MAX {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        metrics::histogram!("crashfleet_ledger_group_size").record(batch.len() as f64);
        commit_group(&pool, &mut batch).await;
    }
}

async fn commit_group(pool: &AnyPool, batch: &mut Vec<GroupOp>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, format!("cannot open a ledger transaction: {e}")),
    };
    let mut results = Vec::with_capacity(batch.len());
    for op in batch.iter() {
        match apply_in_savepoint(&mut tx, op).await {
            Ok(r) => results.push(r),
            Err(e) => {
                // A savepoint that could not be rolled back may have left part of a refused
                // operation behind: the whole group is dropped, not committed.
                drop(tx);
                return fail_all(batch, format!("the ledger did not commit: {e}"));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            for (op, r) in batch.drain(..).zip(results) {
                op.answer(r);
            }
        }
        Err(e) => fail_all(batch, format!("the ledger did not commit: {e}")),
    }
}

/// Nothing of the group was written: every member is told the ledger is unavailable.
fn fail_all(batch: &mut Vec<GroupOp>, msg: String) {
    for op in batch.drain(..) {
        op.answer(Err(Error::Unavailable(msg.clone())));
    }
}

/// One member of a group in its own savepoint: the inner result is the member's answer; the outer
/// error means the savepoint itself failed and the group must not commit.
async fn apply_in_savepoint(
    conn: &mut AnyConnection,
    op: &GroupOp,
) -> std::result::Result<Result<Option<i64>>, sqlx::Error> {
    sqlx::query("SAVEPOINT grouped").execute(&mut *conn).await?;
    let r = op.apply(conn).await;
    if r.is_err() || matches!((op, &r), (GroupOp::Bet(..), Ok(None))) {
        // Refused (or a duplicate key): leave no trace of this one in the group.
        sqlx::query("ROLLBACK TO grouped")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("RELEASE grouped").execute(&mut *conn).await?;
    Ok(r)
}

/// Locks every open bet of a round before a settlement touches any player's row.
///
/// Lock order on PostgreSQL is round, then bets, then players. A cash-out locks its bet, then its
/// player. A settlement going bet by bet (bet, player, next bet, ...) would hold a player's row
/// while waiting for that player's next bet — which a cash-out may hold while waiting for the
/// player: a deadlock. Locking all the bets first keeps the order. (On SQLite writers are
/// serialised anyway; the no-op update costs one row write per open bet.)
async fn lock_open_bets(tx: &mut Tx, table: &str, number: u64) -> Result<()> {
    sqlx::query(
        "UPDATE bets SET status = status \
         WHERE table_id = $1 AND round_number = $2 AND status = 'open'",
    )
    .bind(table)
    .bind(i(number))
    .execute(&mut **tx)
    .await
    .db()?;
    Ok(())
}

/// The start of every settlement (finish or void): fence the term, close the round, lock its open
/// bets. Closing the round first locks its row, so bets still being placed wait and then see it
/// closed. `false` if the round was not open (already settled: the caller does nothing).
async fn close_round(
    tx: &mut Tx,
    table: &str,
    term: u64,
    number: u64,
    reveal: &Reveal,
    status: RoundStatus,
    at_ms: i64,
) -> Result<bool> {
    check_term(tx, table, term).await?;
    let closed = sqlx::query(
        "UPDATE rounds SET status = $1, crashed_at_ms = $2, hash = $3, crash_x100 = $4 \
         WHERE table_id = $5 AND number = $6 AND status = 'open'",
    )
    .bind(status.as_str())
    .bind(at_ms)
    .bind(&reveal.hash)
    .bind(i(reveal.crash_x100))
    .bind(table)
    .bind(i(number))
    .execute(&mut **tx)
    .await
    .db()?
    .rows_affected();
    if closed == 0 {
        return Ok(false);
    }
    lock_open_bets(tx, table, number).await?;
    Ok(true)
}

#[async_trait]
impl Ledger for SqlLedger {
    async fn commit_fairness(&self, c: &Commitment) -> Result<Commitment> {
        let _w = self.write_guard().await;
        let inserted = sqlx::query(
            "INSERT INTO commitments (table_id, terminating_hash, salt, chain_length, house_edge_bp, \
             max_x100, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.table)
        .bind(&c.terminating_hash)
        .bind(&c.salt)
        .bind(i(c.chain_length))
        .bind(i64::from(c.house_edge_bp))
        .bind(i(c.max_x100))
        .bind(c.created_at_ms)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(db(e)),
        }
        self.commitment(&c.table)
            .await?
            .ok_or_else(|| Error::Internal("the commitment vanished".into()))
    }

    async fn fix_salt(&self, table: &str, salt: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        // One statement: the check and the change cannot be split by a leader opening round 1.
        let changed = sqlx::query(
            "UPDATE commitments SET salt = $1 WHERE table_id = $2 \
             AND NOT EXISTS (SELECT 1 FROM rounds WHERE table_id = $3)",
        )
        .bind(salt)
        .bind(table)
        .bind(table)
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn commitment(&self, table: &str) -> Result<Option<Commitment>> {
        let Some(r) = sqlx::query(
            "SELECT table_id, terminating_hash, salt, chain_length, house_edge_bp, max_x100, \
             created_at_ms FROM commitments WHERE table_id = $1",
        )
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .db()?
        else {
            return Ok(None);
        };
        Ok(Some(Commitment {
            table: r.try_get("table_id").db()?,
            terminating_hash: r.try_get("terminating_hash").db()?,
            salt: r.try_get("salt").db()?,
            chain_length: u(r.try_get("chain_length").db()?),
            house_edge_bp: u32::try_from(r.try_get::<i64, _>("house_edge_bp").db()?).unwrap_or(0),
            max_x100: u(r.try_get("max_x100").db()?),
            created_at_ms: r.try_get("created_at_ms").db()?,
        }))
    }

    async fn claim_term(&self, table: &str, term: u64) -> Result<()> {
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await.db()?;
        // One statement for "first claim" and "newer claim": with a separate UPDATE-then-INSERT,
        // two replicas making a table's first claims at once could see the newer term lose the
        // INSERT race and be refused in favour of an older one.
        let claimed = sqlx::query(
            "INSERT INTO leadership (table_id, term) VALUES ($1, $2) \
             ON CONFLICT (table_id) DO UPDATE SET term = excluded.term \
             WHERE leadership.term <= excluded.term",
        )
        .bind(table)
        .bind(i(term))
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        if claimed == 0 {
            let current: i64 = sqlx::query("SELECT term FROM leadership WHERE table_id = $1")
                .bind(table)
                .fetch_one(&mut *tx)
                .await
                .db()?
                .try_get(0)
                .db()?;
            return Err(Error::Fenced {
                stale: term,
                current: u(current),
            });
        }
        tx.commit().await.db()?;
        Ok(())
    }

    async fn current_term(&self, table: &str) -> Result<u64> {
        let row = sqlx::query("SELECT term FROM leadership WHERE table_id = $1")
            .bind(table)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        Ok(match row {
            Some(r) => u(r.try_get(0).db()?),
            None => 0,
        })
    }

    async fn register(
        &self,
        username: &str,
        password_hash: &str,
        initial_credit: i64,
        now_ms: i64,
    ) -> Result<PlayerRecord> {
        let _w = self.write_guard().await;
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await.db()?;
        let inserted = sqlx::query(
            "INSERT INTO players (id, username, password_hash, balance, created_at_ms) \
             VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(&id)
        .bind(username)
        .bind(password_hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(Error::UsernameTaken),
            Err(e) => return Err(db(e)),
        }
        let mut balance = 0;
        if initial_credit > 0 {
            let key = format!("signup:{id}");
            balance = move_money(
                &mut tx,
                &id,
                "credit",
                initial_credit,
                None,
                Some(&key),
                now_ms,
            )
            .await?;
        }
        tx.commit().await.db()?;
        Ok(PlayerRecord {
            id,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            balance,
            token_version: 0,
        })
    }

    async fn player_by_name(&self, username: &str) -> Result<Option<PlayerRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            player_columns!(),
            " FROM players WHERE lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(player_row)
        .transpose()
    }

    async fn player(&self, id: &str) -> Result<Option<PlayerRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            player_columns!(),
            " FROM players WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(player_row)
        .transpose()
    }

    async fn revoke_tokens(&self, player_id: &str) -> Result<Option<u64>> {
        let _w = self.write_guard().await;
        let row = sqlx::query(
            "UPDATE players SET token_version = token_version + 1 WHERE id = $1 \
             RETURNING token_version",
        )
        .bind(player_id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.map(|r| Ok(u(r.try_get(0).db()?))).transpose()
    }

    async fn adjust(&self, username: &str, amount: i64, key: &str, now_ms: i64) -> Result<i64> {
        if amount == 0 || amount == i64::MIN {
            return Err(Error::InvalidAmount("the amount must be non-zero".into()));
        }
        let player = self
            .player_by_name(username)
            .await?
            .ok_or_else(|| Error::NotFound(format!("player {username:?} not found")))?;
        let key = format!("admin:{key}");
        let kind = if amount > 0 { "credit" } else { "withdrawal" };
        // A retry with the same key returns the balance instead of moving money again.
        if let Some(balance) = self.replay_adjust(&player.id, amount, &key).await? {
            return Ok(balance);
        }
        let w = self.write_guard().await;
        let mut tx = self.pool.begin().await.db()?;
        let balance =
            match move_money(&mut tx, &player.id, kind, amount, None, Some(&key), now_ms).await {
                Ok(b) => b,
                Err(Error::Internal(m)) if m.contains("UNIQUE") || m.contains("unique") => {
                    // A concurrent retry stored the key first: answer as a retry, move nothing.
                    drop(tx);
                    drop(w);
                    return self
                        .replay_adjust(&player.id, amount, &key)
                        .await?
                        .ok_or(Error::IdempotencyConflict);
                }
                Err(e) => return Err(e),
            };
        tx.commit().await.db()?;
        Ok(balance)
    }

    async fn last_round(&self, table: &str) -> Result<Option<RoundRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE table_id = $1 ORDER BY number DESC LIMIT 1"
        )))
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(round_row)
        .transpose()
    }

    async fn open_rounds(&self, table: &str) -> Result<Vec<RoundRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE table_id = $1 AND status = 'open' ORDER BY number"
        )))
        .bind(table)
        .fetch_all(&self.pool)
        .await.db()?
        .iter()
        .map(round_row)
        .collect()
    }

    async fn open_round(&self, table: &str, term: u64, plan: &RoundPlan) -> Result<()> {
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await.db()?;
        check_term(&mut tx, table, term).await?;
        // The hash and crash point stay out of the row until the round ends: whoever can read the
        // database file or a backup must not learn a live round's outcome. A leader that resumes
        // the round re-derives both from the chain seed.
        let inserted = sqlx::query(
            "INSERT INTO rounds (table_id, number, status, opened_at_ms, started_at_ms, term) \
             VALUES ($1, $2, 'open', $3, $4, $5)",
        )
        .bind(table)
        .bind(i(plan.number))
        .bind(plan.opened_at_ms)
        .bind(plan.started_at_ms)
        .bind(i(term))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // A round number is never reused.
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Internal(format!(
                    "round {} of table {table} already exists",
                    plan.number
                )));
            }
            Err(e) => return Err(db(e)),
        }
        tx.commit().await.db()?;
        Ok(())
    }

    async fn bet_by_key(&self, player_id: &str, key: &str) -> Result<Option<BetRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id \
             WHERE b.player_id = $1 AND b.idempotency_key = $2"
        )))
        .bind(player_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(bet_row)
        .transpose()
    }

    async fn place_bet(&self, bet: &BetRecord) -> Result<(BetRecord, i64)> {
        let placed = match &self.group {
            Some(group) => grouped(group, |reply| GroupOp::Bet(bet.clone(), reply)).await?,
            None => {
                let mut tx = self.pool.begin().await.db()?;
                let placed = insert_bet(&mut tx, bet).await?;
                if placed.is_some() {
                    tx.commit().await.db()?;
                }
                placed
            }
        };
        match placed {
            Some(balance) => {
                let mut stored = bet.clone();
                stored.status = BetStatus::Open;
                Ok((stored, balance))
            }
            None => {
                // Same key raced in: answer with the first bet, move nothing.
                let first = self
                    .bet_by_key(&bet.player_id, &bet.idempotency_key)
                    .await?
                    .ok_or(Error::IdempotencyConflict)?;
                let balance = self.player(&bet.player_id).await?.map_or(0, |p| p.balance);
                Ok((first, balance))
            }
        }
    }

    async fn settle_cash_out(
        &self,
        c: &CashOut,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        if let Some(group) = &self.group {
            return grouped(group, |reply| GroupOp::CashOut {
                cash_out: c.clone(),
                key: key.map(str::to_string),
                now_ms,
                fence: None,
                reply,
            })
            .await;
        }
        let mut tx = self.pool.begin().await.db()?;
        let balance = pay_win(
            &mut tx,
            &c.bet_id,
            &c.player_id,
            c.multiplier_x100,
            c.payout,
            key,
            now_ms,
        )
        .await?;
        tx.commit().await.db()?;
        Ok(balance)
    }

    async fn settle_leader_cash_out(
        &self,
        table: &str,
        term: u64,
        c: &CashOut,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        if let Some(group) = &self.group {
            return grouped(group, |reply| GroupOp::CashOut {
                cash_out: c.clone(),
                key: c.key.clone(),
                now_ms,
                fence: Some((table.to_string(), term)),
                reply,
            })
            .await;
        }
        let mut tx = self.pool.begin().await.db()?;
        check_term(&mut tx, table, term).await?;
        let balance = pay_win(
            &mut tx,
            &c.bet_id,
            &c.player_id,
            c.multiplier_x100,
            c.payout,
            c.key.as_deref(),
            now_ms,
        )
        .await?;
        tx.commit().await.db()?;
        Ok(balance)
    }

    async fn finish_round(
        &self,
        table: &str,
        term: u64,
        number: u64,
        reveal: &Reveal,
        crashed_at_ms: i64,
        settlements: &[Settlement],
    ) -> Result<Vec<(String, i64)>> {
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await.db()?;
        if !close_round(
            &mut tx,
            table,
            term,
            number,
            reveal,
            RoundStatus::Crashed,
            crashed_at_ms,
        )
        .await?
        {
            return Ok(Vec::new());
        }
        let mut balances = Vec::new();
        for s in settlements {
            if let Outcome::Won {
                multiplier_x100,
                payout,
            } = s.outcome
                && let Some(b) = pay_win(
                    &mut tx,
                    &s.bet_id,
                    &s.player_id,
                    multiplier_x100,
                    payout,
                    s.cashout_key.as_deref(),
                    crashed_at_ms,
                )
                .await?
            {
                balances.push((s.player_id.clone(), b));
            }
        }
        sqlx::query(
            "UPDATE bets SET status = 'lost', payout = 0, settled_at_ms = $1 \
             WHERE table_id = $2 AND round_number = $3 AND status = 'open'",
        )
        .bind(crashed_at_ms)
        .bind(table)
        .bind(i(number))
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(balances)
    }

    async fn void_round(
        &self,
        table: &str,
        term: u64,
        number: u64,
        reveal: &Reveal,
        now_ms: i64,
    ) -> Result<Vec<(String, i64)>> {
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await.db()?;
        if !close_round(
            &mut tx,
            table,
            term,
            number,
            reveal,
            RoundStatus::Voided,
            now_ms,
        )
        .await?
        {
            return Ok(Vec::new());
        }
        let open: Vec<(String, String, i64)> = sqlx::query(
            "SELECT id, player_id, stake FROM bets \
             WHERE table_id = $1 AND round_number = $2 AND status = 'open'",
        )
        .bind(table)
        .bind(i(number))
        .fetch_all(&mut *tx)
        .await
        .db()?
        .iter()
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?, r.try_get(2).db()?)))
        .collect::<Result<_>>()?;
        let mut balances = Vec::new();
        for (bet_id, player_id, stake) in open {
            let refunded = sqlx::query(
                "UPDATE bets SET status = 'refunded', payout = $1, settled_at_ms = $2 \
                 WHERE id = $3 AND status = 'open'",
            )
            .bind(stake)
            .bind(now_ms)
            .bind(&bet_id)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
            // Only a bet this transaction moved from open to refunded is refunded: a bet a
            // concurrent cash-out won is settled, and refunding it too would pay it twice.
            if refunded == 0 {
                continue;
            }
            let b = move_money(
                &mut tx,
                &player_id,
                "refund",
                stake,
                Some(&bet_id),
                None,
                now_ms,
            )
            .await?;
            balances.push((player_id, b));
        }
        tx.commit().await.db()?;
        Ok(balances)
    }

    async fn bet(&self, bet_id: &str) -> Result<Option<BetRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id WHERE b.id = $1"
        )))
        .bind(bet_id)
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(bet_row)
        .transpose()
    }

    async fn round(&self, table: &str, number: u64) -> Result<Option<RoundRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE table_id = $1 AND number = $2"
        )))
        .bind(table)
        .bind(i(number))
        .fetch_optional(&self.pool)
        .await
        .db()?
        .as_ref()
        .map(round_row)
        .transpose()
    }

    async fn round_bets(&self, table: &str, number: u64) -> Result<Vec<BetRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id \
             WHERE b.table_id = $1 AND b.round_number = $2 ORDER BY b.placed_at_ms, b.id"
        )))
        .bind(table)
        .bind(i(number))
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(bet_row)
        .collect()
    }

    async fn rounds(&self, table: &str, limit: u32) -> Result<Vec<RoundRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE table_id = $1 AND status <> 'open' \
             ORDER BY number DESC LIMIT $2"
        )))
        .bind(table)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(round_row)
        .collect()
    }

    async fn player_bets(&self, player_id: &str, limit: u32) -> Result<Vec<BetRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id \
             WHERE b.player_id = $1 ORDER BY b.placed_at_ms DESC, b.id LIMIT $2"
        )))
        .bind(player_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(bet_row)
        .collect()
    }

    async fn leaderboard(&self, limit: u32) -> Result<Vec<LeaderboardRow>> {
        sqlx::query(
            "SELECT p.username, \
               CAST(COALESCE(SUM(CASE WHEN e.kind IN ('stake', 'payout', 'refund') THEN e.amount ELSE 0 END), 0) AS BIGINT) AS profit, \
               CAST(COALESCE(SUM(CASE WHEN e.kind = 'stake' THEN -e.amount ELSE 0 END), 0) AS BIGINT) AS wagered, \
               CAST(COALESCE(SUM(CASE WHEN e.kind = 'stake' THEN 1 ELSE 0 END), 0) AS BIGINT) AS bets \
             FROM players p JOIN entries e ON e.player_id = p.id \
             GROUP BY p.id, p.username \
             HAVING SUM(CASE WHEN e.kind = 'stake' THEN 1 ELSE 0 END) > 0 \
             ORDER BY profit DESC, p.username LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await.db()?
        .iter()
        .map(|r| {
            Ok(LeaderboardRow {
                username: r.try_get("username").db()?,
                profit: r.try_get("profit").db()?,
                wagered: r.try_get("wagered").db()?,
                bets: r.try_get("bets").db()?,
            })
        })
        .collect()
    }

    async fn stats(&self, table: &str) -> Result<TableStats> {
        let r = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM rounds WHERE table_id = $1 AND status = 'crashed') AS rounds, \
               (SELECT COUNT(*) FROM rounds WHERE table_id = $1 AND status = 'voided') AS voided, \
               (SELECT COUNT(*) FROM bets WHERE table_id = $1) AS bets, \
               (SELECT CAST(COALESCE(SUM(stake), 0) AS BIGINT) FROM bets WHERE table_id = $1) AS wagered, \
               (SELECT CAST(COALESCE(SUM(payout), 0) AS BIGINT) FROM bets WHERE table_id = $1 AND status = 'won') AS paid, \
               (SELECT CAST(COALESCE(SUM(payout), 0) AS BIGINT) FROM bets WHERE table_id = $1 AND status = 'refunded') AS refunded, \
               (SELECT COUNT(DISTINCT player_id) FROM bets WHERE table_id = $1) AS players",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await.db()?;
        let wagered: i64 = r.try_get("wagered").db()?;
        let paid: i64 = r.try_get("paid").db()?;
        let refunded: i64 = r.try_get("refunded").db()?;
        Ok(TableStats {
            table: table.to_string(),
            rounds: r.try_get("rounds").db()?,
            voided_rounds: r.try_get("voided").db()?,
            bets: r.try_get("bets").db()?,
            wagered,
            paid_out: paid,
            refunded,
            house_result: wagered - paid - refunded,
            players: r.try_get("players").db()?,
        })
    }

    async fn audit(&self) -> Result<Audit> {
        let r = sqlx::query(
            "SELECT \
               (SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM players) AS balances, \
               (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM entries WHERE kind = 'credit') AS credits, \
               (SELECT CAST(COALESCE(SUM(-amount), 0) AS BIGINT) FROM entries WHERE kind = 'withdrawal') AS withdrawals, \
               (SELECT CAST(COALESCE(SUM(-amount), 0) AS BIGINT) FROM entries WHERE kind = 'stake') AS stakes, \
               (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM entries WHERE kind = 'payout') AS payouts, \
               (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM entries WHERE kind = 'refund') AS refunds, \
               (SELECT COUNT(*) FROM players) AS players, \
               (SELECT COUNT(*) FROM bets) AS bets",
        )
        .fetch_one(&self.pool)
        .await.db()?;
        let balances: i64 = r.try_get("balances").db()?;
        let credits: i64 = r.try_get("credits").db()?;
        let withdrawals: i64 = r.try_get("withdrawals").db()?;
        let stakes: i64 = r.try_get("stakes").db()?;
        let payouts: i64 = r.try_get("payouts").db()?;
        let refunds: i64 = r.try_get("refunds").db()?;
        let house_result = stakes - payouts - refunds;
        let mut violations = Vec::new();
        if balances + house_result != credits - withdrawals {
            violations.push(format!(
                "conservation: balances {balances} + house {house_result} != credits {credits} - withdrawals {withdrawals}"
            ));
        }
        // Each rule is a query counting the rows that break it.
        let rules: [(&str, &'static str); 9] = [
            (
                "a player's balance differs from the sum of their entries",
                "SELECT COUNT(*) FROM players p WHERE p.balance <> \
                 (SELECT CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) FROM entries e WHERE e.player_id = p.id)",
            ),
            (
                "a bet without exactly one stake entry equal to its stake",
                "SELECT COUNT(*) FROM bets b WHERE (SELECT COUNT(*) FROM entries e \
                 WHERE e.bet_id = b.id AND e.kind = 'stake' AND e.amount = -b.stake) <> 1",
            ),
            (
                "a won bet without exactly one payout entry equal to its payout",
                "SELECT COUNT(*) FROM bets b WHERE b.status = 'won' AND (SELECT COUNT(*) FROM entries e \
                 WHERE e.bet_id = b.id AND e.kind = 'payout' AND e.amount = b.payout) <> 1",
            ),
            (
                "a refunded bet without exactly one refund entry equal to its stake",
                "SELECT COUNT(*) FROM bets b WHERE b.status = 'refunded' AND (SELECT COUNT(*) FROM entries e \
                 WHERE e.bet_id = b.id AND e.kind = 'refund' AND e.amount = b.stake) <> 1",
            ),
            (
                "a bet settled twice, or an open or lost bet that was paid",
                "SELECT COUNT(*) FROM bets b WHERE (SELECT COUNT(*) FROM entries e \
                 WHERE e.bet_id = b.id AND e.kind IN ('payout', 'refund')) <> \
                 CASE WHEN b.status IN ('won', 'refunded') THEN 1 ELSE 0 END",
            ),
            (
                "a bet won at or above its round's crash point (or above its auto target)",
                "SELECT COUNT(*) FROM bets b JOIN rounds r ON r.table_id = b.table_id AND r.number = b.round_number \
                 WHERE b.status = 'won' AND (b.cashout_x100 IS NULL OR b.cashout_x100 > r.crash_x100 \
                 OR (b.cashout_x100 = r.crash_x100 AND (b.auto_cashout_x100 IS NULL OR b.auto_cashout_x100 <> r.crash_x100)) \
                 OR (b.auto_cashout_x100 IS NOT NULL AND b.cashout_x100 > b.auto_cashout_x100))",
            ),
            (
                "a won bet whose payout is not floor(stake x multiplier / 100) (or the cap)",
                "SELECT COUNT(*) FROM bets b WHERE b.status = 'won' AND b.payout > (b.stake * b.cashout_x100) / 100",
            ),
            (
                "an open bet in a finished round, or a refunded bet in a round that was not voided",
                "SELECT COUNT(*) FROM bets b JOIN rounds r ON r.table_id = b.table_id AND r.number = b.round_number \
                 WHERE (b.status = 'open' AND r.status <> 'open') OR (b.status = 'refunded' AND r.status <> 'voided')",
            ),
            (
                "a negative balance",
                "SELECT COUNT(*) FROM players WHERE balance < 0",
            ),
        ];
        for (what, sql) in rules {
            let n: i64 = sqlx::query(sql)
                .fetch_one(&self.pool)
                .await
                .db()?
                .try_get(0)
                .db()?;
            if n != 0 {
                violations.push(format!("{what}: {n}"));
            }
        }
        Ok(Audit {
            balanced: violations.is_empty(),
            player_balances: balances,
            credits,
            withdrawals,
            stakes,
            payouts,
            refunds,
            house_result,
            players: r.try_get("players").db()?,
            bets: r.try_get("bets").db()?,
            violations,
        })
    }

    async fn ping(&self) -> Result<()> {
        let _ = self
            .scalar_i64("SELECT COUNT(*) FROM leadership WHERE table_id = $1", "")
            .await?;
        Ok(())
    }
}
