-- Schedule semantics: an active window, exclusions, and overlap `skip`.
--
-- `start_at` / `end_at` bound a task's occurrences: none before `start_at`,
-- none at or after `end_at`; once no occurrence is left, Sundial disables
-- the task and its ledger says why. `exclude` is a second schedule
-- expression (the same grammar as `schedule`, read in the task's zone);
-- occurrences it matches are skipped. All three are NULL by default, so
-- `INSERT INTO tasks (name, schedule, url)` still registers a task.

ALTER TABLE tasks
    ADD COLUMN start_at TIMESTAMPTZ,
    ADD COLUMN end_at TIMESTAMPTZ,
    ADD COLUMN exclude TEXT,
    ADD CONSTRAINT tasks_window_order CHECK (start_at IS NULL OR end_at IS NULL OR end_at > start_at),
    ADD CONSTRAINT tasks_exclude_length CHECK (exclude IS NULL OR length(exclude) BETWEEN 1 AND 200);

-- skip: an occurrence that comes due while the previous run is in flight
-- is recorded as skipped instead of waiting.
ALTER TABLE tasks DROP CONSTRAINT tasks_overlap_known;
ALTER TABLE tasks ADD CONSTRAINT tasks_overlap_known CHECK (overlap IN ('allow', 'forbid', 'skip'));

-- A change of the window or the exclusion is a change of what the task is:
-- it bumps the version (once per statement, with any other change) and,
-- unless the writer computed the next run itself, asks the scanner to
-- compute it again. A trigger of its own, beside `tasks_track_changes`
-- (which runs first, by name), so that function stays as it is.
CREATE FUNCTION tasks_track_window() RETURNS trigger AS $$
BEGIN
    IF (NEW.start_at, NEW.end_at, NEW.exclude) IS DISTINCT FROM (OLD.start_at, OLD.end_at, OLD.exclude) THEN
        IF NEW.version = OLD.version THEN
            NEW.version := OLD.version + 1;
            NEW.updated_at := now();
        END IF;
        IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
           AND coalesce(current_setting('sundial.next_run_computed', true), '') <> 'on' THEN
            NEW.next_run_at := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_track_window
    BEFORE UPDATE ON tasks
    FOR EACH ROW
    WHEN ((NEW.start_at, NEW.end_at, NEW.exclude) IS DISTINCT FROM (OLD.start_at, OLD.end_at, OLD.exclude))
    EXECUTE FUNCTION tasks_track_window();

-- When Sundial turns a task with an `end_at` off because no occurrence is
-- left, the ledger's event says it was the active window, not merely "the
-- schedule has no further occurrence". The history trigger
-- (`tasks_record_changes`, 20261201000004) wrote the event just before
-- this one runs (triggers of one event run in name order); this names the
-- cause on it. Kept apart from `tasks_record_history` so later migrations
-- may replace that function without losing this.
CREATE FUNCTION tasks_record_window_end() RETURNS trigger AS $$
BEGIN
    UPDATE task_events SET
        kind = 'disabled',
        actor = 'sundial',
        -- Said the same whether the end has passed or only no occurrence
        -- is left before it: either way the window is over for the task.
        reason = format('active window ended at %s',
                        to_char(NEW.end_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"'))
    WHERE id = (SELECT id FROM task_events
                WHERE task_id = NEW.id AND version = NEW.version AND kind IN ('disabled', 'paused')
                ORDER BY id DESC LIMIT 1);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- Sundial's own turning off: no pause recorded on the row, no schedule
-- error, no next run left.
CREATE TRIGGER tasks_record_window_end
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (OLD.enabled AND NOT NEW.enabled AND NEW.end_at IS NOT NULL
          AND NEW.next_run_at IS NULL AND NEW.schedule_error IS NULL AND NEW.paused_by IS NULL)
    EXECUTE FUNCTION tasks_record_window_end();
