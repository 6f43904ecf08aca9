//! SQLite's own money path: one writer thread that owns a `rusqlite` connection and commits bets,
//! cash-outs and settlements in groups, and reader connections used in place for the lookups every
//! money request makes (its player, its bet, its idempotency key).
//!
//! Why not sqlx here: sqlx runs each SQLite statement on a worker thread of the connection and
//! hands every statement and every row over a channel, so a bet (six statements) cost six thread
//! hand-offs and their futex wake-ups, and a profile of the node at 3,000 bets/s spent more time
//! in scheduling than in SQLite (docs/BENCHMARKS.md). On this path a statement is a call into the
//! library with a statement prepared once and kept in the connection's cache.
//!
//! What it keeps:
//! - **Durability before the answer.** `synchronous = FULL`: the commit returns after the WAL is
//!   fsynced; only then is any member of the group answered. If the commit fails, every member is
//!   told the ledger is unavailable, and nothing of the group was written.
//! - **Group commit adapted to load.** The writer takes the first operation as soon as it comes
//!   (an idle node commits at once, a group of one) plus whatever queued behind it, up to
//!   [`GROUP_MAX`]. Under load the queue fills while a commit is on disk, so one fsync carries
//!   many bets. Each member checks everything that can refuse it (round closed, insufficient
//!   funds, key taken, fenced) before it writes anything, so a refused member leaves no trace
//!   without a savepoint (a savepoint copied every page a member touched into its undo journal:
//!   measured as the writer's largest memory copy), and each sees the ones before it exactly as
//!   if they had committed one by one.
//! - **One writer.** The thread takes the ledger's in-process write lock around each group, the
//!   same lock the other (sqlx) writes hold, so SQLite never has two writers to arbitrate.
//! - **Reads never wait on a thread.** A lookup borrows a reader connection and runs on the
//!   calling task's thread: a point query by key on a warm page cache takes microseconds, less
//!   than the wake-up it replaces. In WAL mode readers do not wait for the writer. When every
//!   reader is in use the lookup falls back to the sqlx pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::*;

/// Most operations one commit carries. A bet is ~1.5 KB of WAL; 512 of them are well under
/// SQLite's default 4 MB auto-checkpoint, and at 10,000 bets/s a group of 512 is ~50 ms of bets.
pub(super) const GROUP_MAX: usize = 512;
/// Operations queued for the writer before callers wait for room (back-pressure, not an error).
const QUEUE: usize = 4 * GROUP_MAX;
/// The database file's pages each connection maps instead of reading (a ceiling, not an
/// allocation: only touched pages are resident, and they are the OS's page cache).
const MMAP_BYTES: u64 = 256 << 20;
/// Shortest time between two checkpoints while commits keep coming: the WAL then holds at most
/// this long's worth of commits (~2 MB at 5,000 bets/s), and a page changed by many commits in
/// that time is copied back once.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Statements each connection keeps prepared (the hot path uses about a dozen).
const STATEMENT_CACHE: usize = 64;

/// The file behind a `sqlite:` URL (`None` for PostgreSQL URLs and in-memory databases).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory"))
        .then(|| PathBuf::from(path))
}

fn lite(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
            ) =>
        {
            Error::Unavailable(format!("ledger unavailable: {e}"))
        }
        _ => Error::Internal(format!("ledger: {e}")),
    }
}

trait LiteResult<T> {
    fn lite(self) -> Result<T>;
}

impl<T> LiteResult<T> for std::result::Result<T, rusqlite::Error> {
    fn lite(self) -> Result<T> {
        self.map_err(lite)
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).lite()?;
    // FULL: a committed bet survives power loss, not just a process crash. The database file is
    // mapped, so reads of settled pages need no copy into each connection's cache. No automatic
    // checkpoints on these connections: the checkpoint thread folds the WAL back (see
    // `checkpoint_loop`), so a commit never waits for one.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA temp_store = MEMORY; \
         PRAGMA mmap_size = {MMAP_BYTES}; PRAGMA wal_autocheckpoint = 0;"
    ))
    .lite()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// A write the group commit carries, with where its answer goes.
pub(super) enum GroupOp {
    Bet(BetRecord, oneshot::Sender<Result<Option<i64>>>),
    CashOut {
        cash_out: CashOut,
        key: Option<String>,
        now_ms: i64,
        /// (table, term) for a leader's payout: fenced like every leader write.
        fence: Option<(String, u64)>,
        reply: oneshot::Sender<Result<Option<i64>>>,
    },
    /// A round's settlement: closed, winners paid, the rest lost (see `Rounds::finish_round`).
    Finish {
        table: String,
        term: u64,
        number: u64,
        reveal: Reveal,
        crashed_at_ms: i64,
        settlements: Vec<Settlement>,
        reply: oneshot::Sender<Result<Vec<(String, i64)>>>,
    },
}

/// What a member of a group answers once the group has committed.
enum Answer {
    Balance(Option<i64>),
    Balances(Vec<(String, i64)>),
}

/// A member's outcome inside the group's transaction. The outer error is the database failing
/// (the group must not commit: the member may have written part of itself); the inner one is the
/// game refusing it (round closed, insufficient funds, fenced), which is decided before the member
/// writes anything — so a refused member needs no savepoint to be undone.
type Step<T> = rusqlite::Result<Result<T>>;

impl GroupOp {
    fn apply(&self, conn: &Connection) -> Step<Answer> {
        Ok(match self {
            GroupOp::Bet(bet, _) => insert_bet(conn, bet)?.map(Answer::Balance),
            GroupOp::CashOut {
                cash_out: c,
                key,
                now_ms,
                fence,
                ..
            } => {
                if let Some((table, term)) = fence
                    && let Err(e) = check_term(conn, table, *term)?
                {
                    return Ok(Err(e));
                }
                Ok(Answer::Balance(pay(
                    conn,
                    &c.bet_id,
                    &c.player_id,
                    c.multiplier_x100,
                    c.payout,
                    key.as_deref(),
                    *now_ms,
                )?))
            }
            GroupOp::Finish {
                table,
                term,
                number,
                reveal,
                crashed_at_ms,
                settlements,
                ..
            } => finish_round(
                conn,
                table,
                *term,
                *number,
                reveal,
                *crashed_at_ms,
                settlements,
            )?
            .map(Answer::Balances),
        })
    }

    fn answer(self, r: Result<Answer>) {
        // The asker may have gone (its client hung up): what committed stands, as with any retry.
        match self {
            GroupOp::Bet(_, reply) | GroupOp::CashOut { reply, .. } => {
                let _ = reply.send(r.map(|a| match a {
                    Answer::Balance(b) => b,
                    Answer::Balances(_) => None,
                }));
            }
            GroupOp::Finish { reply, .. } => {
                let _ = reply.send(r.map(|a| match a {
                    Answer::Balances(b) => b,
                    Answer::Balance(_) => Vec::new(),
                }));
            }
        }
    }
}

/// The SQLite ledger's own connections: the writer thread's queue and the readers.
pub(super) struct Sqlite {
    writer: mpsc::Sender<GroupOp>,
    readers: StdMutex<Vec<Connection>>,
}

impl Sqlite {
    /// Opens `readers` reader connections and starts the writer thread (after the migrations:
    /// statements are prepared against the migrated schema).
    pub(super) fn start(path: &Path, readers: usize, lock: Arc<Mutex<()>>) -> Result<Sqlite> {
        let conn = open(path)?;
        let readers = (0..readers.max(1))
            .map(|_| open(path))
            .collect::<Result<Vec<_>>>()?;
        let checkpointer = open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        let thread = |name: &str| std::thread::Builder::new().name(name.into());
        let failed = |e| Error::Unavailable(format!("cannot start the ledger writer: {e}"));
        thread("ledger-checkpoint")
            .spawn(move || checkpoint_loop(checkpointer, commits))
            .map_err(failed)?;
        thread("ledger-writer")
            .spawn(move || write_loop(conn, lock, rx, committed))
            .map_err(failed)?;
        Ok(Sqlite {
            writer: tx,
            readers: StdMutex::new(readers),
        })
    }

    /// Hands one operation to the writer and waits for its answer (after the commit).
    pub(super) async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> GroupOp,
    ) -> Result<T> {
        let gone = || Error::Unavailable("the ledger is closing".into());
        let (reply, answer) = oneshot::channel();
        self.writer.send(op(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `f` on a free reader connection, or `None` when every one is in use (the caller
    /// falls back to the pool).
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Option<Result<T>> {
        let conn = self.readers.lock().ok()?.pop()?;
        let r = f(&conn);
        if let Ok(mut free) = self.readers.lock() {
            free.push(conn);
        }
        Some(r)
    }
}

/// The checkpoint thread: after commits, at most every [`CHECKPOINT_EVERY`], copies the WAL's
/// pages back into the database file (PASSIVE: it never waits for, nor blocks, the writer or a
/// reader), so the WAL stays small and the writer restarts it from the beginning. Run on the
/// writer, a checkpoint (its page copies and the database file's fsync) stalled every commit
/// queued behind it: tens of milliseconds at the p99 of bets (measured). Ends with the writer.
fn checkpoint_loop(conn: Connection, commits: std::sync::mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "ledger checkpoint failed; the WAL grows until one succeeds");
        }
    }
}

/// The writer thread: a group per turn, until every sender is gone (the ledger was dropped).
fn write_loop(
    mut conn: Connection,
    lock: Arc<Mutex<()>>,
    mut ops: mpsc::Receiver<GroupOp>,
    committed: std::sync::mpsc::SyncSender<()>,
) {
    let mut batch: Vec<GroupOp> = Vec::with_capacity(GROUP_MAX);
    while let Some(first) = ops.blocking_recv() {
        batch.push(first);
        let _w = lock.blocking_lock();
        // Whatever queued behind the first, or while another writer held the lock, goes too.
        while batch.len() < GROUP_MAX {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        metrics::histogram!("crashfleet_ledger_group_size").record(batch.len() as f64);
        commit_group(&mut conn, &mut batch);
        // Wakes the checkpoint thread; a wake-up already pending covers this commit too.
        let _ = committed.try_send(());
    }
}

fn commit_group(conn: &mut Connection, batch: &mut Vec<GroupOp>) {
    let results = match run_group(conn, batch) {
        Ok(results) => results,
        Err(e) => {
            // Nothing of the group was written: every member is told the ledger is unavailable.
            let msg = format!("the ledger did not commit: {e}");
            for op in batch.drain(..) {
                op.answer(Err(Error::Unavailable(msg.clone())));
            }
            return;
        }
    };
    for (op, r) in batch.drain(..).zip(results) {
        op.answer(r);
    }
}

/// One transaction for the whole group, each member seeing the ones before it as if they had
/// committed one by one. A database error anywhere drops the transaction (rolled back when
/// dropped) and with it the whole group.
fn run_group(conn: &mut Connection, batch: &[GroupOp]) -> rusqlite::Result<Vec<Result<Answer>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let results = batch
        .iter()
        .map(|op| op.apply(&tx))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(results)
}

// --- the statements ----------------------------------------------------------------------------
// Each checks everything that can refuse it before its first write (the writer is alone, so
// nothing changes in between), then writes.

/// Refuses a leader write whose term is older than the table's newest (fencing).
fn check_term(conn: &Connection, table: &str, term: u64) -> Step<()> {
    let current: Option<i64> = conn
        .prepare_cached("SELECT term FROM leadership WHERE table_id = ?1")?
        .query_row(params![table], |r| r.get(0))
        .optional()?;
    Ok(match current {
        Some(t) if u(t) <= term => Ok(()),
        _ => Err(Error::Fenced {
            stale: term,
            current: current.map(u).unwrap_or(0),
        }),
    })
}

/// Moves `amount` (a debit when negative: the caller has checked the balance covers it) and
/// records it; the new balance.
fn move_money(
    conn: &Connection,
    player_id: &str,
    kind: &str,
    amount: i64,
    bet_id: &str,
    now_ms: i64,
) -> rusqlite::Result<i64> {
    let balance: i64 = conn
        .prepare_cached(
            "UPDATE players SET balance = balance + ?1 WHERE id = ?2 RETURNING balance",
        )?
        .query_row(params![amount, player_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO entries (player_id, kind, amount, bet_id, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![player_id, kind, amount, bet_id, now_ms])?;
    Ok(balance)
}

/// Marks an open bet won and pays it; `None` if it was not open (already settled: nothing written).
fn pay(
    conn: &Connection,
    bet_id: &str,
    player_id: &str,
    multiplier_x100: u64,
    payout: i64,
    key: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    let updated = conn
        .prepare_cached(
            "UPDATE bets SET status = 'won', cashout_x100 = ?1, payout = ?2, settled_at_ms = ?3, \
             cashout_key = ?5 WHERE id = ?4 AND status = 'open'",
        )?
        .execute(params![i(multiplier_x100), payout, now_ms, bet_id, key])?;
    if updated == 0 {
        return Ok(None);
    }
    move_money(conn, player_id, "payout", payout, bet_id, now_ms).map(Some)
}

/// Writes a bet and takes its stake: `Some(balance)`, or `None` when the player's idempotency key
/// is already taken. Refuses a round that is not open and a balance that does not cover the stake.
fn insert_bet(conn: &Connection, bet: &BetRecord) -> Step<Option<i64>> {
    let open = conn
        .prepare_cached(
            "SELECT 1 FROM rounds WHERE table_id = ?1 AND number = ?2 AND status = 'open'",
        )?
        .exists(params![bet.table, i(bet.round)])?;
    if !open {
        return Ok(Err(Error::BettingClosed));
    }
    let taken = conn
        .prepare_cached("SELECT 1 FROM bets WHERE player_id = ?1 AND idempotency_key = ?2")?
        .exists(params![bet.player_id, bet.idempotency_key])?;
    if taken {
        return Ok(Ok(None));
    }
    let balance: Option<i64> = conn
        .prepare_cached("SELECT balance FROM players WHERE id = ?1")?
        .query_row(params![bet.player_id], |r| r.get(0))
        .optional()?;
    if balance.is_none_or(|b| b < bet.stake) {
        return Ok(Err(Error::InsufficientFunds));
    }
    conn.prepare_cached("UPDATE rounds SET bets = bets + 1 WHERE table_id = ?1 AND number = ?2")?
        .execute(params![bet.table, i(bet.round)])?;
    conn.prepare_cached(
        "INSERT INTO bets (id, table_id, round_number, player_id, stake, auto_cashout_x100, \
         status, placed_at_ms, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8)",
    )?
    .execute(params![
        bet.bet_id,
        bet.table,
        i(bet.round),
        bet.player_id,
        bet.stake,
        bet.auto_cashout_x100.map(i),
        bet.placed_at_ms,
        bet.idempotency_key
    ])?;
    let balance = move_money(
        conn,
        &bet.player_id,
        "stake",
        -bet.stake,
        &bet.bet_id,
        bet.placed_at_ms,
    )?;
    Ok(Ok(Some(balance)))
}

/// A round's settlement in the writer's transaction: fence, close, pay the winners that are still
/// open, mark the rest lost. Nothing if the round was not open (already settled).
fn finish_round(
    conn: &Connection,
    table: &str,
    term: u64,
    number: u64,
    reveal: &Reveal,
    crashed_at_ms: i64,
    settlements: &[Settlement],
) -> Step<Vec<(String, i64)>> {
    if let Err(e) = check_term(conn, table, term)? {
        return Ok(Err(e));
    }
    let closed = conn
        .prepare_cached(
            "UPDATE rounds SET status = 'crashed', crashed_at_ms = ?1, hash = ?2, crash_x100 = ?3 \
             WHERE table_id = ?4 AND number = ?5 AND status = 'open'",
        )?
        .execute(params![
            crashed_at_ms,
            reveal.hash,
            i(reveal.crash_x100),
            table,
            i(number)
        ])?;
    if closed == 0 {
        return Ok(Ok(Vec::new()));
    }
    let mut balances = Vec::new();
    for s in settlements {
        if let Outcome::Won {
            multiplier_x100,
            payout,
        } = s.outcome
            && let Some(b) = pay(
                conn,
                &s.bet_id,
                &s.player_id,
                multiplier_x100,
                payout,
                s.cashout_key.as_deref(),
                crashed_at_ms,
            )?
        {
            balances.push((s.player_id.clone(), b));
        }
    }
    conn.prepare_cached(
        "UPDATE bets SET status = 'lost', payout = 0, settled_at_ms = ?1 \
         WHERE table_id = ?2 AND round_number = ?3 AND status = 'open'",
    )?
    .execute(params![crashed_at_ms, table, i(number)])?;
    Ok(Ok(balances))
}

// --- the lookups -------------------------------------------------------------------------------

fn status<S: std::str::FromStr<Err = String>>(name: String) -> rusqlite::Result<S> {
    name.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn bet(r: &rusqlite::Row<'_>) -> rusqlite::Result<BetRecord> {
    Ok(BetRecord {
        bet_id: r.get(0)?,
        table: r.get(1)?,
        round: u(r.get(2)?),
        player_id: r.get(3)?,
        username: r.get(4)?,
        stake: r.get(5)?,
        auto_cashout_x100: r.get::<_, Option<i64>>(6)?.map(u),
        status: status(r.get(7)?)?,
        cashout_x100: r.get::<_, Option<i64>>(8)?.map(u),
        payout: r.get(9)?,
        placed_at_ms: r.get(10)?,
        idempotency_key: r.get(11)?,
        cashout_key: r.get(12)?,
    })
}

pub(super) fn player_by_id(conn: &Connection, id: &str) -> Result<Option<PlayerRecord>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        player_columns!(),
        " FROM players WHERE id = ?1"
    ))
    .lite()?
    .query_row(params![id], |r| {
        Ok(PlayerRecord {
            id: r.get(0)?,
            username: r.get(1)?,
            password_hash: r.get(2)?,
            balance: r.get(3)?,
            token_version: u(r.get(4)?),
        })
    })
    .optional()
    .lite()
}

pub(super) fn bet_by_id(conn: &Connection, bet_id: &str) -> Result<Option<BetRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id WHERE b.id = ?1"
    ))
    .lite()?
    .query_row(params![bet_id], bet)
    .optional()
    .lite()
}

pub(super) fn bet_by_key(
    conn: &Connection,
    player_id: &str,
    key: &str,
) -> Result<Option<BetRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id \
         WHERE b.player_id = ?1 AND b.idempotency_key = ?2"
    ))
    .lite()?
    .query_row(params![player_id, key], bet)
    .optional()
    .lite()
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;
    use std::path::PathBuf;

    #[test]
    fn urls_name_their_file_and_memory_has_none() {
        assert_eq!(
            sqlite_file("sqlite://data/ledger.db?mode=rwc"),
            Some(PathBuf::from("data/ledger.db"))
        );
        assert_eq!(sqlite_file("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
