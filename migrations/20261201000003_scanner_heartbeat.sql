-- The scanner's heartbeat: the dead-man's switch of Sundial itself.
--
-- Every scanner tick writes its row here in one upsert, so `GET /v1/status`
-- can say when a scanner last ran and what it did, without CloudWatch. One
-- row per scanner name (its `lease_owner`: the Lambda's function name,
-- `sundial-cli`, `sundial-dev`), so the table stays a handful of rows
-- however many ticks there are; concurrent invocations of one function
-- share a row (the last one to finish wins, which is what "last seen"
-- means).

CREATE TABLE scanner_heartbeats (
    scanner           TEXT        PRIMARY KEY,
    -- When the last tick started and finished (the database's clock is
    -- not used: these are the scanner's own instants, as in its logs).
    last_started_at   TIMESTAMPTZ NOT NULL,
    last_finished_at  TIMESTAMPTZ NOT NULL,
    -- Ticks this scanner completed since the row was created.
    ticks             BIGINT      NOT NULL DEFAULT 1,
    -- The last tick's summary, as in its EMF record.
    last_claimed      BIGINT      NOT NULL DEFAULT 0,
    last_enqueued     BIGINT      NOT NULL DEFAULT 0,
    last_failed       BIGINT      NOT NULL DEFAULT 0,
    last_backlog      BIGINT      NOT NULL DEFAULT 0,
    last_missed       BIGINT      NOT NULL DEFAULT 0,
    last_elapsed_ms   BIGINT      NOT NULL DEFAULT 0,

    CONSTRAINT scanner_heartbeats_ticks_positive CHECK (ticks > 0),
    CONSTRAINT scanner_heartbeats_tick_order CHECK (last_finished_at >= last_started_at),
    CONSTRAINT scanner_heartbeats_counts CHECK (
        last_claimed >= 0 AND last_enqueued >= 0 AND last_failed >= 0
        AND last_backlog >= 0 AND last_missed >= 0 AND last_elapsed_ms >= 0)
);
