-- crashfleet ledger schema (PostgreSQL). Kept statement-for-statement portable with
-- ../sqlite/0001_ledger.sql: only the identity column differs.
-- Amounts are integers in minor units; multipliers are integers in hundredths.

-- The fairness commitment of each table, stored once before its first round.
CREATE TABLE commitments (
    table_id         TEXT PRIMARY KEY,
    terminating_hash TEXT   NOT NULL,
    salt             TEXT   NOT NULL,
    chain_length     BIGINT NOT NULL CHECK (chain_length > 0),
    house_edge_bp    BIGINT NOT NULL CHECK (house_edge_bp BETWEEN 0 AND 10000),
    max_x100         BIGINT NOT NULL CHECK (max_x100 >= 100),
    created_at_ms    BIGINT NOT NULL
);

-- Fencing: the newest leadership term each table has seen. Leader writes check it in their transaction.
CREATE TABLE leadership (
    table_id TEXT PRIMARY KEY,
    term     BIGINT NOT NULL
);

CREATE TABLE players (
    id            TEXT PRIMARY KEY,
    username      TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    balance       BIGINT NOT NULL CHECK (balance >= 0),
    created_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX players_username_ci ON players (lower(username));

-- Hash and crash point are stored when the round opens (a new leader must be able to finish it)
-- and served only once the round is crashed or voided.
CREATE TABLE rounds (
    table_id      TEXT   NOT NULL,
    number        BIGINT NOT NULL CHECK (number > 0),
    status        TEXT   NOT NULL CHECK (status IN ('open', 'crashed', 'voided')),
    hash          TEXT   NOT NULL,
    crash_x100    BIGINT NOT NULL CHECK (crash_x100 >= 100),
    opened_at_ms  BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    crashed_at_ms BIGINT,
    term          BIGINT NOT NULL,
    bets          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (table_id, number)
);

CREATE TABLE bets (
    id                TEXT PRIMARY KEY,
    table_id          TEXT   NOT NULL,
    round_number      BIGINT NOT NULL,
    player_id         TEXT   NOT NULL REFERENCES players (id),
    stake             BIGINT NOT NULL CHECK (stake > 0),
    auto_cashout_x100 BIGINT,
    status            TEXT   NOT NULL CHECK (status IN ('open', 'won', 'lost', 'refunded')),
    cashout_x100      BIGINT,
    payout            BIGINT,
    placed_at_ms      BIGINT NOT NULL,
    settled_at_ms     BIGINT,
    idempotency_key   TEXT   NOT NULL,
    cashout_key       TEXT,
    FOREIGN KEY (table_id, round_number) REFERENCES rounds (table_id, number)
);
-- A retried bet request (same player, same key) finds the first one instead of betting twice.
CREATE UNIQUE INDEX bets_idempotency ON bets (player_id, idempotency_key);
CREATE INDEX bets_round ON bets (table_id, round_number);
CREATE INDEX bets_player ON bets (player_id, placed_at_ms);

-- Every money movement, signed from the player's side. balance = SUM(amount) per player.
CREATE TABLE entries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    player_id       TEXT   NOT NULL REFERENCES players (id),
    kind            TEXT   NOT NULL CHECK (kind IN ('credit', 'withdrawal', 'stake', 'payout', 'refund')),
    amount          BIGINT NOT NULL,
    bet_id          TEXT REFERENCES bets (id),
    idempotency_key TEXT,
    created_at_ms   BIGINT NOT NULL
);
-- A bet is debited once and settled once: at most one entry of each kind per bet.
CREATE UNIQUE INDEX entries_per_bet ON entries (bet_id, kind) WHERE bet_id IS NOT NULL;
CREATE UNIQUE INDEX entries_idempotency ON entries (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX entries_player ON entries (player_id);
