-- The ledger reads each occurrence against the active window and the
-- exclusion in force at the time, as it does for the schedule: a later
-- edit of `start_at`, `end_at` or `exclude` must not change what past
-- occurrences say ("skipped (excluded)", "after the task's active window").
-- So the definitions the ledger enumerates (migration 000002) keep them too.
ALTER TABLE task_definitions
    ADD COLUMN start_at TIMESTAMPTZ,
    ADD COLUMN end_at   TIMESTAMPTZ,
    ADD COLUMN exclude  TEXT;

-- What is in force now is what each current definition had.
UPDATE task_definitions d
SET start_at = t.start_at, end_at = t.end_at, exclude = t.exclude
FROM tasks t
WHERE d.task_id = t.id AND d.valid_to IS NULL;

-- Fires after `tasks_record_created` / `tasks_record_changes` (triggers of
-- one event fire in name order), which open a new definition when the
-- schedule or zone changes: that one gets the window as it is. A change of
-- the window or exclusion alone closes the current definition and opens
-- one with the same timing, so earlier occurrences keep the old bounds.
CREATE FUNCTION tasks_record_definition_window() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR (NEW.schedule, NEW.timezone) IS DISTINCT FROM (OLD.schedule, OLD.timezone) THEN
        UPDATE task_definitions
        SET start_at = NEW.start_at, end_at = NEW.end_at, exclude = NEW.exclude
        WHERE task_id = NEW.id AND valid_to IS NULL;
    ELSE
        UPDATE task_definitions SET valid_to = now()
        WHERE task_id = NEW.id AND valid_to IS NULL;
        INSERT INTO task_definitions
            (task_id, version, schedule, timezone, valid_from, start_at, end_at, exclude)
        VALUES (NEW.id, NEW.version, NEW.schedule, NEW.timezone, now(),
                NEW.start_at, NEW.end_at, NEW.exclude);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_record_definition_window
    AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_record_definition_window();

CREATE TRIGGER tasks_record_definition_window_changes
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN ((NEW.schedule, NEW.timezone, NEW.start_at, NEW.end_at, NEW.exclude)
          IS DISTINCT FROM (OLD.schedule, OLD.timezone, OLD.start_at, OLD.end_at, OLD.exclude))
    EXECUTE FUNCTION tasks_record_definition_window();
