//! Backfills (see [`crate::backfill`]): the row of each request, its lease
//! and cursor, and its progress as counted from the runs it recorded.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::Result;

/// Which occurrences of the range a backfill fires.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum BackfillMode {
    /// Only occurrences without a recorded run (exact, and safe to repeat).
    #[default]
    Missing,
    /// Every occurrence: recorded ones once more, as re-runs of the backfill.
    All,
}

/// A backfill row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BackfillRow {
    pub id: i64,
    pub task_id: i64,
    pub range_from: DateTime<Utc>,
    pub range_to: DateTime<Utc>,
    pub mode: BackfillMode,
    pub schedule: String,
    pub timezone: String,
    pub requested: i32,
    pub dispatched: i32,
    pub skipped_existing: i32,
    pub cursor: Option<DateTime<Utc>>,
    pub state: String,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
}

/// What a new backfill is.
#[derive(Debug, Clone)]
pub struct NewBackfill<'a> {
    pub task_id: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub mode: BackfillMode,
    pub schedule: &'a str,
    pub timezone: &'a str,
    pub requested: i32,
    pub actor: &'a str,
}

/// The columns of a [`BackfillRow`].
macro_rules! columns {
    () => {
        "id, task_id, range_from, range_to, mode, schedule, timezone, requested, dispatched, \
         skipped_existing, cursor, state, lease_until, last_error, actor, created_at, \
         dispatched_at"
    };
}

/// Inserts a backfill, leased to its creator until `lease_until` (the API
/// dispatches its first chunks at once). A range with no occurrence is
/// dispatched from the start.
pub async fn create_backfill(
    db: impl PgExecutor<'_>,
    new: &NewBackfill<'_>,
    lease_until: DateTime<Utc>,
) -> Result<BackfillRow> {
    Ok(sqlx::query_as::<_, BackfillRow>(concat!(
        "INSERT INTO backfills (task_id, range_from, range_to, mode, schedule, timezone, \
             requested, actor, lease_until, state, dispatched_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             CASE WHEN $7 = 0 THEN 'dispatched' ELSE 'dispatching' END, \
             CASE WHEN $7 = 0 THEN now() END) \
         RETURNING ",
        columns!()
    ))
    .bind(new.task_id)
    .bind(new.from)
    .bind(new.to)
    .bind(new.mode)
    .bind(new.schedule)
    .bind(new.timezone)
    .bind(new.requested)
    .bind(new.actor)
    .bind(lease_until)
    .fetch_one(db)
    .await?)
}

/// Takes the lease of an unfinished backfill whose lease is free (or
/// expired), until `until`: whoever holds it dispatches. `None` when it is
/// finished or someone else holds it.
pub async fn lease_backfill(
    db: impl PgExecutor<'_>,
    id: i64,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<BackfillRow>> {
    Ok(sqlx::query_as::<_, BackfillRow>(concat!(
        "UPDATE backfills SET lease_until = $3, updated_at = now() \
         WHERE id = $1 AND state = 'dispatching' \
           -- Is nobody dispatching it, or has their lease expired?
           AND (lease_until IS NULL OR lease_until < $2) \
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(now)
    .bind(until)
    .fetch_optional(db)
    .await?)
}

/// Unfinished backfills nobody is dispatching (the scanner's round).
pub async fn backfills_to_continue(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM backfills \
         WHERE state = 'dispatching' AND (lease_until IS NULL OR lease_until < $1) \
         ORDER BY id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// What one dispatched chunk moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The last occurrence dispatched or skipped.
    pub cursor: DateTime<Utc>,
    pub dispatched: i32,
    pub skipped_existing: i32,
    /// The range is done.
    pub finished: bool,
    /// Keep the lease until then (`None`: release it).
    pub lease_until: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Moves the cursor past a chunk that is on the queue, guarded by the
/// lease (`held` is the lease this dispatcher took): a dispatcher whose
/// lease expired and was taken over writes nothing. Returns whether it
/// still held the lease.
pub async fn record_progress(
    db: impl PgExecutor<'_>,
    id: i64,
    held: DateTime<Utc>,
    progress: &Progress,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE backfills SET cursor = $3, dispatched = dispatched + $4, \
             skipped_existing = skipped_existing + $5, \
             state = CASE WHEN $6 THEN 'dispatched' ELSE state END, \
             dispatched_at = CASE WHEN $6 THEN now() ELSE dispatched_at END, \
             lease_until = $7, last_error = $8, updated_at = now() \
         WHERE id = $1 AND lease_until = $2",
    )
    .bind(id)
    .bind(held)
    .bind(progress.cursor)
    .bind(progress.dispatched)
    .bind(progress.skipped_existing)
    .bind(progress.finished)
    .bind(progress.lease_until)
    .bind(
        progress
            .error
            .as_deref()
            .map(|e| crate::sanitise::clean_text(e, 2000)),
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a round without moving the cursor: drops the lease (if still
/// held) and notes why it stopped.
pub async fn pause_backfill(
    db: impl PgExecutor<'_>,
    id: i64,
    held: DateTime<Utc>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE backfills SET lease_until = NULL, last_error = $3, updated_at = now() \
         WHERE id = $1 AND lease_until = $2",
    )
    .bind(id)
    .bind(held)
    .bind(error.map(|e| crate::sanitise::clean_text(e, 2000)))
    .execute(db)
    .await?;
    Ok(())
}

/// Of `occurrences`, those with a recorded run of their own (rerun = 0).
pub async fn occurrences_with_runs(
    db: impl PgExecutor<'_>,
    task_id: i64,
    occurrences: &[DateTime<Utc>],
) -> Result<Vec<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT scheduled_for FROM task_runs \
         WHERE task_id = $1 AND scheduled_for = ANY($2) AND rerun = 0",
    )
    .bind(task_id)
    .bind(occurrences)
    .fetch_all(db)
    .await?)
}

/// The task as a backfill chunk needs it, now.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BackfillTask {
    pub version: i64,
    pub enabled: bool,
    pub flow: String,
    /// The active window and exclusion in force now: a backfill fires only
    /// the occurrences the task defines.
    #[sqlx(flatten)]
    pub window: crate::window::TaskWindow,
}

/// The task's version, state and flow; `None` once it is deleted.
pub async fn backfill_task(db: impl PgExecutor<'_>, task_id: i64) -> Result<Option<BackfillTask>> {
    Ok(sqlx::query_as(
        "SELECT version, enabled, flow, start_at, end_at, exclude FROM tasks WHERE id = $1",
    )
    .bind(task_id)
    .fetch_optional(db)
    .await?)
}

/// How far ahead the flow's pacing is booked (its next free slot), if it
/// is rate-limited and has paced anything.
pub async fn flow_booked_until(
    db: impl PgExecutor<'_>,
    flow: &str,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "SELECT next_slot FROM flow_state WHERE key = $1",
    )
    .bind(flow)
    .fetch_optional(db)
    .await?
    .flatten())
}

/// A backfill and what became of what it sent.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BackfillProgress {
    pub id: i64,
    pub task_id: i64,
    /// The range, `[from, to)`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub mode: BackfillMode,
    /// `dispatching` (the cursor has not reached `to`), `dispatched` (every
    /// occurrence is on the queue or skipped), `done` (and every dispatched
    /// one is recorded).
    pub state: String,
    /// Occurrences of the schedule in the range.
    pub requested: i32,
    /// Sent to the queue.
    pub dispatched: i32,
    /// Passed over: a run was recorded already (mode `missing`).
    pub skipped_existing: i32,
    /// Runs recorded so far, whatever their outcome.
    pub recorded: i64,
    /// Of them, those that made a request.
    pub fired: i64,
    pub succeeded: i64,
    /// Failed or timed out after their last attempt.
    pub failed: i64,
    /// The last occurrence dispatched or skipped.
    pub cursor: Option<DateTime<Utc>>,
    /// Why dispatch last stopped early (queue refused, task paused).
    pub last_error: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
}

/// A backfill's progress; `None` if there is no such backfill.
pub async fn backfill_progress(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<BackfillProgress>> {
    Ok(sqlx::query_as::<_, BackfillProgress>(
        "SELECT b.id, b.task_id, b.range_from AS \"from\", b.range_to AS \"to\", b.mode, \
                CASE WHEN b.state = 'dispatched' AND r.recorded >= b.dispatched THEN 'done' \
                     ELSE b.state END AS state, \
                b.requested, b.dispatched, b.skipped_existing, r.recorded, r.fired, \
                r.succeeded, r.failed, b.cursor, b.last_error, b.actor, b.created_at, \
                b.dispatched_at \
         FROM backfills b \
         CROSS JOIN LATERAL ( \
             SELECT count(*) AS recorded, \
                    count(*) FILTER (WHERE fired_at IS NOT NULL) AS fired, \
                    count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                    count(*) FILTER (WHERE status IN ('failed', 'timed_out')) AS failed \
             FROM task_runs WHERE backfill_id = b.id) r \
         WHERE b.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// `now + d`, for leases, to the microsecond (as Postgres keeps it, so
/// the guards of [`record_progress`] compare equal).
pub fn lease_from(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    let at = now + Duration::from_std(d).unwrap_or_else(|_| Duration::seconds(30));
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}
