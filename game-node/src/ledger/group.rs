//! Group commit: concurrent bet and cash-out writes share one transaction (each in its own
//! savepoint), so a busy second costs a few commits instead of hundreds.

use super::*;

/// Most bets and cash-outs one SQLite commit carries.
pub(super) const GROUP_MAX: usize = 256;

/// A bet or cash-out waiting for the SQLite group commit, with where its answer goes.
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
pub(super) async fn grouped(
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
pub(super) async fn group_writer(
    pool: AnyPool,
    lock: Arc<Mutex<()>>,
    mut ops: mpsc::Receiver<GroupOp>,
) {
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

pub(super) async fn commit_group(pool: &AnyPool, batch: &mut Vec<GroupOp>) {
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
pub(super) fn fail_all(batch: &mut Vec<GroupOp>, msg: String) {
    for op in batch.drain(..) {
        op.answer(Err(Error::Unavailable(msg.clone())));
    }
}

/// One member of a group in its own savepoint: the inner result is the member's answer; the outer
/// error means the savepoint itself failed and the group must not commit.
pub(super) async fn apply_in_savepoint(
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
