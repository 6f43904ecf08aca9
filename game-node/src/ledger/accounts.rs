//! Players and balances.

use super::*;

#[async_trait]
impl Accounts for SqlLedger {
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
        let pool = async {
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
        };
        let found = self.lookup(|c| sqlite::player_by_id(c, id), pool).await?;
        if found.is_some() {
            self.settled(id).await?;
        }
        Ok(found)
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
}
