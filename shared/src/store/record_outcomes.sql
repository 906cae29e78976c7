-- The processor's write-back of one flush (see `outcomes::record_outcomes`):
-- runs, schedule advances, retry leases, releases, chained occurrences,
-- failure counts, auto-pauses and the notification events they raise, in
-- one statement.
WITH input AS (
    SELECT * FROM UNNEST(
        $1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::int[],
        $7::timestamptz[], $8::timestamptz[], $9::int[], $10::int[], $11::text[],
        $12::timestamptz[], $13::timestamptz[], $14::text[], $15::timestamptz[], $16::int[],
        $17::text[], $18::bigint[], $19::bigint[]
    ) AS i(task_id, version, occurrence, kind, status, attempts, fired_at, finished_at,
           http_status, latency_ms, error, next_run_at, lease_until, response_excerpt,
           chain_lease, pacing_ms, trigger, backfill_id, rerun)
),
runs AS (
    INSERT INTO task_runs (task_id, scheduled_for, attempts, fired_at, finished_at, status,
                           http_status, latency_ms, error, manual, response_excerpt, pacing_ms,
                           trigger, backfill_id, rerun)
    -- `manual` kinds are every firing outside the schedule: by hand, or
    -- by a backfill (which names itself in backfill_id).
    SELECT i.task_id, i.occurrence, i.attempts, i.fired_at, i.finished_at, i.status,
           i.http_status, i.latency_ms, i.error, i.kind = 'manual' AND i.backfill_id IS NULL,
           i.response_excerpt, i.pacing_ms, coalesce(i.trigger, 'schedule'), i.backfill_id,
           i.rerun
    FROM input i
    WHERE i.kind IN ('finished', 'manual')
      -- The task may have been deleted while its occurrence was in flight.
      AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = i.task_id)
    ON CONFLICT (task_id, scheduled_for, rerun) DO NOTHING
    RETURNING task_id, scheduled_for, rerun
),
advanced AS (
    -- Does the task still wait on exactly this occurrence of this version?
    -- The test sits in WHERE so that a concurrent duplicate re-checks it
    -- against the row it waited for.
    UPDATE tasks t SET
        next_run_at = i.next_run_at,
        -- A failure that reaches `pause_after_failures` pauses the task.
        enabled     = t.enabled AND i.next_run_at IS NOT NULL
                      AND NOT sundial_auto_pauses(t.enabled, t.pause_after_failures,
                                                  t.consecutive_failures, v.failed),
        -- Chaining: the next occurrence is leased in this very statement.
        lease_until = CASE WHEN sundial_auto_pauses(t.enabled AND i.next_run_at IS NOT NULL,
                               t.pause_after_failures, t.consecutive_failures, v.failed)
                           THEN NULL ELSE i.chain_lease END,
        lease_owner = CASE WHEN i.chain_lease IS NULL THEN NULL ELSE 'sundial-processor' END,
        last_run_at = CASE WHEN r.task_id IS NOT NULL THEN i.finished_at ELSE t.last_run_at END,
        last_status = CASE WHEN r.task_id IS NOT NULL THEN i.status ELSE t.last_status END,
        last_error  = CASE WHEN r.task_id IS NOT NULL THEN i.error ELSE t.last_error END,
        consecutive_failures = CASE
            WHEN v.succeeded THEN 0
            WHEN v.failed THEN t.consecutive_failures + 1
            ELSE t.consecutive_failures END,
        failing_since = CASE
            WHEN v.failed THEN coalesce(t.failing_since, i.finished_at)
            WHEN v.succeeded THEN NULL
            ELSE t.failing_since END,
        recovered_at = CASE WHEN v.succeeded AND t.failing_since IS NOT NULL
                            THEN i.finished_at ELSE t.recovered_at END,
        paused_at = CASE WHEN sundial_auto_pauses(t.enabled AND i.next_run_at IS NOT NULL,
                              t.pause_after_failures, t.consecutive_failures, v.failed)
                         THEN i.finished_at ELSE t.paused_at END,
        paused_by = CASE WHEN sundial_auto_pauses(t.enabled AND i.next_run_at IS NOT NULL,
                              t.pause_after_failures, t.consecutive_failures, v.failed)
                         THEN 'sundial' ELSE t.paused_by END,
        paused_reason = CASE WHEN sundial_auto_pauses(t.enabled AND i.next_run_at IS NOT NULL,
                                  t.pause_after_failures, t.consecutive_failures, v.failed)
                             THEN sundial_auto_pause_reason(t.consecutive_failures + 1,
                                                            i.http_status, i.error)
                             ELSE t.paused_reason END
    FROM input i
    LEFT JOIN runs r ON r.task_id = i.task_id AND r.scheduled_for = i.occurrence
                    AND r.rerun = i.rerun
    -- Did this write record a failed (after its last attempt) or a
    -- successful occurrence? Skips and duplicates count for nothing.
    CROSS JOIN LATERAL (SELECT r.task_id IS NOT NULL AND i.status IN ('failed', 'timed_out') AS failed,
                               r.task_id IS NOT NULL AND i.status = 'succeeded' AS succeeded) v
    WHERE t.id = i.task_id AND i.kind IN ('finished', 'recorded')
      AND t.next_run_at = i.occurrence AND t.version = i.version
    RETURNING t.id, i.chain_lease IS NOT NULL AND t.enabled AS chained,
              t.name, t.url, t.notify_url, t.consecutive_failures, t.failing_since,
              t.recovered_at, t.paused_at, t.paused_by, t.paused_reason,
              i.occurrence, i.status, i.attempts, i.http_status, i.error, i.finished_at
),
noted AS (
    -- Runs recorded for occurrences the task no longer waits on (manual
    -- firings, overlap = allow) still update the last outcome.
    UPDATE tasks t SET
        enabled = t.enabled AND NOT sundial_auto_pauses(t.enabled, t.pause_after_failures,
                                                        t.consecutive_failures, v.failed),
        last_run_at = i.finished_at,
        last_status = i.status,
        last_error  = i.error,
        consecutive_failures = CASE
            WHEN v.succeeded THEN 0
            WHEN v.failed THEN t.consecutive_failures + 1
            ELSE t.consecutive_failures END,
        failing_since = CASE
            WHEN v.failed THEN coalesce(t.failing_since, i.finished_at)
            WHEN v.succeeded THEN NULL
            ELSE t.failing_since END,
        recovered_at = CASE WHEN v.succeeded AND t.failing_since IS NOT NULL
                            THEN i.finished_at ELSE t.recovered_at END,
        paused_at = CASE WHEN sundial_auto_pauses(t.enabled, t.pause_after_failures,
                                                  t.consecutive_failures, v.failed)
                         THEN i.finished_at ELSE t.paused_at END,
        paused_by = CASE WHEN sundial_auto_pauses(t.enabled, t.pause_after_failures,
                                                  t.consecutive_failures, v.failed)
                         THEN 'sundial' ELSE t.paused_by END,
        paused_reason = CASE WHEN sundial_auto_pauses(t.enabled, t.pause_after_failures,
                                                      t.consecutive_failures, v.failed)
                             THEN sundial_auto_pause_reason(t.consecutive_failures + 1,
                                                            i.http_status, i.error)
                             ELSE t.paused_reason END
    FROM input i
    JOIN runs r ON r.task_id = i.task_id AND r.scheduled_for = i.occurrence
              AND r.rerun = i.rerun
    CROSS JOIN LATERAL (SELECT i.status IN ('failed', 'timed_out') AS failed,
                               i.status = 'succeeded' AS succeeded) v
    WHERE t.id = i.task_id
      AND (i.kind IN ('finished', 'recorded') AND t.next_run_at = i.occurrence
           AND t.version = i.version) IS NOT TRUE
    RETURNING t.id, t.name, t.url, t.notify_url, t.consecutive_failures, t.failing_since,
              t.recovered_at, t.paused_at, t.paused_by, t.paused_reason,
              i.occurrence, i.status, i.attempts, i.http_status, i.error, i.finished_at
),
leased AS (
    UPDATE tasks t SET
        lease_until = i.lease_until,
        lease_owner = CASE WHEN i.lease_until IS NULL THEN NULL ELSE t.lease_owner END
    FROM input i
    WHERE i.kind IN ('retrying', 'released')
      AND t.id = i.task_id AND t.next_run_at = i.occurrence
      AND (i.kind = 'released' OR t.version = i.version)
    RETURNING t.id
),
changed AS (
    SELECT id, name, url, notify_url, consecutive_failures, failing_since, recovered_at,
           paused_at, paused_by, paused_reason, occurrence, status, attempts, http_status,
           error, finished_at
    FROM advanced
    UNION ALL
    SELECT id, name, url, notify_url, consecutive_failures, failing_since, recovered_at,
           paused_at, paused_by, paused_reason, occurrence, status, attempts, http_status,
           error, finished_at
    FROM noted
),
-- Which transitions did this very run make? Each is stamped with the
-- run's finish, so one that happened earlier does not match again: one
-- `task.failing` and one `task.recovered` per incident.
raised AS (
    SELECT c.*, e.kind
    FROM changed c
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN c.status IN ('failed', 'timed_out') AND c.failing_since = c.finished_at
              THEN 'task.failing' END),
        (CASE WHEN c.status = 'succeeded' AND c.recovered_at = c.finished_at
              THEN 'task.recovered' END),
        (CASE WHEN c.status IN ('failed', 'timed_out') AND c.paused_by = 'sundial'
                   AND c.paused_at = c.finished_at
              THEN 'task.paused' END)
    ) AS e(kind)
    WHERE e.kind IS NOT NULL
),
notified AS (
    INSERT INTO notifications (kind, task_id, notify_url, payload)
    SELECT r.kind, r.id, r.notify_url, jsonb_build_object(
        'type', r.kind,
        'created_at', now(),
        'task', jsonb_build_object('id', r.id, 'name', r.name, 'url', r.url),
        'occurrence', r.occurrence,
        'run', jsonb_build_object('status', r.status, 'attempts', r.attempts,
                                  'http_status', r.http_status, 'error', r.error,
                                  'finished_at', r.finished_at),
        'consecutive_failures', r.consecutive_failures,
        'failing_since', r.failing_since,
        'pause', CASE WHEN r.kind = 'task.paused' THEN jsonb_build_object(
            'by', r.paused_by, 'reason', r.paused_reason, 'at', r.paused_at, 'until', NULL) END)
    FROM raised r
    RETURNING id
)
SELECT (SELECT count(*) FROM runs) AS runs_inserted,
       (SELECT count(*) FROM advanced) AS advanced,
       (SELECT count(*) FROM leased) AS leases_changed,
       ARRAY(SELECT id FROM advanced WHERE chained) AS chained,
       ARRAY(SELECT id FROM notified ORDER BY id) AS notifications
