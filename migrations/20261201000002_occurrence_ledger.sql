-- The occurrence ledger: enough history of each task to say, for any
-- occurrence its schedule defined, what became of it. `task_definitions`
-- keeps every timing a task has had (so occurrences are enumerated as of
-- the definition in force then); `task_events` keeps who paused, resumed,
-- disabled or re-timed it, and when. Both are written by trigger, so plain
-- SQL edits are recorded as well as the admin API's.
--
-- Writers name themselves with `SET LOCAL sundial.actor = '...'` (the
-- admin API says `admin API`); anything else is recorded as `sql`.

CREATE TABLE task_definitions (
    id          BIGSERIAL   PRIMARY KEY,
    task_id     BIGINT      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- The task's version when this timing came into force.
    version     BIGINT      NOT NULL,
    schedule    TEXT        NOT NULL,
    timezone    TEXT        NOT NULL,
    valid_from  TIMESTAMPTZ NOT NULL,
    -- NULL: still in force.
    valid_to    TIMESTAMPTZ,

    CONSTRAINT task_definitions_valid_range CHECK (valid_to IS NULL OR valid_to >= valid_from)
);

-- The ledger reads a task's definitions in order of validity.
CREATE INDEX task_definitions_task_idx ON task_definitions (task_id, valid_from);

-- At most one definition of a task is in force.
CREATE UNIQUE INDEX task_definitions_current_idx ON task_definitions (task_id) WHERE valid_to IS NULL;

CREATE TABLE task_events (
    id       BIGSERIAL   PRIMARY KEY,
    task_id  BIGINT      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- paused / resumed: `enabled` flipped by someone; disabled: Sundial
    -- turned the task off (invalid schedule, one-shot done); edited: the
    -- schedule or time zone changed.
    kind     TEXT        NOT NULL,
    actor    TEXT        NOT NULL,
    reason   TEXT,
    -- The task's version after the change.
    version  BIGINT      NOT NULL,

    CONSTRAINT task_events_kind_known CHECK (kind IN ('paused', 'resumed', 'disabled', 'edited')),
    CONSTRAINT task_events_actor_length CHECK (length(actor) BETWEEN 1 AND 200),
    CONSTRAINT task_events_reason_length CHECK (reason IS NULL OR length(reason) <= 2048)
);

-- The ledger reads a task's events in order.
CREATE INDEX task_events_task_idx ON task_events (task_id, at);

-- Who is writing: the `sundial.actor` setting of the transaction, else `sql`.
CREATE FUNCTION sundial_actor(fallback TEXT) RETURNS TEXT AS $$
    SELECT left(coalesce(nullif(current_setting('sundial.actor', true), ''), fallback), 200)
$$ LANGUAGE sql STABLE;

CREATE FUNCTION tasks_record_history() RETURNS trigger AS $$
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

    -- Was the timing changed? Close the old definition, open the new one.
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
        -- Did Sundial turn it off, rather than someone pausing it?
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
            VALUES (NEW.id, 'paused', sundial_actor('sql'),
                    nullif(left(current_setting('sundial.reason', true), 2048), ''), NEW.version);
        END IF;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_record_created
    AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_record_history();

-- Only changes the ledger cares about call the function: claims and
-- write-backs update tasks all the time and must stay cheap.
CREATE TRIGGER tasks_record_changes
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN ((NEW.schedule, NEW.timezone, NEW.enabled) IS DISTINCT FROM (OLD.schedule, OLD.timezone, OLD.enabled))
    EXECUTE FUNCTION tasks_record_history();

-- Tasks that exist already: their current definition, in force since they
-- were created (what they had before is not known), and their pause.
INSERT INTO task_definitions (task_id, version, schedule, timezone, valid_from)
SELECT id, version, schedule, timezone, created_at FROM tasks;

INSERT INTO task_events (task_id, at, kind, actor, reason, version)
SELECT id, updated_at, CASE WHEN schedule_error IS NULL THEN 'paused' ELSE 'disabled' END,
       'sql', CASE WHEN schedule_error IS NULL THEN 'paused before the ledger existed'
                   ELSE left('invalid schedule: ' || schedule_error, 2048) END,
       version
FROM tasks WHERE NOT enabled;
