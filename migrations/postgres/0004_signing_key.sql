-- The table's Ed25519 public key (64 hex characters), part of its commitment: receipts and round
-- log heads are signed with the matching secret key. NULL for tables committed before receipts
-- existed: the first node that starts with a key stores it, and from then on a node with another
-- key refuses to start (a receipt must verify against the one published key).
ALTER TABLE commitments ADD COLUMN signing_key TEXT;
