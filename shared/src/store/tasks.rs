//! The task rows: create, read, list, edit, pause, delete, and the first
//! occurrence of rows inserted with plain SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::{Result, StoreError};
use crate::schedule::Next;
use crate::task::{InvalidField, Task, TaskSpec, Timing, ValidTask};

/// The columns of [`Task`], as a literal so queries stay `&'static str`.
macro_rules! task_columns {
    () => {
        "id, name, schedule, timezone, method, url, headers, body, timeout_ms, \
     max_attempts, retry_backoff_ms, catch_up, catch_up_max_age_secs, overlap, jitter_secs, \
     enabled, next_run_at, lease_until, version, schedule_error, last_run_at, last_status, \
     last_error, consecutive_failures, created_at, updated_at, flow_key, flow, \
     pause_after_failures, notify_url, paused_at, paused_by, paused_reason, paused_until, \
     failing_since, recovered_at, tags, start_at, end_at, exclude"
    };
}

fn duplicate_name(err: sqlx::Error, name: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("tasks_name_unique") => {
            StoreError::DuplicateName(name.to_string())
        }
        _ => StoreError::Database(err),
    }
}

/// Creates a task from a checked definition; its first occurrence is
/// computed now.
pub async fn create_task(
    db: impl PgExecutor<'_>,
    task: &ValidTask,
    now: DateTime<Utc>,
) -> Result<Task> {
    let spec = task.spec();
    let next = task.first_after(now)?;
    let sql = concat!(
        "INSERT INTO tasks (name, schedule, timezone, method, url, headers, body, timeout_ms, \
         max_attempts, retry_backoff_ms, catch_up, catch_up_max_age_secs, overlap, jitter_secs, \
         enabled, flow_key, next_run_at, pause_after_failures, notify_url, tags, \
         start_at, end_at, exclude) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23) \
         RETURNING ",
        task_columns!(),
        ""
    );
    bind_spec(sqlx::query_as::<_, Task>(sql), spec, Some(next))
        .bind(spec.pause_after_failures)
        .bind(&spec.notify_url)
        .bind(&spec.tags)
        .bind(spec.start_at)
        .bind(spec.end_at)
        .bind(&spec.exclude)
        .fetch_one(db)
        .await
        .map_err(|e| duplicate_name(e, &spec.name))
}

/// Binds a spec's columns as `$1..$16` and the next run as `$17`, in the
/// order of the INSERT and UPDATE statements above.
fn bind_spec<'q>(
    query: sqlx::query::QueryAs<'q, Postgres, Task, sqlx::postgres::PgArguments>,
    spec: &'q TaskSpec,
    next: Option<DateTime<Utc>>,
) -> sqlx::query::QueryAs<'q, Postgres, Task, sqlx::postgres::PgArguments> {
    let headers = serde_json::to_value(&spec.headers).unwrap_or_default();
    query
        .bind(&spec.name)
        .bind(spec.schedule.trim())
        .bind(&spec.timezone)
        .bind(&spec.method)
        .bind(spec.url.trim())
        .bind(sqlx::types::Json(headers))
        .bind(&spec.body)
        .bind(spec.timeout_ms)
        .bind(spec.max_attempts)
        .bind(spec.retry_backoff_ms)
        .bind(spec.catch_up)
        .bind(spec.catch_up_max_age_secs)
        .bind(spec.overlap)
        .bind(spec.jitter_secs)
        .bind(spec.enabled)
        .bind(&spec.flow_key)
        .bind(next)
}

/// One task by id.
pub async fn get_task(db: impl PgExecutor<'_>, id: i64) -> Result<Task> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
    sqlx::query_as::<_, Task>(sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(StoreError::NotFound(id))
}

/// One task by name.
pub async fn get_task_by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Task>> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1");
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(name)
        .fetch_optional(db)
        .await?)
}

/// The tasks of a batch, in one query.
pub async fn load_tasks(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<Task>> {
    let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ANY($1)");
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(ids)
        .fetch_all(db)
        .await?)
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only enabled (true) or paused/disabled (false) tasks.
    pub enabled: Option<bool>,
    /// Only tasks whose last run failed (true) or did not (false).
    pub failing: Option<bool>,
    /// Cursor: tasks with an id greater than this.
    pub after_id: Option<i64>,
    /// Only the task with this name.
    pub name: Option<String>,
    /// Only tasks carrying this tag.
    pub tag: Option<String>,
    /// Page size (clamped to 1..=500).
    pub limit: i64,
}

/// A page of tasks ordered by id, for cursor pagination.
pub async fn list_tasks(db: impl PgExecutor<'_>, filter: &TaskFilter) -> Result<Vec<Task>> {
    select_tasks(db, filter, None).await
}

/// [`list_tasks`] with the name matched by part, case-insensitively (the
/// console's search; `filter.name`, the exact match, is ignored).
pub async fn search_tasks(
    db: impl PgExecutor<'_>,
    filter: &TaskFilter,
    name_part: Option<&str>,
) -> Result<Vec<Task>> {
    let exact = TaskFilter {
        name: None,
        ..filter.clone()
    };
    // LIKE's wildcards in the search are literal characters.
    let pattern = name_part.map(|part| {
        let escaped = part
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    select_tasks(db, &exact, pattern.as_deref()).await
}

/// The statement of both: `filter`, and the name `ILIKE name_like`.
async fn select_tasks(
    db: impl PgExecutor<'_>,
    filter: &TaskFilter,
    name_like: Option<&str>,
) -> Result<Vec<Task>> {
    let sql = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks \
         WHERE ($1::boolean IS NULL OR enabled = $1) \
           AND ($2::boolean IS NULL OR (consecutive_failures > 0) = $2) \
           AND ($3::bigint IS NULL OR id > $3) \
           AND ($5::text IS NULL OR name = $5) \
           AND ($6::text IS NULL OR tags @> ARRAY[$6::text]) \
           AND ($7::text IS NULL OR name ILIKE $7) \
         ORDER BY id LIMIT $4"
    );
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(filter.enabled)
        .bind(filter.failing)
        .bind(filter.after_id)
        .bind(filter.limit.clamp(1, 500))
        .bind(&filter.name)
        .bind(&filter.tag)
        .bind(name_like)
        .fetch_all(db)
        .await?)
}

/// Replaces a task's definition (the version is bumped by trigger). When
/// the timing changed, or the task is being enabled, the next run is
/// computed afresh from `now`.
pub async fn update_task(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    task: &ValidTask,
    now: DateTime<Utc>,
) -> Result<Task> {
    let sql = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1 FOR UPDATE"
    );
    let current = sqlx::query_as::<_, Task>(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let spec = task.spec();
    let retimed = spec.schedule.trim() != current.schedule
        || spec.timezone != current.timezone
        || (spec.enabled && !current.enabled)
        || window_changed(spec, &current);
    let next = if retimed {
        Some(task.first_after(now)?)
    } else {
        current.next_run_at
    };
    // The next run is computed here; the change trigger must keep it even
    // when it happens to equal the old one.
    sqlx::query("SET LOCAL sundial.next_run_computed = 'on'")
        .execute(&mut **tx)
        .await?;
    let sql = concat!(
        "UPDATE tasks SET name = $1, schedule = $2, timezone = $3, method = $4, url = $5, \
         headers = $6, body = $7, timeout_ms = $8, max_attempts = $9, retry_backoff_ms = $10, \
         catch_up = $11, catch_up_max_age_secs = $12, overlap = $13, jitter_secs = $14, \
         enabled = $15, flow_key = $16, next_run_at = $17, \
         schedule_error = CASE WHEN $19 THEN NULL ELSE schedule_error END, \
         lease_until = CASE WHEN $19 THEN NULL ELSE lease_until END, \
         pause_after_failures = $20, notify_url = $21, tags = $22, \
         start_at = $23, end_at = $24, exclude = $25 \
         WHERE id = $18 RETURNING ",
        task_columns!(),
        ""
    );
    bind_spec(sqlx::query_as::<_, Task>(sql), spec, next)
        .bind(id)
        .bind(retimed)
        .bind(spec.pause_after_failures)
        .bind(&spec.notify_url)
        .bind(&spec.tags)
        .bind(spec.start_at)
        .bind(spec.end_at)
        .bind(&spec.exclude)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| duplicate_name(e, &spec.name))
}

/// Did the active window or the exclusion change?
fn window_changed(spec: &TaskSpec, current: &Task) -> bool {
    let w = &current.window;
    (spec.start_at, spec.end_at, &spec.exclude) != (w.start_at, w.end_at, &w.exclude)
}

/// Deletes a task and its history. Returns whether it existed.
pub async fn delete_task(db: impl PgExecutor<'_>, id: i64) -> Result<bool> {
    let done = sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Pauses (false) or resumes (true) a task. A resumed task continues from
/// its next occurrence after `now`, not with what it missed while paused.
pub async fn set_enabled(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<Task> {
    let current = get_task(&mut **tx, id).await?;
    if current.enabled == enabled {
        return Ok(current);
    }
    let mut spec = TaskSpec::of(&current)?;
    spec.enabled = enabled;
    update_task(tx, id, &spec.into_valid()?, now).await
}

/// Result of [`schedule_new`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScheduledNew {
    /// Rows that got their first occurrence.
    pub scheduled: u64,
    /// Rows disabled because their schedule or zone is invalid.
    pub invalid: u64,
    /// Rows disabled because their active window has no occurrence left.
    pub ended: u64,
}

/// id, schedule, timezone, start_at, end_at, exclude of a new row.
type NewRow = (
    i64,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// Computes the first occurrence of rows inserted with plain SQL
/// (`next_run_at IS NULL`). A row whose schedule cannot be evaluated is
/// disabled with the reason in `schedule_error`; it never stops the scan.
pub async fn schedule_new(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<ScheduledNew> {
    let mut tx = pool.begin().await?;
    let rows: Vec<NewRow> = sqlx::query_as(
        "SELECT id, schedule, timezone, start_at, end_at, exclude FROM tasks \
         WHERE enabled AND next_run_at IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(ScheduledNew::default());
    }
    let (first, report) = first_runs(rows, now);
    sqlx::query(
        "UPDATE tasks t SET next_run_at = u.next_run_at, \
             schedule_error = u.error, \
             enabled = u.error IS NULL AND NOT u.ended \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::boolean[]) \
             AS u(id, next_run_at, error, ended) \
         WHERE t.id = u.id",
    )
    .bind(&first.ids)
    .bind(&first.nexts)
    .bind(&first.errors)
    .bind(&first.ended)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// The columns of [`schedule_new`]'s update: per row its id, first run,
/// error (invalid schedule) and whether its window is over.
#[derive(Default)]
struct FirstRuns {
    ids: Vec<i64>,
    nexts: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<String>>,
    ended: Vec<bool>,
}

/// The first run of each new row at `now` (see [`first_of_new`]), and
/// the counts; an invalid schedule is logged.
fn first_runs(rows: Vec<NewRow>, now: DateTime<Utc>) -> (FirstRuns, ScheduledNew) {
    let mut out = FirstRuns::default();
    let mut report = ScheduledNew::default();
    for (id, schedule, zone, start_at, end_at, exclude) in rows {
        let window = crate::window::TaskWindow {
            start_at,
            end_at,
            exclude,
        };
        let first = first_of_new(&schedule, &zone, &window, now);
        out.ids.push(id);
        out.ended.push(matches!(first, Ok(None)));
        match first {
            Ok(next) => {
                match next {
                    Some(_) => report.scheduled += 1,
                    None => report.ended += 1,
                }
                out.nexts.push(next);
                out.errors.push(None);
            }
            Err(err) => {
                report.invalid += 1;
                tracing::warn!(task_id = id, error = %err, "disabling task with an invalid schedule");
                out.nexts.push(None);
                out.errors.push(Some(err.to_string()));
            }
        }
    }
    (out, report)
}

/// The first occurrence of a row inserted with SQL: `Ok(None)` when its
/// active window is already over (disabled, not invalid: the ledger says
/// "active window ended"), the field error when it cannot be evaluated.
fn first_of_new(
    schedule: &str,
    zone: &str,
    window: &crate::window::TaskWindow,
    now: DateTime<Utc>,
) -> std::result::Result<Option<DateTime<Utc>>, InvalidField> {
    let timing = Timing::parse(schedule, zone, Default::default(), 0)?.within(window.bounds()?);
    match timing.next_after(now) {
        Next::At(next) => Ok(Some(next)),
        Next::WindowEnded => Ok(None),
        _ => Err(InvalidField::new(
            "schedule",
            "has no occurrence in the future",
        )),
    }
}

/// Task counts by state.
#[derive(Debug, Clone, Copy, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskCounts {
    pub total: i64,
    pub enabled: i64,
    /// Tasks whose last run did not succeed.
    pub failing: i64,
    /// Tasks disabled because their schedule or zone cannot be evaluated.
    pub invalid: i64,
}

/// How many tasks there are in each state, for `/v1/status`.
pub async fn task_counts(db: impl PgExecutor<'_>) -> Result<TaskCounts> {
    Ok(sqlx::query_as::<_, TaskCounts>(
        // One pass over the table; the filters count overlapping states.
        "SELECT count(*) AS total, \
                count(*) FILTER (WHERE enabled) AS enabled, \
                count(*) FILTER (WHERE consecutive_failures > 0) AS failing, \
                count(*) FILTER (WHERE schedule_error IS NOT NULL) AS invalid \
         FROM tasks",
    )
    .fetch_one(db)
    .await?)
}

/// Locks a task row for the rest of the transaction and reads it; `None`
/// if it is gone.
pub async fn lock_task(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<Task>> {
    let sql = concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1 FOR UPDATE"
    );
    Ok(sqlx::query_as::<_, Task>(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}
