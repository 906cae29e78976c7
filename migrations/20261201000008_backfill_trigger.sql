-- Backfills and trigger sources (issue #15, parts 1 and 5).
--
-- `backfills` keeps one row per `POST /v1/tasks/{id}/backfill`: the range,
-- the mode, the schedule it enumerates (as of the request) and a cursor, so
-- that dispatch goes in small transactions and a crash mid-way resumes
-- where it stopped (the scanner's tick continues any unfinished one).
--
-- `task_runs` records, per run, the trigger of the attempt it records
-- (`Sundial-Trigger` as the target saw it), the backfill that fired it,
-- and `rerun`, which lets a backfill in mode `all` record one more run of
-- an occurrence beside its own.

CREATE TABLE backfills (
    id                BIGSERIAL   PRIMARY KEY,
    task_id           BIGINT      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- The occurrences of [range_from, range_to) are dispatched.
    range_from        TIMESTAMPTZ NOT NULL,
    range_to          TIMESTAMPTZ NOT NULL,
    -- missing: only occurrences without a recorded run; all: every one
    -- (recorded ones again, as re-runs of this backfill).
    mode              TEXT        NOT NULL,
    -- The timing enumerated, as it was when the backfill was asked for.
    schedule          TEXT        NOT NULL,
    timezone          TEXT        NOT NULL,
    -- Occurrences in the range (at most 10,000: the API refuses more).
    requested         INTEGER     NOT NULL,
    -- Sent to the queue / passed over because a run was recorded (missing).
    dispatched        INTEGER     NOT NULL DEFAULT 0,
    skipped_existing  INTEGER     NOT NULL DEFAULT 0,
    -- The last occurrence dispatched or skipped (the next chunk starts
    -- after it); NULL: nothing yet.
    cursor            TIMESTAMPTZ,
    -- dispatching: the cursor has not reached range_to; dispatched: it has.
    state             TEXT        NOT NULL DEFAULT 'dispatching',
    -- Whoever dispatches holds the row until then (API call or scanner).
    lease_until       TIMESTAMPTZ,
    -- The last reason dispatch stopped early (queue refused, task paused).
    last_error        TEXT,
    actor             TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at     TIMESTAMPTZ,

    CONSTRAINT backfills_range_order CHECK (range_from < range_to),
    CONSTRAINT backfills_mode_known CHECK (mode IN ('missing', 'all')),
    CONSTRAINT backfills_state_known CHECK (state IN ('dispatching', 'dispatched')),
    CONSTRAINT backfills_requested_range CHECK (requested BETWEEN 0 AND 10000),
    CONSTRAINT backfills_counts_bounded CHECK (
        dispatched >= 0 AND skipped_existing >= 0 AND dispatched + skipped_existing <= requested),
    CONSTRAINT backfills_error_length CHECK (last_error IS NULL OR length(last_error) <= 2048),
    CONSTRAINT backfills_actor_length CHECK (length(actor) BETWEEN 1 AND 200)
);

-- The scanner looks for unfinished backfills every tick.
CREATE INDEX backfills_dispatching_idx ON backfills (id) WHERE state = 'dispatching';
-- A task's backfills, newest first.
CREATE INDEX backfills_task_idx ON backfills (task_id, id DESC);

ALTER TABLE task_runs
    -- The `Sundial-Trigger` of the attempt this row records: schedule
    -- (on time), catch-up (a first attempt fired more than the misfire
    -- grace late), retry (attempt > 1), backfill, manual.
    ADD COLUMN trigger      TEXT   NOT NULL DEFAULT 'schedule',
    -- The backfill that fired this run, if one did.
    ADD COLUMN backfill_id  BIGINT REFERENCES backfills (id) ON DELETE SET NULL,
    -- 0: the occurrence's own run. A backfill id: the extra run that
    -- backfill (mode all) made of an occurrence that had one already.
    ADD COLUMN rerun        BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT task_runs_trigger_known
        CHECK (trigger IN ('schedule', 'retry', 'catch-up', 'backfill', 'manual')),
    ADD CONSTRAINT task_runs_rerun_is_backfill CHECK (rerun = 0 OR rerun = backfill_id);

-- Runs recorded before triggers were: what can be told from the row.
UPDATE task_runs SET trigger = CASE WHEN attempts > 1 THEN 'retry'
                                    WHEN manual THEN 'manual'
                                    ELSE 'schedule' END
WHERE attempts > 1 OR manual;

-- The idempotency key of an occurrence's run, now with room for one
-- re-run per backfill: (task, occurrence, 0) is still unique, so every
-- path that records an occurrence's own run stays exactly-once.
ALTER TABLE task_runs DROP CONSTRAINT task_runs_occurrence_unique;
ALTER TABLE task_runs ADD CONSTRAINT task_runs_occurrence_unique
    UNIQUE (task_id, scheduled_for, rerun);

-- Progress of a backfill: its runs.
CREATE INDEX task_runs_backfill_idx ON task_runs (backfill_id) WHERE backfill_id IS NOT NULL;
