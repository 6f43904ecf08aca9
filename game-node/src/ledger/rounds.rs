//! The leader's writes (terms, rounds, settlements) and the fairness commitment.

use super::*;

/// Locks every open bet of a round before a settlement touches any player's row.
///
/// Lock order on PostgreSQL is round, then bets, then players. A cash-out locks its bet, then its
/// player. A settlement going bet by bet (bet, player, next bet, ...) would hold a player's row
/// while waiting for that player's next bet — which a cash-out may hold while waiting for the
/// player: a deadlock. Locking all the bets first keeps the order. (On SQLite writers are
/// serialised anyway; the no-op update costs one row write per open bet.)
pub(super) async fn lock_open_bets(tx: &mut Tx, table: &str, number: u64) -> Result<()> {
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
pub(super) async fn close_round(
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
impl Commitments for SqlLedger {
    async fn commit_fairness(&self, c: &Commitment) -> Result<Commitment> {
        let _w = self.write_guard().await;
        let inserted = sqlx::query(
            "INSERT INTO commitments (table_id, terminating_hash, salt, chain_length, house_edge_bp, \
             max_x100, created_at_ms, signing_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.table)
        .bind(&c.terminating_hash)
        .bind(&c.salt)
        .bind(i(c.chain_length))
        .bind(i64::from(c.house_edge_bp))
        .bind(i(c.max_x100))
        .bind(c.created_at_ms)
        .bind(&c.signing_key)
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

    async fn commitment(&self, table: &str) -> Result<Option<Commitment>> {
        let Some(r) = sqlx::query(
            "SELECT table_id, terminating_hash, salt, chain_length, house_edge_bp, max_x100, \
             created_at_ms, signing_key FROM commitments WHERE table_id = $1",
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
            signing_key: r.try_get("signing_key").db()?,
        }))
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

    async fn adopt_signing_key(&self, table: &str, key: &str) -> Result<String> {
        let _w = self.write_guard().await;
        // One statement: two nodes adopting at once cannot both write (the second finds a key).
        sqlx::query(
            "UPDATE commitments SET signing_key = $1 WHERE table_id = $2 AND signing_key IS NULL",
        )
        .bind(key)
        .bind(table)
        .execute(&self.pool)
        .await
        .db()?;
        self.commitment(table)
            .await?
            .and_then(|c| c.signing_key)
            .ok_or_else(|| Error::Internal(format!("table {table:?} has no commitment")))
    }
}

#[async_trait]
impl RoundBook for SqlLedger {
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

    async fn settle_leader_cash_out(
        &self,
        table: &str,
        term: u64,
        c: &CashOut,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        if let Some(lite) = &self.sqlite {
            return lite
                .write(|reply| GroupOp::CashOut {
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
        if let Some(lite) = &self.sqlite {
            // On the writer thread: a settlement of thousands of bets is thousands of statements,
            // each a thread hand-off through sqlx.
            return lite
                .write(|reply| GroupOp::Finish {
                    table: table.to_string(),
                    term,
                    number,
                    reveal: reveal.clone(),
                    crashed_at_ms,
                    settlements: settlements.to_vec(),
                    reply,
                })
                .await;
        }
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
        seal_round(&mut tx, table, number).await?;
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
        seal_round(&mut tx, table, number).await?;
        tx.commit().await.db()?;
        Ok(balances)
    }
}

impl SqlLedger {
    /// Commits to the settlement of `table`'s rounds that were settled before settlement roots
    /// existed (their `settlement_root` is NULL), from their stored bets; returns how many. Safe
    /// on any node at any time: a settled round's bets no longer change, so every node computes the
    /// same root, and a round already sealed is left alone.
    pub async fn seal_unsealed_rounds(&self, table: &str) -> Result<u64> {
        let numbers: Vec<i64> = sqlx::query(
            "SELECT number FROM rounds WHERE table_id = $1 AND status <> 'open' \
             AND settlement_root IS NULL ORDER BY number",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .db()?
        .iter()
        .map(|r| r.try_get(0).db())
        .collect::<Result<_>>()?;
        for &number in &numbers {
            let _w = self.write_guard().await;
            let mut tx = self.pool.begin().await.db()?;
            seal_round(&mut tx, table, u(number)).await?;
            tx.commit().await.db()?;
        }
        Ok(numbers.len() as u64)
    }
}
