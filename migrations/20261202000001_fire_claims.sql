-- Which copy of a queue message is being fired, across processors: SQS
-- (and the emulator, often) now and then hands one message to two
-- receivers at once. The first processor to claim a message fires it; a
-- copy that finds a live claim is handed back until the claim expires, and
-- by then the run is recorded and the copy is dropped. The key is the
-- whole message as sent (a retry or a re-paced message is a new key).
-- A message handed back unfired releases its claim. Unlogged: a claim
-- matters for seconds to minutes; one lost in a crash of Postgres at worst
-- lets a copy fire twice, as before this table.
CREATE UNLOGGED TABLE fire_claims (
    key text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX fire_claims_expires_at ON fire_claims (expires_at);
