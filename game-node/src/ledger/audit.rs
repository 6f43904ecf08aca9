//! The conservation audit and the liveness probe.

use super::*;

#[async_trait]
impl Auditing for SqlLedger {
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
