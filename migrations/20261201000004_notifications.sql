-- Failure notifications and auto-pause.
--
-- A task may pause itself after `pause_after_failures` consecutive failed
-- occurrences; every pause (by Sundial, the admin API or SQL) records who,
-- why, when, and optionally until when. An incident runs from the first
-- failed occurrence of a healthy task (`failing_since`) to the next
-- success (`recovered_at`): the write-back raises one `task.failing` and
-- one `task.recovered` event per incident into the `notifications` outbox,
-- in the same statement that records the runs, so a crash loses nothing.

ALTER TABLE tasks
    -- Pause after this many consecutive failed occurrences; NULL: never.
    ADD COLUMN pause_after_failures INTEGER,
    -- Where this task's events are POSTed (besides SUNDIAL_NOTIFY_URL).
    ADD COLUMN notify_url TEXT,
    -- The pause in force (all NULL while the task runs): when, by whom,
    -- why, and when it ends by itself (NULL: when someone resumes it).
    ADD COLUMN paused_at TIMESTAMPTZ,
    ADD COLUMN paused_by TEXT,
    ADD COLUMN paused_reason TEXT,
    ADD COLUMN paused_until TIMESTAMPTZ,
    -- The open incident: the finish of its first failed occurrence.
    ADD COLUMN failing_since TIMESTAMPTZ,
    -- When the last incident ended (the finish of the successful run).
    ADD COLUMN recovered_at TIMESTAMPTZ,
    -- The stuck occurrence a `task.missed` event was raised for (one per
    -- incident: a stuck occurrence stays `next_run_at` until it fires).
    ADD COLUMN missed_notified_for TIMESTAMPTZ,
    ADD CONSTRAINT tasks_pause_after_range CHECK (pause_after_failures IS NULL OR pause_after_failures BETWEEN 1 AND 1000),
    ADD CONSTRAINT tasks_notify_url_http CHECK (notify_url IS NULL OR (notify_url ~* '^https?://' AND length(notify_url) <= 2048)),
    ADD CONSTRAINT tasks_paused_by_length CHECK (paused_by IS NULL OR length(paused_by) BETWEEN 1 AND 200),
    ADD CONSTRAINT tasks_paused_reason_length CHECK (paused_reason IS NULL OR length(paused_reason) <= 500);

-- Paused tasks that resume by themselves; the scanner looks for them each tick.
CREATE INDEX tasks_paused_until_idx ON tasks (paused_until) WHERE NOT enabled AND paused_until IS NOT NULL;

-- Does this failed occurrence pause the task? (Only a failure that brings
-- a running task to its threshold does.)
CREATE FUNCTION sundial_auto_pauses(running BOOLEAN, threshold INTEGER, failures_before INTEGER, failed BOOLEAN)
RETURNS BOOLEAN AS $$
    SELECT running AND failed AND threshold IS NOT NULL AND failures_before + 1 >= threshold
$$ LANGUAGE sql IMMUTABLE;

-- The reason an auto-pause records: "5 consecutive failures; last: HTTP 500".
CREATE FUNCTION sundial_auto_pause_reason(failures INTEGER, http_status INTEGER, error TEXT)
RETURNS TEXT AS $$
    SELECT left(format('%s consecutive failures; last: %s', failures,
                       CASE WHEN http_status IS NOT NULL THEN 'HTTP ' || http_status
                            ELSE coalesce(nullif(error, ''), 'failed') END), 500)
$$ LANGUAGE sql IMMUTABLE;

-- Every pause carries who and why, whoever wrote it: a plain SQL
-- `UPDATE tasks SET enabled = false` gets the writer's `sundial.actor`
-- and `sundial.reason` settings (else `sql`). A resume clears the pause
-- and the failure count (the incident stays open until a success).
CREATE FUNCTION tasks_track_pause() RETURNS trigger AS $$
BEGIN
    IF NEW.enabled AND NOT OLD.enabled THEN
        NEW.paused_at := NULL;
        NEW.paused_by := NULL;
        NEW.paused_reason := NULL;
        NEW.paused_until := NULL;
        NEW.consecutive_failures := 0;
    ELSIF OLD.enabled AND NOT NEW.enabled
          -- Sundial turning a task off (invalid schedule, one-shot done) is no pause.
          AND NEW.schedule_error IS NULL AND NEW.next_run_at IS NOT NULL THEN
        NEW.paused_at := coalesce(NEW.paused_at, now());
        NEW.paused_by := coalesce(NEW.paused_by, sundial_actor('sql'));
        NEW.paused_reason := coalesce(NEW.paused_reason,
            nullif(left(current_setting('sundial.reason', true), 500), ''));
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

-- Only a change of `enabled` calls it: write-backs must stay cheap.
CREATE TRIGGER tasks_track_pause
    BEFORE UPDATE ON tasks
    FOR EACH ROW
    WHEN (NEW.enabled IS DISTINCT FROM OLD.enabled)
    EXECUTE FUNCTION tasks_track_pause();

-- The ledger's pause events name who paused and why from the row itself
-- (the write-back pauses many tasks in one statement, so it cannot name
-- itself per row with a setting). Otherwise as in 20261201000002.
CREATE OR REPLACE FUNCTION tasks_record_history() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_definitions (task_id, version, schedule, timezone, valid_from)
        VALUES (NEW.id, NEW.version, NEW.schedule, NEW.timezone, now());
        IF NOT NEW.enabled THEN
            INSERT INTO task_events (task_id, kind, actor, reason, version)
            VALUES (NEW.id, 'paused', sundial_actor('sql'), 'created paused', NEW.version);
        END IF;
        RETURN NULL;
    END IF;

    IF (NEW.schedule, NEW.timezone) IS DISTINCT FROM (OLD.schedule, OLD.timezone) THEN
        UPDATE task_definitions SET valid_to = now()
        WHERE task_id = NEW.id AND valid_to IS NULL;
        INSERT INTO task_definitions (task_id, version, schedule, timezone, valid_from)
        VALUES (NEW.id, NEW.version, NEW.schedule, NEW.timezone, now());
        INSERT INTO task_events (task_id, kind, actor, reason, version)
        VALUES (NEW.id, 'edited', sundial_actor('sql'),
                left(format('schedule %s (%s) → %s (%s)', OLD.schedule, OLD.timezone,
                            NEW.schedule, NEW.timezone), 2048),
                NEW.version);
    END IF;

    IF NEW.enabled IS DISTINCT FROM OLD.enabled THEN
        IF NEW.enabled THEN
            INSERT INTO task_events (task_id, kind, actor, version)
            VALUES (NEW.id, 'resumed', sundial_actor('sql'), NEW.version);
        ELSIF NEW.schedule_error IS NOT NULL THEN
            INSERT INTO task_events (task_id, kind, actor, reason, version)
            VALUES (NEW.id, 'disabled', sundial_actor('scanner'),
                    left('invalid schedule: ' || NEW.schedule_error, 2048), NEW.version);
        ELSIF NEW.next_run_at IS NULL AND OLD.next_run_at IS NOT NULL THEN
            INSERT INTO task_events (task_id, kind, actor, reason, version)
            VALUES (NEW.id, 'disabled', sundial_actor('sundial'),
                    'the schedule has no further occurrence', NEW.version);
        ELSE
            INSERT INTO task_events (task_id, kind, actor, reason, version)
            VALUES (NEW.id, 'paused', left(coalesce(NEW.paused_by, sundial_actor('sql')), 200),
                    coalesce(NEW.paused_reason,
                             nullif(left(current_setting('sundial.reason', true), 2048), '')),
                    NEW.version);
        END IF;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- The opening of the breaker a `flow.opened` event was raised for.
ALTER TABLE flow_state ADD COLUMN opened_notified_at TIMESTAMPTZ;

-- The outbox: one row per event, delivered (POST to the global and the
-- task's URL, publish to the SNS topic) after the write that raised it.
CREATE TABLE notifications (
    id               BIGSERIAL   PRIMARY KEY,
    kind             TEXT        NOT NULL,
    -- The task the event is about (kept in the payload when it is deleted).
    task_id          BIGINT      REFERENCES tasks (id) ON DELETE SET NULL,
    -- The task's notify_url when the event was raised.
    notify_url       TEXT,
    -- The event as sent, but for its `id` (added from the row's).
    payload          JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Delivery attempts started; a started one holds the row until
    -- next_attempt_at (its lease), so a crashed deliverer's rows come back.
    attempts         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Destinations that took it (`url`, `task_url`, `sns`): a retry skips them.
    delivered        TEXT[]      NOT NULL DEFAULT '{}',
    delivered_at     TIMESTAMPTZ,
    -- Given up after the last attempt (logged and counted).
    failed_at        TIMESTAMPTZ,
    last_error       TEXT,

    CONSTRAINT notifications_kind_known CHECK (kind IN ('task.failing', 'task.recovered', 'task.paused', 'task.missed', 'flow.opened')),
    CONSTRAINT notifications_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT notifications_error_length CHECK (last_error IS NULL OR length(last_error) <= 2048)
);

-- The deliverers' claim: `WHERE pending AND next_attempt_at <= now() ORDER BY next_attempt_at`.
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
-- Retention by age.
CREATE INDEX notifications_created_idx ON notifications (created_at);
