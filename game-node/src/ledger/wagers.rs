//! Bets: placing, finding by key, cashing out.

use super::*;

#[async_trait]
impl Wagers for SqlLedger {
    async fn bet_by_key(&self, player_id: &str, key: &str) -> Result<Option<BetRecord>> {
        self.lookup_bet(
            |c| sqlite::bet_by_key(c, player_id, key),
            "b.player_id = $1 AND b.idempotency_key = $2",
            &[player_id, key],
        )
        .await
    }

    async fn place_bet(&self, bet: &BetRecord) -> Result<(BetRecord, i64)> {
        let placed = match &self.sqlite {
            Some(lite) => lite.write(|reply| GroupOp::Bet(bet.clone(), reply)).await?,
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
        if let Some(lite) = &self.sqlite {
            return lite
                .write(|reply| GroupOp::CashOut {
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

    async fn bet(&self, bet_id: &str) -> Result<Option<BetRecord>> {
        self.lookup_bet(|c| sqlite::bet_by_id(c, bet_id), "b.id = $1", &[bet_id])
            .await
    }
}

impl SqlLedger {
    /// A bet found on a SQLite reader (or the pool, `WHERE` `filter` with `binds`), answered
    /// once what it shows is on disk.
    async fn lookup_bet(
        &self,
        lite: impl FnOnce(&rusqlite::Connection) -> Result<Option<BetRecord>>,
        filter: &str,
        binds: &[&str],
    ) -> Result<Option<BetRecord>> {
        let pool = async {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {BET_COLUMNS} FROM bets b JOIN players p ON p.id = b.player_id \
                 WHERE {filter}"
            )));
            for b in binds {
                q = q.bind(*b);
            }
            q.fetch_optional(&self.pool)
                .await
                .db()?
                .as_ref()
                .map(bet_row)
                .transpose()
        };
        let found = self.lookup(lite, pool).await?;
        if let Some(bet) = &found {
            self.settled(&bet.player_id).await?;
        }
        Ok(found)
    }
}
