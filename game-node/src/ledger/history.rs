//! Reads for the API: rounds, bets, leaderboard, stats.

use super::*;

#[async_trait]
impl History for SqlLedger {
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

    // The same rows as `rounds`, oldest first from a point: the round log's catch-up read.
    async fn rounds_after(&self, table: &str, after: u64, limit: u32) -> Result<Vec<RoundRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE table_id = $1 AND status <> 'open' \
             AND number > $2 ORDER BY number LIMIT $3"
        )))
        .bind(table)
        .bind(i(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(round_row).collect()
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
}
