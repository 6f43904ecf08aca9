//! The money primitives every settlement is built from: moving an amount with its journal entry,
//! paying a win once, storing a bet with its stake.

use super::*;

/// Credits `amount` (may be negative for a debit that is known to be covered) and records it.
pub(super) async fn move_money(
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
pub(super) async fn pay_win(
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
pub(super) async fn insert_bet(conn: &mut AnyConnection, bet: &BetRecord) -> Result<Option<i64>> {
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
