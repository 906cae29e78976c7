-- Sundial schema: one row per schedule (`tasks`) and one row per fired
-- occurrence (`task_runs`).

CREATE TABLE tasks (
    id                     BIGSERIAL PRIMARY KEY,
    name                   TEXT        NOT NULL,
    -- Schedule text as the user wrote it: cron, cron(...), rate(...), at(...), @daily.
    schedule               TEXT        NOT NULL,
    -- IANA zone in which cron and at() expressions are read.
    timezone               TEXT        NOT NULL DEFAULT 'UTC',
    method                 TEXT        NOT NULL DEFAULT 'POST',
    url                    TEXT        NOT NULL,
    -- Extra request headers as a JSON object of string values.
    headers                JSONB       NOT NULL DEFAULT '{}'::jsonb,
    body                   TEXT,
    timeout_ms             INTEGER     NOT NULL DEFAULT 30000,
    -- Total attempts per occurrence, the first one included.
    max_attempts           INTEGER     NOT NULL DEFAULT 3,
    -- First retry delay; later ones double, with full jitter.
    retry_backoff_ms       INTEGER     NOT NULL DEFAULT 2000,
    -- What to do with occurrences missed while nothing ran: fire the latest
    -- once (skip), fire each one no older than catch_up_max_age_secs (all),
    -- or fire none of them (none).
    catch_up               TEXT        NOT NULL DEFAULT 'skip',
    catch_up_max_age_secs  INTEGER     NOT NULL DEFAULT 3600,
    -- forbid: the next occurrence waits for the previous run to finish;
    -- allow: each occurrence is dispatched on time, runs may overlap.
    overlap                TEXT        NOT NULL DEFAULT 'forbid',
    -- Occurrences may fire up to this many seconds late, spread at random,
    -- so that thousands of `0 * * * *` jobs do not hit one target at once.
    jitter_secs            INTEGER     NOT NULL DEFAULT 0,
    enabled                BOOLEAN     NOT NULL DEFAULT true,
    -- The occurrence to dispatch next; NULL means "not computed yet" (rows
    -- inserted with plain SQL) and the scanner fills it in.
    next_run_at            TIMESTAMPTZ,
    -- While lease_until is in the future, some scanner or processor owns
    -- the occurrence at next_run_at and nobody else dispatches it.
    lease_until            TIMESTAMPTZ,
    lease_owner            TEXT,
    -- Bumped by trigger on every change of the definition; dispatch
    -- messages carry it so that a processor drops work for an edited task.
    version                BIGINT      NOT NULL DEFAULT 1,
    -- Why the schedule could not be evaluated (the row is then disabled).
    schedule_error         TEXT,
    last_run_at            TIMESTAMPTZ,
    last_status            TEXT,
    last_error             TEXT,
    consecutive_failures   INTEGER     NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT tasks_name_unique UNIQUE (name),
    CONSTRAINT tasks_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT tasks_schedule_length CHECK (length(schedule) BETWEEN 1 AND 200),
    CONSTRAINT tasks_method_known CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS')),
    CONSTRAINT tasks_url_http CHECK (url ~* '^https?://' AND length(url) <= 2048),
    CONSTRAINT tasks_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    CONSTRAINT tasks_body_size CHECK (body IS NULL OR octet_length(body) <= 65536),
    CONSTRAINT tasks_timeout_range CHECK (timeout_ms BETWEEN 100 AND 900000),
    CONSTRAINT tasks_attempts_range CHECK (max_attempts BETWEEN 1 AND 20),
    CONSTRAINT tasks_backoff_range CHECK (retry_backoff_ms BETWEEN 100 AND 3600000),
    CONSTRAINT tasks_catch_up_known CHECK (catch_up IN ('skip', 'all', 'none')),
    CONSTRAINT tasks_catch_up_age_range CHECK (catch_up_max_age_secs BETWEEN 0 AND 604800),
    CONSTRAINT tasks_overlap_known CHECK (overlap IN ('allow', 'forbid')),
    CONSTRAINT tasks_jitter_range CHECK (jitter_secs BETWEEN 0 AND 900)
);

-- The claim query: `WHERE enabled AND next_run_at <= $horizon ORDER BY next_run_at`.
CREATE INDEX tasks_due_idx ON tasks (next_run_at) WHERE enabled;

-- Rows that still need their first occurrence computed (SQL registration).
CREATE INDEX tasks_unscheduled_idx ON tasks (id) WHERE enabled AND next_run_at IS NULL;

-- A change to what a task is (not to its bookkeeping) bumps the version and,
-- for schedule changes, asks the scanner to recompute the next run. This
-- makes plain SQL edits as safe as edits through the API.
CREATE FUNCTION tasks_track_changes() RETURNS trigger AS $$
BEGIN
    IF (NEW.name, NEW.schedule, NEW.timezone, NEW.method, NEW.url, NEW.headers,
        NEW.body, NEW.timeout_ms, NEW.max_attempts, NEW.retry_backoff_ms,
        NEW.catch_up, NEW.catch_up_max_age_secs, NEW.overlap, NEW.jitter_secs,
        NEW.enabled)
       IS DISTINCT FROM
       (OLD.name, OLD.schedule, OLD.timezone, OLD.method, OLD.url, OLD.headers,
        OLD.body, OLD.timeout_ms, OLD.max_attempts, OLD.retry_backoff_ms,
        OLD.catch_up, OLD.catch_up_max_age_secs, OLD.overlap, OLD.jitter_secs,
        OLD.enabled)
    THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
        -- Was the timing changed? Then the old next run no longer holds,
        -- unless the writer computed the new one itself (the API does, and
        -- says so with `SET LOCAL sundial.next_run_computed = 'on'`).
        IF (NEW.schedule, NEW.timezone) IS DISTINCT FROM (OLD.schedule, OLD.timezone)
           AND NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
           AND coalesce(current_setting('sundial.next_run_computed', true), '') <> 'on' THEN
            NEW.next_run_at := NULL;
            NEW.schedule_error := NULL;
        END IF;
        -- A re-enabled task starts afresh: an old lease or error must not block it.
        IF NEW.enabled AND NOT OLD.enabled THEN
            NEW.lease_until := NULL;
            NEW.lease_owner := NULL;
            IF NEW.schedule_error IS NOT NULL AND NEW.schedule_error IS NOT DISTINCT FROM OLD.schedule_error THEN
                NEW.schedule_error := NULL;
                NEW.next_run_at := NULL;
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_track_changes
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_track_changes();

CREATE TABLE task_runs (
    id             BIGSERIAL   PRIMARY KEY,
    task_id        BIGINT      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- The occurrence this run belongs to; with task_id the idempotency key.
    scheduled_for  TIMESTAMPTZ NOT NULL,
    -- Attempts made, the successful or last one included.
    attempts       INTEGER     NOT NULL DEFAULT 1,
    fired_at       TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    status         TEXT        NOT NULL,
    http_status    INTEGER,
    latency_ms     INTEGER,
    error          TEXT,
    -- Was this occurrence fired by hand (POST /trigger) rather than by the schedule?
    manual         BOOLEAN     NOT NULL DEFAULT false,

    CONSTRAINT task_runs_occurrence_unique UNIQUE (task_id, scheduled_for),
    CONSTRAINT task_runs_status_known CHECK (status IN ('succeeded', 'failed', 'timed_out', 'skipped')),
    CONSTRAINT task_runs_attempts_positive CHECK (attempts > 0),
    CONSTRAINT task_runs_error_size CHECK (error IS NULL OR length(error) <= 2048)
);

-- Run history per task, newest first, and retention by age.
CREATE INDEX task_runs_task_recent_idx ON task_runs (task_id, scheduled_for DESC);
CREATE INDEX task_runs_finished_idx ON task_runs (finished_at);

-- One line per task for operators who live in psql.
CREATE VIEW task_status AS
SELECT t.id,
       t.name,
       t.schedule,
       t.timezone,
       t.enabled,
       t.next_run_at,
       t.lease_until IS NOT NULL AND t.lease_until > now() AS in_flight,
       t.last_run_at,
       t.last_status,
       t.consecutive_failures,
       t.schedule_error,
       GREATEST(EXTRACT(EPOCH FROM now() - t.next_run_at), 0)::bigint AS overdue_secs
FROM tasks t;
