-- Sessions that logout can revoke: every token carries the player's token version at issue time
-- and is refused once it is older than this column (logout bumps it). Existing tokens carry no
-- version and count as 0, so they stay valid until the player's first logout.
ALTER TABLE players ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0 CHECK (token_version >= 0);
