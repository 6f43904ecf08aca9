-- no-transaction
-- A round's hash and crash point are no longer stored while the round is open: anyone who can read
-- the database file (or a backup of it) during a betting window would otherwise know the round's
-- outcome. They are written when the round crashes or is voided; a leader that resumes an open
-- round re-derives both from the secret chain seed.
--
-- SQLite cannot drop NOT NULL in place: the table is rebuilt (the documented 12-step procedure).
-- Foreign keys are switched off around the rebuild (bets reference rounds; the pragma is a no-op
-- inside a transaction, hence no-transaction and an explicit BEGIN/COMMIT).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE rounds_new (
    table_id      TEXT   NOT NULL,
    number        BIGINT NOT NULL CHECK (number > 0),
    status        TEXT   NOT NULL CHECK (status IN ('open', 'crashed', 'voided')),
    -- NULL exactly while the round is open.
    hash          TEXT,
    crash_x100    BIGINT CHECK (crash_x100 >= 100),
    opened_at_ms  BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    crashed_at_ms BIGINT,
    term          BIGINT NOT NULL,
    bets          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (table_id, number),
    CHECK ((status = 'open') = (hash IS NULL)),
    CHECK ((status = 'open') = (crash_x100 IS NULL))
);
INSERT INTO rounds_new (table_id, number, status, hash, crash_x100, opened_at_ms, started_at_ms,
                        crashed_at_ms, term, bets)
SELECT table_id, number, status,
       CASE WHEN status = 'open' THEN NULL ELSE hash END,
       CASE WHEN status = 'open' THEN NULL ELSE crash_x100 END,
       opened_at_ms, started_at_ms, crashed_at_ms, term, bets
FROM rounds;
DROP TABLE rounds;
ALTER TABLE rounds_new RENAME TO rounds;
COMMIT;
PRAGMA foreign_keys = ON;
