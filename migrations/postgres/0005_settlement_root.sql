-- What each settled round commits to, written in the transaction that settles it (fenced by the
-- leader's term like the rest of the settlement): the hex root of the RFC 6962 Merkle tree over
-- one canonical leaf per bet (bet id, player hash, stake, outcome, multiplier, payout; ordered by
-- bet id bytewise), the number of bets, and what they staked and were paid back (wins and
-- refunds). NULL while the round is open; rounds settled before this column existed get theirs
-- from their stored bets when a node starts.
ALTER TABLE rounds ADD COLUMN settlement_root TEXT;
ALTER TABLE rounds ADD COLUMN bets_count BIGINT;
ALTER TABLE rounds ADD COLUMN wagered BIGINT;
ALTER TABLE rounds ADD COLUMN paid BIGINT;
