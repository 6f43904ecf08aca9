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
//! - **Durability before the answer.** No member of a group is answered until the WAL frames of
//!   its commit are fsynced: the commit itself runs with `synchronous = NORMAL` (frames written,
//!   not waited for) and a syncer thread fsyncs the WAL behind it, then answers. A WAL recovers a
//!   prefix of its commits, so this gives what `synchronous = FULL` gives — an answered bet
//!   survives power loss — while the writer runs the next group's statements during the fsync
//!   instead of waiting for it. Lookups that answer from rows a not-yet-fsynced commit wrote wait
//!   for that fsync first ([`Sqlite::settled`]). If a commit fails, every member is told the ledger
//!   is unavailable, and nothing of the group was written.
//! - **Group commit adapted to load.** A group is everything that arrived while the previous
//!   group's fsync was on disk (up to [`GROUP_MAX`]): an idle node commits and fsyncs a bet at
//!   once, a loaded one carries a whole fsync's worth of bets in one commit. Each member checks
//!   everything that can refuse it (round closed, insufficient funds, key taken, fenced) before it
//!   writes anything, so a refused member leaves no trace without a savepoint (a savepoint copied
//!   every page a member touched into its undo journal: measured as the writer's largest memory
//!   copy), and each sees the ones before it exactly as if they had committed one by one.
//! - **One writer.** The thread takes the ledger's in-process write lock around each group, the
//!   same lock the other (sqlx) writes hold, so SQLite never has two writers to arbitrate.
//! - **Reads never wait on a thread.** A lookup borrows a reader connection and runs on the
//!   calling task's thread: a point query by key on a warm page cache takes microseconds, less
//!   than the wake-up it replaces. In WAL mode readers do not wait for the writer. When every
//!   reader is in use the lookup falls back to the sqlx pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

use rusqlite::{Connection, OptionalExtension, params};

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
/// Shortest time between the starts of two WAL fsyncs. An fsync costs the node CPU as well as
/// disk time (the kernel's writeback and block layer: ~40 µs of a core per bet when every group
/// of ~4 bets had its own, measured at 3,000 bets/s), so under load the groups are made to carry
/// at least this long's arrivals; an idle node still commits and fsyncs a lone bet at once.
/// A bet waits at most this long more: well inside the 5 ms p99 the bet path is held to.
const SYNC_GAP: std::time::Duration = std::time::Duration::from_millis(1);
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

    /// Calls `f` with each player whose rows this operation writes.
    fn each_player(&self, mut f: impl FnMut(&str)) {
        match self {
            GroupOp::Bet(bet, _) => f(&bet.player_id),
            GroupOp::CashOut { cash_out, .. } => f(&cash_out.player_id),
            GroupOp::Finish { settlements, .. } => {
                settlements.iter().for_each(|s| f(&s.player_id));
            }
        }
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

/// What the writer's queue carries: an operation, or the syncer's wake-up after an fsync (the
/// count of groups in flight, [`Writer::in_flight`], is the state; the message only wakes).
// Not boxed: every bet would pay an allocation for the rare wake-up's sake.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Op(GroupOp),
    Synced,
}

/// Money requests' view of durability: which commit each player's rows were last written by, and
/// how far the WAL is known to be on disk.
struct Durability {
    /// Per hash of a player id, the commit sequence that last wrote that player's rows (stored
    /// before the commit, so a reader that sees the write also sees the number). Two players
    /// sharing a slot only make one of them wait for the other's fsync.
    touched: Box<[AtomicU64]>,
    /// The newest commit sequence whose WAL frames are fsynced (every older one is too).
    durable: watch::Sender<u64>,
}

/// Slots in [`Durability::touched`] (a power of two): 32 KiB.
const SLOTS: usize = 4096;
/// Longest a lookup waits for the fsync of a commit it saw before answering "unavailable" (an
/// fsync takes about a millisecond; this only trips if the disk has stopped).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Durability {
    fn slot(&self, player_id: &str) -> &AtomicU64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(player_id);
        &self.touched[h as usize & (SLOTS - 1)]
    }

    /// Marks `seq` durable (and every older commit): never moves backwards.
    fn publish(&self, seq: u64) {
        self.durable.send_if_modified(|d| {
            let newer = seq > *d;
            if newer {
                *d = seq;
            }
            newer
        });
    }
}

/// The SQLite ledger's own connections: the writer thread's queue, the readers and what they
/// need to know about durability.
pub(super) struct Sqlite {
    writer: mpsc::Sender<Msg>,
    readers: StdMutex<Vec<Connection>>,
    durability: Arc<Durability>,
}

impl Sqlite {
    /// Opens `readers` reader connections and starts the writer and syncer threads (after the
    /// migrations: statements are prepared against the migrated schema).
    pub(super) fn start(path: &Path, readers: usize, lock: Arc<Mutex<()>>) -> Result<Sqlite> {
        let conn = open(path)?;
        // The writer's commits write their WAL frames without waiting for them: the syncer
        // fsyncs the WAL and only then are they answered (see `sync_loop`).
        conn.pragma_update(None, "synchronous", "NORMAL").lite()?;
        let readers = (0..readers.max(1))
            .map(|_| open(path))
            .collect::<Result<Vec<_>>>()?;
        let checkpointer = open(path)?;
        let wal = wal_path(path);
        // The connections above made the database WAL-mode, so SQLite has created the WAL; it
        // keeps the file (truncating it at most) while any connection is open, and the writer's
        // stays open for the ledger's life. Opened for writing so a missing file is created
        // exactly as SQLite would create it.
        let wal_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal)
            .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", wal.display())))?;
        let durability = Arc::new(Durability {
            touched: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            durable: watch::channel(0).0,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        let (to_sync, synced) = std::sync::mpsc::sync_channel(1);
        let thread = |name: &str| std::thread::Builder::new().name(name.into());
        let failed = |e| Error::Unavailable(format!("cannot start the ledger writer: {e}"));
        thread("ledger-checkpoint")
            .spawn(move || checkpoint_loop(checkpointer, commits))
            .map_err(failed)?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let syncer = Syncer {
            wal_file,
            wal,
            wake: tx.downgrade(),
            in_flight: in_flight.clone(),
            durability: durability.clone(),
            committed,
        };
        thread("ledger-sync")
            .spawn(move || sync_loop(syncer, synced))
            .map_err(failed)?;
        let writer = Writer {
            conn,
            lock,
            durability: durability.clone(),
            to_sync,
            in_flight,
            seq: 0,
            open: Vec::new(),
        };
        thread("ledger-writer")
            .spawn(move || writer.run(rx))
            .map_err(failed)?;
        Ok(Sqlite {
            writer: tx,
            readers: StdMutex::new(readers),
            durability,
        })
    }

    /// Hands one operation to the writer and waits for its answer (after the fsync).
    pub(super) async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> GroupOp,
    ) -> Result<T> {
        let gone = || Error::Unavailable("the ledger is closing".into());
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Msg::Op(op(reply)))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `f` on a free reader connection, or `None` when every one is in use (the caller
    /// falls back to the pool). What it reads may include commits whose fsync is still under
    /// way: a caller that answers from it first waits with [`Sqlite::settled`].
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Option<Result<T>> {
        let conn = self.readers.lock().ok()?.pop()?;
        let r = f(&conn);
        if let Ok(mut free) = self.readers.lock() {
            free.push(conn);
        }
        Some(r)
    }

    /// Waits until every commit that wrote `player_id`'s rows before this call is on disk, so an
    /// answer read from them cannot be undone by a crash (a lookup that saw a bet whose fsync is
    /// in flight answers after it, like the bet itself). Returns at once when nothing of the
    /// player's is in flight — the common case; otherwise within about one fsync.
    pub(super) async fn settled(&self, player_id: &str) -> Result<()> {
        let need = self.durability.slot(player_id).load(Ordering::SeqCst);
        if *self.durability.durable.borrow() >= need {
            return Ok(());
        }
        let mut durable = self.durability.durable.subscribe();
        match tokio::time::timeout(SETTLE_TIMEOUT, durable.wait_for(|d| *d >= need)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable(
                "the ledger's disk has not confirmed a recent write".into(),
            )),
        }
    }
}

/// The WAL beside the database file (`<file>-wal`).
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The checkpoint thread: after commits, at most every [`CHECKPOINT_EVERY`], copies the WAL's
/// pages back into the database file (PASSIVE: it never waits for, nor blocks, the writer or a
/// reader), so the WAL stays small and the writer restarts it from the beginning. Run on the
/// writer, a checkpoint (its page copies and the database file's fsync) stalled every commit
/// queued behind it: tens of milliseconds at the p99 of bets (measured). Its connection is
/// `synchronous = FULL`, so it fsyncs the WAL before copying from it and the database file after.
/// Ends with the syncer.
fn checkpoint_loop(conn: Connection, commits: std::sync::mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "ledger checkpoint failed; the WAL grows until one succeeds");
        }
    }
}

/// A committed group waiting for its fsync: its commit sequence and its members' answers.
struct Committed {
    seq: u64,
    members: Vec<(GroupOp, Result<Answer>)>,
}

/// The writer thread's state: its connection, the group it has open, and whether the syncer is
/// busy with the previous one.
///
/// The pipeline: the writer runs members' statements inside an open transaction as they arrive;
/// when the syncer is idle it commits them (`synchronous = NORMAL`: the WAL frames are written,
/// not fsynced) and hands the group to the syncer, which fsyncs the WAL and answers. While that
/// fsync is on disk the writer keeps adding new arrivals to the next open transaction, so a group
/// is everything that arrived during one fsync: an idle node commits and syncs each bet at once,
/// a loaded one carries a whole fsync's worth of bets in one commit, and the statements run while
/// the disk works instead of after it. With `synchronous = FULL` the commit itself waited for the
/// fsync, and the writer with it.
struct Writer {
    conn: Connection,
    lock: Arc<Mutex<()>>,
    durability: Arc<Durability>,
    to_sync: std::sync::mpsc::SyncSender<Committed>,
    /// Groups handed to the syncer and not answered yet (the syncer counts them down).
    in_flight: Arc<AtomicUsize>,
    /// The last commit sequence handed to the syncer (the open group commits as `seq + 1`).
    seq: u64,
    /// The members of the open transaction with their outcomes (empty: no transaction open).
    open: Vec<(GroupOp, Result<Answer>)>,
}

impl Writer {
    /// A message at a time until every sender is gone (the ledger was dropped); then the open
    /// group is committed and synced.
    fn run(mut self, mut queue: mpsc::Receiver<Msg>) {
        let mut guard = None;
        while let Some(msg) = queue.blocking_recv() {
            self.take(msg, &mut guard);
            // Whatever queued behind it goes into the same transaction.
            while self.open.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(msg) => self.take(msg, &mut guard),
                    Err(_) => break,
                }
            }
            // A full group commits even while the syncer works (a burst beyond one fsync's
            // worth): the syncer takes it next, and its one-group hand-off holds the writer back.
            let idle = self.in_flight.load(Ordering::Acquire) == 0;
            if !self.open.is_empty() && (idle || self.open.len() >= GROUP_MAX) {
                self.commit(&mut guard);
            }
        }
        if !self.open.is_empty() {
            self.commit(&mut guard);
        }
    }

    fn take(&mut self, msg: Msg, guard: &mut Option<tokio::sync::OwnedMutexGuard<()>>) {
        let Msg::Op(op) = msg else {
            return;
        };
        if self.open.is_empty() {
            // The ledger's write lock for the transaction's life: the other (sqlx) writes take
            // it too, so SQLite never has two writers to arbitrate.
            *guard = Some(self.lock.clone().blocking_lock_owned());
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                *guard = None;
                op.answer(Err(Error::Unavailable(format!(
                    "the ledger did not start a transaction: {e}"
                ))));
                return;
            }
        }
        // Stored before the commit that makes the write visible: a reader that sees it then
        // finds a sequence at least this one (see `Sqlite::settled`).
        let seq = self.seq + 1;
        op.each_player(|player| self.durability.slot(player).store(seq, Ordering::SeqCst));
        match op.apply(&self.conn) {
            Ok(r) => self.open.push((op, r)),
            Err(e) => {
                // The member may have written part of itself: the whole transaction goes.
                op.answer(Err(Error::Unavailable(format!(
                    "the ledger did not commit: {e}"
                ))));
                self.abandon(&e.to_string());
                *guard = None;
            }
        }
    }

    /// Rolls the open transaction back and tells its members nothing was written.
    fn abandon(&mut self, why: &str) {
        let _ = self.conn.execute_batch("ROLLBACK");
        let msg = format!("the ledger did not commit: {why}");
        for (op, _) in self.open.drain(..) {
            op.answer(Err(Error::Unavailable(msg.clone())));
        }
        // Readers may have marked the rolled-back sequence: it goes to the syncer empty, so it
        // is published in order like any other.
        self.seq += 1;
        self.hand_over(Vec::new());
    }

    /// Gives the syncer the group committed as `self.seq`.
    fn hand_over(&mut self, members: Vec<(GroupOp, Result<Answer>)>) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(std::sync::mpsc::SendError(group)) = self.to_sync.send(Committed {
            seq: self.seq,
            members,
        }) {
            // The syncer is gone (it aborts the process on a failed fsync; this is shutdown).
            for (op, _) in group.members {
                op.answer(Err(Error::OutcomeUnknown));
            }
        }
    }

    /// Commits the open transaction and hands the group to the syncer.
    fn commit(&mut self, guard: &mut Option<tokio::sync::OwnedMutexGuard<()>>) {
        metrics::histogram!("crashfleet_ledger_group_size").record(self.open.len() as f64);
        let started = std::time::Instant::now();
        let committed = self.conn.execute_batch("COMMIT");
        metrics::histogram!("crashfleet_ledger_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        *guard = None;
        if let Err(e) = committed {
            self.abandon(&e.to_string());
            return;
        }
        self.seq += 1;
        // Not replaced by a vector of `GROUP_MAX`: that is a large allocation, and the allocator
        // mapped and zeroed fresh pages for one per group (measured: 13 % of the core).
        let members = std::mem::take(&mut self.open);
        self.hand_over(members);
    }
}

/// The syncer thread's state.
struct Syncer {
    wal_file: std::fs::File,
    wal: PathBuf,
    /// The writer's queue, to tell it the fsync is done (weak: the ledger's drop ends the writer).
    wake: mpsc::WeakSender<Msg>,
    durability: Arc<Durability>,
    /// Groups handed over and not answered yet (the writer counts them up).
    in_flight: Arc<AtomicUsize>,
    /// Wakes the checkpoint thread.
    committed: std::sync::mpsc::SyncSender<()>,
}

/// The syncer thread: fsyncs the WAL behind each committed group, then answers its members and
/// publishes the group's sequence as durable. A WAL is a chain of checksummed frames, so after a
/// crash SQLite recovers a prefix of the commits: when group `n`'s fsync returns, `n` and every
/// group before it survive power loss — the same guarantee `synchronous = FULL` gives, with the
/// fsync off the writer's path.
///
/// A failed fsync aborts the process: the kernel may have dropped the dirty pages it could not
/// write, and a later fsync would then report success for data that never reached the disk. Only
/// a restart, which reads the WAL back from the disk, knows what is durable.
fn sync_loop(s: Syncer, groups: std::sync::mpsc::Receiver<Committed>) {
    while let Ok(group) = groups.recv() {
        s.check_not_replaced();
        let started = std::time::Instant::now();
        let synced = s.wal_file.sync_data();
        metrics::histogram!("crashfleet_ledger_fsync_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = synced {
            tracing::error!(error = %e, wal = %s.wal.display(), "fsync of the ledger's WAL failed: aborting so a restart recovers what is on disk");
            std::process::abort();
        }
        s.durability.publish(group.seq);
        for (op, r) in group.members {
            op.answer(r);
        }
        // Paced: the next group's fsync starts no sooner than SYNC_GAP after this one's did,
        // so under load a group carries at least SYNC_GAP's worth of operations (the answers
        // above are not held back; only the next group collects for longer).
        if let Some(rest) = SYNC_GAP.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(writer) = s.wake.upgrade() {
            // A full queue needs no word: the writer is draining it and sees the next one.
            let _ = writer.try_send(Msg::Synced);
        }
        // Wakes the checkpoint thread; a wake-up already pending covers this commit too.
        let _ = s.committed.try_send(());
    }
}

impl Syncer {
    /// SQLite deletes the WAL only when its last connection closes, after copying everything into
    /// the database file; the writer's connection lives as long as this thread. A replaced file
    /// would mean that assumption broke: said loudly, since fsyncing the old one proves nothing.
    fn check_not_replaced(&self) {
        use std::os::unix::fs::MetadataExt;
        let ours = self.wal_file.metadata().map(|m| (m.dev(), m.ino()));
        let now = std::fs::metadata(&self.wal).map(|m| (m.dev(), m.ino()));
        if let (Ok(a), Ok(b)) = (ours, now)
            && a != b
        {
            tracing::error!(wal = %self.wal.display(), "the ledger's WAL was replaced under the writer: aborting");
            std::process::abort();
        }
    }
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
    if let Err(e) = seal_round(conn, table, number)? {
        return Ok(Err(e));
    }
    Ok(Ok(balances))
}

/// [`super::seal_round`] on the writer's connection.
fn seal_round(conn: &Connection, table: &str, number: u64) -> Step<SettlementSummary> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LEAF_COLUMNS} FROM bets WHERE table_id = ?1 AND round_number = ?2"
    ))?;
    let rows = stmt.query_map(params![table, i(number)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            status::<BetStatus>(r.get(3)?)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut leaves = Vec::new();
    for row in rows {
        let (id, player, stake, status, cashout_x100, payout) = row?;
        match settlement_leaf(id, &player, stake, status, cashout_x100, payout) {
            Ok(leaf) => leaves.push(leaf),
            Err(e) => return Ok(Err(e)),
        }
    }
    let summary = crashfleet_core::settlement::settle(&mut leaves);
    conn.prepare_cached(&SEAL_ROUND.replace('$', "?"))?
        .execute(params![
            hex::encode(summary.root),
            i(summary.bets),
            i(summary.wagered),
            i(summary.paid),
            table,
            i(number)
        ])?;
    Ok(Ok(summary))
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
        settled_at_ms: r.get(13)?,
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
    use super::*;
    use crate::protocol::BetStatus;

    fn bet_for(player: &str) -> BetRecord {
        BetRecord {
            bet_id: format!("bet-{player}"),
            table: "t".into(),
            round: 1,
            player_id: player.into(),
            username: player.into(),
            stake: 100,
            auto_cashout_x100: None,
            status: BetStatus::Open,
            cashout_x100: None,
            payout: None,
            placed_at_ms: 0,
            idempotency_key: "k".into(),
            cashout_key: None,
            settled_at_ms: None,
        }
    }

    /// Every member of a group is answered only after its commit is published as fsynced: each
    /// answer, the moment it arrives, finds the durable sequence at or past the one its player's
    /// rows were marked with. (The bets are refused — no such round — which goes through the
    /// same commit and fsync as an accepted one.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_come_after_the_fsync_of_their_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let ledger = Arc::new(SqlLedger::connect(&url, 2).await.expect("ledger"));
        let mut tasks = tokio::task::JoinSet::new();
        // Players in slots of their own, so no later commit re-marks a slot before it is read.
        let d = &ledger.sqlite.as_ref().expect("a SQLite ledger").durability;
        let mut slots = std::collections::HashSet::new();
        let players = (0..)
            .map(|n| format!("p{n}"))
            .filter(|p| slots.insert(d.slot(p) as *const AtomicU64 as usize))
            .take(300);
        for player in players {
            let ledger = ledger.clone();
            tasks.spawn(async move {
                let lite = ledger.sqlite.as_ref().expect("a SQLite ledger");
                let r = lite
                    .write(|reply| GroupOp::Bet(bet_for(&player), reply))
                    .await;
                let marked = lite.durability.slot(&player).load(Ordering::SeqCst);
                let durable = *lite.durability.durable.borrow();
                assert!(matches!(r, Err(Error::BettingClosed)), "{r:?}");
                assert!(marked > 0, "the bet's player was never marked");
                assert!(
                    durable >= marked,
                    "answered at {durable} before {marked} was fsynced"
                );
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.expect("task");
        }
        let lite = ledger.sqlite.as_ref().expect("a SQLite ledger");
        let durable = *lite.durability.durable.borrow();
        assert!(durable >= 1, "nothing was published as durable");
    }

    /// A lookup of a player whose rows a not-yet-fsynced commit wrote waits for that fsync, and
    /// only for that player's.
    #[tokio::test]
    async fn lookups_wait_for_the_fsync_of_what_they_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lite =
            Sqlite::start(&dir.path().join("l.db"), 1, Arc::new(Mutex::new(()))).expect("start");
        let d = &lite.durability;
        let (a, b) = ("alice", "bob");
        assert_ne!(
            d.slot(a) as *const _,
            d.slot(b) as *const _,
            "pick names in other slots"
        );
        lite.settled(a).await.expect("nothing in flight: at once");
        d.slot(a).store(3, Ordering::SeqCst);
        let short = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(short, lite.settled(a)).await.is_err(),
            "answered from a commit whose fsync had not returned"
        );
        lite.settled(b)
            .await
            .expect("another player's rows are not in flight");
        let waiting = lite.settled(a);
        d.publish(2);
        assert!(tokio::time::timeout(short, lite.settled(a)).await.is_err());
        d.publish(3);
        tokio::time::timeout(short, waiting)
            .await
            .expect("released by the fsync")
            .expect("settled");
        d.publish(1);
        assert_eq!(*d.durable.borrow(), 3, "durability never moves backwards");
    }

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
