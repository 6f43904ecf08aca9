-- A round's hash and crash point are no longer stored while the round is open: anyone who can read
-- the database (or a backup of it) during a betting window would otherwise know the round's
-- outcome. They are written when the round crashes or is voided; a leader that resumes an open
-- round re-derives both from the secret chain seed. Open rounds stored by older versions lose
-- their copy here.
ALTER TABLE rounds ALTER COLUMN hash DROP NOT NULL;
ALTER TABLE rounds ALTER COLUMN crash_x100 DROP NOT NULL;
UPDATE rounds SET hash = NULL, crash_x100 = NULL WHERE status = 'open';
ALTER TABLE rounds ADD CONSTRAINT rounds_secrets_only_when_settled
    CHECK ((status = 'open') = (hash IS NULL) AND (status = 'open') = (crash_x100 IS NULL));
